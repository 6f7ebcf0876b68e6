"""The reference layers: explicit loops, written to be read.

Correct for every stride, padding, dilation, group count and non-square
kernel or image, in float32 and float64 (the dtype of the inputs is kept).
Slow on purpose: ``fastconv.fast`` has the same functions, and the tests
prove the two equal. Each backward sits right under its forward.

Shapes: x (N, C, H, W), w (F, C // groups, kh, kw), b (F,),
out (N, F, out_h, out_w) with out_h from ``fastconv.conv_output_size``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .engine.algorithms import check_algorithm
from .engine.checks import check_dout
from .engine.geometry import ConvGeometry, PoolGeometry, conv_geometry, pool_geometry, pool_geometry_of_shape
from .engine.types import Cache, ConvGrads, FloatArray, IntPair

# The layers without loops, shared with fastconv.fast.
from .layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    groupnorm_backward,
    groupnorm_forward,
    layernorm_backward,
    layernorm_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    softmax_loss,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    svm_loss,
)

__all__ = [
    "conv_forward",
    "conv_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
    "max_pool_forward",
    "max_pool_backward",
    "avg_pool_forward",
    "avg_pool_backward",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "dropout_forward",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "groupnorm_forward",
    "groupnorm_backward",
    "softmax_loss",
    "svm_loss",
]

#: (input slice, kernel tap slice) along one axis of a window (``_taps``).
Taps = tuple[slice, slice]


def _taps(start: int, step: int, kernel: int, size: int) -> Taps:
    """The kernel taps ``i`` whose input index ``start + i*step`` lies in [0, size).

    Returns (input slice, tap slice); the other taps read the zero padding.
    """
    first = -(start // step) if start < 0 else 0  # ceil(-start / step)
    last = min(kernel, -((start - size) // step))  # ceil((size - start) / step)
    if last <= first:
        return slice(0, 0), slice(0, 0)
    return slice(start + first * step, start + (last - 1) * step + 1, step), slice(first, last)


def _window_taps(g: ConvGeometry) -> tuple[Sequence[Taps], Sequence[Taps]]:
    """For each output row oh, ``_taps`` of its window along H; for each output column ow, along W.

    Output pixel (oh, ow) reads x[..., rows, cols] with kernel taps [taps_h, taps_w], where
    (rows, taps_h) = row_taps[oh] and (cols, taps_w) = col_taps[ow].
    """
    row_taps = [_taps(oh * g.stride_h - g.pad_h, g.dil_h, g.kh, g.H) for oh in range(g.out_h)]
    col_taps = [_taps(ow * g.stride_w - g.pad_w, g.dil_w, g.kw, g.W) for ow in range(g.out_w)]
    return row_taps, col_taps


def _padded_patch(
    x: FloatArray, n: int, channels: slice, g: ConvGeometry, rows: slice, cols: slice, taps_h: slice, taps_w: slice
) -> FloatArray:
    """The window of the zero-padded x[n, channels] read by the output pixel whose window
    taps are (rows, taps_h) and (cols, taps_w); shape (channels, kh, kw).

    Built window by window: padding the whole input would cost memory in
    proportion to the pad, however large the stride.
    """
    if taps_h.stop - taps_h.start == g.kh and taps_w.stop - taps_w.start == g.kw:
        return x[n, channels, rows, cols]  # no padding in this window
    patch = np.zeros((channels.stop - channels.start, g.kh, g.kw), dtype=x.dtype)
    patch[:, taps_h, taps_w] = x[n, channels, rows, cols]
    return patch


def _conv_windows(g: ConvGeometry) -> Iterator[tuple[int, int, int, int, slice, slice, slice, slice, slice]]:
    """Every output pixel of a convolution, in loop order (n, f, oh, ow), as
    ``(n, f, oh, ow, channels, rows, cols, taps_h, taps_w)``: ``channels`` are the input
    channels of filter f's group; the pixel reads x[n, channels, rows, cols] with kernel
    taps [taps_h, taps_w] (``_window_taps``)."""
    Fg, Cg = g.F // g.groups, g.C // g.groups
    row_taps, col_taps = _window_taps(g) if g.N else ((), ())  # an empty batch reads no window
    for n in range(g.N):
        for f in range(g.F):
            channels = slice((f // Fg) * Cg, (f // Fg + 1) * Cg)
            for oh, (rows, taps_h) in enumerate(row_taps):
                for ow, (cols, taps_w) in enumerate(col_taps):
                    yield n, f, oh, ow, channels, rows, cols, taps_h, taps_w


def conv_forward(
    x: FloatArray,
    w: FloatArray,
    b: FloatArray | None = None,
    stride: IntPair = 1,
    pad: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    algorithm: str = "auto",
) -> tuple[FloatArray, Cache]:
    """Convolution (cross-correlation, as in every CNN library).

    x (N, C, H, W), w (F, C // groups, kh, kw), b (F,) or None; stride, pad and
    dilation are an int or an (h, w) pair. Returns (out, cache) with out
    (N, F, out_h, out_w) in x's dtype. ``algorithm`` is checked as fastconv.fast
    checks it (the same errors); the loops below are the reference for every one.
    """
    g = conv_geometry(x, w, b, stride, pad, dilation, groups)
    check_algorithm(g, algorithm)
    out = np.zeros(g.out_shape, dtype=x.dtype)
    for n, f, oh, ow, channels, rows, cols, taps_h, taps_w in _conv_windows(g):
        patch = _padded_patch(x, n, channels, g, rows, cols, taps_h, taps_w)
        out[n, f, oh, ow] = np.sum(patch * w[f])
    if b is not None:
        out += b.reshape(1, g.F, 1, 1)
    return out, (x, w, b is not None, g)


def conv_backward(dout: FloatArray, cache: Cache, need_dx: bool = True) -> ConvGrads:
    """Gradients of conv_forward: returns (dx, dw, db); db is None when b was None,
    dx is None when ``need_dx`` is false (a first layer, whose input needs no gradient)."""
    x, w, has_bias, g = cache
    check_dout(dout, g.out_shape, x.dtype)
    dx = np.zeros(x.shape, dtype=x.dtype) if need_dx else None
    dw = np.zeros_like(w)
    for n, f, oh, ow, channels, rows, cols, taps_h, taps_w in _conv_windows(g):
        if dx is not None:  # need_dx
            # the gradient of the padding taps is dropped, as cropping a padded dx would
            dx[n, channels, rows, cols] += (w[f] * dout[n, f, oh, ow])[:, taps_h, taps_w]
        patch = _padded_patch(x, n, channels, g, rows, cols, taps_h, taps_w)
        dw[f] += patch * dout[n, f, oh, ow]
    db = dout.sum(axis=(0, 2, 3)).astype(x.dtype) if has_bias else None
    return dx, dw, db


def _pool_window(g: PoolGeometry, oh: int, ow: int) -> tuple[slice, slice]:
    """The unpadded part of the pooling window of output pixel (oh, ow)."""
    h0 = oh * g.stride_h - g.pad_h
    w0 = ow * g.stride_w - g.pad_w
    return slice(max(h0, 0), min(h0 + g.kh, g.H)), slice(max(w0, 0), min(w0 + g.kw, g.W))


def conv_relu_pool_forward(
    x: FloatArray,
    w: FloatArray,
    b: FloatArray | None = None,
    stride: IntPair = 1,
    pad: IntPair = 0,
    pool_size: IntPair = 2,
    pool_stride: IntPair | None = None,
    pool_pad: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    algorithm: str = "auto",
) -> tuple[FloatArray, Cache]:
    """conv -> ReLU -> max pool, the three layers one after the other (the
    reference of fast.conv_relu_pool_forward, which fuses them)."""
    g = conv_geometry(x, w, b, stride, pad, dilation, groups)  # bad pool arguments fail before the loops run
    check_algorithm(g, algorithm)
    pool_geometry_of_shape(
        g.out_shape,
        pool_size,
        pool_stride,
        pool_pad,
        what="the convolution's output",
        names=("pool_size", "pool_stride", "pool_pad"),
    )
    conv_out, conv_cache = conv_forward(x, w, b, stride, pad, dilation, groups)
    pool_in, relu_cache = relu_forward(conv_out)
    out, pool_cache = max_pool_forward(pool_in, pool_size, pool_stride, pool_pad)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout: FloatArray, cache: Cache, need_dx: bool = True) -> ConvGrads:
    """Gradients of conv_relu_pool_forward: (dx, dw, db); dx is None without ``need_dx``."""
    conv_cache, relu_cache, pool_cache = cache
    dx, dw, db = conv_backward(relu_backward(max_pool_backward(dout, pool_cache), relu_cache), conv_cache)
    return (dx if need_dx else None), dw, db


def max_pool_forward(
    x: FloatArray, kernel_size: IntPair, stride: IntPair | None = None, pad: IntPair = 0
) -> tuple[FloatArray, Cache]:
    """Max pooling. stride None means kernel_size; padding counts as -inf.

    Returns (out, cache), out (N, C, out_h, out_w).
    """
    g = pool_geometry(x, kernel_size, stride, pad)
    out = np.empty(g.out_shape, dtype=x.dtype)
    for n in range(g.N):
        for c in range(g.C):
            for oh in range(g.out_h):
                for ow in range(g.out_w):
                    window = x[n, c][_pool_window(g, oh, ow)]
                    # np.argmax: first maximum in row-major order, NaN counts as maximum.
                    out[n, c, oh, ow] = window.flat[np.argmax(window)]
    return out, (x, g)


def max_pool_backward(dout: FloatArray, cache: Cache) -> FloatArray:
    """Each output's gradient goes to the first maximum of its window (row-major)."""
    x, g = cache
    check_dout(dout, g.out_shape, x.dtype)
    dx: FloatArray = np.zeros_like(x)
    for n in range(g.N):
        for c in range(g.C):
            for oh in range(g.out_h):
                for ow in range(g.out_w):
                    rows, cols = _pool_window(g, oh, ow)
                    window = x[n, c, rows, cols]
                    i, j = np.unravel_index(np.argmax(window), window.shape)
                    dx[n, c, rows.start + i, cols.start + j] += dout[n, c, oh, ow]
    return dx


def avg_pool_forward(
    x: FloatArray, kernel_size: IntPair, stride: IntPair | None = None, pad: IntPair = 0
) -> tuple[FloatArray, Cache]:
    """Average pooling; padded zeros count in the divisor (kh * kw)."""
    g = pool_geometry(x, kernel_size, stride, pad)
    out = np.empty(g.out_shape, dtype=x.dtype)
    area = g.kh * g.kw
    for n in range(g.N):
        for c in range(g.C):
            for oh in range(g.out_h):
                for ow in range(g.out_w):
                    out[n, c, oh, ow] = np.sum(x[n, c][_pool_window(g, oh, ow)]) / area
    return out, (x.shape, x.dtype, g)


def avg_pool_backward(dout: FloatArray, cache: Cache) -> FloatArray:
    """Spread each output's gradient evenly over its window (padding included)."""
    x_shape, dtype, g = cache
    check_dout(dout, g.out_shape, dtype)
    dx = np.zeros(x_shape, dtype=dtype)
    area = g.kh * g.kw
    for n in range(g.N):
        for c in range(g.C):
            for oh in range(g.out_h):
                for ow in range(g.out_w):
                    dx[n, c][_pool_window(g, oh, ow)] += dout[n, c, oh, ow] / area
    return dx
