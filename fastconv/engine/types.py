"""The types of the layer API, for type checkers (``mypy``; CI: ``make typecheck``).

They document what a layer takes and returns; at run time the layers check their
arguments themselves (``checks``), with errors that name the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

#: A float32 or float64 array; every layer keeps its inputs' dtype.
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]

#: A float64 array (the engine's sums, batchnorm's statistics).
Float64Array: TypeAlias = npt.NDArray[np.float64]

#: An int32 array (max pooling's argmax: flat indices within a plane).
Int32Array: TypeAlias = npt.NDArray[np.int32]

#: An int or an (h, w) pair of ints: stride, pad, dilation, kernel size.
IntPair: TypeAlias = int | Sequence[int]

#: What a forward pass returns for its backward pass. It is the layer's own business:
#: callers pass it back unchanged (each layer's docstring says what it holds).
Cache: TypeAlias = tuple[Any, ...]

#: A convolution's gradients: (dx, dw, db); dx is None when the backward pass was told it
#: needs no dx (``need_dx=False``), db is None when the forward pass had no bias.
ConvGrads: TypeAlias = tuple[FloatArray | None, FloatArray, FloatArray | None]

#: A normalization's gradients: (dx, dgamma, dbeta).
NormGrads: TypeAlias = tuple[FloatArray, FloatArray, FloatArray]

#: A shape: (N, C, H, W) and the like.
Shape: TypeAlias = tuple[int, ...]
