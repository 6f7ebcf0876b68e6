"""``fastconv bench``: the benchmark suite (also ``python -m fastconv bench``).

Runs the canonical workloads (docs/workloads.md) for the contenders fast,
naive (scaled from a sub-batch), gemm (the GEMM limit) and torch, side by
side in one process, interleaved, after checking that each one's result is
right. First it measures the machine's floating-point peak and copy bandwidth on the
suite's threads (``roofline``), and every convolution row shows the fraction of that
peak each contender reaches. Prints a Markdown table on stdout and progress on stderr;
writes every sample, the machine, versions, thread settings and the roofline to a JSON
file and a PNG chart beside it.
"""

from __future__ import annotations

import argparse
import sys
import time

from .common import DTYPES, PASSES, WORKLOADS, MismatchError

MISMATCH_EXIT = 3
ALL_CONTENDERS = ("fast", "naive", "gemm", "torch")

EPILOG = """\
selections take comma-separated lists or repeat the option, e.g.
  fastconv bench --workload W2conv3x3,W1step --dtype float32 --threads 1,2
default: every workload, fwdbwd, float32, 2 threads, naive on W1conv (about 2 minutes on 2 cores);
--full: both passes, both dtypes, 1 and 2 threads.
other modes: --sweep (batch and channel scaling of a 3x3 convolution), --memory (peak extra memory).
OpenBLAS reads OPENBLAS_CORETYPE at start-up: --compare-blas runs the suite once with it unset
(the kernels the CPU calls for, as on a user's machine) and once with Haswell (AVX2), side by side.
exit status: 0 ok, 3 when a result fails its check (MISMATCH), 1 on bad arguments.
"""


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--sweep",
        action="store_true",
        help="3x3 conv, batch 1..256 (C=F=64) and channels 16..256 (N=64): time per image and GFLOP/s",
    )
    mode.add_argument(
        "--memory",
        action="store_true",
        help="peak extra memory of fast conv fwd+bwd on W2conv3x3 at batch 256, and what chunking costs in speed",
    )
    parser.add_argument("--full", action="store_true", help="every workload, pass, dtype and 1 and 2 threads")
    parser.add_argument("--workload", action="append", metavar="NAMES", help=f"among {', '.join(WORKLOADS)}")
    parser.add_argument("--dtype", action="append", metavar="DTYPES", help="float32, float64")
    parser.add_argument("--threads", action="append", metavar="COUNTS", help="thread counts, e.g. 1,2")
    parser.add_argument(
        "--pass",
        dest="passes",
        action="append",
        metavar="PASSES",
        help="fwd (forward only), fwdbwd (forward + backward)",
    )
    parser.add_argument(
        "--contenders",
        action="append",
        metavar="NAMES",
        help=f"among {', '.join(ALL_CONTENDERS)} (fast always runs); default all",
    )
    parser.add_argument(
        "--algorithm",
        choices=["auto", "im2col", "winograd", "winograd2", "winograd4"],
        default="auto",
        help="fast's convolution algorithm (conv_forward's algorithm=; winograd: where it "
        "can run, im2col elsewhere; default auto); the table marks non-im2col runs",
    )
    parser.add_argument(
        "--naive",
        choices=["default", "all", "none"],
        default="default",
        help="where to time the naive loops: default W1conv fwdbwd per dtype, all, none",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per contender (default 7)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up runs per contender (default 1)")
    parser.add_argument(
        "--pause",
        type=float,
        default=None,
        help="seconds to sleep when switching between thread pools (default 0.05; the next "
        "contender then runs untimed for 0.1 s to be hot again)",
    )
    parser.add_argument(
        "--naive-images",
        type=int,
        default=2,
        help="images in the naive sub-batch (the first ones and the last; default 2)",
    )
    parser.add_argument("--naive-repeats", type=int, default=3, help="at most this many naive repeats (default 3)")
    parser.add_argument(
        "--out",
        metavar="PATH",
        help="JSON file to write (default bench-results/<mode>-<timestamp>.json); the chart goes beside it",
    )
    parser.add_argument(
        "--torch-in-process",
        action="store_true",
        help="time torch in this process instead of a peer process with your own environment "
        "(it then runs on the OpenMP settings that `import fastconv` chose)",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory in the process (fastconv.keep_freed_memory(), as "
        "`fastconv train` does), in this process and torch's peer alike: no page faults "
        "for fresh output arrays",
    )
    parser.add_argument(
        "--compare-blas",
        action="store_true",
        help="run the suite twice, in child processes: OpenBLAS's kernels as the CPU picks them "
        "(OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset) and forced to Haswell (AVX2); "
        "print both side by side",
    )
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny shapes, 1 repeat, no warm-up, no pauses (numbers are meaningless)",
    )


def _parse_list(values, choices, what, convert=str):
    if not values:
        return None
    items = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                item = convert(item)
            except ValueError:
                raise ValueError(f"--{what}: {item!r} is not valid") from None
            if choices is not None and item not in choices:
                raise ValueError(f"--{what}: unknown {item!r}; choose among {', '.join(map(str, choices))}")
            if item not in items:
                items.append(item)
    return items


def _positive_threads(n):
    n = int(n)
    if n < 1:
        raise ValueError
    return n


def _selection(args):
    """The lists to run, from --full / --quick and the explicit selections."""
    full = args.full
    sel = {
        "workloads": _parse_list(args.workload, tuple(WORKLOADS), "workload") or list(WORKLOADS),
        "dtypes": _parse_list(args.dtype, DTYPES, "dtype") or (list(DTYPES) if full else ["float32"]),
        "threads": _parse_list(args.threads, None, "threads", _positive_threads) or ([1, 2] if full else [2]),
        "passes": _parse_list(args.passes, PASSES, "pass") or (list(PASSES) if full or args.quick else ["fwdbwd"]),
        "contenders": _parse_list(args.contenders, ALL_CONTENDERS, "contenders") or list(ALL_CONTENDERS),
    }
    quick = args.quick
    sel["repeats"] = args.repeats if args.repeats is not None else (1 if quick else 7)
    sel["warmup"] = args.warmup if args.warmup is not None else (0 if quick else 1)
    sel["pause"] = args.pause if args.pause is not None else (0.0 if quick else 0.05)
    sel["naive"] = "all" if quick and args.naive == "default" else args.naive
    if sel["repeats"] < 1 or sel["warmup"] < 0 or sel["pause"] < 0:
        raise ValueError("need --repeats >= 1, --warmup >= 0 and --pause >= 0")
    if args.naive_images < 1 or args.naive_repeats < 1:
        raise ValueError("need --naive-images >= 1 and --naive-repeats >= 1")
    return sel


def _paths(args, mode):
    json_path = args.out or f"bench-results/{mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    png_path = json_path[:-5] + ".png" if json_path.endswith(".json") else json_path + ".png"
    return json_path, png_path


def run(args):
    from . import machine, report
    from .contenders import Context, load_torch
    from .suite import progress

    sel = _selection(args)
    mode = "sweep" if args.sweep else "memory" if args.memory else "bench"
    if args.compare_blas:
        if mode != "bench":
            raise ValueError("--compare-blas runs the suite; it does not combine with --sweep or --memory")
        from .compare import run_compare

        return run_compare(sel, args, _paths(args, "compare-blas")[0], progress)
    json_path, png_path = _paths(args, mode)
    notes = []
    roofline = None
    if mode != "memory":
        # Before torch's peer starts: nothing else of ours runs while the peak is measured.
        from .roofline import describe as describe_roofline
        from .roofline import measure

        roofline = measure(sel["dtypes"], sel["threads"], quick=args.quick)
        progress(describe_roofline(roofline))
    malloc_env = None
    if args.keep_freed_memory:
        from ..apps.malloc import KEEP_FREED_MEMORY_ENV, keep_freed_memory

        if keep_freed_memory():
            malloc_env = KEEP_FREED_MEMORY_ENV
            notes.append(
                "--keep-freed-memory: glibc keeps freed memory in this process and in torch's peer "
                f"({', '.join(f'{k}={v}' for k, v in malloc_env.items())})"
            )
        else:
            notes.append("--keep-freed-memory had no effect here (not glibc, or FASTCONV_MALLOC_TUNING=0)")
    torch = peer = None
    if "torch" in sel["contenders"] and not args.memory:
        torch, peer, note = load_torch(in_process=args.torch_in_process, extra_env=malloc_env)
        if note:
            notes.append(note)
    if args.quick:
        notes.append("--quick: tiny shapes and single runs, a smoke test; the numbers mean nothing")
    doc = {
        "schema": "fastconv-bench/1",
        "mode": mode,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "selection": sel,
        **machine.collect(torch),
        "roofline": roofline,
        "settings": {
            "naive_images": args.naive_images,
            "naive_repeats": args.naive_repeats,
            "keep_freed_memory": malloc_env is not None,
            "quick": args.quick,
            "torch_process": "peer" if peer else "same" if torch else None,
        },
        "notes": notes,
    }
    if peer is not None:
        doc["torch_peer"] = {**peer.info, "environment_from_process_start": peer.clean_env}
    progress(machine.describe(doc))
    for note in notes:
        progress(f"note: {note}")
    ctx = Context(
        torch, peer, naive_images=args.naive_images, naive_repeats=args.naive_repeats, algorithm=args.algorithm
    )
    try:
        if args.sweep:
            return _run_sweep(args, sel, ctx, doc, json_path, png_path)
        if args.memory:
            return _run_memory(args, sel, doc, json_path)
        return _run_suite(args, sel, ctx, doc, json_path, png_path)
    except MismatchError as exc:
        doc["failure"] = f"MISMATCH: {exc}"
        report.write_json(json_path, doc)
        print(
            f"fastconv bench: MISMATCH: {exc}\nNothing after this check was timed; "
            f"the cases finished before it are in {json_path}.",
            file=sys.stderr,
        )
        return MISMATCH_EXIT
    finally:
        if peer is not None:
            peer.close()


def _finish(doc, json_path, png_path, table, legend, chart, args, notes_out):
    from . import machine, report, roofline

    if chart is not None and not args.no_chart:
        note = chart(png_path)
        if note:
            doc["notes"].append(note)
            notes_out.append(note)
            png_path = None
    else:
        png_path = None
    doc["chart"] = png_path
    report.write_json(json_path, doc)
    print(machine.describe(doc))
    if doc.get("roofline"):
        print(roofline.describe(doc["roofline"]))
    print()
    print(table)
    print()
    print(legend)
    for note in doc["notes"]:
        print(f"Note: {note}")
    print(f"\nAll samples: {json_path}" + (f"; chart: {png_path}" if png_path else ""))
    return 0


def _annotate(doc, results, args):
    """The peaks measured once more after the cases (the larger of the two counts), then each
    convolution row's fraction of them; a note for a row still above 100 %."""
    from . import roofline

    doc["roofline"] = roofline.measure_again(doc["roofline"], quick=args.quick)
    roofline.annotate(results, doc["roofline"])
    above = roofline.above_peak(results)
    if above:
        rows = ", ".join(f"{w} {p} {c}" for w, p, c in above)
        doc["notes"].append(
            f"above 100 % of the peak ({rows}): the host was busier during both peak measurements "
            "than during those rows, so their %peak is not a share of what this machine can do"
        )


def _run_suite(args, sel, ctx, doc, json_path, png_path):
    from . import report
    from .suite import plan, run_suite

    cases = plan(sel["workloads"], sel["dtypes"], sel["threads"], sel["passes"], sel["contenders"], sel["naive"])
    doc["results"] = results = []
    t0 = time.perf_counter()
    run_suite(cases, ctx, sel["repeats"], sel["warmup"], sel["pause"], quick=args.quick, results=results)
    doc["elapsed_s"] = time.perf_counter() - t0
    _annotate(doc, results, args)
    title = f"fastconv bench ({doc['threads']['openblas_kernels']}, {doc['machine']['cpu']['model']})"
    legend = report.SUITE_LEGEND + (
        f" Repeats: {sel['repeats']} after {sel['warmup']} warm-up; naive at most {args.naive_repeats}."
    )
    return _finish(
        doc,
        json_path,
        png_path,
        report.suite_table(results, sel["repeats"]),
        legend,
        lambda p: report.suite_chart(results, p, title),
        args,
        [],
    )


def _single(sel, key, flag):
    if len(sel[key]) != 1:
        raise ValueError(f"--sweep and --memory take one {flag}, got {', '.join(map(str, sel[key]))}")
    return sel[key][0]


def _run_sweep(args, sel, ctx, doc, json_path, png_path):
    from . import report
    from .sweep import run_sweep, sweep_points

    dtype = _single(sel, "dtypes", "--dtype")
    threads = _single(sel, "threads", "--threads")
    pass_ = _single(sel, "passes", "--pass") if args.passes else "fwdbwd"
    doc["results"] = results = []
    points = sweep_points(args.quick)
    t0 = time.perf_counter()
    run_sweep(points, ctx, dtype, threads, pass_, sel["repeats"], sel["warmup"], sel["pause"], results=results)
    doc["elapsed_s"] = time.perf_counter() - t0
    _annotate(doc, results, args)
    first = points[0][1]
    title = (
        f"3x3 conv, stride 1, pad 1, {first.H}x{first.W} images, {pass_}, {dtype}, {threads} threads "
        f"({doc['threads']['openblas_kernels']})"
    )
    legend = (
        "Sweep: " + title + ". Times per image are medians of interleaved repeats divided by N; "
        "ratios are ratios of median times; gemm: the fast path's GEMMs alone; %peak: GFLOP/s as a share "
        "of the machine's peak on the same dtype and threads (the Roofline line above)."
    )
    return _finish(
        doc,
        json_path,
        png_path,
        report.sweep_table(results),
        legend,
        lambda p: report.sweep_chart(results, p, title),
        args,
        [],
    )


def _run_memory(args, sel, doc, json_path):
    from .memory import TARGET_MIB, memory_table, run_memory
    from .suite import progress

    dtype = _single(sel, "dtypes", "--dtype")
    threads = _single(sel, "threads", "--threads")
    N = 8 if args.quick else 256
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    r = run_memory(N, dtype, threads, repeats, warmup, progress)
    doc["results"] = r
    verdict = "meets" if r["meets_target"] else "MISSES"
    legend = (
        f"Extra memory = peak RSS growth of one fast conv_forward + conv_backward in a fresh process "
        f"minus the bytes of x, w, b, out, dout, dx, dw, db. Target: under {TARGET_MIB} MiB: "
        f"{r['extra_mib']:.1f} MiB, {verdict} it. Speed, default workspace over "
        f"{r['big_workspace']['workspace_bytes'] >> 20} MiB workspace (interleaved medians): "
        f"{r['speed_ratio_default_over_big']:.2f} (< 1: chunking is faster)."
    )
    return _finish(doc, json_path, None, memory_table(r), legend, None, args, [])
