"""The builds of the Cython kernels side by side: the same kernels, timed on each build.

Imports every build of fastconv/kernels/_im2col.pyx that this CPU and install can run
(``fastconv.kernels.picker.builds()``: baseline, AVX2, AVX-512) in one process, and times each
kernel on each build in turn (baseline, avx2, avx512, baseline, ...; medians of the
repeats after a warm-up, ``fastconv.bench.timing.run_interleaved``):

* max pool 2x2/2 (W4max2x2s2: ``max_pool_direct``) and 3x3/2 (W4max3x3s2:
  ``max_pool_phased``), forward and backward; avg pool 2x2/2 (W4avg2x2s2), forward and
  backward;
* spatial batchnorm on x of W2conv3x3's shape: the forward's two passes
  (``bn_channel_stats``, ``bn_affine``) and the backward's two (``bn_backward_sums``,
  ``bn_backward_dx``);
* im2col and col2im of one chunk of W1conv (x (64, 3, 32, 32), 7x7, pad 3) and of
  W2conv3x3 (x (64, 64, 32, 32), 3x3, pad 1);
* the four Winograd F(4x4, 3x3) transforms of one chunk of W2conv3x3 (input, output and
  their adjoints);

in float32 and float64. The kernels are called as fastconv/engine/ calls them: the same
arguments, workspaces, chunk size (``ConvPlan``) and thread counts: pooling and
batchnorm on the whole batch with ``kernel_threads`` (OpenMP's team, OMP_NUM_THREADS), a
convolution chunk with ``ConvPlan.threads`` (one thread when the BLAS has several
threads, as inside the engine's workers, which run chunks side by side; when OpenMP must run
on one thread, as after importing torch first, the engine splits pooling and batchnorm over
its own workers instead, and this script times them on one thread). Before timing,
each kernel's outputs on every build are checked to be the same bytes as the baseline's.

Prints a Markdown table of milliseconds per build and the ratios avx512/avx2 and
avx2/baseline, and the CPU's SIMD flags. A developer tool, not part of the package
(tests/bench/test_bench_kernel_builds.py runs it with ``--quick``):

    python benchmarks/kernel_builds.py [--repeats 15] [--warmup 3] [--dtypes float32,float64]
"""

from __future__ import annotations

import argparse
import importlib
import sys

import numpy as np

from fastconv.bench.common import WORKLOADS, conv_data, pool_data
from fastconv.bench.machine import cpu_info
from fastconv.bench.timing import Contender, run_interleaved
from fastconv.engine import conv, winograd
from fastconv.engine.geometry import conv_geometry, pool_geometry
from fastconv.engine.pooling import pool_args
from fastconv.engine.threads import kernel_threads
from fastconv.kernels import picker as _kernels

PROG = "kernel_builds"
BASELINE = importlib.import_module("fastconv.kernels._im2col")  # prepares what a backward kernel reads


class Case:
    """One kernel call: ``prepare(build)`` returns (run, outputs): ``run()`` calls the kernel of
    ``build`` on inputs shared by every build, writing ``outputs`` (arrays of that build's own)."""

    def __init__(self, name, threads, prepare):
        self.name, self.threads, self.prepare = name, threads, prepare


def _pool_cases(spec_name, kernel, quick, dtype):
    """Forward and backward of one pooling workload; kernel: "direct", "phased" or "avg"."""
    spec = WORKLOADS[spec_name].quick() if quick else WORKLOADS[spec_name]
    data = pool_data(spec, dtype)
    g = pool_geometry(data["x"], spec.k, spec.stride, 0)
    planes, args = g.N * g.C, pool_args(g)
    x3 = data["x"].reshape(planes, g.H, g.W)
    dout3 = data["dout"].reshape(planes, g.out_h, g.out_w)
    threads = kernel_threads(x3.size)
    if kernel == "avg":

        def forward(build):
            out3 = np.empty_like(dout3)
            return lambda: build.avg_pool_forward(x3, out3, *args, threads), [out3]

        def backward(build):
            dx3 = np.empty_like(x3)
            return lambda: build.avg_pool_backward(dout3, dx3, *args, threads), [dx3]

        return [Case(f"{spec_name} forward", threads, forward), Case(f"{spec_name} backward", threads, backward)]

    def forward(build):
        out3, arg3 = np.empty_like(dout3), np.empty(dout3.shape, np.int32)
        if kernel == "phased":
            need = build.max_pool_phased_scratch(g.H, g.W, g.out_w, g.kw, g.stride_w)
            scratch, best = np.empty((threads, need[0]), dtype), np.empty((threads, need[1]), np.int32)
            return lambda: build.max_pool_phased(x3, out3, arg3, *args, scratch, best, threads), [out3, arg3]
        columns = np.empty((2, build.max_pool_direct_columns(g.W, g.out_w, g.kw, g.stride_w, g.pad_w)), np.intp)
        return lambda: build.max_pool_direct(x3, out3, arg3, *args, columns, threads), [out3, arg3]

    run, (_, argmax3) = forward(BASELINE)
    run()  # the argmax that backward reads

    def backward(build):
        dx2 = np.empty((planes, g.H * g.W), dtype)
        dout2, arg2 = dout3.reshape(planes, -1), argmax3.reshape(planes, -1)
        return lambda: build.max_pool_backward(dout2, arg2, dx2, threads), [dx2]

    return [
        Case(f"{spec_name} ({kernel}) forward", threads, forward),
        Case(f"{spec_name} ({kernel}) backward", threads, backward),
    ]


