"""Convolution by im2col + GEMM, the chunk loops every convolution runs, and the fused
conv-ReLU-max-pool layer.

How a convolution runs (``x`` (N, C, H, W), ``w`` (F, C // groups, kh, kw)): the batch
is cut into chunks of ``n`` images so that the im2col matrix of one chunk, ``cols``
(C*kh*kw, n*out_h*out_w), stays under ``workspaces.WORKSPACE_BYTES`` (one image at
least). For each chunk: forward ``y = w2 @ cols`` (one GEMM per group), then one pass
scatters ``y`` (F, n*P) into the NCHW output and adds the bias. Backward: one pass
gathers ``dout`` into ``dy`` (F, n*P) and sums ``db``; ``dw += dy @ cols.T`` and
``dcols = w2.T @ dy`` (written over ``cols``), then col2im adds the patches back into
``dx``. The cache holds ``x`` and ``w`` only; backward recomputes ``cols`` chunk by chunk
instead of keeping a matrix kh*kw times the size of x. ``algorithms.choose`` decides
whether a call runs this or Winograd (``winograd``), which shares ``ConvPlan``.

Threads: when the BLAS may use T > 1 threads, the batch is cut into a multiple of T chunks
(when it has T images) whose sizes differ by one image at most, and T workers take them in
turn, each running a whole chunk
(im2col, GEMMs, output pass) on one thread with the BLAS held to one thread
(``threads`` says why); a single image runs in the caller's thread, on one BLAS thread
too, with OpenMP kernels. So every GEMM runs on one BLAS thread whatever other threads do
to the process-wide BLAS setting (some OpenBLAS kernels round differently on 1 and 2
threads). dw and db are summed per worker, then in worker order: bitwise reproducible
for a given thread count.

A cache may be passed between threads, but two threads must not share one call's output
arrays. As in fastconv.naive, a cache refers to the layer's inputs (without a copy when
they are C-contiguous), which must not change before backward; the returned output is
the caller's to change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from ..kernels import picker
from . import activations, algorithms, direct, threads, winograd, workspaces
from .algorithms import WINOGRAD_TILE, winograd_tiles
from .checks import check_dout
from .geometry import ConvGeometry, conv_geometry, pool_geometry_of_shape
from .pooling import max_pool_planes
from .types import Cache, ConvGrads, Float64Array, FloatArray, IntPair

_T = TypeVar("_T")

#: ``output(n0, n, y)``: takes the GEMM result ``y`` (F, n*P) of images [n0, n0 + n).
Output = Callable[[int, int, FloatArray], object]
#: ``chunk_dy(n0, n, dy, db)``: writes the output gradient of images [n0, n0 + n) in GEMM
#: layout, ``dy`` (F, n*P), and adds its sums to ``db``.
ChunkDy = Callable[[int, int, FloatArray, Float64Array], object]
#: The geometry arguments of the im2col and col2im kernels, in their order: kh, kw,
#: stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out_h, out_w (``kernel_args``).
KernelArgs = tuple[int, int, int, int, int, int, int, int, int, int]


def chunk_images(g: ConvGeometry, itemsize: int, workspace_bytes: int | None = None, algorithm: str = "im2col") -> int:
    """Images per chunk so that one chunk's im2col matrix (Winograd: transformed input
    tiles V) fits the workspace bound."""
    limit = workspaces.WORKSPACE_BYTES if workspace_bytes is None else workspace_bytes
    tile = WINOGRAD_TILE.get(algorithm)
    if tile:
        tiles_h, tiles_w = winograd_tiles(g, tile)
        per_image = (tile + 2) ** 2 * g.C * tiles_h * tiles_w * itemsize
    else:
        per_image = (g.C * g.kh * g.kw) * (g.out_h * g.out_w) * itemsize
    return int(max(1, min(max(g.N, 1), limit // max(per_image, 1))))


def kernel_args(g: ConvGeometry) -> KernelArgs:
    return (g.kh, g.kw, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, g.out_h, g.out_w)


def run_im2col(x: FloatArray, cols: FloatArray, args: KernelArgs) -> None:
    """The im2col kernel on the engine's thread rule: x (N, C, H, W) IN, C-contiguous; cols
    (C*kh*kw, N*out_h*out_w) OUT; ``args`` as ``kernel_args`` gives them."""
    picker.kernels.im2col(x, cols, *args, threads.kernel_threads(cols.size))


def run_col2im(cols: FloatArray, dx: FloatArray, args: KernelArgs) -> None:
    """The col2im kernel on the engine's thread rule: cols IN (and scratch: its contents are
    lost), dx (N, C, H, W) OUT, the sum of every column's patch."""
    picker.kernels.col2im(cols, dx, *args, threads.kernel_threads(cols.size))


