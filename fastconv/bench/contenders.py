"""The contenders of each kind of workload: prepared for timing, checked first.

``build_case`` returns the contenders of one case (workload, dtype, pass),
each a ``Contender`` whose ``fn`` does only the timed work, and the checks
that passed ({contender: worst relative error}). A failed check raises
``MismatchError``: nothing is timed after a wrong result.

The contenders:

* ``fast``: fastconv.fast on the full batch. Checked against fastconv.naive
  on a sub-batch (the first and the last image, so that the last, possibly
  partial, workspace chunk is covered): per-image results of the full-batch
  run, and dw/db of a fast run on the same sub-batch.
* ``naive``: fastconv.naive on that sub-batch, its time scaled linearly to
  the full batch (the loops cost the same per image). It is the reference.
* ``gemm``: the GEMM limit, ``conv_gemm_limit`` below; for pooling, a plain
  copy of x (forward) and of x and the output (forward + backward), the
  memory-bound floor.
* ``torch``: torch.nn.functional (``torch_ops``) on the same data,
  in a peer process of its own by default (``peer`` says why),
  checked against the checked fast result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import fast, naive
from ..engine.conv import ConvPlan
from ..engine.geometry import conv_geometry
from . import torch_ops
from .common import ConvSpec, PoolSpec, StepSpec, check_same, conv_data, kind_of, pool_data, step_data
from .timing import Contender

FAST_POOLS = frozenset({"blas", "openmp"})
BLAS_POOL = frozenset({"blas"})
TORCH_POOL = frozenset({"torch"})
STEP_PARAMS = torch_ops.STEP_PARAMS


class Context:
    """What every case shares: the torch contender (a peer process, an in-process module,
    or neither), the naive settings and the naive results cache."""

    def __init__(self, torch=None, peer=None, naive_images=2, naive_repeats=3, algorithm="auto"):
        self.torch = torch  # the torch module, when torch runs in this process
        self.algorithm = algorithm  # fast's convolution algorithm ("winograd": where it can run)
        self.peer = peer  # a peer.TorchPeer, when torch runs in a process of its own
        self.threads = None  # the thread count of the cases being built (for the peer)
        self.naive_images = naive_images
        self.naive_repeats = naive_repeats
        self._naive = {}

    @property
    def has_torch(self):
        return self.torch is not None or self.peer is not None

    def naive_reference(self, key, compute):
        """Naive results depend on (workload, dtype) only: compute them once per run."""
        if key not in self._naive:
            self._naive[key] = compute()
        return self._naive[key]


def load_torch(in_process=False, extra_env=None):
    """(torch module or None, TorchPeer or None, note or None).

    By default PyTorch runs in a peer process with the user's own environment
    (see ``peer`` for why). With ``in_process`` it is imported here;
    fastconv.fast is imported (at the top of this module) before it on purpose:
    the extension then binds the system's libgomp, as it does in a process
    without torch, and torch shares it. The other way round, the extension's
    OpenMP loops run on torch's bundled libgomp, configured before
    ``import fastconv`` could set it up (with spinning workers that slow fast down).
    ``extra_env`` is added to the peer's environment (``--keep-freed-memory``).
    """
    if in_process:
        try:
            import torch
        except (ImportError, OSError) as exc:
            return None, None, f"torch skipped: PyTorch is not importable ({exc})"
        return (
            torch,
            None,
            (
                "torch runs in this process, on fastconv's OpenMP runtime and settings "
                "(OMP_WAIT_POLICY etc.), not on its own"
            ),
        )
    from .peer import TorchPeer

    try:
        return None, TorchPeer(extra_env), None
    except ImportError as exc:
        return None, None, f"torch skipped: {exc}"


def sub_batch(N, k):
    """Indices of the naive sub-batch: the first k - 1 images and the last one."""
    k = max(1, min(k, N))
    return sorted(set(range(k - 1)) | {N - 1})


def build_case(name, spec, dtype, pass_, want, ctx):
    """(contenders, checks) of one case; ``want`` is the set of contender names to build."""
    if isinstance(spec, ConvSpec):
        return build_conv(name, spec, dtype, pass_, want, ctx)
    if isinstance(spec, PoolSpec):
        return build_pool(name, spec, dtype, pass_, want, ctx)
    if isinstance(spec, StepSpec):
        return build_step(name, spec, dtype, pass_, want, ctx)
    raise TypeError(f"unknown workload spec {spec!r}")


def _naive_contender(fn, N, idx, ctx):
    k = len(idx)
    return Contender(
        "naive",
        fn,
        scale=N / k,
        max_repeats=ctx.naive_repeats,
        rewarm=False,
        label=f"scaled x{N / k:g} from {k} image{'s' if k > 1 else ''}",
        info={"images_timed": k, "images": list(idx)},
    )


def _torch_contender(ctx, name, spec, data, dtype, pass_, names, reference):
    """The torch contender, its result checked against fast's (``reference``, already checked).

    "fwd" results hold the forward output only, so only the first name is compared.
    """
    if ctx.peer is not None:
        got, settings = ctx.peer.prepare(spec, dtype, pass_, ctx.threads)
        contender = Contender(
            "torch", ctx.peer.run, TORCH_POOL, self_timed=True, info={"process": "peer", "thread_settings": settings}
        )
    else:
        fn = torch_ops.BUILDERS[kind_of(spec)](ctx.torch, spec, data, pass_)
        got = torch_ops.as_numpy(fn())
        contender = Contender("torch", fn, TORCH_POOL, info={"process": "same"})
    worst = check_same(
        f"torch {name} {np.dtype(dtype).name} against fast", names, got, tuple(reference)[: len(got)], dtype
    )
    return contender, worst


# ===================================================================== convolution
def conv_fwdbwd(layers, x, w, b, dout, spec, algorithm="auto"):
    """Forward and backward of one convolution: (out, (dx, dw, db))."""
    out, cache = layers.conv_forward(x, w, b, stride=spec.stride, pad=spec.pad, algorithm=algorithm)
    return out, layers.conv_backward(dout, cache)


def conv_algorithm(x, w, b, spec, wanted):
    """The algorithm fast runs for ``wanted`` ("auto", "im2col", or "winograd" where
    Winograd can run and im2col elsewhere)."""
    try:
        return fast.conv_algorithm(x, w, b, stride=spec.stride, pad=spec.pad, algorithm=wanted)
    except ValueError:  # a convolution Winograd cannot run
        return "im2col"


def build_conv(name, spec, dtype, pass_, want, ctx):
    d = conv_data(spec, dtype)
    x, w, b, dout = d["x"], d["w"], d["b"], d["dout"]
    idx = sub_batch(spec.N, ctx.naive_images)
    xs, douts = x[idx], dout[idx]
    names = ("out", "dx", "dw", "db")

    def naive_ref():
        out, grads = conv_fwdbwd(naive, xs, w, b, douts, spec)
        return (out, *grads)

    ref = ctx.naive_reference((name, spec, np.dtype(dtype).name), naive_ref)
    algo = conv_algorithm(x, w, b, spec, ctx.algorithm)
    out, (dx, dw, db) = conv_fwdbwd(fast, x, w, b, dout, spec, algo)
    _, (_, dw_s, db_s) = conv_fwdbwd(fast, xs, w, b, douts, spec, algo)
    checks = {
        "fast": check_same(
            f"fast {name} {np.dtype(dtype).name} against naive on images {idx}",
            names,
            (out[idx], dx[idx], dw_s, db_s),
            ref,
            dtype,
        )
    }
    full = (out, dx, dw, db)

    if pass_ == "fwd":

        def fast_fn():
            return fast.conv_forward(x, w, b, stride=spec.stride, pad=spec.pad, algorithm=algo)

        def naive_fn():
            return naive.conv_forward(xs, w, b, stride=spec.stride, pad=spec.pad)
    else:

        def fast_fn():
            return conv_fwdbwd(fast, x, w, b, dout, spec, algo)

        def naive_fn():
            return conv_fwdbwd(naive, xs, w, b, douts, spec)

    contenders = [
        Contender("fast", fast_fn, FAST_POOLS, label="" if algo == "im2col" else algo, info={"algorithm": algo})
    ]
    if "naive" in want:
        contenders.append(_naive_contender(naive_fn, spec.N, idx, ctx))
        checks["naive"] = 0.0  # the reference itself
    if "gemm" in want:
        ops = prepare_conv_gemm(x, w, b, spec)
        if algo == "im2col":
            checks["gemm"] = check_conv_gemm(ops, x, b, dout, full, f"gemm {name}", dtype)
        else:  # the im2col path's GEMM limit, checked against the im2col path
            im2col = conv_fwdbwd(fast, x, w, b, dout, spec, "im2col")
            checks["gemm"] = check_conv_gemm(ops, x, b, dout, (im2col[0], *im2col[1]), f"gemm {name}", dtype)
        contenders.append(
            Contender(
                "gemm",
                lambda: conv_gemm_limit(ops, pass_),
                BLAS_POOL,
                label="" if algo == "im2col" else "im2col GEMMs",
                info={"chunk_images": ops.chunk, "workers": ops.plan.workers, "workspace_bytes": fast.WORKSPACE_BYTES},
            )
        )
    if "torch" in want and ctx.has_torch:
        contender, checks["torch"] = _torch_contender(ctx, name, spec, d, dtype, pass_, names, full)
        contenders.append(contender)
    return contenders, checks


# --------------------------------------------------------------------- the GEMM limit
@dataclass
class ConvGemmOperands:
    """Prepared operands of conv_gemm_limit: fast's plan, w2 and one set of workspaces per worker."""

    plan: object  # ConvPlan: chunks, workers, GEMM shapes
    w2: np.ndarray
    cols: list  # per worker: flat, K * chunk * P elements
    y: list  # per worker: flat, F * chunk * P elements: the forward's output
    dy: list  # per worker: flat, F * chunk * P elements: the backward's input

    @property
    def g(self):
        return self.plan.g

    @property
    def chunk(self):
        return self.plan.chunk


