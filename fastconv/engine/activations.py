"""ReLU's fast pass for ``fastconv.fast``: one pass of a kernel on the engine's threads
instead of numpy's single-threaded passes (``relu_backward`` in numpy is four: a mask, its
integer view, a negation and an AND). The results are ``fastconv.layers``' bit for bit
(``fastconv.naive`` keeps those, and needs no extension)."""

from __future__ import annotations

import numpy as np

from ..kernels import picker
from .checks import check_dout, check_float_array
from .threads import over_planes
from .types import FloatArray


def relu_forward(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """max(x, 0) (a NaN as it is, -0.0 as +0.0). Returns (out, cache); the cache is x (out > 0
    exactly where x > 0), so changing ``out`` in place does not change the gradient."""
    check_float_array(x, "x")
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, x.dtype)
    x1, out1 = x.reshape(-1), out.reshape(-1)
    # elementwise: blocks of elements on fastconv's workers when the kernel cannot use OpenMP, the same bits
    over_planes(
        x.size, x.size, lambda lo, hi, threads: picker.kernels.relu_forward_kernel(x1[lo:hi], out1[lo:hi], threads)
    )
    return out, x


def relu_backward(dout: FloatArray, cache: FloatArray) -> FloatArray:
    """The gradient flows where the input (the cache) was positive: dout there, +0.0 elsewhere
    (a NaN or infinity in dout where x <= 0 gives 0, as in PyTorch)."""
    x = cache
    check_dout(dout, x.shape, x.dtype)
    dout1 = np.ascontiguousarray(dout).reshape(-1)
    x1 = np.ascontiguousarray(x).reshape(-1)
    dx = np.empty(x.shape, x.dtype)
    dx1 = dx.reshape(-1)
    over_planes(
        x.size,
        x.size,
        lambda lo, hi, threads: picker.kernels.relu_backward_kernel(dout1[lo:hi], x1[lo:hi], dx1[lo:hi], threads),
    )
    return dx
