"""The fast layers: im2col + BLAS GEMM convolution and single-pass pooling.

Same functions, signatures and return values as ``fastconv.naive``: change
one import and the same code runs tens to thousands of times faster.

How a convolution runs (``x`` (N, C, H, W), ``w`` (F, C // groups, kh, kw)):
the batch is cut into chunks of ``n`` images so that the im2col matrix of one
chunk, ``cols`` (C*kh*kw, n*out_h*out_w), stays under ``WORKSPACE_BYTES``
(one image at least). For each chunk: forward ``y = w2 @ cols`` (one GEMM per
group), then one pass scatters ``y`` (F, n*P) into the NCHW output and adds the
bias. Backward: one pass gathers ``dout`` into ``dy`` (F, n*P) and sums ``db``;
``dw += dy @ cols.T`` and ``dcols = w2.T @ dy`` (written over ``cols``), then
col2im adds the patches back into ``dx``. The cache holds ``x`` and ``w`` only;
backward recomputes ``cols`` chunk by chunk instead of keeping a matrix
kh*kw times the size of x.

3x3 convolutions with stride 1 and dilation 1 can run Winograd F(2x2, 3x3) instead
(``algorithm="winograd2"``, or "winograd"): per chunk, the input tiles are transformed, ``V`` (16, C, T) for T 2x2 output
tiles, the 16 products ``M = U @ V`` (U = the transformed filters, (16, F, C)) are
one batched ``np.matmul``, and the output transform writes the NCHW output: 16
multiplications per tile, filter and channel instead of im2col's 36. Backward
runs the adjoint transforms around ``dU += dM @ V^T`` and ``dV = U^T @ dM``, and
``dw = G^T dU G`` at the end. Same chunks, workers and BLAS threads as im2col.
``algorithm="winograd4"`` runs F(4x4, 3x3) the same way: 4x4 output tiles, 36
points, V (36, C, T), M (36, F, T), 36 multiplications per 16 output pixels
instead of 144; "auto" runs it where it is measured to win (``_winograd_wins``).

Threads: when the BLAS may use T > 1 threads, the batch is cut into at least
T chunks (when it has T images) and T workers take them in turn, each running
a whole chunk (im2col, GEMMs, output pass) on one thread with the BLAS held to
one thread (fastconv/_parallel.py says why); a single image runs in the
caller's thread, on one BLAS thread too, with OpenMP kernels. So every GEMM
runs on one BLAS thread whatever other threads do to the process-wide BLAS
setting (some OpenBLAS kernels round differently on 1 and 2 threads). dw and
db are summed per worker, then in worker order: bitwise reproducible for a
given thread count.

Workspaces are kept per thread and reused across calls (fresh large buffers
cost page faults on every call). A cache may be passed between threads, but
two threads must not share one call's output arrays. As in fastconv.naive, a cache
refers to the layer's inputs (without a copy when they are C-contiguous), which must
not change before backward; the returned output is the caller's to change.
"""
import threading

import numpy as np

from . import OPENMP_WAIT_POLICY, _parallel
from ._params import (WINOGRAD_TILE, check_algorithm, check_dout, check_float_array, conv_geometry,
                      pool_geometry, pool_geometry_of_shape, winograd_tiles, winograd_unsupported)
from . import layers as _layers
from .layers import *  # noqa: F401,F403  (the layers without loops, shared with fastconv.naive)

try:
    # The Cython kernels: fastconv._im2col, or its AVX-512 or AVX2 build on a CPU that has
    # it (fastconv/_kernels.py picks; FASTCONV_KERNELS=baseline forces the first).
    from ._kernels import kernels as _kernels
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "fastconv.fast needs the compiled extension fastconv._im2col, which is missing "
        f"({exc}). Build it from the source tree with `pip install -e .` (or "
        "`python setup.py build_ext --inplace`), which needs a C compiler, Cython >= 3 "
        "and numpy >= 2. fastconv.naive works without it."
    ) from exc

#: Upper bound on the im2col workspace of one chunk (bytes), per worker thread. The
#: GEMM output workspace ``y`` (F, n*P) comes on top and is smaller whenever
#: F < C*kh*kw. 2 MiB measured best on the benchmark workloads (docs/performance.md).
WORKSPACE_BYTES = 2 * 2**20

#: Below this many elements of work, kernels run on one thread (the OpenMP
#: start-up would cost more than it saves).
_PARALLEL_MIN = 1 << 15

#: Largest per-thread scratch (bytes) of the phased max-pool kernel; beyond it (huge
#: windows or images) the direct kernel runs.
_PHASED_SCRATCH_MAX = 4 << 20

_local = threading.local()


def _workspace(name, size, dtype):
    """A flat per-thread buffer of at least ``size`` elements, reused across calls."""
    key = (name, np.dtype(dtype).char)
    buf = getattr(_local, "buffers", None)
    if buf is None:
        buf = _local.buffers = {}
    arr = buf.get(key)
    if arr is None or arr.size < size:
        arr = buf[key] = np.empty(max(size, 1), dtype=dtype)
    return arr[:size]