def prepare_conv_gemm(x, w, b, spec):
    """fast's plan for this convolution, and buffers for conv_gemm_limit's operands."""
    g = conv_geometry(x, w, b, spec.stride, spec.pad)
    dtype = x.dtype
    plan = ConvPlan(g, dtype)
    size_cols = plan.K * plan.chunk * plan.P
    size_y = g.F * plan.chunk * plan.P
    # Filled here so that their pages are touched before timing; check_conv_gemm puts real operands in.
    bufs = [
        (np.full(size_cols, 0.5, dtype=dtype), np.full(size_y, 0.5, dtype=dtype), np.full(size_y, 0.5, dtype=dtype))
        for _ in range(plan.workers)
    ]
    return ConvGemmOperands(
        plan,
        np.ascontiguousarray(w).reshape(g.F, plan.Kg),
        [c for c, _, _ in bufs],
        [y for _, y, _ in bufs],
        [d for _, _, d in bufs],
    )


def conv_gemm_limit(ops, pass_, hook=None, need_dx=True):
    """The GEMMs of fast.conv_forward (and fast.conv_backward), alone: what the fast
    path would cost if im2col, col2im, the output scatter and the dout gather were free.

    These are the engine's own chunk loops, ``ConvPlan.run_forward`` and
    ``run_backward`` (the same chunks, the same workers side by side on one BLAS
    thread each, the same GEMMs per group, the same partial sums of dw), fed with
    operands prepared once in per-worker buffers instead of im2col's ``cols`` and
    the gathered dout, with nothing done to their results.

    The backward reads ``dy`` from a buffer of its own, where the engine gathers dout
    into its ``y`` workspace: reading the forward's leftover ``y`` would feed each
    call's outputs back into the next call's inputs (``cols <- w2.T @ w2 @ cols``),
    and the values would grow geometrically until they overflow.

    ``hook`` (checks only, never timed) fills the buffers with real operands and
    collects the forward outputs, so ``check_conv_gemm`` can prove that these
    GEMMs compute the convolution.
    """
    plan = ops.plan
    K, F, P = plan.K, plan.g.F, plan.P

    def forward_operands(k, n0, n):
        cols, y = ops.cols[k][: K * n * P].reshape(K, n * P), ops.y[k][: F * n * P].reshape(F, n * P)
        if hook is not None:
            hook.forward(n0, n, cols)
        return cols, y

    def forward_done(n0, n, y):
        if hook is not None:
            hook.forward_done(n0, n, y)

    plan.run_forward(ops.w2, forward_operands, forward_done)
    if pass_ == "fwd":
        return ops.y[0]

    def backward_operands(k, n0, n, db):
        cols, dy = ops.cols[k][: K * n * P].reshape(K, n * P), ops.dy[k][: F * n * P].reshape(F, n * P)
        if hook is not None:
            hook.backward(n0, n, cols, dy)
        return cols, dy

    dw2, _ = plan.run_backward(ops.w2, backward_operands, need_dx, lambda n0, n, dcols: None)
    return dw2