def _batchnorm_cases(quick, dtype):
    """The four passes of spatial batchnorm in training mode, as the engine's batchnorm runs them."""
    spec = WORKLOADS["W2conv3x3"].quick() if quick else WORKLOADS["W2conv3x3"]
    data = conv_data(spec, dtype)
    x3 = data["x"].reshape(spec.N, spec.C, -1)
    N, C = x3.shape[:2]
    threads = kernel_threads(x3.size)
    rng = np.random.default_rng(1)
    dout3 = rng.standard_normal(x3.shape).astype(dtype)
    # per-channel float64 coefficients as fast computes them (their values do not change the work)
    mean, scale, offset, xc_scale = (rng.standard_normal(C) for _ in range(4))

    def stats(build):
        m, v = np.empty(C), np.empty(C)
        return lambda: build.bn_channel_stats(x3, m, v, 0, C, threads), [m, v]

    def affine(build):
        out3 = np.empty_like(x3)
        return lambda: build.bn_affine(x3, mean, scale, offset, out3, 0, C, threads), [out3]

    def sums(build):
        s, sx = np.empty(C), np.empty(C)
        return lambda: build.bn_backward_sums(dout3, x3, mean, s, sx, 0, C, threads), [s, sx]

    def dx(build):
        dx3 = np.empty_like(x3)
        return lambda: build.bn_backward_dx(dout3, x3, mean, scale, xc_scale, offset, dx3, 0, C, threads), [dx3]

    what = f"batchnorm ({N}, {C}, {spec.H}, {spec.W})"
    return [
        Case(f"{what} {name}", threads, prepare)
        for name, prepare in (
            ("bn_channel_stats", stats),
            ("bn_affine", affine),
            ("bn_backward_sums", sums),
            ("bn_backward_dx", dx),
        )
    ]


def _conv_setup(spec_name, quick, dtype, algorithm):
    spec = WORKLOADS[spec_name].quick() if quick else WORKLOADS[spec_name]
    data = conv_data(spec, dtype)
    g = conv_geometry(data["x"], data["w"], data["b"], spec.stride, spec.pad)
    plan = conv.ConvPlan(g, dtype, algorithm=algorithm)
    return data, g, plan, plan.chunk


def _im2col_cases(spec_name, quick, dtype):
    """im2col and col2im of one chunk of a workload, as fast's im2col convolution runs them."""
    data, g, plan, n = _conv_setup(spec_name, quick, dtype, "im2col")
    args, x = conv.kernel_args(g), data["x"][:n]
    cols_in = np.random.default_rng(2).standard_normal((plan.K, n * plan.P)).astype(dtype)
    threads = plan.threads(cols_in.size)

    def im2col(build):
        cols = np.empty_like(cols_in)
        return lambda: build.im2col(x, cols, *args, threads), [cols]

    def col2im(build):
        dx = np.empty_like(x)
        return lambda: build.col2im(cols_in, dx, *args, threads), [dx]

    what = f"{spec_name} chunk of {n}"
    return [Case(f"{what} im2col", threads, im2col), Case(f"{what} col2im", threads, col2im)]


def _winograd_cases(quick, dtype):
    """The four F(4x4, 3x3) transforms of one chunk of W2conv3x3, as fast's Winograd path runs them."""
    data, g, plan, n = _conv_setup("W2conv3x3", quick, dtype, "winograd4")
    ch = winograd.WinogradChunks(plan)
    V_ws, M_ws, scratch_ws, threads = ch.workspaces(n)  # fast's shapes and thread count for a chunk
    rng = np.random.default_rng(3)
    V_in, M_in = (rng.standard_normal(a.shape).astype(dtype) for a in (V_ws, M_ws))
    x, dout, bias = data["x"][:n], data["dout"][:n], data["b"]
    pads, tiles = (g.pad_h, g.pad_w), ch.args  # (tile, tiles_h, tiles_w)

    def forward_input(build):
        V, scratch = np.empty_like(V_in), np.empty_like(scratch_ws)
        return lambda: build.winograd_input(x, V, *pads, *tiles, scratch, threads), [V]

    def forward_output(build):
        out, scratch = np.empty((n,) + g.out_shape[1:], dtype), np.empty_like(scratch_ws)
        return lambda: build.winograd_output(M_in, out, bias, True, *tiles, scratch, threads), [out]

    def output_adjoint(build):
        dM, db, scratch = np.empty_like(M_in), np.zeros(g.F), np.empty_like(scratch_ws)
        return lambda: build.winograd_output_adjoint(dout, dM, db, True, *tiles, scratch, threads), [dM]

    def input_adjoint(build):
        dx, scratch = np.empty_like(x), np.empty_like(scratch_ws)
        return lambda: build.winograd_input_adjoint(V_in, dx, *pads, *tiles, scratch, threads), [dx]

    return [
        Case(f"W2conv3x3 chunk of {n} {name}", threads, prepare)
        for name, prepare in (
            ("winograd_input", forward_input),
            ("winograd_output", forward_output),
            ("winograd_output_adjoint", output_adjoint),
            ("winograd_input_adjoint", input_adjoint),
        )
    ]


