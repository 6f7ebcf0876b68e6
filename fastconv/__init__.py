"""fastconv: a readable, vectorized im2col CNN engine.

* ``fastconv.naive``: reference layers written as explicit loops.
* ``fastconv.fast``: the same functions on Cython im2col/col2im + BLAS GEMM.
* ``fastconv.compat.cs231n`` / ``fastconv.compat.sichkar``: tutorial names, fast path.

``import fastconv`` never needs the compiled extension; ``import fastconv.fast``
does, and says how to build it when it is missing.
"""
__version__ = "0.1.0"

import os as _os
import sys as _sys


def _libgomp_already_loaded():
    """True if some libgomp is mapped into this process already (Linux only)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


# The fast path alternates BLAS calls (OpenBLAS's own threads) with OpenMP kernels.
# OpenMP worker threads that spin-wait between regions steal the cores from the
# next GEMM (docs/performance.md, "Idle threads"). Ask libgomp, which reads this
# once when it loads with fastconv._im2col, to let idle workers sleep instead,
# unless the user chose a policy. If a libgomp is loaded already (PyTorch ships one
# with the same name, which fastconv._im2col then shares), it has read the variable
# before us: fastconv.fast then runs its kernels on one thread (see show_config()).
_WAIT_POLICY_PRESET = _os.environ.get("OMP_WAIT_POLICY")
_LIBGOMP_PRELOADED = _libgomp_already_loaded()
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if _LIBGOMP_PRELOADED:
    OPENMP_WAIT_POLICY = (_WAIT_POLICY_PRESET or "default (spinning)").upper()
else:
    OPENMP_WAIT_POLICY = _os.environ["OMP_WAIT_POLICY"].upper()

# Likewise OpenBLAS's idle workers spin for about 2**28 cycles (0.1 s) after every
# call, taking a core from the im2col/col2im kernels that run between GEMMs
# (docs/performance.md, "Idle threads").
# OpenBLAS reads this once, when numpy loads it: it takes effect only if fastconv
# is imported before numpy (as the `fastconv` command does), or if it is exported.
_OPENBLAS_TIMEOUT_BEFORE_NUMPY = "numpy" not in _sys.modules
if _OPENBLAS_TIMEOUT_BEFORE_NUMPY:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "10")

from ._params import conv_output_size  # noqa: F401
from ._config import show_config  # noqa: F401
from ._malloc import keep_freed_memory  # noqa: F401

__all__ = ["conv_output_size", "show_config", "keep_freed_memory", "__version__", "OPENMP_WAIT_POLICY"]