def reference_im2col(x, g):
    """cols (C*kh*kw, n*out_h*out_w) of x (n, C, H, W) in numpy, independent of the extension.

    Row index c*kh*kw + i*kw + j (w.reshape(F, -1)'s order), column index
    image*P + oh*out_w + ow. Dilation 1 only (every benchmark workload).
    """
    if (g.dil_h, g.dil_w) != (1, 1):
        raise ValueError("reference_im2col supports dilation 1 only")
    xp = np.pad(x, ((0, 0), (0, 0), (g.pad_h, g.pad_h), (g.pad_w, g.pad_w)))
    win = sliding_window_view(xp, (g.kh, g.kw), axis=(2, 3))[:, :, :: g.stride_h, :: g.stride_w]
    win = win[:, :, : g.out_h, : g.out_w]  # (n, C, out_h, out_w, kh, kw)
    n = x.shape[0]
    return win.transpose(1, 4, 5, 0, 2, 3).reshape(g.C * g.kh * g.kw, n * g.out_h * g.out_w)


class _RealOperands:
    """conv_gemm_limit hook: real im2col matrices and gathered dout in the workspaces."""

    def __init__(self, x, dout, g):
        self.x, self.dout, self.g = x, dout, g
        self.P = g.out_h * g.out_w
        self.y_chunks = {}  # n0 -> (n, F, P); workers fill it in any order

    def forward(self, n0, n, cols):
        cols[...] = reference_im2col(self.x[n0 : n0 + n], self.g)

    def forward_done(self, n0, n, y):
        self.y_chunks[n0] = y.reshape(self.g.F, n, self.P).transpose(1, 0, 2).copy()

    def backward(self, n0, n, cols, dy):
        cols[...] = reference_im2col(self.x[n0 : n0 + n], self.g)
        dy[...] = self.dout[n0 : n0 + n].reshape(n, self.g.F, self.P).transpose(1, 0, 2).reshape(self.g.F, n * self.P)


