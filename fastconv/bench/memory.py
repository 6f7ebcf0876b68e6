"""``fastconv bench --memory``: the extra memory of fast conv fwd+bwd, and the cost of chunking.

Target: on W2conv3x3 at batch 256, the memory a forward plus backward pass
needs beyond its arrays (x, w, b, out, dout, dx, dw, db) stays under 64 MiB,
with no loss of speed against an unbounded workspace.

Each measurement runs in a fresh Python process (``python -m
fastconv.bench.memory peak ...``, started through ``fastconv.io.child``), so
nothing allocated earlier hides in the numbers: the process warms the
libraries up on a tiny convolution (OpenBLAS and OpenMP start their
threads), resets its peak RSS (VmHWM, by writing 5 to
/proc/self/clear_refs), allocates the arrays, runs conv_forward +
conv_backward once, and reports the peak RSS growth minus the bytes of the
arrays. The speed comparison runs in another fresh process,
interleaving the default workspace with a large one
(``fastconv.fast.WORKSPACE_BYTES`` set to 1 GiB, the whole batch in one chunk).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from ..io.child import python_module

TARGET_MIB = 64
MISMATCH_EXIT = 3
BIG_WORKSPACE = 1 << 30
# This module's name as its parent imports it (run as the child, it is __main__).
_MODULE = __spec__.name if __spec__ is not None else __name__  # __spec__ is None in a script


# ------------------------------------------------------------------ in the child process
def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _reset_peak():
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _fill(a, rng):
    """Dyadic values (as common.dyadic), one image at a time: no batch-sized temporaries."""
    for i in range(a.shape[0]):
        a[i] = rng.integers(-64, 65, size=a.shape[1:]) * 2.0**-5


def _arrays(N, dtype, C=64, F=64, size=32, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = np.empty((N, C, size, size), dtype)
    _fill(x, rng)
    w = (rng.integers(-16, 17, size=(F, C, k, k)) * 2.0**-6).astype(dtype)
    b = (rng.integers(-16, 17, size=F) * 2.0**-6).astype(dtype)
    dout = np.empty((N, F, size, size), dtype)
    _fill(dout, rng)
    return x, w, b, dout


def child_peak(N, dtype, workspace_bytes):
    from .. import fast
    from ..engine.conv import chunk_images
    from ..engine.geometry import conv_geometry

    if workspace_bytes:
        fast.WORKSPACE_BYTES = workspace_bytes
    # Warm-up on a tiny problem: library threads and buffers are not the convolution's memory.
    tx, tw, tb, td = _arrays(1, dtype, size=4)
    out, cache = fast.conv_forward(tx, tw, tb, stride=1, pad=1)
    fast.conv_backward(td, cache)
    del out, cache
    reset = _reset_peak()
    rss0 = _status_kib("VmRSS")
    hwm0 = _status_kib("VmHWM")
    x, w, b, dout = _arrays(N, dtype)
    out, cache = fast.conv_forward(x, w, b, stride=1, pad=1)
    dx, dw, db = fast.conv_backward(dout, cache)
    hwm = _status_kib("VmHWM")
    arrays = sum(a.nbytes for a in (x, w, b, dout, out, dx, dw, db))
    growth = (hwm - rss0) * 1024
    g = conv_geometry(x, w, b, 1, 1)
    return {
        "N": N,
        "dtype": np.dtype(dtype).name,
        "workspace_bytes": fast.WORKSPACE_BYTES,
        "chunk_images": chunk_images(g, np.dtype(dtype).itemsize),
        "peak_reset": reset,
        "baseline_hwm_above_rss_kib": hwm0 - rss0,
        "rss_before_bytes": rss0 * 1024,
        "peak_growth_bytes": growth,
        "arrays_bytes": arrays,
        "extra_bytes": growth - arrays,
    }


def child_speed(N, dtype, repeats, warmup, workspaces):
    """Interleaved fwd+bwd timings per workspace size, after checking every size's result."""
    from .. import fast, naive
    from .common import check_same

    x, w, b, dout = _arrays(N, dtype)

    def run(layers=fast, x=x, dout=dout):
        out, cache = layers.conv_forward(x, w, b, stride=1, pad=1)
        return (out, *layers.conv_backward(dout, cache))

    names = ("out", "dx", "dw", "db")
    ref = None
    for ws in workspaces:
        fast.WORKSPACE_BYTES = ws
        got = run()
        if ref is None:  # the first workspace's result, checked on its last image against naive
            ref = got
            last = run(naive, x[-1:], dout[-1:])
            check_same(
                f"fast (workspace {ws} bytes) against naive on the last image",
                names[:2],
                (got[0][-1:], got[1][-1:]),
                last[:2],
                dtype,
            )
        else:
            check_same(
                f"fast with workspace {ws} bytes against workspace {workspaces[0]} bytes", names, got, ref, dtype
            )
    del ref, got

    samples = {str(ws): [] for ws in workspaces}
    for i in range(warmup + repeats):
        for ws in workspaces:
            fast.WORKSPACE_BYTES = ws
            t0 = time.perf_counter()
            result = run()
            elapsed = time.perf_counter() - t0
            del result
            if i >= warmup:
                samples[str(ws)].append(elapsed)
    return {
        "N": N,
        "dtype": np.dtype(dtype).name,
        "samples_s": samples,
        "median_s": {k: statistics.median(v) for k, v in samples.items()},
    }