#: True when the kernels were compiled with OpenMP (setup.py leaves it out where the
#: compiler has none, as Apple clang, or with FASTCONV_NO_OPENMP=1).
KERNELS_HAVE_OPENMP = bool(_kernels.build_info()["openmp"])

#: True when each kernel call runs on one thread and the parallel layers split their work
#: over fastconv's own worker threads instead (``_over_planes``): the kernels have no
#: OpenMP, or the process's libgomp was loaded before fastconv could ask it to let idle
#: threads sleep (fastconv/__init__.py), and its spinning workers would slow every GEMM
#: after a parallel kernel (several times over with torch imported first: docs/performance.md).
SINGLE_THREADED_KERNELS = OPENMP_WAIT_POLICY != "PASSIVE" or not KERNELS_HAVE_OPENMP


def _threads(work):
    """Thread count for a kernel: OpenMP's default (``omp_get_max_threads()``, which
    OMP_NUM_THREADS and threadpoolctl set), or 1 for small or unsafe cases."""
    return 1 if SINGLE_THREADED_KERNELS or work < _PARALLEL_MIN else _kernels.omp_max_threads()


def chunk_images(g, itemsize, workspace_bytes=None, algorithm="im2col"):
    """Images per chunk so that one chunk's im2col matrix (Winograd: transformed input
    tiles V) fits the workspace bound."""
    limit = WORKSPACE_BYTES if workspace_bytes is None else workspace_bytes
    tile = WINOGRAD_TILE.get(algorithm)
    if tile:
        tiles_h, tiles_w = winograd_tiles(g, tile)
        per_image = (tile + 2) ** 2 * g.C * tiles_h * tiles_w * itemsize
    else:
        per_image = (g.C * g.kh * g.kw) * (g.out_h * g.out_w) * itemsize
    return int(max(1, min(max(g.N, 1), limit // max(per_image, 1))))


def _kernel_args(g):
    return (g.kh, g.kw, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, g.out_h, g.out_w)


class ConvPlan:
    """How a convolution over geometry ``g`` is cut up: chunks of ``chunk`` images,
    worker k takes chunks k, k + workers, ... (see fastconv/_parallel.py), and
    the GEMM shapes: per group, ``w2`` (Fg, Kg) times ``cols`` (Kg, n*P).

    ``run_forward`` and ``run_backward`` are the chunk loops of every convolution
    layer here: the GEMMs, the workers and the order of dw's partial sums. What
    feeds the GEMMs (im2col, the dout gather) and what takes their result (the
    output scatter, col2im) is passed in, so that the benchmark suite's GEMM
    limit (``conv_gemm_limit``) runs the same loops on prepared operands."""

    def __init__(self, g, dtype, chunk=None, algorithm="im2col"):
        self.g, self.algorithm = g, algorithm
        self.dtype = np.dtype(dtype)
        self.G, self.P = g.groups, g.out_h * g.out_w
        self.K = g.C * g.kh * g.kw
        self.Fg, self.Kg = g.F // g.groups, self.K // g.groups
        blas_threads = _parallel.blas_threads()
        if chunk is None:
            # At least one chunk per BLAS thread: every GEMM then runs on one BLAS thread,
            # so the result depends on the user's thread setting only, never on what another
            # thread's call does to the process-wide BLAS setting meanwhile.
            chunk = min(chunk_images(g, self.dtype.itemsize, algorithm=algorithm),
                        max(1, -(-g.N // blas_threads)))
        self.chunk = chunk
        n_chunks = -(-g.N // self.chunk)
        self.workers = max(1, min(blas_threads, n_chunks))
        self.one_blas_thread = blas_threads > 1

    def chunks(self, k):
        """(n0, n) of the chunks of worker k."""
        step = self.chunk * self.workers
        for n0 in range(k * self.chunk, self.g.N, step):
            yield n0, min(self.chunk, self.g.N - n0)

    def threads(self, work):
        """Thread count for a kernel: one inside a worker, else by the work's size."""
        return 1 if self.workers > 1 else _threads(work)

    def workspaces(self, n):
        """This thread's ``cols`` (K, n*P) and ``y`` (F, n*P) for a chunk of n images."""
        cols = _workspace("cols", self.K * n * self.P, self.dtype).reshape(self.K, n * self.P)
        y = _workspace("y", self.g.F * n * self.P, self.dtype).reshape(self.g.F, n * self.P)
        return cols, y

    def group(self, gi):
        """Rows of w2 / y (filters) and of cols (taps) that belong to group gi."""
        return slice(gi * self.Fg, (gi + 1) * self.Fg), slice(gi * self.Kg, (gi + 1) * self.Kg)

    def run(self, work):
        """``[work(0), ..., work(workers - 1)]`` on the workers (fastconv/_parallel.py)."""
        return _parallel.run(self.workers, self.one_blas_thread, work) if self.g.N else [work(0)]

    def run_forward(self, w2, operands, output):
        """The forward pass, chunk by chunk on the workers: ``cols, y = operands(k, n0, n)``
        gives worker k the operands of images [n0, n0 + n), then ``y = w2 @ cols`` (one
        GEMM per group) and ``output(n0, n, y)``."""
        def work(k):
            for n0, n in self.chunks(k):
                cols, y = operands(k, n0, n)
                for gi in range(self.G):
                    f, t = self.group(gi)
                    np.matmul(w2[f], cols[t], out=y[f])
                output(n0, n, y)

        if self.g.N:
            self.run(work)

    def run_backward(self, w2, operands, need_dx, put_dcols):
        """The backward pass, chunk by chunk on the workers: ``cols, dy = operands(k, n0, n,
        db)`` gives worker k the operands of images [n0, n0 + n) (adding their bias gradient
        to ``db``, float64 (F,)), then ``dw2 += dy @ cols.T`` and, with ``need_dx``,
        ``dcols = w2.T @ dy`` written over cols and ``put_dcols(n0, n, dcols)`` (one GEMM
        per group each). Returns (dw2, db): each worker's partial sums added in worker
        order, so that they never depend on timing."""
        g = self.g

        def work(k):
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

        return _sum_in_worker_order(self.run(work))


def _sum_in_worker_order(parts):
    """The workers' partial sums (each a tuple of arrays), added in worker order: the
    result never depends on timing."""
    total = parts[0]
    for part in parts[1:]:
        for acc, p in zip(total, part):
            acc += p
    return total


def _conv_forward_chunks(plan, x, w, output):
    """A convolution's forward pass: each chunk of x through im2col into this thread's
    ``cols``, the GEMMs into its ``y`` (F, n*P), then ``output(n0, n, y)``."""
    args = _kernel_args(plan.g)

    def im2col(k, n0, n):
        cols, y = plan.workspaces(n)
        _kernels.im2col(x[n0:n0 + n], cols, *args, plan.threads(cols.size))
        return cols, y

    plan.run_forward(w.reshape(plan.g.F, plan.Kg), im2col, output)


def _conv_backward_chunks(plan, x, w, has_bias, chunk_dy, need_dx):
    """(dx, dw, db) of a convolution: for each chunk, ``chunk_dy(n0, n, dy, db)`` writes
    the gradient of the convolution's output in GEMM layout, ``dy`` (F, n*P), and adds
    its sums to ``db``; im2col recomputes the chunk's ``cols``; after the GEMMs, col2im
    writes the chunk's dx from ``dcols``."""
    g = plan.g
    args = _kernel_args(g)
    dx = np.empty_like(x) if need_dx else None

    def operands(k, n0, n, db):
        cols, dy = plan.workspaces(n)
        chunk_dy(n0, n, dy, db)
        _kernels.im2col(x[n0:n0 + n], cols, *args, plan.threads(cols.size))
        return cols, dy

    def col2im(n0, n, dcols):
        _kernels.col2im(dcols, dx[n0:n0 + n], *args, plan.threads(dcols.size))

    dw2, db = plan.run_backward(w.reshape(g.F, plan.Kg), operands, need_dx, col2im)
    return dx, dw2.reshape(g.w_shape), (db.astype(x.dtype) if has_bias else None)


# ---------------------------------------------------------------------------- Winograd
#: The filter transform G of F(2x2, 3x3); its entries are exact in binary floating point.
WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

#: The filter transform G of F(4x4, 3x3) (Lavin & Gray 2016); 1/6, 1/12 and 1/24 are not
#: exact in binary, so the filter transforms run in float64 (_winograd_filters).
WINOGRAD4_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                        [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])

_WINOGRAD_G = {2: WINOGRAD_G, 4: WINOGRAD4_G}


def _winograd_wins(g):
    """The Winograd algorithm "auto" runs for geometry ``g`` (which Winograd can run), or
    None where im2col is faster. Winograd's transforms cost per channel, filter and tile,
    its GEMM savings per channel times filter, so it loses on few channels and small
    images; F(4x4, 3x3) beat F(2x2, 3x3) wherever F(2x2) beat im2col. The thresholds follow
    docs/performance.md ("Winograd F(4x4, 3x3) and the rule of auto")."""
    C, P = g.C // g.groups, g.out_h * g.out_w
    wins = (C >= 64 and P >= 16 * 16) or (C >= 32 and P >= 24 * 24) or (C >= 16 and P >= 32 * 32)
    return "winograd4" if wins else None


def _finite(a):
    """False when ``a`` may hold a NaN or an infinity: its sum is not finite (a sum of
    finite values that overflows says False too, which costs only speed)."""
    return bool(np.isfinite(np.add.reduce(a, axis=None)))


def _algorithm(g, algorithm, x, w):
    """(the algorithm a convolution over geometry ``g`` runs, whether "auto" chose it).

    Winograd's transforms mix each input patch into all the outputs of its tile,
    so a NaN or an infinity reaches outputs whose 3x3 window does not hold it; "auto"
    therefore runs it on finite x and w only (and backward on a finite dout), so that
    non-finite values propagate exactly as in direct convolution (and PyTorch)."""
    algorithm = check_algorithm(g, algorithm)
    if algorithm != "auto":
        return algorithm, False
    chosen = _winograd_wins(g) if winograd_unsupported(g) is None else None
    if chosen and _finite(w) and _finite(x):
        return chosen, True
    return "im2col", True


def _backward_algorithm(algorithm, auto, dout):
    """The algorithm of a backward pass: its forward's, unless "auto" chose Winograd and
    dout may hold non-finite values (see _algorithm)."""
    return "im2col" if algorithm in WINOGRAD_TILE and auto and not _finite(dout) else algorithm


def conv_algorithm(x, w, b=None, stride=1, pad=0, dilation=1, groups=1, algorithm="auto"):
    """The algorithm ``conv_forward`` runs with these arguments: "im2col", "winograd2"
    (F(2x2, 3x3), which "winograd" names too) or "winograd4" (F(4x4, 3x3))."""
    return _algorithm(conv_geometry(x, w, b, stride, pad, dilation, groups), algorithm, x, w)[0]


def _winograd_args(plan):
    """(tile, tiles_h, tiles_w) of a Winograd plan, as the kernels take them."""
    tile = WINOGRAD_TILE[plan.algorithm]
    return (tile,) + winograd_tiles(plan.g, tile)


def _winograd_filters(w, tile):
    """U ((tile + 2)**2, F, Cg) = G w G^T for every filter and channel, computed in float64
    (F(4x4, 3x3)'s G is not exact in binary), returned in w's dtype."""
    G = _WINOGRAD_G[tile]
    F, Cg = w.shape[:2]
    U = (G @ w.astype(np.float64) @ G.T).reshape(F, Cg, (tile + 2) ** 2).transpose(2, 0, 1)
    return np.ascontiguousarray(U, dtype=w.dtype)


def _winograd_filter_gradient(dU, tile, dtype):
    """dw (F, Cg, 3, 3) = G^T dU G from dU ((tile + 2)**2, F, Cg), in float64, returned in dtype."""
    G = _WINOGRAD_G[tile]
    F, Cg = dU.shape[1:]
    dw = G.T @ dU.astype(np.float64).transpose(1, 2, 0).reshape(F, Cg, tile + 2, tile + 2) @ G
    return dw.astype(dtype)


class _WinogradChunks:
    """A Winograd call's tiles, per-group slices and this thread's workspaces."""

    def __init__(self, plan):
        self.plan, g = plan, plan.g
        self.args = _winograd_args(plan)  # (tile, tiles_h, tiles_w)
        self.tile, self.tiles_h, self.tiles_w = self.args
        self.points = (self.tile + 2) ** 2
        self.Cg = g.C // g.groups

    def workspaces(self, n):
        """V (points, C, T), M (points, F, T) and the kernels' scratch, for a chunk of n images."""
        g, dtype, points = self.plan.g, self.plan.dtype, self.points
        T = n * self.tiles_h * self.tiles_w
        threads = self.plan.threads(points * g.C * T)
        V = _workspace("wino_V", points * g.C * T, dtype).reshape(points, g.C, T)
        M = _workspace("wino_M", points * g.F * T, dtype).reshape(points, g.F, T)
        size = _kernels.winograd_scratch(self.tile, self.tiles_w)
        scratch = _workspace("wino_scratch", threads * size, dtype).reshape(threads, size)
        return V, M, scratch, threads

    def groups(self):
        """Per group: its filters (rows of U and M) and its channels (rows of V)."""
        Fg, Cg = self.plan.Fg, self.Cg
        for gi in range(self.plan.g.groups):
            yield slice(gi * Fg, (gi + 1) * Fg), slice(gi * Cg, (gi + 1) * Cg)


def _winograd_forward_chunks(plan, x, w, output):
    """A Winograd convolution's forward pass: each chunk's input tiles V, the products
    M = U @ V (one batched GEMM per group), then ``output(n0, n, M, scratch, threads)``
    (the output transform into the layer's layout)."""
    ch, g = _WinogradChunks(plan), plan.g
    U = _winograd_filters(w, ch.tile)

    def work(k):
        for n0, n in plan.chunks(k):
            V, M, scratch, threads = ch.workspaces(n)
            _kernels.winograd_input(x[n0:n0 + n], V, g.pad_h, g.pad_w, *ch.args, scratch, threads)
            for f, c in ch.groups():
                np.matmul(U[:, f], V[:, c], out=M[:, f])
            output(n0, n, M, scratch, threads)

    if g.N:
        plan.run(work)


def _winograd_backward_chunks(plan, x, w, has_bias, chunk_dM, need_dx):
    """(dx, dw, db) of a Winograd convolution: for each chunk, ``chunk_dM(n0, n, dM, db,
    scratch, threads)`` writes the transformed output gradient dM (points, F, T) and adds
    the bias gradient to ``db``; V is recomputed; ``dU += dM @ V^T``; with ``need_dx``,
    ``dV = U^T @ dM`` (over V) and its adjoint transform is the chunk's dx."""
    ch, g = _WinogradChunks(plan), plan.g
    U = _winograd_filters(w, ch.tile)
    dx = np.empty_like(x) if need_dx else None

    def work(k):
        dU = np.zeros(U.shape, dtype=U.dtype)
        db = np.zeros(g.F, dtype=np.float64)
        for n0, n in plan.chunks(k):
            V, dM, scratch, threads = ch.workspaces(n)
            chunk_dM(n0, n, dM, db, scratch, threads)
            _kernels.winograd_input(x[n0:n0 + n], V, g.pad_h, g.pad_w, *ch.args, scratch, threads)
            for f, c in ch.groups():
                dU[:, f] += dM[:, f] @ V[:, c].transpose(0, 2, 1)
            if need_dx:
                for f, c in ch.groups():
                    np.matmul(U[:, f].transpose(0, 2, 1), dM[:, f], out=V[:, c])  # dV over V
                _kernels.winograd_input_adjoint(V, dx[n0:n0 + n], g.pad_h, g.pad_w, *ch.args, scratch, threads)
        return dU, db

    dU, db = _sum_in_worker_order(plan.run(work))
    dw = _winograd_filter_gradient(dU, ch.tile, x.dtype)
    return dx, dw, (db.astype(x.dtype) if has_bias else None)


def _planes_of_gemm_layout(plan, n, y):
    """``y`` (F, n*P), the im2col GEMM's layout, seen as (n, F, out_h, out_w) planes."""
    g = plan.g
    return y.reshape(g.F, n, g.out_h, g.out_w).transpose(1, 0, 2, 3)


def _winograd_to_gemm_layout(plan, output):
    """A Winograd ``output`` step that hands the convolution (no bias) to im2col's
    ``output(n0, n, y)`` in the GEMM layout (F, n*P), for the fused layers."""
    args = _winograd_args(plan)
    no_bias = np.empty(0, dtype=plan.dtype)

    def transform(n0, n, M, scratch, threads):
        y = _workspace("y", plan.g.F * n * plan.P, plan.dtype).reshape(plan.g.F, n * plan.P)
        _kernels.winograd_output(M, _planes_of_gemm_layout(plan, n, y), no_bias, False, *args, scratch, threads)
        output(n0, n, y)
    return transform


def _winograd_from_gemm_layout(plan, chunk_dy):
    """A Winograd ``chunk_dM`` step from im2col's ``chunk_dy(n0, n, dy, db)``, which writes
    the output gradient in the GEMM layout (F, n*P) and the bias gradient."""
    args = _winograd_args(plan)

    def transform(n0, n, dM, db, scratch, threads):
        dy = _workspace("y", plan.g.F * n * plan.P, plan.dtype).reshape(plan.g.F, n * plan.P)
        chunk_dy(n0, n, dy, db)
        _kernels.winograd_output_adjoint(_planes_of_gemm_layout(plan, n, dy), dM, db, False, *args, scratch, threads)
    return transform


def conv_forward(x, w, b=None, stride=1, pad=0, dilation=1, groups=1, algorithm="auto"):
    """Convolution (cross-correlation, as in every CNN library).

    x (N, C, H, W), w (F, C // groups, kh, kw), b (F,) or None; stride, pad and
    dilation are an int or an (h, w) pair. Returns (out, cache) with out
    (N, F, out_h, out_w) in x's dtype.

    ``algorithm``: "im2col" (any convolution), "winograd2" or "winograd" (F(2x2, 3x3): a
    3x3 kernel, stride 1, dilation 1), "winograd4" (F(4x4, 3x3), the same convolutions)
    or "auto": Winograd where it can run and is measured to win (``_winograd_wins``:
    enough channels, not many more filters than channels, images of 16x16 or more), else
    im2col (``conv_algorithm`` says which). Backward runs the algorithm its forward ran.
    """
    g = conv_geometry(x, w, b, stride, pad, dilation, groups)
    algorithm, auto = _algorithm(g, algorithm, x, w)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    plan = ConvPlan(g, x.dtype, algorithm=algorithm)
    bias = np.ascontiguousarray(b) if b is not None else np.empty(0, dtype=x.dtype)
    out = np.empty(g.out_shape, dtype=x.dtype)
    if algorithm in WINOGRAD_TILE:
        args = _winograd_args(plan)

        def transform(n0, n, M, scratch, threads):  # straight into NCHW, plus the bias
            _kernels.winograd_output(M, out[n0:n0 + n], bias, b is not None, *args, scratch, threads)

        _winograd_forward_chunks(plan, x, w, transform)
        return out, (x, w, b is not None, g, (algorithm, auto))
    out3 = out.reshape(g.N, g.F, plan.P)

    def scatter(n0, n, y):  # GEMM layout (F, n*P) to NCHW, plus the bias
        _kernels.scatter_output(y, out3[n0:n0 + n], bias, b is not None, False, plan.threads(y.size))

    _conv_forward_chunks(plan, x, w, scatter)
    return out, (x, w, b is not None, g, (algorithm, auto))


def conv_backward(dout, cache, need_dx=True):
    """Gradients of conv_forward: returns (dx, dw, db); db is None when b was None,
    dx is None when ``need_dx`` is false (a first layer, whose input needs no gradient:
    that saves a third of the GEMM work and the col2im pass)."""
    x, w, has_bias, g, (algorithm, auto) = cache
    check_dout(dout, g.out_shape, x.dtype)
    algorithm = _backward_algorithm(algorithm, auto, dout)
    plan = ConvPlan(g, x.dtype, algorithm=algorithm)
    if algorithm in WINOGRAD_TILE:
        dout = np.ascontiguousarray(dout)
        args = _winograd_args(plan)

        def transform(n0, n, dM, db, scratch, threads):  # straight from NCHW, and the bias gradient
            _kernels.winograd_output_adjoint(dout[n0:n0 + n], dM, db, has_bias, *args, scratch, threads)

        return _winograd_backward_chunks(plan, x, w, has_bias, transform, need_dx)
    dout3 = np.ascontiguousarray(dout).reshape(g.N, g.F, plan.P)

    def gather(n0, n, dy, db):  # NCHW to GEMM layout (F, n*P), and the bias gradient
        _kernels.gather_dout(dout3[n0:n0 + n], dy, db, has_bias, plan.threads(dy.size))

    return _conv_backward_chunks(plan, x, w, has_bias, gather, need_dx)


def conv_relu_pool_forward(x, w, b=None, stride=1, pad=0, pool_size=2, pool_stride=None, pool_pad=0,
                           dilation=1, groups=1, algorithm="auto"):
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
    algorithm, auto = _algorithm(g, algorithm, x, w)
    pg = pool_geometry_of_shape(g.out_shape, pool_size, pool_stride, pool_pad,
                                what="the convolution's output", names=("pool_size", "pool_stride", "pool_pad"))
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
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

    def pool(n0, n, y):  # + b, max pool of each (filter, image) plane, ReLU, to NCHW
        z = _workspace("z", g.F * n * Pp, dtype).reshape(g.F * n, pg.out_h, pg.out_w)
        if bias_col is not None:
            y += bias_col
        _max_pool(y.reshape(g.F * n, g.out_h, g.out_w), z,
                  argmax[n0 * g.F * Pp:(n0 + n) * g.F * Pp].reshape(g.F * n, pg.out_h, pg.out_w),
                  pg, plan.threads(y.size))
        _kernels.scatter_output(z.reshape(g.F, n * Pp), out3[n0:n0 + n], no_bias, False, True,
                                plan.threads(z.size))

    if algorithm in WINOGRAD_TILE:
        _winograd_forward_chunks(plan, x, w, _winograd_to_gemm_layout(plan, pool))
    else:
        _conv_forward_chunks(plan, x, w, pool)
    # out's sign is the ReLU mask: the cache keeps a copy, so that changing the returned
    # out in place does not change the gradient (as in naive)
    return out, (x, w, b is not None, g, pg, out.copy(), argmax, plan.chunk, (algorithm, auto))


def conv_relu_pool_backward(dout, cache, need_dx=True):
    """Gradients of conv_relu_pool_forward: (dx, dw, db), as conv_backward returns them."""
    x, w, has_bias, g, pg, out, argmax, chunk, (algorithm, auto) = cache
    check_dout(dout, pg.out_shape, x.dtype)
    algorithm = _backward_algorithm(algorithm, auto, dout)
    plan = ConvPlan(g, x.dtype, chunk=chunk, algorithm=algorithm)
    Pp = pg.out_h * pg.out_w
    dz3 = _layers.relu_backward(dout, out).reshape(g.N, g.F, Pp)  # zero where the pooled value was <= 0

    def route(n0, n, dy, db):  # the pooled gradient to GEMM layout, then to each window's argmax
        dz = _workspace("z", g.F * n * Pp, x.dtype).reshape(g.F, n * Pp)
        _kernels.gather_dout(dz3[n0:n0 + n], dz, db, has_bias, plan.threads(dz.size))
        _kernels.max_pool_backward(dz.reshape(g.F * n, Pp), argmax[n0 * g.F * Pp:(n0 + n) * g.F * Pp].reshape(g.F * n, Pp),
                                   dy.reshape(g.F * n, plan.P), plan.threads(dy.size))

    if algorithm in WINOGRAD_TILE:
        return _winograd_backward_chunks(plan, x, w, has_bias, _winograd_from_gemm_layout(plan, route), need_dx)
    return _conv_backward_chunks(plan, x, w, has_bias, route, need_dx)


def _over_planes(planes, size, kernel):
    """``kernel(lo, hi, threads)`` over the planes [0, planes) of a pooling layer, or the
    channels or images of a batchnorm (``size`` elements in all). Normally one call on OpenMP
    threads. When OpenMP must run on one thread or is not there (SINGLE_THREADED_KERNELS: a
    spinning libgomp was loaded first, as PyTorch's is when torch is imported before fastconv,
    or a build without OpenMP), blocks of planes go to fastconv's own worker threads instead,
    one kernel thread each, as many as the BLAS may use: the same bits (planes are
    independent), and the speed depends neither on import order nor on the compiler."""
    threads = _threads(size)
    workers = min(_parallel.blas_threads(), planes) if SINGLE_THREADED_KERNELS and size >= _PARALLEL_MIN else 1
    if workers <= 1:
        kernel(0, planes, threads)
        return
    bounds = [planes * k // workers for k in range(workers + 1)]
    _parallel.run(workers, False, lambda k: kernel(bounds[k], bounds[k + 1], 1))


def _pool_args(pg):
    return (pg.kh, pg.kw, pg.stride_h, pg.stride_w, pg.pad_h, pg.pad_w)


def _max_pool(x3, out3, argmax3, pg, threads):
    """Max pooling of the planes x3 (planes, H, W) into out3 and argmax3 (planes, out_h,
    out_w) on ``threads`` threads, by the kernel that suits pg: overlapping windows
    (kw > stride_w) run max_pool_phased when its scratch is small enough, the rest
    max_pool_direct (the same bits; for windows that do not overlap the phased kernel
    is no faster, docs/performance.md)."""
    need = _kernels.max_pool_phased_scratch(pg.H, pg.W, pg.out_w, pg.kw, pg.stride_w)
    if pg.kw > pg.stride_w and need is not None and need[0] * x3.itemsize + need[1] * 4 <= _PHASED_SCRATCH_MAX:
        scratch = _workspace("pool_scratch", threads * need[0], x3.dtype).reshape(threads, need[0])
        best = _workspace("pool_best", threads * need[1], np.int32).reshape(threads, need[1])
        _kernels.max_pool_phased(x3, out3, argmax3, *_pool_args(pg), scratch, best, threads)
    else:
        columns = _kernels.max_pool_direct_columns(pg.W, pg.out_w, pg.kw, pg.stride_w, pg.pad_w)
        _kernels.max_pool_direct(x3, out3, argmax3, *_pool_args(pg), np.empty((2, columns), dtype=np.intp), threads)


def max_pool_forward(x, kernel_size, stride=None, pad=0):
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
    _over_planes(planes, planes * g.H * g.W,
                 lambda lo, hi, threads: _max_pool(x3[lo:hi], out3[lo:hi], argmax3[lo:hi], g, threads))
    return out, (argmax, x.dtype, g)


def max_pool_backward(dout, cache):
    """Each output's gradient goes to the first maximum of its window (row-major)."""
    argmax, dtype, g = cache
    check_dout(dout, g.out_shape, dtype)
    dout = np.ascontiguousarray(dout)
    planes, P = g.N * g.C, g.out_h * g.out_w
    dx = np.empty((g.N, g.C, g.H, g.W), dtype=dtype)
    dout2, argmax2, dx2 = dout.reshape(planes, P), argmax.reshape(planes, P), dx.reshape(planes, g.H * g.W)
    _over_planes(planes, planes * g.H * g.W, lambda lo, hi, threads: _kernels.max_pool_backward(
        dout2[lo:hi], argmax2[lo:hi], dx2[lo:hi], threads))
    return dx


def avg_pool_forward(x, kernel_size, stride=None, pad=0):
    """Average pooling; padded zeros count in the divisor (kh * kw)."""
    g = pool_geometry(x, kernel_size, stride, pad)
    x = np.ascontiguousarray(x)
    out = np.empty(g.out_shape, dtype=x.dtype)
    planes = g.N * g.C
    x3, out3 = x.reshape(planes, g.H, g.W), out.reshape(planes, g.out_h, g.out_w)
    _over_planes(planes, planes * g.H * g.W, lambda lo, hi, threads: _kernels.avg_pool_forward(
        x3[lo:hi], out3[lo:hi], *_pool_args(g), threads))
    return out, (x.shape, x.dtype, g)


def avg_pool_backward(dout, cache):
    """Spread each output's gradient evenly over its window (padding included)."""
    x_shape, dtype, g = cache
    check_dout(dout, g.out_shape, dtype)
    dout = np.ascontiguousarray(dout)
    planes = g.N * g.C
    dx = np.empty(x_shape, dtype=dtype)
    dout3, dx3 = dout.reshape(planes, g.out_h, g.out_w), dx.reshape(planes, g.H, g.W)
    _over_planes(planes, planes * g.H * g.W, lambda lo, hi, threads: _kernels.avg_pool_backward(
        dout3[lo:hi], dx3[lo:hi], *_pool_args(g), threads))
    return dx


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, C, H, W) per channel, over N, H and W: the same
    arguments, bn_param updates and results as fastconv.naive's (numpy) version.

    Training mode runs three passes over x, each parallel over channels, with sums
    in double: the mean, the squared deviations from it, and (x - mean) * gamma /
    std + beta, where numpy's version makes about ten full-size temporaries. The
    cache refers to x (as conv's does) instead of holding a normalized copy.
    """
    check_float_array(x, "x", 4)
    N, C, H, W = x.shape
    s = _layers._bn_settings(x, gamma, beta, bn_param, C, "x (N, C, H, W)")
    if s.mode != "train" or N * H * W == 0:  # one numpy pass (test mode), or nothing to normalize over
        out, cache = _layers.spatial_batchnorm_forward(x, gamma, beta, bn_param)
        return out, (None if cache is None else ("reference", cache))
    x = np.ascontiguousarray(x)
    x3 = x.reshape(N, C, H * W)
    mean, var = _bn_channel_stats(x3)
    inv_std = 1.0 / np.sqrt(var + s.eps)
    out = _bn_normalize(x3, mean, gamma.astype(np.float64) * inv_std, beta.astype(np.float64)).reshape(x.shape)
    _layers._store_running(bn_param, s, x.dtype, mean, var)
    return out, ("fast", x, np.ascontiguousarray(gamma), mean, inv_std)


def spatial_batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for spatial_batchnorm_forward in training mode:
    two passes, the per-channel sums of dout and dout * (x - mean), then dx."""
    cache = _layers._train_cache(cache, "spatial_batchnorm_backward")
    if cache[0] == "reference":
        return _layers.spatial_batchnorm_backward(dout, cache[1])
    _, x, gamma, mean, inv_std = cache
    check_dout(dout, x.shape, x.dtype)
    dout = np.ascontiguousarray(dout)
    N, C, H, W = x.shape
    M = N * H * W
    x3, dout3 = x.reshape(N, C, H * W), dout.reshape(N, C, H * W)
    sum_dout, sum_dout_xc = _bn_backward_sums(dout3, x3, mean)
    # dx = gamma * inv_std / M * (M * dout - dbeta - xhat * dgamma), with xhat = (x - mean) * inv_std,
    # dgamma = inv_std * sum(dout * (x - mean)) and dbeta = sum(dout), is, per channel,
    # dout_scale * dout + xc_scale * (x - mean) + offset:
    scale = gamma.astype(np.float64) * inv_std  # the forward's gamma / std
    dout_scale = scale
    xc_scale = -scale * inv_std * inv_std * sum_dout_xc / M
    offset = -scale * sum_dout / M
    dx = _bn_backward_dx(dout3, x3, mean, dout_scale, xc_scale, offset).reshape(x.shape)
    return dx, (inv_std * sum_dout_xc).astype(x.dtype), sum_dout.astype(x.dtype)


# The four passes of spatial batchnorm in training mode, on C-contiguous (N, C, HW) arrays,
# threaded as this module's kernels are (fastconv.distributed runs them around its collectives).
# The sums run in blocks of channels, the elementwise passes in blocks of whole images
# (contiguous memory); either way each element sees the same arithmetic: the same bits.
def _bn_channel_stats(x3):
    """(mean, biased variance) per channel, float64 (C,)."""
    C = x3.shape[1]
    mean, var = np.empty(C), np.empty(C)
    _over_planes(C, x3.size, lambda lo, hi, threads: _kernels.bn_channel_stats(x3, mean, var, lo, hi, threads))
    return mean, var


def _bn_normalize(x3, shift, scale, offset):
    """(x3 - shift) * scale + offset per channel, a new array like x3."""
    N, C = x3.shape[:2]
    out3 = np.empty_like(x3)
    _over_planes(N, x3.size, lambda lo, hi, threads: _kernels.bn_affine(
        x3[lo:hi], shift, scale, offset, out3[lo:hi], 0, C, threads))
    return out3


def _bn_backward_sums(dout3, x3, mean):
    """(sum(dout), sum(dout * (x - mean))) per channel, float64 (C,)."""
    C = x3.shape[1]
    sum_dout, sum_dout_xc = np.empty(C), np.empty(C)
    _over_planes(C, x3.size, lambda lo, hi, threads: _kernels.bn_backward_sums(
        dout3, x3, mean, sum_dout, sum_dout_xc, lo, hi, threads))
    return sum_dout, sum_dout_xc


def _bn_backward_dx(dout3, x3, mean, dout_scale, xc_scale, offset):
    """dout_scale * dout + xc_scale * (x - mean) + offset per channel, a new array like x3."""
    N, C = x3.shape[:2]
    dx3 = np.empty_like(x3)
    _over_planes(N, x3.size, lambda lo, hi, threads: _kernels.bn_backward_dx(
        dout3[lo:hi], x3[lo:hi], mean, dout_scale, xc_scale, offset, dx3[lo:hi], 0, C, threads))
    return dx3