def check_conv_gemm(ops, x, b, dout, fast_results, what, dtype):
    """Run the GEMM limit on real operands: its y must be fast's out (less the bias), its dw fast's dw."""
    hook = _RealOperands(x, dout, ops.g)
    dw2 = conv_gemm_limit(ops, "fwdbwd", hook)
    out_gemm = np.concatenate([hook.y_chunks[n0] for n0 in sorted(hook.y_chunks)]).reshape(ops.g.out_shape)
    if b is not None:
        out_gemm = out_gemm + b[:, None, None]
    out, _, dw, _ = fast_results
    return check_same(
        f"{what} {np.dtype(dtype).name} against fast",
        ("out", "dw"),
        (out_gemm, dw2.reshape(ops.g.w_shape)),
        (out, dw),
        dtype,
    )


# ===================================================================== pooling
def pool_fwdbwd(layers, spec, x, dout):
    out, cache = getattr(layers, f"{spec.mode}_pool_forward")(x, spec.k, spec.stride)
    return out, getattr(layers, f"{spec.mode}_pool_backward")(dout, cache)


def build_pool(name, spec, dtype, pass_, want, ctx):
    d = pool_data(spec, dtype)
    x, dout = d["x"], d["dout"]
    idx = sub_batch(spec.N, ctx.naive_images)
    xs, douts = x[idx], dout[idx]
    ref = ctx.naive_reference((name, spec, np.dtype(dtype).name), lambda: pool_fwdbwd(naive, spec, xs, douts))
    out, dx = pool_fwdbwd(fast, spec, x, dout)
    checks = {
        "fast": check_same(
            f"fast {name} {np.dtype(dtype).name} against naive on images {idx}",
            ("out", "dx"),
            (out[idx], dx[idx]),
            ref,
            dtype,
        )
    }

    if pass_ == "fwd":

        def fast_fn():
            return getattr(fast, f"{spec.mode}_pool_forward")(x, spec.k, spec.stride)

        def naive_fn():
            return getattr(naive, f"{spec.mode}_pool_forward")(xs, spec.k, spec.stride)
    else:

        def fast_fn():
            return pool_fwdbwd(fast, spec, x, dout)

        def naive_fn():
            return pool_fwdbwd(naive, spec, xs, douts)

    contenders = [Contender("fast", fast_fn, FAST_POOLS)]
    if "naive" in want:
        contenders.append(_naive_contender(naive_fn, spec.N, idx, ctx))
        checks["naive"] = 0.0
    if "gemm" in want:
        x_copy, out_copy = np.empty_like(x), np.empty_like(out)
        copy_fn = _copy_fn(x, x_copy, out, out_copy, pass_)
        copy_fn()  # touches the destination pages before timing
        copied = (x_copy, out_copy) if pass_ == "fwdbwd" else (x_copy,)
        checks["gemm"] = check_same(f"copy {name}", ("x copy", "out copy"), copied, (x, out), dtype)
        what = "np.copyto of x" + (" and of out" if pass_ == "fwdbwd" else "")
        contenders.append(Contender("gemm", copy_fn, frozenset(), label="copy", info={"what": what}))
    if "torch" in want and ctx.has_torch:
        contender, checks["torch"] = _torch_contender(ctx, name, spec, d, dtype, pass_, ("out", "dx"), (out, dx))
        contenders.append(contender)
    return contenders, checks