class ConvPlan:
    """How a convolution over geometry ``g`` is cut up: ``n_chunks`` chunks of images, chunk
    i the images [N*i // n_chunks, N*(i + 1) // n_chunks) (at most ``chunk``), worker k
    takes chunks k, k + workers, ... (``threads.run``), and the GEMM shapes: per group,
    ``w2`` (Fg, Kg) times ``cols`` (Kg, n*P).

    ``run_forward`` and ``run_backward`` are the chunk loops of every convolution
    layer here: the GEMMs, the workers and the order of dw's partial sums. What
    feeds the GEMMs (im2col, the dout gather) and what takes their result (the
    output scatter, col2im) is passed in, so that the benchmark suite's GEMM
    limit (``conv_gemm_limit``) runs the same loops on prepared operands."""

    def __init__(
        self, g: ConvGeometry, dtype: npt.DTypeLike, n_chunks: int | None = None, algorithm: str = "im2col"
    ) -> None:
        self.g, self.algorithm = g, algorithm
        self.dtype = np.dtype(dtype)
        self.G, self.P = g.groups, g.out_h * g.out_w
        self.K = g.C * g.kh * g.kw
        self.Fg, self.Kg = g.F // g.groups, self.K // g.groups
        blas_threads = threads.blas_threads()
        if n_chunks is None:
            # At least one chunk per BLAS thread: every GEMM then runs on one BLAS thread,
            # so the result depends on the user's thread setting only, never on what another
            # thread's call does to the process-wide BLAS setting meanwhile.
            chunk = min(chunk_images(g, self.dtype.itemsize, algorithm=algorithm), max(1, -(-g.N // blas_threads)))
            # As many chunks for every worker, of sizes that differ by one image at most: the
            # workers finish together (64 images in chunks of up to 9 were 36 and 28 images).
            fewest = -(-g.N // chunk)
            n_chunks = min(g.N, -(-fewest // blas_threads) * blas_threads)
        self.n_chunks = n_chunks
        self.chunk = -(-g.N // n_chunks) if n_chunks else 1  # the largest chunk's images
        self.workers = max(1, min(blas_threads, n_chunks))
        self.one_blas_thread = blas_threads > 1

    def chunks(self, k: int) -> Iterator[tuple[int, int]]:
        """(n0, n) of the chunks of worker k."""
        N, n_chunks = self.g.N, self.n_chunks
        for i in range(k, n_chunks, self.workers):
            n0 = N * i // n_chunks
            yield n0, N * (i + 1) // n_chunks - n0

    def threads(self, work: int) -> int:
        """Thread count for a kernel: one inside a worker, else by the work's size."""
        return 1 if self.workers > 1 else threads.kernel_threads(work)

    def workspaces(self, n: int) -> tuple[FloatArray, FloatArray]:
        """This thread's ``cols`` (K, n*P) and ``y`` (F, n*P) for a chunk of n images."""
        cols = workspaces.workspace("cols", self.K * n * self.P, self.dtype).reshape(self.K, n * self.P)
        y = workspaces.workspace("y", self.g.F * n * self.P, self.dtype).reshape(self.g.F, n * self.P)
        return cols, y

    def group(self, gi: int) -> tuple[slice, slice]:
        """Rows of w2 / y (filters) and of cols (taps) that belong to group gi."""
        return slice(gi * self.Fg, (gi + 1) * self.Fg), slice(gi * self.Kg, (gi + 1) * self.Kg)

    def run(self, work: Callable[[int], _T]) -> list[_T]:
        """``[work(0), ..., work(workers - 1)]`` on the workers (``threads.run``)."""
        return threads.run(self.workers, self.one_blas_thread, work) if self.g.N else [work(0)]

    def run_forward(
        self, w2: FloatArray, operands: Callable[[int, int, int], tuple[FloatArray, FloatArray]], output: Output
    ) -> None:
        """The forward pass, chunk by chunk on the workers: ``cols, y = operands(k, n0, n)``
        gives worker k the operands of images [n0, n0 + n), then ``y = w2 @ cols`` (one
        GEMM per group) and ``output(n0, n, y)``."""

        def work(k: int) -> None:
            for n0, n in self.chunks(k):
                cols, y = operands(k, n0, n)
                for gi in range(self.G):
                    f, t = self.group(gi)
                    np.matmul(w2[f], cols[t], out=y[f])
                output(n0, n, y)

        if self.g.N:
            self.run(work)

    def run_backward(
        self,
        w2: FloatArray,
        operands: Callable[[int, int, int, Float64Array], tuple[FloatArray, FloatArray]],
        need_dx: bool,
        put_dcols: Output,
    ) -> tuple[FloatArray, Float64Array]:
        """The backward pass, chunk by chunk on the workers: ``cols, dy = operands(k, n0, n,
        db)`` gives worker k the operands of images [n0, n0 + n) (adding their bias gradient
        to ``db``, float64 (F,)), then ``dw2 += dy @ cols.T`` and, with ``need_dx``,
        ``dcols = w2.T @ dy`` written over cols and ``put_dcols(n0, n, dcols)`` (one GEMM
        per group each). Returns (dw2, db): each worker's partial sums added in worker
        order, so that they never depend on timing."""
        g = self.g

        def work(k: int) -> tuple[FloatArray, Float64Array]:
            dw2 = np.zeros((g.F, self.Kg), dtype=self.dtype)
            db = np.zeros(g.F, dtype=np.float64)
            for n0, n in self.chunks(k):
                cols, dy = operands(k, n0, n, db)
                for gi in range(self.G):
                    f, t = self.group(gi)
                    dw2[f] += dy[f] @ cols[t].T
                if need_dx:
                    for gi in range(self.G):
                        f, t = self.group(gi)
                        np.matmul(w2[f].T, dy[f], out=cols[t])
                    put_dcols(n0, n, cols)
            return dw2, db

        return threads.sum_in_worker_order(self.run(work))


def forward_chunks(plan: ConvPlan, x: FloatArray, w: FloatArray, output: Output) -> None:
    """A convolution's forward pass: each chunk of x through im2col into this thread's
    ``cols``, the GEMMs into its ``y`` (F, n*P), then ``output(n0, n, y)``."""
    args = kernel_args(plan.g)

    def im2col(k: int, n0: int, n: int) -> tuple[FloatArray, FloatArray]:
        cols, y = plan.workspaces(n)
        picker.kernels.im2col(x[n0 : n0 + n], cols, *args, plan.threads(cols.size))
        return cols, y

    plan.run_forward(w.reshape(plan.g.F, plan.Kg), im2col, output)


def backward_chunks(
    plan: ConvPlan, x: FloatArray, w: FloatArray, has_bias: bool, chunk_dy: ChunkDy, need_dx: bool
) -> ConvGrads:
    """(dx, dw, db) of a convolution: for each chunk, ``chunk_dy(n0, n, dy, db)`` writes
    the gradient of the convolution's output in GEMM layout, ``dy`` (F, n*P), and adds
    its sums to ``db``; im2col recomputes the chunk's ``cols``; after the GEMMs, col2im
    writes the chunk's dx from ``dcols``."""
    g = plan.g
    args = kernel_args(g)
    dx = np.empty_like(x) if need_dx else None

    def operands(k: int, n0: int, n: int, db: Float64Array) -> tuple[FloatArray, FloatArray]:
        cols, dy = plan.workspaces(n)
        chunk_dy(n0, n, dy, db)
        picker.kernels.im2col(x[n0 : n0 + n], cols, *args, plan.threads(cols.size))
        return cols, dy

    def col2im(n0: int, n: int, dcols: FloatArray) -> None:
        if dx is not None:  # always (run_backward calls this only with need_dx)
            picker.kernels.col2im(dcols, dx[n0 : n0 + n], *args, plan.threads(dcols.size))

    dw2, db = plan.run_backward(w.reshape(g.F, plan.Kg), operands, need_dx, col2im)
    return dx, dw2.reshape(g.w_shape), (db.astype(x.dtype) if has_bias else None)


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
    (N, F, out_h, out_w) in x's dtype.

    ``algorithm``: "im2col" (any convolution), "winograd2" or "winograd" (F(2x2, 3x3): a
    3x3 kernel, stride 1, dilation 1), "winograd4" (F(4x4, 3x3), the same convolutions),
    "direct" (layers whose per-thread buffers stay small) or "auto": the rule of
    ``algorithms`` (direct on first layers, F(4x4, 3x3) on many channels and large
    images, else im2col; ``conv_algorithm`` says which). Backward runs the algorithm its
    forward ran.
    """
    g = conv_geometry(x, w, b, stride, pad, dilation, groups)
    algorithm, auto = algorithms.choose(g, algorithm, x, w)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    if algorithm == "direct":
        return direct.conv_forward(g, x, w, b), (x, w, b is not None, g, (algorithm, auto))
    plan = ConvPlan(g, x.dtype, algorithm=algorithm)
    bias = np.ascontiguousarray(b) if b is not None else np.empty(0, dtype=x.dtype)
    out = np.empty(g.out_shape, dtype=x.dtype)
    if algorithm in WINOGRAD_TILE:
        args = winograd.tile_args(plan)

        def transform(n0: int, n: int, M: FloatArray, scratch: FloatArray, threads: int) -> None:  # NCHW, + bias
            picker.kernels.winograd_output(M, out[n0 : n0 + n], bias, b is not None, *args, scratch, threads)

        winograd.forward_chunks(plan, x, w, transform)
        return out, (x, w, b is not None, g, (algorithm, auto))
    out3 = out.reshape(g.N, g.F, plan.P)

    def scatter(n0: int, n: int, y: FloatArray) -> None:  # GEMM layout (F, n*P) to NCHW, plus the bias
        picker.kernels.scatter_output(y, out3[n0 : n0 + n], bias, b is not None, False, plan.threads(y.size))

    forward_chunks(plan, x, w, scatter)
    return out, (x, w, b is not None, g, (algorithm, auto))


def conv_backward(dout: FloatArray, cache: Cache, need_dx: bool = True) -> ConvGrads:
    """Gradients of conv_forward: returns (dx, dw, db); db is None when b was None,
    dx is None when ``need_dx`` is false (a first layer, whose input needs no gradient:
    that saves a third of the GEMM work and the col2im pass)."""
    x, w, has_bias, g, (algorithm, auto) = cache
    check_dout(dout, g.out_shape, x.dtype)
    if algorithm == "direct":
        grads: ConvGrads = direct.conv_backward(g, x, w, has_bias, dout, need_dx)
        return grads
    algorithm = algorithms.for_backward(algorithm, auto, dout, x, w)
    plan = ConvPlan(g, x.dtype, algorithm=algorithm)
    if algorithm in WINOGRAD_TILE:
        dout = np.ascontiguousarray(dout)
        args = winograd.tile_args(plan)

        def transform(
            n0: int, n: int, dM: FloatArray, db: Float64Array, scratch: FloatArray, threads: int
        ) -> None:  # straight from NCHW, and the bias gradient
            picker.kernels.winograd_output_adjoint(dout[n0 : n0 + n], dM, db, has_bias, *args, scratch, threads)

        return winograd.backward_chunks(plan, x, w, has_bias, transform, need_dx)
    dout3 = np.ascontiguousarray(dout).reshape(g.N, g.F, plan.P)

    def gather(n0: int, n: int, dy: FloatArray, db: Float64Array) -> None:  # NCHW to GEMM layout, and db
        picker.kernels.gather_dout(dout3[n0 : n0 + n], dy, db, has_bias, plan.threads(dy.size))

    return backward_chunks(plan, x, w, has_bias, gather, need_dx)


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
    """conv -> ReLU -> max pool in one pass per chunk: the same result as
    ``max_pool_forward(relu_forward(conv_forward(x, w, b, ...)))``, without ever
    writing the full-size convolution output.

    ReLU and "+ b" are monotonic, so the maximum of a window of relu(y + b) is
    relu(max(y + b)), at the same (first) position whenever it is positive, and
    when it is not, no gradient flows anyway. So each chunk's GEMM output ``y``
    gets its bias and is max-pooled while it is in cache, and ReLU runs on the
    pooled values only. The cache holds x, w, the pooled output (its sign is the
    ReLU mask) and the argmax. Returns (out, cache), out (N, F, pooled_h, pooled_w).
    ``algorithm`` is conv_forward's (Winograd's output transform writes ``y``).
    """
    g = conv_geometry(x, w, b, stride, pad, dilation, groups)
    algorithm, auto = algorithms.choose(g, algorithm, x, w)
    pg = pool_geometry_of_shape(
        g.out_shape,
        pool_size,
        pool_stride,
        pool_pad,
        what="the convolution's output",
        names=("pool_size", "pool_stride", "pool_pad"),
    )
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    if algorithm == "direct":
        out, argmax = direct.conv_relu_pool_forward(g, pg, x, w, b)
        return out, (x, w, b is not None, g, pg, out.copy(), argmax, None, (algorithm, auto))
    dtype = x.dtype
    plan = ConvPlan(g, dtype, algorithm=algorithm)
    bias_col = None if b is None else np.ascontiguousarray(b).reshape(g.F, 1)
    Pp = pg.out_h * pg.out_w
    out = np.empty(pg.out_shape, dtype=dtype)
    out3 = out.reshape(g.N, g.F, Pp)
    # Argmax in chunk layout: chunk (n0, n) holds its planes in (filter, image) order,
    # the order of the GEMM output, at [n0*F*Pp, (n0 + n)*F*Pp).
    argmax = np.empty(g.N * g.F * Pp, dtype=np.int32)
    no_bias = np.empty(0, dtype=dtype)

    def pool(n0: int, n: int, y: FloatArray) -> None:  # + b, max pool of each (filter, image) plane, ReLU, to NCHW
        z = workspaces.workspace("z", g.F * n * Pp, dtype).reshape(g.F * n, pg.out_h, pg.out_w)
        if bias_col is not None:
            y += bias_col
        max_pool_planes(
            y.reshape(g.F * n, g.out_h, g.out_w),
            z,
            argmax[n0 * g.F * Pp : (n0 + n) * g.F * Pp].reshape(g.F * n, pg.out_h, pg.out_w),
            pg,
            plan.threads(y.size),
        )
        picker.kernels.scatter_output(
            z.reshape(g.F, n * Pp), out3[n0 : n0 + n], no_bias, False, True, plan.threads(z.size)
        )

    if algorithm in WINOGRAD_TILE:
        winograd.forward_chunks(plan, x, w, winograd.to_gemm_layout(plan, pool))
    else:
        forward_chunks(plan, x, w, pool)
    # out's sign is the ReLU mask: the cache keeps a copy, so that changing the returned
    # out in place does not change the gradient (as in naive)
    return out, (x, w, b is not None, g, pg, out.copy(), argmax, plan.n_chunks, (algorithm, auto))


def conv_relu_pool_backward(dout: FloatArray, cache: Cache, need_dx: bool = True) -> ConvGrads:
    """Gradients of conv_relu_pool_forward: (dx, dw, db), as conv_backward returns them."""
    x, w, has_bias, g, pg, out, argmax, n_chunks, (algorithm, auto) = cache
    check_dout(dout, pg.out_shape, x.dtype)
    if algorithm == "direct":
        grads: ConvGrads = direct.conv_relu_pool_backward(g, pg, x, w, has_bias, dout, out, argmax, need_dx)
        return grads
    algorithm = algorithms.for_backward(algorithm, auto, dout, x, w)
    plan = ConvPlan(g, x.dtype, n_chunks=n_chunks, algorithm=algorithm)
    Pp = pg.out_h * pg.out_w
    dz3 = activations.relu_backward(dout, out).reshape(g.N, g.F, Pp)  # zero where the pooled value was <= 0

    def route(n0: int, n: int, dy: FloatArray, db: Float64Array) -> None:  # to GEMM layout, then to the argmax
        dz = workspaces.workspace("z", g.F * n * Pp, x.dtype).reshape(g.F, n * Pp)
        picker.kernels.gather_dout(dz3[n0 : n0 + n], dz, db, has_bias, plan.threads(dz.size))
        planes_argmax = argmax[n0 * g.F * Pp : (n0 + n) * g.F * Pp].reshape(g.F * n, Pp)
        picker.kernels.max_pool_backward(
            dz.reshape(g.F * n, Pp), planes_argmax, dy.reshape(g.F * n, plan.P), plan.threads(dy.size)
        )

    if algorithm in WINOGRAD_TILE:
        return winograd.backward_chunks(plan, x, w, has_bias, winograd.from_gemm_layout(plan, route), need_dx)
    return backward_chunks(plan, x, w, has_bias, route, need_dx)