def _child_main(argv=None):
    from threadpoolctl import threadpool_limits

    p = argparse.ArgumentParser(prog=f"python -m {_MODULE}")
    p.add_argument("what", choices=["peak", "speed"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workspace-bytes", type=int, default=0, help="peak: 0 keeps the engine's default")
    p.add_argument("--workspaces", default=f"0,{BIG_WORKSPACE}", help="speed: comma-separated byte counts")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    a = p.parse_args(argv)
    from .. import fast
    from .common import MismatchError

    with threadpool_limits(limits=a.threads):
        if a.what == "peak":
            result = child_peak(a.batch, a.dtype, a.workspace_bytes)
        else:
            default = fast.WORKSPACE_BYTES
            workspaces = [int(s) or default for s in a.workspaces.split(",")]
            try:
                result = child_speed(a.batch, a.dtype, a.repeats, a.warmup, workspaces)
            except MismatchError as exc:
                print(f"MISMATCH: {exc}", file=sys.stderr)
                return MISMATCH_EXIT
    print(json.dumps(result))
    return 0


# ------------------------------------------------------------------ in the parent
def _child(args, env=None):
    cmd = python_module(_MODULE, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode == MISMATCH_EXIT:
        from .common import MismatchError

        raise MismatchError(proc.stderr.strip().removeprefix("MISMATCH: "))
    if proc.returncode != 0:
        raise RuntimeError(f"python -m {_MODULE} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_memory(N, dtype, threads, repeats, warmup, progress):
    """Peak extra memory (default and 1 GiB workspaces) and their speeds; returns the result dict."""
    common = ["--batch", str(N), "--dtype", dtype, "--threads", str(threads)]
    progress(f"memory: peak RSS of fast conv fwd+bwd, W2conv3x3 shapes at batch {N}, {dtype}, default workspace")
    default = _child(["peak", *common])
    progress(f"memory: the same with a {BIG_WORKSPACE >> 20} MiB workspace")
    big = _child(["peak", *common, "--workspace-bytes", str(BIG_WORKSPACE)])
    progress(
        f"memory: speed, default against {BIG_WORKSPACE >> 20} MiB workspace, interleaved, "
        f"{repeats} repeats after {warmup} warm-up"
    )
    speed = _child(
        ["speed", *common, "--repeats", str(repeats), "--warmup", str(warmup), "--workspaces", f"0,{BIG_WORKSPACE}"]
    )
    med = list(speed["median_s"].values())
    return {
        "workload": f"W2conv3x3 at batch {N}",
        "dtype": dtype,
        "threads": threads,
        "target_extra_mib": TARGET_MIB,
        "default": default,
        "big_workspace": big,
        "speed": speed,
        "extra_mib": default["extra_bytes"] / 2**20,
        "meets_target": default["extra_bytes"] < TARGET_MIB * 2**20,
        "speed_ratio_default_over_big": med[0] / med[1],
    }


def memory_table(r):
    rows = [
        ["workspace", "images per chunk", "peak RSS growth MiB", "arrays MiB", "extra MiB", "fwd+bwd ms (median)"],
        ["---"] * 6,
    ]
    med = list(r["speed"]["median_s"].values())
    for key, ms in (("default", med[0]), ("big_workspace", med[1])):
        d = r[key]
        rows.append(
            [
                f"{d['workspace_bytes'] / 2**20:,.0f} MiB" + (" (default)" if key == "default" else ""),
                str(d["chunk_images"]),
                f"{d['peak_growth_bytes'] / 2**20:.1f}",
                f"{d['arrays_bytes'] / 2**20:.1f}",
                f"{d['extra_bytes'] / 2**20:.1f}",
                f"{ms * 1e3:.1f}",
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


if __name__ == "__main__":
    sys.exit(_child_main())