def _copy_fn(x, x_copy, out, out_copy, pass_):
    """The memory-bound reference of a pooling layer: copy x (fwd), copy x and the output (fwd+bwd)."""
    if pass_ == "fwd":

        def fn():
            np.copyto(x_copy, x)
            return x_copy

        return fn

    def fn():
        np.copyto(x_copy, x)
        np.copyto(out_copy, out)
        return x_copy

    return fn


# ===================================================================== ConvNet1 step
def convnet1_step(layers, p, x, y, spec, backward=True, record=None):
    """One ConvNet1 training step with ``layers`` (fastconv.fast or fastconv.naive).

    ``p`` holds the parameters under fastconv.models.ConvNet1's names: W1, b1 (conv),
    W2, b2 and W3, b3 (affine). Returns the loss, or (loss, (dW1, db1, dW2, db2, dW3, db3))
    with ``backward``.
    ``record`` (a dict, checks only) receives the intermediate arrays.
    """
    c = spec.conv
    if spec.layer_by_layer:  # three layer calls, as tutorial code writes them
        h1, k1 = layers.conv_forward(x, p["W1"], p["b1"], stride=c.stride, pad=c.pad)
        h2, k2 = layers.relu_forward(h1)
        h3, k3 = layers.max_pool_forward(h2, 2, 2)
    else:
        # conv -> ReLU -> max pool 2x2: one layer function (fast fuses the three, naive
        # runs them one after the other), as fastconv.models.ConvNet1 runs it.
        h3, c3 = layers.conv_relu_pool_forward(
            x, p["W1"], p["b1"], stride=c.stride, pad=c.pad, pool_size=2, pool_stride=2
        )
    h4, c4 = layers.affine_forward(h3, p["W2"], p["b2"])
    h5, c5 = layers.relu_forward(h4)
    scores, c6 = layers.affine_forward(h5, p["W3"], p["b3"])
    loss, dscores = layers.softmax_loss(scores, y)
    if not backward:
        return loss
    d5, dW3, db3 = layers.affine_backward(dscores, c6)
    d4 = layers.relu_backward(d5, c5)
    d3, dW2, db2 = layers.affine_backward(d4, c4)
    if spec.layer_by_layer:
        # the images need no gradient (docs/workloads.md: CS231n's conv_backward_fast computes it anyway)
        _, dW1, db1 = layers.conv_backward(
            layers.relu_backward(layers.max_pool_backward(d3, k3), k2), k1, need_dx=False
        )
    else:
        _, dW1, db1 = layers.conv_relu_pool_backward(d3, c3, need_dx=False)  # the images need no gradient
    if record is not None:
        # For the GEMM limit's check: the convolution's own output and incoming gradient,
        # from the three layers run separately (checks only, never timed).
        h1, k1 = layers.conv_forward(x, p["W1"], p["b1"], stride=c.stride, pad=c.pad)
        h2, k2 = layers.relu_forward(h1)
        _, k3 = layers.max_pool_forward(h2, 2, 2)
        d1 = layers.relu_backward(layers.max_pool_backward(d3, k3), k2)
        record.update(h1=h1, h3=h3, h4=h4, h5=h5, scores=scores, dscores=dscores, d5=d5, d4=d4, d3=d3, d1=d1)
    return loss, (dW1, db1, dW2, db2, dW3, db3)


