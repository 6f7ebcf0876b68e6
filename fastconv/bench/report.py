"""Results as a Markdown table, a JSON file and a PNG chart."""

from __future__ import annotations

import json
import math
import os

from ..io.files import atomic_write
from .roofline import fmt_fraction

CONTENDERS = ("fast", "gemm", "torch", "naive")


def fmt_ms(seconds):
    if seconds is None:
        return ""
    ms = seconds * 1e3
    return f"{ms:,.0f}" if ms >= 1000 else f"{ms:.3g}"


def fmt_ratio(r):
    if r is None or not math.isfinite(r):
        return ""
    return f"{r:,.0f}" if r >= 100 else f"{r:.2f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def _cell(timing, requested_repeats):
    """'53.1', or '16,600 (scaled x32 from 2 images, n=3)' when scaled or with another number of repeats."""
    if timing is None:
        return "-"
    notes = [timing["label"]] if timing.get("label") else []
    if timing["repeats"] != requested_repeats:
        notes.append(f"n={timing['repeats']}")
    return fmt_ms(timing["median_s"]) + (f" ({', '.join(notes)})" if notes else "")


def suite_table(results, requested_repeats):
    """The Markdown table of a suite run: one row per case."""
    head = [
        "workload",
        "dtype",
        "threads",
        "pass",
        "fast ms",
        "gemm ms",
        "torch ms",
        "naive ms",
        "fast GFLOP/s",
        "gemm GFLOP/s",
        "torch GFLOP/s",
        *PEAK_HEAD,
        "fast/torch",
        "fast/gemm",
        "naive/fast",
        "spread",
    ]
    rows = [head, ["---"] * len(head)]
    for r in results:
        c = r["contenders"]
        med = {k: (c[k]["median_s"] if k in c else None) for k in CONTENDERS}

        def gflops(k, r=r, med=med):  # this row's r and med, bound now
            return f"{r['flops'] / med[k] / 1e9:.1f}" if r.get("flops") and med[k] else ""

        rows.append(
            [
                r["workload"],
                r["dtype"],
                str(r["threads"]),
                r["pass"],
                *(_cell(c.get(k), requested_repeats) for k in CONTENDERS),
                gflops("fast"),
                gflops("gemm"),
                gflops("torch"),
                *_peak_cells(r),
                fmt_ratio(ratio(med["fast"], med["torch"])),
                fmt_ratio(ratio(med["fast"], med["gemm"])),
                fmt_ratio(ratio(med["naive"], med["fast"])),
                _spread(c),
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


#: The fraction-of-peak columns (fastconv/bench/roofline.py), in CONTENDERS order.
PEAK_HEAD = ["fast %peak", "gemm %peak", "torch %peak"]


def _peak_cells(r):
    """fast's, gemm's and torch's fraction of the machine's peak (``roofline.annotate``)."""
    fractions = r.get("fraction_of_peak", {})
    return [fmt_fraction(fractions.get(k)) for k in ("fast", "gemm", "torch")]


def _spread(contenders):
    """The largest interquartile range / median among the contenders, in percent."""
    worst = max((t.get("spread", 0.0) for t in contenders.values()), default=0.0)
    return f"{worst * 100:.0f}%"


SUITE_LEGEND = (
    "Times are medians in milliseconds of interleaved repeats after a warm-up, in one process. "
    "Ratios are ratios of median times: fast/torch < 1 and fast/gemm close to 1 mean fast is "
    "ahead; naive/fast is the speed-up over the reference loops. "
    "gemm: the GEMMs the fast path calls, alone on prepared operands (for pooling, "
    "'copy': a plain copy of x, and of the output too for fwdbwd, the memory-bound floor). "
    "naive: timed on a sub-batch and scaled linearly to the full batch. "
    "n=: another number of repeats than asked: fewer for a slow contender, more (up to twice) "
    "when the samples were noisy. "
    "%peak: GFLOP/s (the convolution's FLOPs, 2*N*F*C*kh*kw*out_h*out_w forward, three times that "
    "for fwdbwd, over the median time) as a share of the machine's peak in the same dtype on the same "
    "threads (the Roofline line above: the FMA peak where the CPU has FMA). "
    "spread: the largest interquartile range / median among the row's contenders "
    "(above ~10 %, the machine was busy: rerun before trusting a ratio close to a target). "
    "fwdbwd: forward plus the backward pass returning every gradient "
    "(W1step in torch: the parameters' gradients only)."
)


def write_json(path, doc):
    """Write ``doc`` to ``path`` atomically (fastconv.io.files), its folder made if need be;
    numpy scalars, sets and tuples become JSON numbers and lists."""
    text = json.dumps(doc, indent=1, default=_jsonable) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _jsonable(obj):
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def load_pyplot():
    """matplotlib.pyplot with a file-only backend, or (None, a note) when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, "chart skipped: matplotlib is not installed (pip install 'fastconv[bench]')"
    return plt, None


def _save(fig, plt, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    finally:
        plt.close(fig)


def suite_chart(results, path, title):
    """Horizontal bars, log-scale milliseconds, one group per case. Returns a note, or None."""
    plt, note = load_pyplot()
    if plt is None:
        return note
    colors = {"fast": "tab:blue", "gemm": "tab:gray", "torch": "tab:orange", "naive": "tab:red"}
    present = [k for k in CONTENDERS if any(k in r["contenders"] for r in results)]
    height = len(present) + 1
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.22 * height * len(results)))
    labels, ticks = [], []
    for i, r in enumerate(results):
        base = i * height
        for j, k in enumerate(present):
            t = r["contenders"].get(k)
            if t is not None:
                ax.barh(base + j, t["median_s"] * 1e3, color=colors[k])
        ticks.append(base + (len(present) - 1) / 2)
        labels.append(f"{r['workload']} {r['dtype']} {r['threads']}t {r['pass']}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in present]
    ax.legend(handles, present, loc="lower right", fontsize=8)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per batch (ms, log scale; naive scaled from a sub-batch)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    _save(fig, plt, path)
    return None


def sweep_table(points):
    head = [
        "series",
        "N",
        "C=F",
        "fast ms/img",
        "gemm ms/img",
        "torch ms/img",
        "fast GFLOP/s",
        "gemm GFLOP/s",
        "torch GFLOP/s",
        *PEAK_HEAD,
        "fast/torch",
        "fast/gemm",
    ]
    rows = [head, ["---"] * len(head)]
    for p in points:
        c = p["contenders"]
        med = {k: (c[k]["median_s"] if k in c else None) for k in ("fast", "gemm", "torch")}
        per_img = []
        for k in ("fast", "gemm", "torch"):
            if med[k] is None:
                per_img.append("-")
            else:
                other = c[k]["repeats"] != p["requested_repeats"]
                per_img.append(fmt_ms(med[k] / p["N"]) + (f" (n={c[k]['repeats']})" if other else ""))
        gf = [f"{p['flops'] / med[k] / 1e9:.1f}" if med[k] else "" for k in ("fast", "gemm", "torch")]
        rows.append(
            [
                p["series"],
                str(p["N"]),
                str(p["C"]),
                *per_img,
                *gf,
                *_peak_cells(p),
                fmt_ratio(ratio(med["fast"], med["torch"])),
                fmt_ratio(ratio(med["fast"], med["gemm"])),
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def sweep_chart(points, path, title):
    plt, note = load_pyplot()
    if plt is None:
        return note
    colors = {"fast": "tab:blue", "gemm": "tab:gray", "torch": "tab:orange"}
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex="col")
    for col, (series, xkey) in enumerate((("batch", "N"), ("channels", "C"))):
        pts = [p for p in points if p["series"] == series]
        if not pts:
            continue
        xlabel = f"batch size N (C = F = {pts[0]['C']})" if series == "batch" else f"channels C = F (N = {pts[0]['N']})"
        for k in ("fast", "gemm", "torch"):
            xs = [p[xkey] for p in pts if k in p["contenders"]]
            if not xs:
                continue
            med = [p["contenders"][k]["median_s"] for p in pts if k in p["contenders"]]
            ms_img = [m / p["N"] * 1e3 for m, p in zip(med, (p for p in pts if k in p["contenders"]))]
            gf = [p["flops"] / m / 1e9 for m, p in zip(med, (p for p in pts if k in p["contenders"]))]
            axes[0][col].plot(xs, ms_img, "o-", color=colors[k], label=k)
            axes[1][col].plot(xs, gf, "o-", color=colors[k], label=k)
        axes[0][col].set_ylabel("ms per image")
        axes[0][col].set_yscale("log")
        axes[1][col].set_ylabel("GFLOP/s")
        axes[1][col].set_xlabel(xlabel)
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xticks([p[xkey] for p in pts], [str(p[xkey]) for p in pts])
            axes[row][col].grid(alpha=0.3)
            axes[row][col].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, plt, path)
    return None
