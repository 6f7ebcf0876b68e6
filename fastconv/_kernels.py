"""Which build of the Cython kernels fastconv.fast runs.

setup.py compiles fastconv/_im2col.pyx for the compiler's default target
(``fastconv._im2col``: SSE2 on x86-64, so the wheel runs on any x86-64 CPU) and, on
x86-64, a second time with AVX2 (``fastconv._im2col_avx2``). Both compute the same
results bit for bit (no FMA, no reordering); the AVX2 build runs the pooling,
batchnorm and col2im loops on twice as wide vectors. This module picks one once, at
import: AVX2 when the CPU has it (the baseline build asks the CPU, before the AVX2
build is imported, since importing it on an older CPU could crash), else baseline.

The environment variable FASTCONV_KERNELS overrides the choice: ``auto`` (the
default), ``baseline``, or ``avx2`` (an error if this CPU or install cannot run it).

Importing this module raises ImportError when the extension is missing, and ValueError
(naming FASTCONV_KERNELS) when the extension is there but the variable asks for kernels
it cannot give: ``fastconv.show_config`` tells the two apart.
"""
import os

KERNELS_ENV = "FASTCONV_KERNELS"
_CHOICES = ("auto", "baseline", "avx2")


def _load():
    """Return (module, reason): the kernels fastconv.fast uses, and why those."""
    from . import _im2col as baseline  # ImportError here means no extension at all

    wanted = os.environ.get(KERNELS_ENV, "auto").strip().lower() or "auto"
    if wanted not in _CHOICES:
        raise ValueError(
            f"{KERNELS_ENV} must be one of {', '.join(_CHOICES)}, "
            f"got {os.environ[KERNELS_ENV]!r}"
        )
    if wanted == "baseline":
        return baseline, f"{KERNELS_ENV}=baseline"
    if baseline.build_info()["isa"] == "native":
        return baseline, "built with -march=native"
    if not baseline.cpu_has_avx2():
        if wanted == "avx2":
            raise ValueError(f"{KERNELS_ENV}=avx2, but this CPU (or OS) does not run AVX2 code")
        return baseline, "this CPU has no AVX2"
    try:
        from . import _im2col_avx2 as avx2
    except ImportError as exc:
        if wanted == "avx2":
            raise ValueError(
                f"{KERNELS_ENV}=avx2, but the AVX2 build fastconv._im2col_avx2 is not "
                f"installed ({exc}); reinstall with a compiler that accepts -mavx2"
            ) from exc
        return baseline, "the AVX2 build is not installed"
    ours, theirs = baseline.build_info(), avx2.build_info()
    if any(ours[k] != theirs[k] for k in ("source_id", "debug_build")):
        # A module left over from an earlier build (other source, or the debug switch
        # flipped, and its rebuild failed): never mix the two.
        if wanted == "avx2":
            raise ValueError(f"{KERNELS_ENV}=avx2, but fastconv._im2col_avx2 comes from "
                             "another build than fastconv._im2col; reinstall fastconv")
        return baseline, "the AVX2 build is stale (from another build); reinstall"
    return avx2, "the CPU has AVX2"


kernels, reason = _load()
