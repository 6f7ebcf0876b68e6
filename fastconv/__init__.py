"""fastconv: a readable, vectorized im2col CNN engine.

* ``fastconv.naive``: reference layers written as explicit loops.
* ``fastconv.fast``: the same functions on Cython im2col/col2im + BLAS GEMM.
* ``fastconv.compat.cs231n`` / ``fastconv.compat.sichkar``: tutorial names, fast path.

``import fastconv`` never needs the compiled extension; ``import fastconv.fast``
does, and says how to build it when it is missing.
"""
__version__ = "0.1.0"

from ._params import conv_output_size  # noqa: F401
from ._config import show_config  # noqa: F401

__all__ = ["conv_output_size", "show_config", "__version__"]
