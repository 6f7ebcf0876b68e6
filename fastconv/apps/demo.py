"""``fastconv demo``: naive against fast convolution on a CIFAR-10-sized batch.

The workload is W1conv of docs/workloads.md: x (64, 3, 32, 32), w (32, 3, 7, 7),
stride 1, pad 3, forward + backward. The naive loops are timed on a sub-batch
and scaled to the full batch (they take minutes on all 64 images); the fast
path is timed on the full batch, after checking that it matches the naive
result on the sub-batch.
"""

import time

import numpy as np


def add_arguments(parser):
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the fast run (default 64)")
    parser.add_argument(
        "--naive-batch", type=int, default=2, help="images timed with the naive loops, scaled to --batch (default 2)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="fast-path repeats; the median is shown")


def _fwd_bwd(layers, x, w, b, dout):
    out, cache = layers.conv_forward(x, w, b, stride=1, pad=3)
    return out, layers.conv_backward(dout, cache)


def run(args):
    from .. import fast, naive
    from ..testing import rel_error, tol

    if args.batch < 1 or not 1 <= args.naive_batch <= args.batch or args.repeats < 1:
        raise ValueError("need --batch >= 1, 1 <= --naive-batch <= --batch and --repeats >= 1")
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 32, 32)).astype(dtype)
    w = (rng.standard_normal((32, 3, 7, 7)) * 0.1).astype(dtype)
    b = rng.standard_normal(32).astype(dtype)
    dout = rng.standard_normal((args.batch, 32, 32, 32)).astype(dtype)
    k = args.naive_batch
    print(f"W1conv: x {x.shape}, w {w.shape}, stride 1, pad 3, {dtype.name}, forward + backward")

    t0 = time.perf_counter()
    ref_out, ref_grads = _fwd_bwd(naive, x[:k], w, b, dout[:k])
    naive_s = (time.perf_counter() - t0) * args.batch / k
    out, grads = _fwd_bwd(fast, x[:k], w, b, dout[:k])
    for name, a, r in zip(("out", "dx", "dw", "db"), (out, *grads), (ref_out, *ref_grads)):
        err = rel_error(a, r)
        if not err < tol(dtype):
            raise RuntimeError(f"fast {name} differs from naive: relative error {err:.2e}")

    times = []
    for _ in range(args.repeats + 1):  # the first run warms up
        t0 = time.perf_counter()
        _fwd_bwd(fast, x, w, b, dout)
        times.append(time.perf_counter() - t0)
    fast_s = float(np.median(times[1:]))
    print(f"naive: {naive_s * 1e3:12.1f} ms  (timed on {k} images, scaled to {args.batch})")
    print(f"fast : {fast_s * 1e3:12.2f} ms  (median of {args.repeats}; matches naive)")
    print(f"fast is {naive_s / fast_s:,.0f}x faster than naive")
    return 0
