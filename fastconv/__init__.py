"""fastconv: a readable, vectorized im2col CNN engine.

* ``fastconv.naive``: reference layers written as explicit loops.
* ``fastconv.fast``: the same functions on Cython im2col/col2im + BLAS GEMM.
* ``fastconv.compat.cs231n`` / ``fastconv.compat.sichkar``: tutorial names, fast path.

``import fastconv`` never needs the compiled extension; ``import fastconv.fast``
does, and says how to build it when it is missing.
"""

__version__ = "0.1.0"

# First of all, before numpy or the kernels load: the OpenMP and OpenBLAS settings that
# fastconv's speed depends on (fastconv/engine/runtimes.py says what and why).
from .engine.runtimes import RUNTIMES as _RUNTIMES

# isort: split
from ._config import show_config
from ._malloc import keep_freed_memory
from .engine.geometry import conv_output_size

#: OMP_WAIT_POLICY as the kernels' OpenMP runtime runs it ("PASSIVE" unless the user chose
#: another, or a libgomp was loaded before fastconv: see show_config()).
OPENMP_WAIT_POLICY = _RUNTIMES.openmp_wait_policy

__all__ = ["conv_output_size", "show_config", "keep_freed_memory", "__version__", "OPENMP_WAIT_POLICY"]
