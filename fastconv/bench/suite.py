"""The main benchmark run: every selected case, its checks, its interleaved timings."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from .common import WORKLOADS, MismatchError
from .contenders import build_case
from .timing import run_interleaved, thread_limits


@dataclass(frozen=True)
class Case:
    workload: str
    dtype: str
    threads: int
    pass_: str
    contenders: frozenset  # names to build ("fast" always)


def plan(workloads, dtypes, threads, passes, contenders, naive_policy):
    """The cases in running order: grouped by thread count, then dtype, workload and pass.

    naive_policy: "none"; "default": W1conv fwdbwd of each dtype, at the largest
    thread count only (the loops use one thread whatever the setting); "all".
    """
    cases = []
    for n in threads:
        for dtype in dtypes:
            for name in workloads:
                for pass_ in passes:
                    names = set(contenders) | {"fast"}
                    naive = naive_policy == "all" or (
                        naive_policy == "default" and name == "W1conv" and pass_ == "fwdbwd" and n == max(threads)
                    )
                    if not naive:
                        names.discard("naive")
                    cases.append(Case(name, dtype, n, pass_, frozenset(names)))
    return cases


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


def run_suite(cases, ctx, repeats, warmup, pause, quick=False, results=None):
    """Run ``cases``; returns the list of result dicts (appended to ``results`` as they come,
    so that a caller keeps the finished cases when a later one fails its check)."""
    results = [] if results is None else results
    order = {"fast": 0, "gemm": 1, "torch": 2, "naive": 3}
    by_threads = {}
    for case in cases:
        by_threads.setdefault(case.threads, []).append(case)
    done = 0
    for n, group in by_threads.items():
        with thread_limits(n, ctx.torch) as settings:
            ctx.threads = n
            for case in group:
                done += 1
                spec = WORKLOADS[case.workload]
                spec = spec.quick() if quick else spec
                head = f"[{done}/{len(cases)}] {case.workload} {case.dtype} {n} thread{'s' * (n > 1)} {case.pass_}"
                t0 = time.perf_counter()
                try:
                    contenders, checks = build_case(
                        case.workload, spec, np.dtype(case.dtype), case.pass_, case.contenders, ctx
                    )
                except MismatchError as exc:
                    raise MismatchError(f"{head}: {exc}") from exc
                contenders.sort(key=lambda c: order.get(c.name, 9))
                progress(f"{head}: checked {', '.join(sorted(checks))}; timing {' '.join(c.name for c in contenders)}")
                timings = run_interleaved(contenders, repeats=repeats, warmup=warmup, pause=pause)
                progress(
                    "    "
                    + "  ".join(f"{k} {t.median * 1e3:,.3g} ms" for k, t in timings.items())
                    + f"  ({time.perf_counter() - t0:.1f} s)"
                )
                results.append(
                    {
                        "workload": case.workload,
                        "dtype": case.dtype,
                        "threads": n,
                        "pass": case.pass_,
                        "shapes": spec.describe(),
                        "flops": spec.flops(case.pass_),
                        "checks_max_rel_error": checks,
                        "thread_settings": settings,
                        "contenders": {k: t.as_dict() for k, t in timings.items()},
                    }
                )
    return results
