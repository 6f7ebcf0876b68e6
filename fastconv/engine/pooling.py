"""Pooling: max (the gradient to the first maximum of each window, row-major) and average
(padding counts in the divisor), each a single pass of a kernel over the planes.
"""

from __future__ import annotations

import numpy as np

from ..kernels import picker
from .checks import check_dout
from .geometry import PoolGeometry, pool_geometry
from .threads import over_planes
from .types import Cache, FloatArray, Int32Array, IntPair
from .workspaces import workspace

#: Largest per-thread scratch (bytes) of the row and phased max-pool kernels; beyond it
#: (huge windows or images) the direct kernels run.
SCRATCH_MAX = 4 << 20


def pool_args(pg: PoolGeometry) -> tuple[int, int, int, int, int, int]:
    return (pg.kh, pg.kw, pg.stride_h, pg.stride_w, pg.pad_h, pg.pad_w)


def lane_indices_fit(pg: PoolGeometry) -> bool:
    """Whether the vector kernels' int32 lane indices (a row's last lanes too) fit this plane."""
    return (pg.H + 4) * pg.W + 64 < 2**31 - 1


def runs_pool2(pg: PoolGeometry) -> bool:
    """2x2 windows at stride 2 without padding: max_pool2 and avg_pool2 run them, on the
    build's vector registers."""
    return pool_args(pg) == (2, 2, 2, 2, 0, 0) and lane_indices_fit(pg)


def max_pool_planes(x3: FloatArray, out3: FloatArray, argmax3: Int32Array, pg: PoolGeometry, threads: int) -> None:
    """Max pooling of the planes x3 (planes, H, W) into out3 and argmax3 (planes, out_h,
    out_w) on ``threads`` threads, by the kernel that suits pg (all give the same bits):
    2x2 windows at stride 2 without padding run max_pool2, windows 3 columns wide at column
    stride 2 without column padding max_pool3s2 (both on vector registers); other windows
    3 columns wide at column stride 2 run max_pool_rows (separable: each input row's
    three-column maxima once, then the window rows); other overlapping windows (kw >
    stride_w) max_pool_phased; the rest, or when a kernel's scratch would be too large,
    max_pool_direct (docs/performance.md)."""
    k = picker.kernels
    if runs_pool2(pg):
        k.max_pool2(x3, out3, argmax3, threads)
        return
    if pg.kw == 3 and pg.stride_w == 2 and pg.pad_w == 0 and pg.pad_h < pg.kh and lane_indices_fit(pg):
        k.max_pool3s2(x3, out3, argmax3, pg.kh, pg.stride_h, pg.pad_h, threads)
        return
    rows = k.max_pool_rows_scratch(pg.H, pg.out_w)[0]
    if pg.kw == 3 and pg.stride_w == 2 and (x3.itemsize + 4) * rows <= SCRATCH_MAX:
        hmax = workspace("pool_scratch", threads * rows, x3.dtype).reshape(threads, rows)
        hidx = workspace("pool_best", threads * rows, np.int32).reshape(threads, rows)
        k.max_pool_rows(x3, out3, argmax3, pg.kh, pg.stride_h, pg.pad_h, pg.pad_w, hmax, hidx, threads)
        return
    need = k.max_pool_phased_scratch(pg.H, pg.W, pg.out_w, pg.kw, pg.stride_w)
    if pg.kw > pg.stride_w and need is not None and need[0] * x3.itemsize + need[1] * 4 <= SCRATCH_MAX:
        scratch = workspace("pool_scratch", threads * need[0], x3.dtype).reshape(threads, need[0])
        best = workspace("pool_best", threads * need[1], np.int32).reshape(threads, need[1])
        k.max_pool_phased(x3, out3, argmax3, *pool_args(pg), scratch, best, threads)
    else:
        columns = k.max_pool_direct_columns(pg.W, pg.out_w, pg.kw, pg.stride_w, pg.pad_w)
        k.max_pool_direct(x3, out3, argmax3, *pool_args(pg), np.empty((2, columns), dtype=np.intp), threads)


