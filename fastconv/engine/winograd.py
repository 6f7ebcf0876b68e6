"""Winograd convolution (Lavin & Gray 2016): F(2x2, 3x3) and F(4x4, 3x3), for 3x3 kernels
with stride 1 and dilation 1 (``algorithms`` says when it runs).

Per chunk, the input tiles are transformed, ``V`` (points, C, T) for T output tiles, the
products ``M = U @ V`` (U = the transformed filters, (points, F, C)) are one batched
``np.matmul`` per group, and the output transform writes the NCHW output: 16 (F(2x2)) or
36 (F(4x4)) multiplications per tile, filter and channel instead of im2col's 36 or 144.
Backward runs the adjoint transforms around ``dU += dM @ V^T`` and ``dV = U^T @ dM``, and
``dw = G^T dU G`` at the end. Same chunks, workers and BLAS threads as im2col
(``conv.ConvPlan``); the transforms are kernels (fastconv/kernels/winograd.pxi).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..kernels import picker
from .algorithms import WINOGRAD_TILE, winograd_tiles
from .threads import sum_in_worker_order
from .types import ConvGrads, Float64Array, FloatArray
from .workspaces import workspace

if TYPE_CHECKING:  # conv imports this module
    from .conv import ChunkDy, ConvPlan, Output

#: ``output(n0, n, M, scratch, threads)``: the output transform of images [n0, n0 + n) from
#: their products ``M`` (points, F, T).
WinogradOutput = Callable[[int, int, FloatArray, FloatArray, int], object]
#: ``chunk_dM(n0, n, dM, db, scratch, threads)``: writes the transformed output gradient
#: ``dM`` (points, F, T) of images [n0, n0 + n) and adds the bias gradient to ``db``.
ChunkDM = Callable[[int, int, FloatArray, Float64Array, FloatArray, int], object]

# ---------------------------------------------------------------------------- Winograd
#: The filter transform G of F(2x2, 3x3); its entries are exact in binary floating point.
WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


#: The filter transform G of F(4x4, 3x3) (Lavin & Gray 2016); 1/6, 1/12 and 1/24 are not
#: exact in binary, so the filter transforms run in float64 (_winograd_filters).
WINOGRAD4_G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)


G_OF_TILE = {2: WINOGRAD_G, 4: WINOGRAD4_G}


def tile_args(plan: ConvPlan) -> tuple[int, int, int]:
    """(tile, tiles_h, tiles_w) of a Winograd plan, as the kernels take them."""
    tile = WINOGRAD_TILE[plan.algorithm]
    return (tile,) + winograd_tiles(plan.g, tile)


def filters(w: FloatArray, tile: int) -> FloatArray:
    """U ((tile + 2)**2, F, Cg) = G w G^T for every filter and channel, computed in float64
    (F(4x4, 3x3)'s G is not exact in binary), returned in w's dtype."""
    G = G_OF_TILE[tile]
    F, Cg = w.shape[:2]
    U = (G @ w.astype(np.float64) @ G.T).reshape(F, Cg, (tile + 2) ** 2).transpose(2, 0, 1)
    return np.ascontiguousarray(U, dtype=w.dtype)


def filter_gradient(dU: FloatArray, tile: int, dtype: npt.DTypeLike) -> FloatArray:
    """dw (F, Cg, 3, 3) = G^T dU G from dU ((tile + 2)**2, F, Cg), in float64, returned in dtype."""
    G = G_OF_TILE[tile]
    F, Cg = dU.shape[1:]
    dw: FloatArray = G.T @ dU.astype(np.float64).transpose(1, 2, 0).reshape(F, Cg, tile + 2, tile + 2) @ G
    return dw.astype(dtype)


def point_blocks(name: str, points: int, planes: int, T: int, dtype: npt.DTypeLike) -> FloatArray:
    """Workspace ``name`` seen as (points, planes, T), each point's (planes, T) block
    C-contiguous, the blocks one cache line more than a whole number of 4 KiB pages apart:
    the transforms read or write all 36 points of a tile at once, and blocks a power of two
    apart would share one set of the L1 (and L2) cache (measured: the F(4x4) transforms of a
    W2conv3x3 chunk take 1.3-2x as long)."""
    itemsize = np.dtype(dtype).itemsize
    stride = -(-planes * T * itemsize // 4096) * 4096 + 64
    items = stride // itemsize
    blocks = workspace(name, points * items, dtype).reshape(points, items)
    return blocks[:, : planes * T].reshape(points, planes, T)


class WinogradChunks:
    """A Winograd call's tiles, per-group slices and this thread's workspaces."""

    def __init__(self, plan: ConvPlan) -> None:
        self.plan, g = plan, plan.g
        self.args = tile_args(plan)  # (tile, tiles_h, tiles_w)
        self.tile, self.tiles_h, self.tiles_w = self.args
        self.points = (self.tile + 2) ** 2
        self.Cg = g.C // g.groups

    def workspaces(self, n: int) -> tuple[FloatArray, FloatArray, FloatArray, int]:
        """V (points, C, T), M (points, F, T) and the kernels' scratch, for a chunk of n images."""
        g, dtype, points = self.plan.g, self.plan.dtype, self.points
        T = n * self.tiles_h * self.tiles_w
        threads = self.plan.threads(points * g.C * T)
        V = point_blocks("wino_V", points, g.C, T, dtype)
        M = point_blocks("wino_M", points, g.F, T, dtype)
        size = picker.kernels.winograd_scratch(self.tile, self.tiles_h, self.tiles_w)
        scratch = workspace("wino_scratch", threads * size, dtype).reshape(threads, size)
        return V, M, scratch, threads

    def groups(self) -> Iterator[tuple[slice, slice]]:
        """Per group: its filters (rows of U and M) and its channels (rows of V)."""
        Fg, Cg = self.plan.Fg, self.Cg
        for gi in range(self.plan.g.groups):
            yield slice(gi * Fg, (gi + 1) * Fg), slice(gi * Cg, (gi + 1) * Cg)


def forward_chunks(plan: ConvPlan, x: FloatArray, w: FloatArray, output: WinogradOutput) -> None:
    """A Winograd convolution's forward pass: each chunk's input tiles V, the products
    M = U @ V (one batched GEMM per group), then ``output(n0, n, M, scratch, threads)``
    (the output transform into the layer's layout)."""
    ch, g = WinogradChunks(plan), plan.g
    U = filters(w, ch.tile)

    def work(k: int) -> None:
        for n0, n in plan.chunks(k):
            V, M, scratch, threads = ch.workspaces(n)
            picker.kernels.winograd_input(x[n0 : n0 + n], V, g.pad_h, g.pad_w, *ch.args, scratch, threads)
            for f, c in ch.groups():
                np.matmul(U[:, f], V[:, c], out=M[:, f])
            output(n0, n, M, scratch, threads)

    if g.N:
        plan.run(work)


def backward_chunks(
    plan: ConvPlan, x: FloatArray, w: FloatArray, has_bias: bool, chunk_dM: ChunkDM, need_dx: bool
) -> ConvGrads:
    """(dx, dw, db) of a Winograd convolution: for each chunk, ``chunk_dM(n0, n, dM, db,
    scratch, threads)`` writes the transformed output gradient dM (points, F, T) and adds
    the bias gradient to ``db``; V is recomputed; ``dU += dM @ V^T``; with ``need_dx``,
    ``dV = U^T @ dM`` (over V) and its adjoint transform is the chunk's dx."""
    ch, g = WinogradChunks(plan), plan.g
    U = filters(w, ch.tile)
    dx = np.empty_like(x) if need_dx else None

    def work(k: int) -> tuple[FloatArray, Float64Array]:
        dU = np.zeros(U.shape, dtype=U.dtype)
        db = np.zeros(g.F, dtype=np.float64)
        for n0, n in plan.chunks(k):
            V, dM, scratch, threads = ch.workspaces(n)
            chunk_dM(n0, n, dM, db, scratch, threads)
            picker.kernels.winograd_input(x[n0 : n0 + n], V, g.pad_h, g.pad_w, *ch.args, scratch, threads)
            for f, c in ch.groups():
                dU[:, f] += dM[:, f] @ V[:, c].transpose(0, 2, 1)
            if dx is not None:  # need_dx
                for f, c in ch.groups():
                    np.matmul(U[:, f].transpose(0, 2, 1), dM[:, f], out=V[:, c])  # dV over V
                picker.kernels.winograd_input_adjoint(V, dx[n0 : n0 + n], g.pad_h, g.pad_w, *ch.args, scratch, threads)
        return dU, db

    dU, db = sum_in_worker_order(plan.run(work))
    dw = filter_gradient(dU, ch.tile, x.dtype)
    return dx, dw, (db.astype(x.dtype) if has_bias else None)


def planes_of_gemm_layout(plan: ConvPlan, n: int, y: FloatArray) -> FloatArray:
    """``y`` (F, n*P), the im2col GEMM's layout, seen as (n, F, out_h, out_w) planes."""
    g = plan.g
    planes: FloatArray = y.reshape(g.F, n, g.out_h, g.out_w).transpose(1, 0, 2, 3)
    return planes


def to_gemm_layout(plan: ConvPlan, output: Output) -> WinogradOutput:
    """A Winograd ``output`` step that hands the convolution (no bias) to im2col's
    ``output(n0, n, y)`` in the GEMM layout (F, n*P), for the fused layers."""
    args = tile_args(plan)
    no_bias = np.empty(0, dtype=plan.dtype)

    def transform(n0: int, n: int, M: FloatArray, scratch: FloatArray, threads: int) -> None:
        y = workspace("y", plan.g.F * n * plan.P, plan.dtype).reshape(plan.g.F, n * plan.P)
        picker.kernels.winograd_output(M, planes_of_gemm_layout(plan, n, y), no_bias, False, *args, scratch, threads)
        output(n0, n, y)

    return transform


def from_gemm_layout(plan: ConvPlan, chunk_dy: ChunkDy) -> ChunkDM:
    """A Winograd ``chunk_dM`` step from im2col's ``chunk_dy(n0, n, dy, db)``, which writes
    the output gradient in the GEMM layout (F, n*P) and the bias gradient."""
    args = tile_args(plan)

    def transform(n0: int, n: int, dM: FloatArray, db: Float64Array, scratch: FloatArray, threads: int) -> None:
        dy = workspace("y", plan.g.F * n * plan.P, plan.dtype).reshape(plan.g.F, n * plan.P)
        chunk_dy(n0, n, dy, db)
        picker.kernels.winograd_output_adjoint(
            planes_of_gemm_layout(plan, n, dy), dM, db, False, *args, scratch, threads
        )

    return transform
