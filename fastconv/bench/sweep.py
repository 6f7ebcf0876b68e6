"""``fastconv bench --sweep``: how a 3x3 convolution scales with the batch and the channels.

3x3 kernel, stride 1, pad 1, 32x32 images: batch 1..256 at C = F = 64, and
channels C = F = 16..256 at batch 64. Contenders fast, gemm (the GEMM limit)
and torch, checked like the suite's (fast against naive on one image, the
last, so the last workspace chunk is covered; gemm and torch against fast).
"""

from __future__ import annotations

import time

import numpy as np

from .common import ConvSpec, MismatchError
from .contenders import build_conv
from .suite import progress
from .timing import run_interleaved, thread_limits

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CHANNELS = (16, 32, 64, 128, 256)


def sweep_points(quick=False):
    """[(series, ConvSpec)]: the batch series, then the channel series."""
    if quick:
        return [("batch", ConvSpec(n, 8, 8, 8, 8, 3, 1, 1)) for n in (1, 2)] + [
            ("channels", ConvSpec(2, c, 8, 8, c, 3, 1, 1)) for c in (4, 8)
        ]
    return [("batch", ConvSpec(n, 64, 32, 32, 64, 3, 1, 1)) for n in BATCHES] + [
        ("channels", ConvSpec(64, c, 32, 32, c, 3, 1, 1)) for c in CHANNELS
    ]


def run_sweep(points, ctx, dtype, threads, pass_, repeats, warmup, pause, results=None):
    results = [] if results is None else results
    want = {"gemm", "torch"}
    with thread_limits(threads, ctx.torch) as settings:
        ctx.threads = threads
        for i, (series, spec) in enumerate(points, 1):
            head = f"[{i}/{len(points)}] sweep {series}: N={spec.N} C=F={spec.C} {dtype} {threads}t {pass_}"
            t0 = time.perf_counter()
            try:
                contenders, checks = build_conv(
                    f"sweep-{series}-N{spec.N}-C{spec.C}", spec, np.dtype(dtype), pass_, want, ctx
                )
            except MismatchError as exc:
                raise MismatchError(f"{head}: {exc}") from exc
            timings = run_interleaved(contenders, repeats=repeats, warmup=warmup, pause=pause)
            progress(
                f"{head}: "
                + "  ".join(f"{k} {t.median / spec.N * 1e3:.3g} ms/img" for k, t in timings.items())
                + f"  ({time.perf_counter() - t0:.1f} s)"
            )
            results.append(
                {
                    "series": series,
                    "N": spec.N,
                    "C": spec.C,
                    "shapes": spec.describe(),
                    "dtype": dtype,
                    "threads": threads,
                    "pass": pass_,
                    "flops": spec.flops(pass_),
                    "requested_repeats": repeats,
                    "checks_max_rel_error": checks,
                    "thread_settings": settings,
                    "contenders": {k: t.as_dict() for k, t in timings.items()},
                }
            )
    return results
