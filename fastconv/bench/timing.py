"""Interleaved timing of contenders, and the thread settings they run under.

Rules (docs/workloads.md, "Measuring"): all contenders of one case run in
one process, in turn (A B C A B C ...), after a warm-up; the reported time
is the median of the repeats. OpenBLAS worker threads spin for about 0.1 s
after each call and slow down an OpenMP region or a PyTorch op started in
that window (and PyTorch's OpenMP workers spin the same way, in the peer
process too), so the runner sleeps ``pause`` seconds before a run whenever
the previous run was another contender that used a thread pool. An idle
pause leaves the next runs cold on some machines (the first runs after a
short sleep take several times as long), so after a pause the contender
runs untimed for ``rewarm_s`` seconds before its timed run
(``Contender.rewarm``): every contender is timed hot, as in a training loop,
where calls follow each other without idle gaps.
"""

from __future__ import annotations

import gc
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Contender:
    """One implementation of a case, ready to time.

    ``fn`` does the timed work only (operands prepared, results checked before);
    it returns its result, which is kept until the clock has stopped.
    """

    name: str
    fn: object
    pools: frozenset = frozenset()  # thread pools it uses: "blas", "openmp", "torch"
    scale: float = 1.0  # reported time = measured time * scale (naive: N / images timed)
    max_repeats: int | None = None
    label: str = ""  # shown next to the time, e.g. "scaled x32 from 2 images"
    info: dict = field(default_factory=dict)  # recorded in the JSON
    self_timed: bool = False  # fn returns its own duration in seconds (the torch peer process)
    rewarm: bool = True  # after a pause, run untimed for rewarm_s before the timed run (not for slow ones)


def spread(samples):
    """Interquartile range over median: how noisy the samples are (0 with fewer than 4)."""
    if len(samples) < 4:
        return 0.0
    q1, median, q3 = statistics.quantiles(samples, n=4)
    return (q3 - q1) / median if median > 0 else 0.0


@dataclass
class Timing:
    """Samples (seconds, already scaled) of one contender in one case."""

    name: str
    samples: list
    warmup: list
    scale: float
    label: str
    info: dict

    @property
    def median(self):
        return statistics.median(self.samples) if self.samples else None

    @property
    def repeats(self):
        return len(self.samples)

    @property
    def spread(self):
        return spread(self.samples)

    def as_dict(self):
        return {
            "median_s": self.median,
            "spread": self.spread,
            "samples_s": self.samples,
            "warmup_s": self.warmup,
            "repeats": self.repeats,
            "scale": self.scale,
            "label": self.label,
            **({"info": self.info} if self.info else {}),
        }


def run_interleaved(
    contenders,
    repeats=7,
    warmup=1,
    pause=0.2,
    slow_s=2.0,
    budget_s=12.0,
    min_repeats=3,
    noisy=0.10,
    extra_rounds=None,
    rewarm_s=0.1,
):
    """Time ``contenders`` in turn; returns {name: Timing}.

    Every contender runs ``warmup`` times, then ``repeats`` times, interleaved.
    A slow contender (its fastest run among the warm-up and the first
    repeat above ``slow_s``) gets only ``budget_s / run`` repeats, and at
    least ``min_repeats``; ``Contender.max_repeats`` caps it too.
    On a shared machine a burst of load from elsewhere spoils a few runs in a
    row: while some contender's samples spread more than ``noisy``
    (interquartile range / median), up to ``extra_rounds`` (default
    ``repeats``) more rounds of the contenders that are not slow are taken, so
    the median can come from the calm stretch. The number of repeats actually
    taken is in the result, to be reported.
    """
    state = {"last": None}

    def timed(c):
        last = state["last"]
        if pause and last is not None and last is not c and last.pools:
            time.sleep(pause)
            if c.rewarm:
                start = time.perf_counter()
                while True:
                    c.fn()
                    if time.perf_counter() - start >= rewarm_s:
                        break
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = c.fn()
            elapsed = time.perf_counter() - t0
        finally:
            if gc_was_on:
                gc.enable()
        if c.self_timed:
            elapsed = result
        del result
        state["last"] = c
        return elapsed * c.scale

    warm = {c.name: [] for c in contenders}
    for _ in range(warmup):
        for c in contenders:
            warm[c.name].append(timed(c))
    samples = {c.name: [] for c in contenders}
    target = {c.name: repeats if c.max_repeats is None else min(repeats, c.max_repeats) for c in contenders}
    while True:
        todo = [c for c in contenders if len(samples[c.name]) < target[c.name]]
        if not todo:
            break
        for c in todo:
            samples[c.name].append(timed(c))
            if len(samples[c.name]) == 1:  # the fastest run so far decides (one noisy run must not)
                _limit_slow(c, target, min(warm[c.name] + samples[c.name]), slow_s, budget_s, min_repeats)
    steady = [c for c in contenders if target[c.name] == repeats]
    for _ in range(repeats if extra_rounds is None else extra_rounds):
        if not any(spread(samples[c.name]) > noisy for c in steady):
            break
        for c in steady:
            samples[c.name].append(timed(c))
    return {c.name: Timing(c.name, samples[c.name], warm[c.name], c.scale, c.label, c.info) for c in contenders}


def _limit_slow(c, target, seconds, slow_s, budget_s, min_repeats):
    run_s = seconds / c.scale  # the time one run really takes
    if run_s > slow_s:
        affordable = max(min_repeats, int(budget_s / run_s))
        target[c.name] = max(1, min(target[c.name], affordable))


@contextmanager
def thread_limits(n, torch=None):
    """BLAS, OpenMP and PyTorch threads all set to ``n`` inside the block.

    threadpoolctl covers numpy's OpenBLAS and the OpenMP runtime that the
    extension's ``prange`` loops use (one libgomp per process: with PyTorch
    loaded it is PyTorch's copy); ``torch.set_num_threads`` covers PyTorch's
    own pools. Yields threadpoolctl's view of the libraries, for the record.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    old_torch = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n):
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield {
                "requested": n,
                "threadpools": [
                    {k: p.get(k) for k in ("user_api", "internal_api", "prefix", "num_threads")}
                    for p in threadpool_info()
                ],
                "torch": torch.get_num_threads() if torch is not None else None,
            }
        finally:
            if torch is not None:
                torch.set_num_threads(old_torch)
