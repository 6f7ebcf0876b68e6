"""Which build of the Cython kernels the engine runs.

setup.py compiles fastconv/kernels/_im2col.pyx for the compiler's default target
(``fastconv.kernels._im2col``: SSE2 on x86-64, so the wheel runs on any x86-64 CPU) and, on
x86-64, once more per optional build of fastconv/kernels/isa.py: ``fastconv.kernels._im2col_avx512``
(AVX-512 F/BW/VL/DQ/CD) and ``fastconv.kernels._im2col_avx2`` (AVX2). All compute the same
results bit for bit (no FMA contraction, no reordering); the wider builds run the
pooling, batchnorm and col2im loops on wider vectors. This module picks one once, at
import: the first optional build, best first, that the CPU can run (the baseline build
asks the CPU for each of the build's features before the build is imported, since
importing it on an older CPU could crash), that is installed and that comes from the
same build as the baseline (not left over from other source); else the baseline.
``reason`` says why, with the reason for each build passed over.

The environment variable FASTCONV_KERNELS overrides the choice: ``auto`` (the
default), ``baseline``, ``avx512`` or ``avx2`` (an error if this CPU or install
cannot run the build named).

A build whose compiler had no usable OpenMP gives a RuntimeWarning here, once.

Importing this module raises ImportError when the extension is missing, and ValueError
(naming FASTCONV_KERNELS) when the extension is there but the variable asks for kernels
it cannot give: ``fastconv.show_config`` tells the two apart.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

from .isa import BASELINE, NATIVE, OPTIONAL, Build, module_name

if TYPE_CHECKING:
    # For type checkers, the kernels are the baseline build: every build has its functions
    # (one stub, _im2col.pyi, describes them all).
    from . import _im2col as kernels

    reason: str
# Else ``kernels`` and ``reason`` are set by __getattr__ on first use (so that ``requested``
# can be asked without loading any build).

__all__ = ["KERNELS_ENV", "builds", "kernels", "optional_build", "reason"]

KERNELS_ENV = "FASTCONV_KERNELS"
_CHOICES = ("auto", BASELINE) + tuple(b.isa for b in OPTIONAL)


def optional_build(baseline: ModuleType, build: Build) -> tuple[ModuleType | None, str | None]:
    """(module, None) when this CPU and install can run ``build`` (an entry of
    fastconv/kernels/isa.py's OPTIONAL), else (None, why not)."""
    missing = [f for f in build.features if not baseline.cpu_supports((f,))]
    if missing:
        return None, f"this CPU (or OS) lacks {', '.join(missing)}"
    name = module_name(build.isa)
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        return None, f"{name} is not installed ({exc}); reinstall with a compiler that builds it"
    ours, theirs = baseline.build_info(), module.build_info()
    if any(ours[k] != theirs[k] for k in ("source_id", "debug_build")):
        # A module left over from an earlier build (other source, or the debug switch
        # flipped, and its rebuild failed): never mix the two.
        return None, f"{name} is stale: it comes from another build than fastconv.kernels._im2col; reinstall"
    return module, None


def builds() -> dict[str, tuple[ModuleType | None, str | None]]:
    """{isa: (module, None) or (None, why not)} for the baseline build and every optional
    one, narrowest first: the builds this CPU and install can run (for tests and benchmarks)."""
    from . import _im2col as baseline

    found: dict[str, tuple[ModuleType | None, str | None]] = {baseline.build_info()["isa"]: (baseline, None)}
    for build in reversed(OPTIONAL):
        found[build.isa] = optional_build(baseline, build)
    return found


def requested() -> str:
    """The build that FASTCONV_KERNELS asks for ("auto" when unset), without loading any;
    ValueError naming the variable for a value it does not know (the ``fastconv`` command
    asks this first, so that a bad setting is one line before any work starts)."""
    wanted = os.environ.get(KERNELS_ENV, "auto").strip().lower() or "auto"
    if wanted not in _CHOICES:
        raise ValueError(f"{KERNELS_ENV} must be one of {', '.join(_CHOICES)}, got {os.environ[KERNELS_ENV]!r}")
    return wanted


def _load() -> tuple[ModuleType, str]:
    """Return (module, reason): the kernels fastconv.fast uses, and why those."""
    try:
        from . import _im2col as baseline
    except ImportError as exc:  # pragma: no cover - exercised only on a broken install
        raise ImportError(
            "fastconv.fast needs the compiled extension fastconv.kernels._im2col, which is missing "
            f"({exc}). Build it from the source tree with `pip install -e .` (or "
            "`python setup.py build_ext --inplace`), which needs a C compiler, Cython >= 3 "
            "and numpy >= 2. fastconv.naive works without it."
        ) from exc
    wanted = requested()
    if wanted == BASELINE:
        return baseline, f"{KERNELS_ENV}={BASELINE}"
    if baseline.build_info()["isa"] == NATIVE:
        return baseline, "built with -march=native"
    passed_over: list[str] = []
    for build in OPTIONAL:
        if wanted not in ("auto", build.isa):
            continue
        module, why_not = optional_build(baseline, build)
        if module is not None:
            because = f"the CPU has {build.label}"
            return module, because + (f" ({'; '.join(passed_over)})" if passed_over else "")
        if wanted == build.isa:
            raise ValueError(f"{KERNELS_ENV}={build.isa}, but {why_not}")
        passed_over.append(f"not {build.isa}: {why_not}")
    return baseline, "; ".join(passed_over)


def _warn_if_openmp_was_unavailable(module: ModuleType) -> None:
    """A RuntimeWarning, once per process (the build loads once), when the compiler had
    no usable OpenMP: pip hides setup.py's own warning, and a user asking for it
    (FASTCONV_NO_OPENMP=1) needs none."""
    if module.build_info().get("openmp_unavailable"):
        warnings.warn(
            "fastconv's kernels were built without OpenMP: the compiler had none (Apple clang "
            "without libomp, say). They run on fastconv's own worker threads instead, except a "
            "single image's convolution, which runs on one thread. To build with OpenMP, see "
            "CONTRIBUTING.md (macOS: brew install libomp, then reinstall); `fastconv config` "
            "shows the build.",
            RuntimeWarning,
            stacklevel=3,
        )


def load() -> ModuleType:
    """The kernel build this process runs: chosen, imported and its warning given on the first
    call (``import fastconv.fast`` makes it), the same module afterwards."""
    global kernels, reason
    if "kernels" not in globals():
        kernels, reason = _load()
        _warn_if_openmp_was_unavailable(kernels)
    return kernels


def __getattr__(name: str) -> ModuleType | str:
    """``kernels`` and ``reason``: loaded on first use (``load``), then plain attributes."""
    if name in ("kernels", "reason"):
        load()
        value: ModuleType | str = globals()[name]
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
