"""The roofline of a benchmark run: this machine's floating-point peak and memory bandwidth,
measured on the threads the suite uses before a run's cases (the peak again after them,
``measure_again``: the larger counts), and the fraction of that peak each convolution
reaches.

* Peak: the kernel of fastconv/kernels/peak.pxi (independent chains of FMA, or of
  separate multiplies and adds, on vectors as wide as the build), from the widest build of
  the kernels that this CPU and install can run (the machine's peak, whichever build the
  engine runs), one call per thread on fastconv's worker threads (``engine.threads.run``,
  the threads a convolution runs on): the best of 15 runs of 2 ms (short enough that on a
  shared machine some runs find every thread on a core of its own) among those whose
  threads really ran side by side, each on a core (``side_by_side``), timed from the first
  thread's start to the last one's end. None when no run did: a busy machine.
* Bandwidth: a copy of ``COPY_BYTES`` (``np.copyto``, split over the same threads), the
  best of a few; GB/s counts the bytes read and the bytes written (as STREAM's Copy does).

The fraction of peak of a convolution is its GFLOP/s (``spec.flops(pass_)`` over the
median time) over the peak of the same dtype and thread count: the FMA peak where the
CPU has FMA (what OpenBLAS and PyTorch run), the mul+add peak elsewhere; ``uses`` says
which.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..engine import threads as _threads

#: Bytes of the bandwidth copy (and the same again for its destination): far beyond the caches.
COPY_BYTES = 256 << 20
#: --quick: a smoke test, its numbers mean nothing; this keeps it fast.
QUICK_COPY_BYTES = 16 << 20

#: Each timed peak run lasts at least this long (seconds), best of PEAK_REPEATS.
PEAK_MIN_S = 0.002
PEAK_REPEATS = 15
#: How long to go on trying (seconds) while no run of several threads ran side by side.
PEAK_BUDGET_S = 0.5
COPY_REPEATS = 3
QUICK = {"min_s": 0.0005, "repeats": 3, "budget_s": 0.03, "copy_repeats": 1}

#: The kernel's chains start at 1 + k/1024, are multiplied by 1 and grow by 2**-20 a step:
#: no denormal, no overflow, however long the run.
_START, _STEP, _MUL, _ADD = 1.0, 2.0**-10, 1.0, 2.0**-20


def peak_build():
    """(isa, module): the widest build of the kernels this CPU and install can run."""
    from ..kernels import picker

    runnable = [(isa, module) for isa, (module, _) in picker.builds().items() if module is not None]
    return runnable[-1]  # builds() lists them narrowest first


def _timed(threads, work):
    """Seconds for ``work(k)`` on ``threads`` worker threads, side by side, and their results."""
    t0 = time.perf_counter()
    results = _threads.run(threads, False, work)
    return time.perf_counter() - t0, results


def peak_gflops(module, dtype, threads, fused, min_s=PEAK_MIN_S, repeats=PEAK_REPEATS, budget_s=PEAK_BUDGET_S):
    """GFLOP/s of the peak kernel of ``module`` in ``dtype`` on ``threads`` threads, or None
    when the threads never ran side by side. Each thread's run is lengthened (on the calling
    thread alone, so that a slow hand-off to a worker cannot cut it short) until it lasts
    ``min_s``; then the best of ``repeats`` runs whose threads ran side by side, each timed
    from the first thread's start to the last one's end: at most 2 x ``repeats`` tries, or
    more for up to ``budget_s`` seconds while none has."""
    outs = [np.zeros(1, dtype=dtype) for _ in range(threads)]

    def kernel(k, iters):
        t0, c0 = time.perf_counter(), time.thread_time()
        flops = module.peak_run(outs[k], _START, _STEP, _MUL, _ADD, iters, fused)
        return t0, time.perf_counter(), time.thread_time() - c0, flops

    def alone(iters):
        start, end, _, _ = kernel(0, iters)
        return end - start

    iters = 256
    seconds = alone(iters)
    while seconds < min_s:
        # grow towards min_s (at most 16x a step: the first runs are too short to time well)
        iters = int(iters * min(16.0, max(2.0, 1.5 * min_s / max(seconds, 1e-7))))
        seconds = alone(iters)
    best, counted, tries = 0.0, 0, 0
    deadline = time.perf_counter() + budget_s
    while counted < repeats and (tries < 2 * repeats or (not counted and time.perf_counter() < deadline)):
        tries += 1
        spans = _threads.run(threads, False, lambda k: kernel(k, iters))
        if side_by_side(spans):
            first, last = min(s[0] for s in spans), max(s[1] for s in spans)
            best = max(best, sum(s[3] for s in spans) / (last - first))
            counted += 1
    return best / 1e9 if counted else None


#: A run of the peak kernel counts when each thread ran on a core (its CPU time) for at
#: least this share of its span, and its span overlaps all the others' for as much. On a
#: busy machine the kernel often wakes a worker onto the core its caller runs on, and the
#: two run one after the other, or take turns: one core's peak, not two.
SIDE_BY_SIDE = 0.9


def side_by_side(spans):
    """Whether the threads of a run, each (start, end, CPU seconds, ...), ran side by side."""
    start, end = max(s[0] for s in spans), min(s[1] for s in spans)
    return all(end - start >= SIDE_BY_SIDE * (s[1] - s[0]) and s[2] >= SIDE_BY_SIDE * (s[1] - s[0]) for s in spans)


def copy_bandwidth(thread_counts, nbytes=COPY_BYTES, repeats=COPY_REPEATS):
    """{threads: GB/s} of ``np.copyto`` of ``nbytes`` split over each of ``thread_counts``
    (bytes read + bytes written over the best time); the first copy, which faults the
    pages in, is not timed."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)

    def copy_on(threads):
        bounds = [src.size * k // threads for k in range(threads + 1)]
        return _timed(threads, lambda k: np.copyto(dst[bounds[k] : bounds[k + 1]], src[bounds[k] : bounds[k + 1]]))[0]

    copy_on(1)
    return {str(n): 2 * src.nbytes / min(copy_on(n) for _ in range(repeats)) / 1e9 for n in thread_counts}


def measure(dtypes, thread_counts, quick=False):
    """The roofline of this run: the peaks of ``dtypes`` (names) on each of ``thread_counts``,
    FMA and mul+add, and the copy bandwidth on each thread count (a JSON-able dict)."""
    t0 = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # a busy machine lowers the peak
    isa, module = peak_build()
    info = module.peak_info()
    fused = _fused(module)
    opts = _opts(quick)
    peaks = _peaks(module, dtypes, thread_counts, fused, opts)
    copy_bytes = QUICK_COPY_BYTES if quick else COPY_BYTES
    bandwidth = copy_bandwidth(thread_counts, copy_bytes, opts["copy_repeats"])
    return {
        "build": isa,
        "debug_build": module.build_info()["debug_build"],
        "vector_bits": info["vector_bits"],
        "chains": info["chains"],
        "fma": info["fma"],
        "uses": "fma" if info["fma_ready"] else "mul_add",
        "peak_gflops": peaks,
        "bandwidth_gbs": bandwidth,
        "copy_bytes": copy_bytes,
        "seconds": time.perf_counter() - t0,
        "load_average": load,
    }


def _opts(quick):
    if quick:
        return QUICK
    return {"min_s": PEAK_MIN_S, "repeats": PEAK_REPEATS, "budget_s": PEAK_BUDGET_S, "copy_repeats": COPY_REPEATS}


def _peaks(module, dtypes, thread_counts, fused, opts):
    """{dtype: {threads: {"fma"/"mul_add": GFLOP/s or None}}} of the peak kernel."""
    peaks = {}
    for dtype in dtypes:
        for n in thread_counts:
            peaks.setdefault(dtype, {})[str(n)] = {
                ("fma" if f else "mul_add"): peak_gflops(
                    module, np.dtype(dtype), n, f, opts["min_s"], opts["repeats"], opts["budget_s"]
                )
                for f in fused
            }
    return peaks


def measure_again(roofline, quick=False):
    """The roofline with its peaks measured once more (after a suite's cases): each peak
    becomes the larger of the two, since on a shared host a neighbour's load can only lower
    a measured peak, and a peak measured in a busy minute would put a later, quieter row
    above 100 %. Both measurements stay in ``peak_runs`` (before, after)."""
    if not roofline:
        return roofline
    isa, module = peak_build()
    before = roofline["peak_gflops"]
    counts = sorted({int(n) for by_n in before.values() for n in by_n})
    after = _peaks(module, list(before), counts, _fused(module), _opts(quick))
    best = {
        dtype: {
            n: {kind: _larger(v, after[dtype][n][kind]) for kind, v in by_kind.items()} for n, by_kind in by_n.items()
        }
        for dtype, by_n in before.items()
    }
    return {**roofline, "peak_gflops": best, "peak_runs": [before, after]}


def _larger(a, b):
    return a if b is None else b if a is None else max(a, b)


def _fused(module):
    return [True, False] if module.peak_info()["fma_ready"] else [False]


def peak_of(roofline, dtype, threads):
    """The peak GFLOP/s that fractions of ``dtype`` on ``threads`` threads use, or None."""
    try:
        return roofline["peak_gflops"][dtype][str(threads)][roofline["uses"]]
    except (KeyError, TypeError):
        return None


def fraction(flops, seconds, peak):
    """The fraction of ``peak`` (GFLOP/s) reached by ``flops`` operations in ``seconds``;
    None when one of them is missing or not positive."""
    if not flops or not seconds or not peak or seconds <= 0 or peak <= 0:
        return None
    return flops / seconds / 1e9 / peak


def annotate(results, roofline):
    """Add ``peak_gflops`` and ``fraction_of_peak`` ({contender: fraction}) to each result
    that has a FLOP count (the convolutions), from its median times."""
    for r in results:
        peak = peak_of(roofline, r["dtype"], r["threads"])
        if not r.get("flops") or peak is None:
            continue
        r["peak_gflops"] = peak
        r["fraction_of_peak"] = {name: fraction(r["flops"], t["median_s"], peak) for name, t in r["contenders"].items()}
    return results


def fmt_fraction(f):
    """'31%', '4.2%', or '' for None."""
    if f is None:
        return ""
    pct = 100 * f
    return f"{pct:.0f}%" if pct >= 9.95 else f"{pct:.1f}%"


def _gflops(value):
    return "n/a (its threads never ran side by side)" if value is None else f"{value:,.0f}"


def _short(value):
    return "n/a" if value is None else f"{value:,.0f}"


def above_peak(results):
    """The (workload, pass, contender) of each row that ran above 100 % of the peak: the
    host was busier while the peak was measured than while that row ran."""
    return [
        (r.get("workload") or f"sweep {r.get('series')} N={r.get('N')} C={r.get('C')}", r["pass"], name)
        for r in results
        for name, f in r.get("fraction_of_peak", {}).items()
        if f is not None and f > 1.0
    ]


def describe(roofline):
    """One paragraph for the top of a report: the peaks, the bandwidth, how they were measured."""
    if not roofline:
        return "Roofline: not measured."
    uses = "FMA" if roofline["uses"] == "fma" else "mul+add (no FMA on this CPU or build)"
    parts = []
    for dtype, by_threads in roofline["peak_gflops"].items():
        cells = []
        for n, p in by_threads.items():
            cell = f"{n} thread{'s' * (n != '1')} {_gflops(p.get('fma', p['mul_add']))}"
            if "fma" in p and (p["fma"], p["mul_add"]) != (None, None):
                cell += f" (mul+add {_gflops(p['mul_add'])})"
            cells.append(cell)
        parts.append(f"{dtype} " + ", ".join(cells))
    load = roofline.get("load_average")
    load = f" (1-minute load average {load:.1f} before)" if load is not None else ""
    bw = ", ".join(f"{n} thread{'s' * (n != '1')} {v:,.1f}" for n, v in roofline["bandwidth_gbs"].items())
    debug = ", a DEBUG build at -O0: far below the machine's peak" if roofline.get("debug_build") else ""
    runs = roofline.get("peak_runs")
    if runs:
        kind = roofline["uses"]
        pairs = ", ".join(
            f"{dtype} {n} thread{'s' * (n != '1')} {_short(by_n[kind])} / {_short(runs[1][dtype][n][kind])}"
            for dtype, d in runs[0].items()
            for n, by_n in d.items()
        )
        parts.append(f"each the larger of two measurements, before the cases / after them: {pairs}")
    return (
        f"Roofline: peak GFLOP/s ({uses}; {roofline['build']} build{debug}, {roofline['vector_bits']}-bit vectors, "
        f"{roofline['chains']} chains per thread): {'; '.join(parts)}. Copy bandwidth GB/s "
        f"(np.copyto of {roofline['copy_bytes'] >> 20} MiB, read + write): {bw}. "
        f"Measured in {roofline['seconds']:.2f} s{load}; %peak columns use the {uses.split(' ')[0]} peak."
    )