def max_pool_forward(
    x: FloatArray, kernel_size: IntPair, stride: IntPair | None = None, pad: IntPair = 0
) -> tuple[FloatArray, Cache]:
    """Max pooling. stride None means kernel_size; padding counts as -inf.

    Returns (out, cache), out (N, C, out_h, out_w). The cache holds the
    argmax of each window (int32), not x.
    """
    g = pool_geometry(x, kernel_size, stride, pad)
    x = np.ascontiguousarray(x)
    out = np.empty(g.out_shape, dtype=x.dtype)
    argmax = np.empty(g.out_shape, dtype=np.int32)
    planes = g.N * g.C
    x3, out3 = x.reshape(planes, g.H, g.W), out.reshape(planes, g.out_h, g.out_w)
    argmax3 = argmax.reshape(planes, g.out_h, g.out_w)
    over_planes(
        planes,
        planes * g.H * g.W,
        lambda lo, hi, threads: max_pool_planes(x3[lo:hi], out3[lo:hi], argmax3[lo:hi], g, threads),
    )
    return out, (argmax, x.dtype, g)


def max_pool_backward(dout: FloatArray, cache: Cache) -> FloatArray:
    """Each output's gradient goes to the first maximum of its window (row-major). 2x2
    windows at stride 2 without padding write each pixel of dx once (max_pool2_backward);
    the others zero dx and add each gradient at its argmax (max_pool_backward). The same bits."""
    argmax, dtype, g = cache
    check_dout(dout, g.out_shape, dtype)
    dout = np.ascontiguousarray(dout)
    planes, P = g.N * g.C, g.out_h * g.out_w
    dx = np.empty((g.N, g.C, g.H, g.W), dtype=dtype)
    k = picker.kernels
    if runs_pool2(g):
        dout3, argmax3 = dout.reshape(planes, g.out_h, g.out_w), argmax.reshape(planes, g.out_h, g.out_w)
        dx3 = dx.reshape(planes, g.H, g.W)
        over_planes(
            planes,
            planes * g.H * g.W,
            lambda lo, hi, threads: k.max_pool2_backward(dout3[lo:hi], argmax3[lo:hi], dx3[lo:hi], threads),
        )
        return dx
    dout2, argmax2, dx2 = dout.reshape(planes, P), argmax.reshape(planes, P), dx.reshape(planes, g.H * g.W)
    over_planes(
        planes,
        planes * g.H * g.W,
        lambda lo, hi, threads: k.max_pool_backward(dout2[lo:hi], argmax2[lo:hi], dx2[lo:hi], threads),
    )
    return dx


def avg_pool_forward(
    x: FloatArray, kernel_size: IntPair, stride: IntPair | None = None, pad: IntPair = 0
) -> tuple[FloatArray, Cache]:
    """Average pooling; padded zeros count in the divisor (kh * kw)."""
    g = pool_geometry(x, kernel_size, stride, pad)
    x = np.ascontiguousarray(x)
    out = np.empty(g.out_shape, dtype=x.dtype)
    planes = g.N * g.C
    x3, out3 = x.reshape(planes, g.H, g.W), out.reshape(planes, g.out_h, g.out_w)
    k = picker.kernels
    if runs_pool2(g):
        over_planes(planes, planes * g.H * g.W, lambda lo, hi, threads: k.avg_pool2(x3[lo:hi], out3[lo:hi], threads))
    else:
        over_planes(
            planes,
            planes * g.H * g.W,
            lambda lo, hi, threads: k.avg_pool_forward(x3[lo:hi], out3[lo:hi], *pool_args(g), threads),
        )
    return out, (x.shape, x.dtype, g)


def avg_pool_backward(dout: FloatArray, cache: Cache) -> FloatArray:
    """Spread each output's gradient evenly over its window (padding included)."""
    x_shape, dtype, g = cache
    check_dout(dout, g.out_shape, dtype)
    dout = np.ascontiguousarray(dout)
    planes = g.N * g.C
    dx = np.empty(x_shape, dtype=dtype)
    dout3, dx3 = dout.reshape(planes, g.out_h, g.out_w), dx.reshape(planes, g.H, g.W)
    over_planes(
        planes,
        planes * g.H * g.W,
        lambda lo, hi, threads: picker.kernels.avg_pool_backward(dout3[lo:hi], dx3[lo:hi], *pool_args(g), threads),
    )
    return dx
