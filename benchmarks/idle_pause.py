"""The first call after an idle pause against steady state (issue 20, item 4; docs/performance.md,
"After an idle pause"): a developer script, ``python benchmarks/idle_pause.py``.

For each workload (the fast contender of ``fastconv bench``, forward + backward, float32, on
``--threads`` threads), in rounds, interleaved: a warm burst of ``--burst`` seconds, one timed
call ("steady"), then ``time.sleep(--pause)`` and one timed call ("paused"). Prints the
medians with their interquartile range, the median of the rounds' paused/steady ratios, and
how often a worker task started on the vCPU its caller was on (``sched_getcpu``, Linux). Run
it on an otherwise idle machine: on a busy one, steady state itself is slow and noisy.
"""

import argparse
import ctypes
import os
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastconv.bench.common import WORKLOADS
from fastconv.bench.contenders import Context, build_case
from fastconv.engine import threads


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="W1conv,W2conv3x3,W1step", help="comma-separated (default %(default)s)")
    p.add_argument("--rounds", type=int, default=11, help="rounds, at least 3 (default %(default)s)")
    p.add_argument("--pause", type=float, default=0.3, help="seconds asleep before a paused call (default %(default)s)")
    p.add_argument(
        "--burst", type=float, default=0.1, help="seconds of calls before a steady one (default %(default)s)"
    )
    p.add_argument("--threads", type=int, default=2, help="threads (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test (numbers mean nothing)")
    args = p.parse_args(argv)
    names = [n for n in args.workloads.split(",") if n]
    bad = [n for n in names if n not in WORKLOADS]
    if bad or not names:
        p.error(f"--workloads: unknown {', '.join(bad) or '(none)'}; choose among {', '.join(WORKLOADS)}")
    if args.rounds < 3 or args.pause < 0 or args.burst < 0 or args.threads < 1:
        p.error("need --rounds >= 3, --pause >= 0, --burst >= 0 and --threads >= 1")
    args.names = names
    return args


class Placement:
    """Counts the worker tasks of ``threads.run`` that start on their caller's CPU."""

    def __init__(self):
        libc = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
        self.getcpu = getattr(libc, "sched_getcpu", None)
        self.shared = self.tasks = 0
        self._run = threads.run

    def __enter__(self):
        if self.getcpu is not None:
            threads.run = self.run
        return self

    def __exit__(self, *exc):
        threads.run = self._run

    def run(self, workers, one_blas_thread, work):
        caller = self.getcpu()

        def task(k):
            if k > 0:
                self.tasks += 1
                self.shared += self.getcpu() == caller
            return work(k)

        return self._run(workers, one_blas_thread, task)


def main(argv=None):
    args = parse_args(argv)
    ctx = Context()
    ctx.threads = args.threads
    calls = {}
    with threadpool_limits(args.threads), Placement() as place:
        for name in args.names:
            spec = WORKLOADS[name].quick() if args.quick else WORKLOADS[name]
            contenders, _ = build_case(name, spec, np.dtype(np.float32), "fwdbwd", {"fast"}, ctx)
            calls[name] = next(c.fn for c in contenders if c.name == "fast")
        times = {(name, kind): [] for name in calls for kind in ("steady", "paused")}
        shared = {key: [0, 0] for key in times}

        def timed(name, kind):
            before = place.shared, place.tasks
            t0 = time.perf_counter()
            calls[name]()
            times[name, kind].append(time.perf_counter() - t0)
            shared[name, kind][0] += place.shared - before[0]
            shared[name, kind][1] += place.tasks - before[1]

        for _ in range(args.rounds):
            for name, fn in calls.items():
                start = time.perf_counter()
                while time.perf_counter() - start < args.burst:
                    fn()
                timed(name, "steady")
                time.sleep(args.pause)
                timed(name, "paused")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.rounds} rounds, pause {args.pause} s, {args.threads} threads, float32 fwd+bwd; "
        f"1-minute load average {load:.1f} at the end"
    )
    print(
        "| workload | steady ms (IQR) | paused ms (IQR) | paused/steady, median of rounds | "
        "worker on caller's CPU, steady / paused |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in calls:
        cells = []
        for kind in ("steady", "paused"):
            ms = [1e3 * t for t in times[name, kind]]
            q1, med, q3 = statistics.quantiles(ms, n=4)
            cells.append(f"{statistics.median(ms):.3g} ({q1:.3g}-{q3:.3g})")
        ratio = statistics.median(p / s for s, p in zip(times[name, "steady"], times[name, "paused"]))
        where = " / ".join(f"{a}/{b}" for a, b in (shared[name, "steady"], shared[name, "paused"]))
        print(f"| {name} | {cells[0]} | {cells[1]} | {ratio:.3f} | {where if place.getcpu else 'n/a'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