def build_step(name, spec, dtype, pass_, want, ctx):
    d = step_data(spec, dtype)
    p = {k: d[k] for k in STEP_PARAMS}
    x, y = d["x"], d["y"]
    N = spec.conv.N
    idx = sub_batch(N, ctx.naive_images)
    xs, ys = x[idx], y[idx]
    names = ("loss", *(f"d{k}" for k in STEP_PARAMS))

    def naive_ref():
        loss, grads = convnet1_step(naive, p, xs, ys, spec)
        return (loss, *grads)

    ref = ctx.naive_reference((name, spec, np.dtype(dtype).name), naive_ref)
    loss_s, grads_s = convnet1_step(fast, p, xs, ys, spec)
    checks = {
        "fast": check_same(
            f"fast {name} {np.dtype(dtype).name} against naive on images {idx}", names, (loss_s, *grads_s), ref, dtype
        )
    }
    record = {}
    loss, grads = convnet1_step(fast, p, x, y, spec, record=record)
    full = (loss, *grads)
    backward = pass_ == "fwdbwd"

    contenders = [Contender("fast", lambda: convnet1_step(fast, p, x, y, spec, backward), FAST_POOLS)]
    if "naive" in want:
        contenders.append(_naive_contender(lambda: convnet1_step(naive, p, xs, ys, spec, backward), N, idx, ctx))
        checks["naive"] = 0.0
    if "gemm" in want:
        fn, worst = _step_gemm(spec, x, p, record, grads, pass_, dtype, name)
        checks["gemm"] = worst
        contenders.append(Contender("gemm", fn, BLAS_POOL, info={"what": "conv GEMMs + the six affine GEMMs"}))
    if "torch" in want and ctx.has_torch:
        contender, checks["torch"] = _torch_contender(ctx, name, spec, d, dtype, pass_, names, full)
        contender.info["note"] = "gradients of the parameters only (no gradient of the input images), as fast and naive"
        contenders.append(contender)
    return contenders, checks


def _step_gemm(spec, x, p, rec, grads, pass_, dtype, name):
    """The step's GEMM limit: the conv's GEMMs (conv_gemm_limit) and the affine layers' GEMMs."""
    conv = spec.conv
    ops = prepare_conv_gemm(x, p["W1"], p["b1"], conv)
    N = conv.N
    h3 = np.ascontiguousarray(rec["h3"]).reshape(N, -1)
    h5, ds, d4 = rec["h5"], rec["dscores"], rec["d4"]
    W2, W3 = p["W2"], p["W3"]
    bufs = {
        "a2": np.empty((N, W2.shape[1]), dtype),
        "a3": np.empty((N, W3.shape[1]), dtype),
        "d5": np.empty_like(h5),
        "dW3": np.empty_like(W3),
        "d3": np.empty_like(h3),
        "dW2": np.empty_like(W2),
    }

    def gemms(pass_):
        conv_gemm_limit(ops, pass_, need_dx=False)
        np.matmul(h3, W2, out=bufs["a2"])
        np.matmul(h5, W3, out=bufs["a3"])
        if pass_ == "fwdbwd":
            np.matmul(ds, W3.T, out=bufs["d5"])
            np.matmul(h5.T, ds, out=bufs["dW3"])
            np.matmul(d4, W2.T, out=bufs["d3"])
            np.matmul(h3.T, d4, out=bufs["dW2"])

    # fast's conv output h1 and dW1 (its dx and db are not GEMM results)
    worst = check_conv_gemm(ops, x, p["b1"], rec["d1"], (rec["h1"], None, grads[0], None), f"gemm {name} (conv)", dtype)
    gemms("fwdbwd")
    worst = max(
        worst,
        check_same(
            f"gemm {name} (affine) {np.dtype(dtype).name} against fast",
            ("affine W2 out", "affine W3 out", "d5", "dW3", "d3", "dW2"),
            (bufs["a2"] + p["b2"], bufs["a3"] + p["b3"], bufs["d5"], bufs["dW3"], bufs["d3"], bufs["dW2"]),
            (rec["h4"], rec["scores"], rec["d5"], grads[4], rec["d3"].reshape(N, -1), grads[2]),
            dtype,
        ),
    )
    return (lambda: gemms(pass_)), worst