def cases(quick, dtype):
    return (
        _pool_cases("W4max2x2s2", "direct", quick, dtype)
        + _pool_cases("W4max3x3s2", "phased", quick, dtype)
        + _pool_cases("W4avg2x2s2", "avg", quick, dtype)
        + _batchnorm_cases(quick, dtype)
        + _im2col_cases("W1conv", quick, dtype)
        + _im2col_cases("W2conv3x3", quick, dtype)
        + _winograd_cases(quick, dtype)
    )


def _check_same_bytes(case, outputs):
    """Every build's outputs are the baseline's, byte for byte."""
    names = list(outputs)
    for name in names[1:]:
        for i, (a, b) in enumerate(zip(outputs[names[0]], outputs[name], strict=True)):
            if a.tobytes() != b.tobytes():
                raise RuntimeError(f"{case.name}: output {i} of the {name} build differs from the {names[0]} build's")


def time_case(case, builds, repeats, warmup):
    """{isa: median seconds} of one case on each build, interleaved, after the byte check."""
    prepared = {isa: case.prepare(module) for isa, module in builds.items()}
    for run, _ in prepared.values():
        run()
    _check_same_bytes(case, {isa: outputs for isa, (_, outputs) in prepared.items()})
    contenders = [Contender(isa, run) for isa, (run, _) in prepared.items()]  # no pools: no pauses between
    timings = run_interleaved(contenders, repeats=repeats, warmup=warmup, extra_rounds=0)
    return {isa: timings[isa].median for isa in builds}


def _ratio(times, a, b):
    return f"{times[a] / times[b]:.2f}" if a in times and b in times else "-"


def report(rows, builds, skipped):
    cpu = cpu_info()
    print(f"CPU: {cpu['model']} ({cpu.get('usable_cpus')} usable CPUs); SIMD flags: {' '.join(cpu['flags']) or 'none'}")
    print(
        f"builds: {', '.join(f'{isa} ({m.__name__})' for isa, m in builds.items())}"
        + "".join(f"; no {isa}: {why}" for isa, why in skipped.items())
    )
    print(f"fastconv.fast runs {_kernels.kernels.__name__} ({_kernels.reason})\n")
    print(
        "| kernel | dtype | threads | " + " | ".join(f"{isa} ms" for isa in builds) + " | avx512/avx2 | avx2/baseline |"
    )
    print("| --- | --- | --- |" + " --- |" * (len(builds) + 2))
    for case, dtype, times in rows:
        cells = " | ".join(f"{times[isa] * 1e3:.3f}" for isa in builds)
        print(
            f"| {case.name} | {np.dtype(dtype).name} | {case.threads} | {cells} | "
            f"{_ratio(times, 'avx512', 'avx2')} | {_ratio(times, 'avx2', 'baseline')} |"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per build and kernel (>= 7; default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per build first (default 3)")
    parser.add_argument("--dtypes", default="float32,float64", help="comma-separated (default float32,float64)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny shapes, 2 repeats, 1 warm-up: proves the script runs, times nothing"
    )
    args = parser.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    if any(d not in ("float32", "float64") for d in dtypes):
        parser.error(f"--dtypes takes float32 and/or float64, got {args.dtypes!r}")
    repeats, warmup = (2, 1) if args.quick else (args.repeats, args.warmup)
    if repeats < 7 and not args.quick:
        parser.error(f"--repeats must be >= 7 (medians of fewer runs are noise), got {repeats}")
    if warmup < 1:
        parser.error(f"--warmup must be >= 1, got {warmup}")
    found = _kernels.builds()
    builds = {isa: m for isa, (m, _) in found.items() if m is not None}
    skipped = {isa: why for isa, (m, why) in found.items() if m is None}
    rows = [
        (case, dtype, time_case(case, builds, repeats, warmup))
        for dtype in dtypes
        for case in cases(args.quick, np.dtype(dtype))
    ]
    report(rows, builds, skipped)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(1)
