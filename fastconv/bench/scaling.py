"""Data-parallel scaling over MPI ranks: images/s of training steps for K ranks, each step's
time split into compute and Allreduce, and the paper model of K machines built on it.

``python -m fastconv.bench.scaling`` runs, for each
model, one process without MPI (1 and 2 threads: the baselines) and ``mpiexec -n K`` for each
K of ``--ranks`` (default 1, 2, 4; one thread per rank, so 4 ranks oversubscribe a 2-core
machine), each a fresh set of processes timing ``--steps`` training steps of a global batch of
``--batch`` synthetic images after ``--warmup`` untimed ones. Per step it reports the slowest
rank's compute (forward and backward of its rows, batchnorm's own small collectives apart),
the Allreduce of the flat gradient buffer (which includes waiting for the slowest rank) and the
batchnorm synchronization (the rest of a step is the update and the slicing of the batch; a
process without MPI reports its whole step as compute); a Markdown table goes to stdout,
everything to ``--out`` (JSON).

``--project FILE.json`` prints instead the paper model of K machines from a file this
benchmark wrote (``project``): each machine computes B/K images per step, the Allreduce is a
ring's ``2 (K-1)/K * bytes / bandwidth + 2 (K-1) * latency``; the table says images/s and the
share of the step spent communicating for 1 and 10 Gbit/s networks, and at which K
communication takes half the step. ``--project-compute SECONDS --project-params N`` does the
same from numbers given by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

MODELS = {
    "recipe": ("conv32x3-bn-maxpool2-relu-conv64x3-bn-maxpool2-relu-fc256-relu-dropout0.3-fc", (1, 28, 28)),
    "convnet1": ("convnet1", (1, 28, 28)),
    "cifar": (
        "conv32x3-bn-relu-conv32x3-bn-relu-maxpool2-conv64x3-bn-relu-conv64x3-bn-relu-maxpool2-fc256-relu-"
        "dropout0.5-fc",
        (3, 32, 32),
    ),
}
QUICK_MODELS = {  # --quick: tiny shapes, same kinds of layers (the numbers mean nothing)
    "recipe": ("conv4x3-bn-maxpool2-relu-conv8x3-bn-maxpool2-relu-fc16-relu-dropout0.3-fc", (1, 8, 8)),
    "convnet1": ("conv4x3-relu-maxpool2-fc16-relu-fc", (1, 8, 8)),
    "cifar": ("conv4x3-bn-relu-maxpool2-fc16-relu-dropout0.5-fc", (3, 8, 8)),
}
GBIT = 1e9 / 8  # bytes/s of one Gbit/s


# ---------------------------------------------------------------------------- the paper model
def ring_allreduce_seconds(nbytes, k, bandwidth, latency):
    """A ring Allreduce of ``nbytes`` over ``k`` machines: 2 (k-1) messages of nbytes/k each way
    (reduce-scatter, then allgather), each costing ``latency`` plus its size over ``bandwidth`` (bytes/s)."""
    if k <= 1:
        return 0.0
    return 2 * (k - 1) / k * nbytes / bandwidth + 2 * (k - 1) * latency


def project(compute_seconds, batch, nbytes, ks=(1, 2, 4, 8, 16, 32, 64), gbits=(1, 10), latency=50e-6):
    """Rows of the paper model: for each network speed (Gbit/s) and machine count K, a step is
    ``compute_seconds / K`` (each machine computes B/K of the batch, from one machine's measured
    compute per step) plus the ring Allreduce of ``nbytes``. Returns dicts with images/s, the
    speed-up over one machine and the communication share of the step."""
    rows = []
    for gbit in gbits:
        for k in ks:
            comm = ring_allreduce_seconds(nbytes, k, gbit * GBIT, latency)
            step = compute_seconds / k + comm
            rows.append(
                {
                    "gbit_s": gbit,
                    "machines": k,
                    "step_s": step,
                    "allreduce_s": comm,
                    "images_s": batch / step,
                    "speedup": compute_seconds / step,
                    "comm_share": comm / step,
                }
            )
    return rows


def crossover(compute_seconds, nbytes, gbit, latency=50e-6, k_max=4096):
    """The smallest K at which the Allreduce takes at least half of the step (None up to k_max)."""
    for k in range(2, k_max + 1):
        if ring_allreduce_seconds(nbytes, k, gbit * GBIT, latency) >= compute_seconds / k:
            return k
    return None


def projection_table(compute_seconds, batch, nbytes, latency=50e-6):
    lines = [
        f"paper model: {compute_seconds * 1e3:.1f} ms of compute per step of {batch} images on one machine, "
        f"{nbytes / 2**20:.2f} MiB of gradients, ring Allreduce with {latency * 1e6:.0f} us latency per message",
        "",
        "| Gbit/s | machines | step ms | Allreduce ms | images/s | speed-up | communication |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in project(compute_seconds, batch, nbytes, latency=latency):
        lines.append(
            f"| {r['gbit_s']:g} | {r['machines']} | {r['step_s'] * 1e3:.1f} | {r['allreduce_s'] * 1e3:.2f} "
            f"| {r['images_s']:.0f} | {r['speedup']:.2f} | {r['comm_share']:.0%} |"
        )
    for gbit in (1, 10):
        k = crossover(compute_seconds, nbytes, gbit, latency)
        lines.append(f"at {gbit} Gbit/s communication takes half the step from K = {k if k else '> 4096'} on")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- one measurement
def _worker(args):
    """Time the training steps on this rank (or in this one process); rank 0 prints a JSON line."""
    from threadpoolctl import threadpool_limits

    from ..models import build_model
    from ..solver import Solver
    from ..training.preprocessing import Preprocessing

    comm = None
    if args.mpi:
        from ..training import distributed

        comm = distributed.world()
    spec, shape = (QUICK_MODELS if args.quick else MODELS)[args.worker]
    rng = np.random.default_rng(0)
    n = args.batch * 4
    X = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    with threadpool_limits(limits=args.threads):
        model = build_model(spec, shape, 10, seed=0)
        model.preprocess = Preprocessing.fit(X)
        solver = Solver(
            model,
            {"X_train": X, "y_train": y},
            update_rule="adam",
            batch_size=args.batch,
            verbose=False,
            seed=0,
            comm=comm,
        )
        if comm is not None:
            solver.distributed.start()
        batches = [np.arange(i * args.batch, (i + 1) * args.batch) % n for i in range(args.warmup + args.steps)]
        for idx in batches[: args.warmup]:
            solver._step(idx)
        if comm is not None:
            comm.Barrier()
            parallel = solver.distributed
            parallel.seconds = dict.fromkeys(parallel.seconds, 0.0)
        t0 = time.perf_counter()
        for idx in batches[args.warmup :]:
            solver._step(idx)
        seconds = time.perf_counter() - t0
    parts = {"compute": seconds, "allreduce": 0.0, "batchnorm_sync": 0.0}
    if comm is not None:  # the slowest rank's share of each part
        mine = np.array([parallel.seconds[k] for k in ("compute", "allreduce", "batchnorm_sync")])
        worst = np.empty_like(mine)
        comm.Allreduce(mine, worst, op=distributed.mpi().MAX)
        parts = dict(zip(("compute", "allreduce", "batchnorm_sync"), worst.tolist()))
        slowest = np.empty(1)
        comm.Allreduce(np.array([seconds]), slowest, op=distributed.mpi().MAX)
        seconds = float(slowest[0])
    if comm is None or comm.Get_rank() == 0:
        itemsize = np.dtype(model.dtype).itemsize
        print(
            json.dumps(
                {
                    "model": args.worker,
                    "layers": spec,
                    "input_shape": list(shape),
                    "ranks": comm.Get_size() if comm else 0,
                    "threads_per_rank": args.threads,
                    "batch": args.batch,
                    "steps": args.steps,
                    "seconds": seconds,
                    "images_s": args.batch * args.steps / seconds,
                    "parameters": model.parameter_count,
                    "gradient_bytes": model.parameter_count * itemsize,
                    **{f"{k}_s_per_step": v / args.steps for k, v in parts.items()},
                }
            ),
            flush=True,
        )
    return 0


def _measure(args, model, ranks, threads):
    """One measurement in fresh processes: ``ranks`` 0 is one process without MPI."""
    from ..io.child import python_module

    argv = python_module(
        "fastconv.bench.scaling",
        "--worker",
        model,
        "--threads",
        threads,
        "--batch",
        args.batch,
        "--steps",
        args.steps,
        "--warmup",
        args.warmup,
        *(["--quick"] if args.quick else []),
        *(["--mpi"] if ranks else []),
    )
    if ranks:
        argv = [args.mpiexec, "-n", str(ranks), *argv]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:4]))} ... failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results):
    lines = [
        "| model | ranks | threads/rank | images/s | vs 1 process 1 thread | compute ms/step | "
        "Allreduce ms/step | batchnorm sync ms/step | Allreduce share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = {r["model"]: r["images_s"] for r in results if r["ranks"] == 0 and r["threads_per_rank"] == 1}
    for r in results:
        step = r["seconds"] / r["steps"]
        lines.append(
            f"| {r['model']} | {r['ranks'] or '1 (no MPI)'} | {r['threads_per_rank']} | {r['images_s']:.0f} | "
            f"{r['images_s'] / base[r['model']]:.2f} | {r['compute_s_per_step'] * 1e3:.1f} | "
            f"{r['allreduce_s_per_step'] * 1e3:.2f} | {r['batchnorm_sync_s_per_step'] * 1e3:.2f} | "
            f"{r['allreduce_s_per_step'] / step:.1%} |"
        )
    return "\n".join(lines)


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m fastconv.bench.scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", default="recipe,convnet1", help=f"among {', '.join(MODELS)} (default recipe,convnet1)")
    p.add_argument("--ranks", default="1,2,4", help="MPI rank counts, one thread each (default 1,2,4)")
    p.add_argument("--batch", type=int, default=128, help="global batch (default 128)")
    p.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--quick", action="store_true", help="tiny models and sizes: a smoke run, numbers meaningless")
    p.add_argument("--out", default=None, help="JSON file (default bench-results/scaling-<time>.json)")
    p.add_argument("--mpiexec", default=None, help="the mpiexec to use (default: beside this Python, else on PATH)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per measurement (default 1800)")
    p.add_argument("--project", metavar="FILE", help="print the paper model of K machines from a results file")
    p.add_argument(
        "--project-compute",
        type=float,
        metavar="SECONDS",
        help="paper model from one machine's compute seconds per step (with --project-params)",
    )
    p.add_argument("--project-params", type=int, metavar="N", help="parameters (float32: 4 bytes each)")
    p.add_argument("--latency", type=float, default=50e-6, help="seconds per message in the paper model (50e-6)")
    p.add_argument("--worker", choices=tuple(MODELS), help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    return p


def _projections(args):
    if args.project_compute is not None:
        if args.project_params is None:
            raise SystemExit("--project-compute needs --project-params")
        print(projection_table(args.project_compute, args.batch, 4 * args.project_params, args.latency))
        return 0
    with open(args.project) as f:
        doc = json.load(f)
    for r in doc["results"]:
        if r["ranks"] == 0 and r["threads_per_rank"] == 1:  # one machine's compute, one thread
            print(f"## {r['model']}\n")
            print(projection_table(r["compute_s_per_step"], r["batch"], r["gradient_bytes"], args.latency) + "\n")
    return 0


def main(argv=None):
    import shutil

    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(args)
    if args.project or args.project_compute is not None:
        return _projections(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    ranks = [int(k) for k in args.ranks.split(",") if k.strip()]
    if any(m not in MODELS for m in models) or any(k < 1 for k in ranks) or min(args.batch, args.steps) < 1:
        raise SystemExit(f"--models among {', '.join(MODELS)}; --ranks, --batch, --steps >= 1")
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    args.mpiexec = args.mpiexec or (beside if os.path.exists(beside) else shutil.which("mpiexec"))
    if args.mpiexec is None:
        raise SystemExit('no mpiexec: pip install "fastconv[mpi]"')
    results = []
    for model in models:
        for ranks_, threads in [(0, 1), (0, 2)] + [(k, 1) for k in ranks]:
            r = _measure(args, model, ranks_, threads)
            print(
                f"{model}: {ranks_ or 'no MPI'} ranks x {threads} threads: {r['images_s']:.0f} images/s",
                file=sys.stderr,
                flush=True,
            )
            results.append(r)
    from . import machine

    doc = {
        "schema": "fastconv-scaling/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "quick": args.quick,
        **machine.collect(None),
        "results": results,
    }
    out = args.out or f"bench-results/scaling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    from ..io.files import write_json

    write_json(out, doc)
    print(_table(results))
    print(f"\n(written to {out}; the paper model: python -m fastconv.bench.scaling --project {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
