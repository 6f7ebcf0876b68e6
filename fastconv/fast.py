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
two threads must not share one call's output arrays.
"""
import threading

import numpy as np

from . import OPENMP_WAIT_POLICY, _parallel
from ._params import check_dout, check_float_array, conv_geometry, pool_geometry, pool_geometry_of_shape
from . import layers as _layers
from .layers import (  # noqa: F401  (layers without loops are shared with fastconv.naive)
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    softmax_loss,
    svm_loss,
)

try:
    # The Cython kernels: fastconv._im2col, or its AVX2 build on a CPU with AVX2
    # (fastconv/_kernels.py; FASTCONV_KERNELS=baseline forces the first).
    from ._kernels import kernels as _im2col
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "fastconv.fast needs the compiled extension fastconv._im2col, which is missing "
        f"({exc}). Build it from the source tree with `pip install -e .` (or "
        "`python setup.py build_ext --inplace`), which needs a C compiler, Cython >= 3 "
        "and numpy >= 2. fastconv.naive works without it."
    ) from exc

#: Upper bound on the im2col workspace of one chunk (bytes), per worker thread. The
#: GEMM output workspace ``y`` (F, n*P) comes on top and is smaller whenever
#: F < C*kh*kw. 2 MiB measured best (1 image of W2conv3x3 per chunk; fwd+bwd at
#: 0.5 / 1 / 2 / 4 / 8 MiB: W1conv 13.5 / 13.4 / 12.2 / 12.7 / 15.5 ms,
#: W2conv3x3 112 / 112 / 114 / 116 / 131 ms, W3conv5x5 7.4 / 6.3 / 6.1 / 6.1 / 7.4 ms).
WORKSPACE_BYTES = 2 * 2**20

#: Below this many elements of work, kernels run on one thread (the OpenMP
#: start-up would cost more than it saves).
_PARALLEL_MIN = 1 << 15

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


#: True when the kernels run on one thread: the process's libgomp was loaded before
#: fastconv could ask it to let idle threads sleep (fastconv/__init__.py), and its
#: spinning workers would slow every GEMM after a parallel kernel (measured with
#: torch imported first: W2conv3x3 forward + backward 620 ms on OpenMP threads,
#: 138 ms on one thread, 123 ms on OpenMP threads with OMP_WAIT_POLICY=PASSIVE).
SINGLE_THREADED_KERNELS = OPENMP_WAIT_POLICY != "PASSIVE"


def _threads(work):
    """Thread count for a kernel: 0 (OpenMP's default) or 1 for small or unsafe cases."""
    return 1 if SINGLE_THREADED_KERNELS or work < _PARALLEL_MIN else 0


def chunk_images(g, itemsize, workspace_bytes=None):
    """Images per chunk so that one chunk's im2col matrix fits the workspace bound."""
    limit = WORKSPACE_BYTES if workspace_bytes is None else workspace_bytes
    per_image = (g.C * g.kh * g.kw) * (g.out_h * g.out_w) * itemsize
    return int(max(1, min(max(g.N, 1), limit // max(per_image, 1))))


def _kernel_args(g):
    return (g.kh, g.kw, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, g.out_h, g.out_w)


class ConvPlan:
    """How a convolution over geometry ``g`` is cut up: chunks of ``chunk`` images,
    worker k takes chunks k, k + workers, ... (see fastconv/_parallel.py), and
    the GEMM shapes: per group, ``w2`` (Fg, Kg) times ``cols`` (Kg, n*P)."""

    def __init__(self, g, dtype, chunk=None):
        self.g = g
        self.dtype = np.dtype(dtype)
        self.G, self.P = g.groups, g.out_h * g.out_w
        self.K = g.C * g.kh * g.kw
        self.Fg, self.Kg = g.F // g.groups, self.K // g.groups
        blas_threads = _parallel.blas_threads()
        if chunk is None:
            # At least one chunk per BLAS thread: every GEMM then runs on one BLAS thread,
            # so the result depends on the user's thread setting only, never on what another
            # thread's call does to the process-wide BLAS setting meanwhile.
            chunk = min(chunk_images(g, self.dtype.itemsize), max(1, -(-g.N // blas_threads)))
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


def conv_forward(x, w, b=None, stride=1, pad=0, dilation=1, groups=1):
    """Convolution (cross-correlation, as in every CNN library).

    x (N, C, H, W), w (F, C // groups, kh, kw), b (F,) or None; stride, pad and
    dilation are an int or an (h, w) pair. Returns (out, cache) with out
    (N, F, out_h, out_w) in x's dtype.
    """
    g = conv_geometry(x, w, b, stride, pad, dilation, groups)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    dtype = x.dtype
    plan = ConvPlan(g, dtype)
    w2 = w.reshape(g.F, plan.Kg)
    bias = np.ascontiguousarray(b) if b is not None else np.empty(0, dtype=dtype)
    out = np.empty(g.out_shape, dtype=dtype)
    out3 = out.reshape(g.N, g.F, plan.P)
    args = _kernel_args(g)

    def forward_chunks(k):
        for n0, n in plan.chunks(k):
            cols, y = plan.workspaces(n)
            _im2col.im2col(x[n0:n0 + n], cols, *args, plan.threads(cols.size))
            for gi in range(plan.G):
                f, t = plan.group(gi)
                np.matmul(w2[f], cols[t], out=y[f])
            _im2col.scatter_output(y, out3[n0:n0 + n], bias, b is not None, plan.threads(y.size))

    if g.N:
        _parallel.run(plan.workers, plan.one_blas_thread, forward_chunks)
    return out, (x, w, b is not None, g)


def conv_backward(dout, cache, need_dx=True):
    """Gradients of conv_forward: returns (dx, dw, db); db is None when b was None,
    dx is None when ``need_dx`` is false (a first layer, whose input needs no gradient:
    that saves a third of the GEMM work and the col2im pass)."""
    x, w, has_bias, g = cache
    check_dout(dout, g.out_shape, x.dtype)
    dout = np.ascontiguousarray(dout)
    dtype = x.dtype
    plan = ConvPlan(g, dtype)
    w2 = w.reshape(g.F, plan.Kg)
    dout3 = dout.reshape(g.N, g.F, plan.P)
    dx = np.empty_like(x) if need_dx else None
    args = _kernel_args(g)

    def backward_chunks(k):
        """This worker's chunks; returns its partial sums of dw2 and db."""
        dw2 = np.zeros((g.F, plan.Kg), dtype=dtype)
        db = np.zeros(g.F, dtype=np.float64)
        for n0, n in plan.chunks(k):
            cols, dy = plan.workspaces(n)
            _im2col.gather_dout(dout3[n0:n0 + n], dy, db, has_bias, plan.threads(dy.size))
            _im2col.im2col(x[n0:n0 + n], cols, *args, plan.threads(cols.size))
            for gi in range(plan.G):
                f, t = plan.group(gi)
                dw2[f] += dy[f] @ cols[t].T
            if not need_dx:
                continue
            for gi in range(plan.G):
                f, t = plan.group(gi)
                np.matmul(w2[f].T, dy[f], out=cols[t])  # dcols overwrites cols
            _im2col.col2im(cols, dx[n0:n0 + n], *args, plan.threads(cols.size))
        return dw2, db

    if g.N:
        parts = _parallel.run(plan.workers, plan.one_blas_thread, backward_chunks)
    else:
        parts = [backward_chunks(0)]
    dw2, db = parts[0]
    for dw2_k, db_k in parts[1:]:  # in worker order: the result never depends on timing
        dw2 += dw2_k
        db += db_k
    dw = dw2.reshape(g.w_shape)
    return dx, dw, (db.astype(dtype) if has_bias else None)


def conv_relu_pool_forward(x, w, b=None, stride=1, pad=0, pool_size=2, pool_stride=None, pool_pad=0,
                           dilation=1, groups=1):
    """conv -> ReLU -> max pool in one pass per chunk: the same result as
    ``max_pool_forward(relu_forward(conv_forward(x, w, b, ...)))``, without ever
    writing the full-size convolution output.

    ReLU and "+ b" are monotonic, so the maximum of a window of relu(y + b) is
    relu(max(y + b)), at the same (first) position whenever it is positive, and
    when it is not, no gradient flows anyway. So each chunk's GEMM output ``y``
    gets its bias and is max-pooled while it is in cache, and ReLU runs on the
    pooled values only. The cache holds x, w, the pooled output (its sign is the
    ReLU mask) and the argmax. Returns (out, cache), out (N, F, pooled_h, pooled_w).
    """
    g = conv_geometry(x, w, b, stride, pad, dilation, groups)
    pg = pool_geometry_of_shape(g.out_shape, pool_size, pool_stride, pool_pad,
                                what="the convolution's output", names=("pool_size", "pool_stride", "pool_pad"))
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    dtype = x.dtype
    plan = ConvPlan(g, dtype)
    w2 = w.reshape(g.F, plan.Kg)
    bias_col = None if b is None else np.ascontiguousarray(b).reshape(g.F, 1)
    Pp = pg.out_h * pg.out_w
    out = np.empty(pg.out_shape, dtype=dtype)
    out3 = out.reshape(g.N, g.F, Pp)
    # Argmax in chunk layout: chunk (n0, n) holds its planes in (filter, image) order,
    # the order of the GEMM output, at [n0*F*Pp, (n0 + n)*F*Pp).
    argmax = np.empty(g.N * g.F * Pp, dtype=np.int32)
    no_bias = np.empty(0, dtype=dtype)
    args = _kernel_args(g)

    def forward_chunks(k):
        for n0, n in plan.chunks(k):
            cols, y = plan.workspaces(n)
            z = _workspace("z", g.F * n * Pp, dtype).reshape(g.F * n, pg.out_h, pg.out_w)
            _im2col.im2col(x[n0:n0 + n], cols, *args, plan.threads(cols.size))
            for gi in range(plan.G):
                f, t = plan.group(gi)
                np.matmul(w2[f], cols[t], out=y[f])
            if bias_col is not None:
                y += bias_col
            _im2col.max_pool_forward(
                y.reshape(g.F * n, g.out_h, g.out_w), z,
                argmax[n0 * g.F * Pp:(n0 + n) * g.F * Pp].reshape(g.F * n, pg.out_h, pg.out_w),
                pg.kh, pg.kw, pg.stride_h, pg.stride_w, pg.pad_h, pg.pad_w, plan.threads(y.size))
            _im2col.scatter_output(z.reshape(g.F, n * Pp), out3[n0:n0 + n], no_bias, False,
                                   plan.threads(z.size), relu=True)

    if g.N:
        _parallel.run(plan.workers, plan.one_blas_thread, forward_chunks)
    return out, (x, w, b is not None, g, pg, out, argmax, plan.chunk)


def conv_relu_pool_backward(dout, cache, need_dx=True):
    """Gradients of conv_relu_pool_forward: (dx, dw, db), as conv_backward returns them."""
    x, w, has_bias, g, pg, out, argmax, chunk = cache
    check_dout(dout, pg.out_shape, x.dtype)
    dtype = x.dtype
    plan = ConvPlan(g, dtype, chunk=chunk)
    w2 = w.reshape(g.F, plan.Kg)
    Pp = pg.out_h * pg.out_w
    dz3 = relu_backward(dout, out).reshape(g.N, g.F, Pp)  # zero where the pooled value was <= 0
    dx = np.empty_like(x) if need_dx else None
    args = _kernel_args(g)

    def backward_chunks(k):
        dw2 = np.zeros((g.F, plan.Kg), dtype=dtype)
        db = np.zeros(g.F, dtype=np.float64)
        for n0, n in plan.chunks(k):
            cols, dy = plan.workspaces(n)
            dz = _workspace("z", g.F * n * Pp, dtype).reshape(g.F, n * Pp)
            _im2col.gather_dout(dz3[n0:n0 + n], dz, db, has_bias, plan.threads(dz.size))
            _im2col.max_pool_backward(  # route each window's gradient to its argmax, in dy's layout
                dz.reshape(g.F * n, Pp), argmax[n0 * g.F * Pp:(n0 + n) * g.F * Pp].reshape(g.F * n, Pp),
                dy.reshape(g.F * n, plan.P), plan.threads(dy.size))
            _im2col.im2col(x[n0:n0 + n], cols, *args, plan.threads(cols.size))
            for gi in range(plan.G):
                f, t = plan.group(gi)
                dw2[f] += dy[f] @ cols[t].T
            if not need_dx:
                continue
            for gi in range(plan.G):
                f, t = plan.group(gi)
                np.matmul(w2[f].T, dy[f], out=cols[t])
            _im2col.col2im(cols, dx[n0:n0 + n], *args, plan.threads(cols.size))
        return dw2, db

    parts = _parallel.run(plan.workers, plan.one_blas_thread, backward_chunks) if g.N else [backward_chunks(0)]
    dw2, db = parts[0]
    for dw2_k, db_k in parts[1:]:
        dw2 += dw2_k
        db += db_k
    return dx, dw2.reshape(g.w_shape), (db.astype(dtype) if has_bias else None)


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
    _im2col.max_pool_forward(
        x.reshape(planes, g.H, g.W), out.reshape(planes, g.out_h, g.out_w),
        argmax.reshape(planes, g.out_h, g.out_w),
        g.kh, g.kw, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
        _threads(planes * g.H * g.W),
    )
    return out, (argmax, x.dtype, g)


def max_pool_backward(dout, cache):
    """Each output's gradient goes to the first maximum of its window (row-major)."""
    argmax, dtype, g = cache
    check_dout(dout, g.out_shape, dtype)
    dout = np.ascontiguousarray(dout)
    planes, P = g.N * g.C, g.out_h * g.out_w
    dx = np.empty((g.N, g.C, g.H, g.W), dtype=dtype)
    _im2col.max_pool_backward(
        dout.reshape(planes, P), argmax.reshape(planes, P), dx.reshape(planes, g.H * g.W),
        _threads(planes * g.H * g.W),
    )
    return dx


def avg_pool_forward(x, kernel_size, stride=None, pad=0):
    """Average pooling; padded zeros count in the divisor (kh * kw)."""
    g = pool_geometry(x, kernel_size, stride, pad)
    x = np.ascontiguousarray(x)
    out = np.empty(g.out_shape, dtype=x.dtype)
    planes = g.N * g.C
    _im2col.avg_pool_forward(
        x.reshape(planes, g.H, g.W), out.reshape(planes, g.out_h, g.out_w),
        g.kh, g.kw, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
        _threads(planes * g.H * g.W),
    )
    return out, (x.shape, x.dtype, g)


def avg_pool_backward(dout, cache):
    """Spread each output's gradient evenly over its window (padding included)."""
    x_shape, dtype, g = cache
    check_dout(dout, g.out_shape, dtype)
    dout = np.ascontiguousarray(dout)
    planes = g.N * g.C
    dx = np.empty(x_shape, dtype=dtype)
    _im2col.avg_pool_backward(
        dout.reshape(planes, g.out_h, g.out_w), dx.reshape(planes, g.H, g.W),
        g.kh, g.kw, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
        _threads(planes * g.H * g.W),
    )
    return dx


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, C, H, W) per channel, over N, H and W: the same
    arguments, bn_param updates and results as fastconv.naive's (numpy) version.

    Training mode runs three passes over x, each parallel over channels, with sums
    in double: the mean, the squared deviations from it, and (x - mean) * gamma /
    std + beta. numpy's version makes about ten full-size temporaries (measured on
    (128, 32, 28, 28) float32, forward + backward at 2 threads: 28.5 ms numpy).
    The cache refers to x (as conv's does) instead of holding a normalized copy.
    """
    check_float_array(x, "x", 4)
    N, C, H, W = x.shape
    mode = _layers._check_bn(x, gamma, beta, bn_param, C, "x (N, C, H, W)")
    if mode != "train" or N * H * W == 0:  # one numpy pass (test mode), or nothing to normalize over
        out, cache = _layers.spatial_batchnorm_forward(x, gamma, beta, bn_param)
        return out, (None if cache is None else ("reference", cache))
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    running_mean = bn_param.get("running_mean", np.zeros(C, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.ones(C, dtype=x.dtype))
    x = np.ascontiguousarray(x)
    x3 = x.reshape(N, C, H * W)
    mean = np.empty(C)
    var = np.empty(C)
    threads = _threads(x.size)
    _im2col.bn_channel_stats(x3, mean, var, threads)
    inv_std = 1.0 / np.sqrt(var + eps)
    out = np.empty_like(x)
    _im2col.bn_affine(x3, mean, gamma.astype(np.float64) * inv_std, beta.astype(np.float64),
                      out.reshape(N, C, H * W), threads)
    bn_param["running_mean"] = (momentum * running_mean + (1 - momentum) * mean).astype(x.dtype)
    bn_param["running_var"] = (momentum * running_var + (1 - momentum) * var).astype(x.dtype)
    return out, ("fast", x, np.ascontiguousarray(gamma), mean, inv_std)


def spatial_batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for spatial_batchnorm_forward in training mode:
    two passes, the per-channel sums of dout and dout * (x - mean), then dx."""
    if cache is None:
        raise ValueError("spatial_batchnorm_backward needs the cache of a forward pass in 'train' mode")
    if cache[0] == "reference":
        return _layers.spatial_batchnorm_backward(dout, cache[1])
    _, x, gamma, mean, inv_std = cache
    check_dout(dout, x.shape, x.dtype)
    dout = np.ascontiguousarray(dout)
    N, C, H, W = x.shape
    M = N * H * W
    x3, dout3 = x.reshape(N, C, H * W), dout.reshape(N, C, H * W)
    sum_dout, sum_dout_xc = np.empty(C), np.empty(C)
    threads = _threads(x.size)
    _im2col.bn_backward_sums(dout3, x3, mean, sum_dout, sum_dout_xc, threads)
    # dx = gamma * inv_std / M * (M * dout - dbeta - xhat * dgamma), xhat = (x - mean) * inv_std,
    # dgamma = inv_std * sum(dout * (x - mean)), dbeta = sum(dout): a*dout + b*(x - mean) + d.
    g = gamma.astype(np.float64) * inv_std
    a = g
    b = -g * inv_std * inv_std * sum_dout_xc / M
    d = -g * sum_dout / M
    dx = np.empty_like(x)
    _im2col.bn_backward_dx(dout3, x3, mean, a, b, d, dx.reshape(N, C, H * W), threads)
    return dx, (inv_std * sum_dout_xc).astype(x.dtype), sum_dout.astype(x.dtype)
