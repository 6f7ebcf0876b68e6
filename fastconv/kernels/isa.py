"""The builds of the Cython kernels: their names and the CPU features each one may use.

fastconv/kernels/_im2col.pyx is compiled once for the compiler's default target (``BASELINE``,
or ``NATIVE`` when ``FASTCONV_NATIVE=1`` adds -march=native) as ``fastconv.kernels._im2col``
and, on x86-64 with GCC or Clang, once more per entry of ``OPTIONAL`` as
``fastconv.kernels._im2col_<isa>`` (source ``fastconv/kernels/_im2col_<isa>.pyx``), with ``-m<feature>``
for each of its features. fastconv/kernels/picker.py imports such a build only after the
baseline build has asked the CPU and OS for every one of those features
(``cpu_supports``): the same list makes the compiler flags and the check, so a build
never runs an instruction that its check did not ask for. The list names the features
that the compiler turns on by implication too (-mavx2 turns on SSE4.2 and POPCNT):
tests/kernels/test_kernels_build.py checks that each build's compiler enabled nothing beyond it
(``build_info()["features"]``).

Plain Python without imports: setup.py loads this file by path, before fastconv exists.
"""

from typing import NamedTuple

#: The ISA names of ``build_info()["isa"]`` besides the optional builds'.
BASELINE = "baseline"
NATIVE = "native"

#: The package of the compiled kernels.
PACKAGE = "fastconv.kernels"


class Build(NamedTuple):
    """An optional build: its ISA name, a label for people, the CPU features it is
    compiled for (GCC's names, as in -m<feature> and __builtin_cpu_supports)."""

    isa: str
    label: str
    features: tuple[str, ...]


_SSE4 = ("sse3", "ssse3", "sse4.1", "sse4.2", "popcnt")
_AVX2 = ("avx", "avx2") + _SSE4

#: The optional builds, best first (fastconv/kernels/picker.py runs the first this CPU can run).
#: AVX-512F brings FMA instructions: setup.py compiles every build with -ffp-contract=off,
#: so that no a * b + c is fused and all builds give the same bits; the direct convolution
#: kernels fuse explicitly, in every build (fastconv/kernels/direct.h).
OPTIONAL = (
    Build("avx512", "AVX-512 (F, BW, VL, DQ, CD)", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd") + _AVX2),
    # fma: the direct convolution kernels (fastconv/kernels/direct.h) use explicit FMA instructions
    Build("avx2", "AVX2 and FMA", _AVX2 + ("fma",)),
)


def module_name(isa: str) -> str:
    """The module of a build: ``fastconv.kernels._im2col`` for the baseline, ``fastconv.kernels._im2col_<isa>`` else."""
    return f"{PACKAGE}._im2col" if isa in (BASELINE, NATIVE) else f"{PACKAGE}._im2col_{isa}"
