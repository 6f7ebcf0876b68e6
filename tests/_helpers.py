"""Helpers of the fastconv test suite that are not for users (``from _helpers import ...``;
fixtures live in conftest.py).

The tolerance tables, ``rel_error``, ``assert_close``, numerical gradients, the
configuration grids and the checks are public: they live in ``fastconv.testing``, and the
tests import them from there.

* ``out_size``: PyTorch's output-size formula, written here on purpose independently
  of ``fastconv.engine.geometry``, so that the tests do not take the library's word for it.
* ``pair_id`` / ``dtype_id``: the pieces of hand-written test ids.
"""

import numpy as np


def pair_id(value):
    """'3' for (3, 3), '3x5' for (3, 5): the compact form used in test ids."""
    h, w = (value, value) if np.isscalar(value) else value
    return f"{h}" if h == w else f"{h}x{w}"


def dtype_id(dtype):
    return np.dtype(dtype).name


def out_size(size, kernel, stride=1, pad=0, dilation=1):
    """Output length of a convolution or pooling along one axis: PyTorch's formula."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
