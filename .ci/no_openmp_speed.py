"""CPU time against wall time of pooling and batchnorm in a build without OpenMP (run by
.ci/no_openmp.sh in that build's venv): both cores, through fastconv's worker threads."""
import os
import sys
import threading
import time
import warnings

warnings.simplefilter("ignore", RuntimeWarning)  # the import's warning, checked above
import numpy as np

import fastconv.fast as fast
from fastconv.engine import threads
from fastconv.kernels.picker import kernels

assert not kernels.build_info()["openmp"], "this build was meant to have no OpenMP"
if (os.cpu_count() or 1) < 2:
    sys.exit("ci: this machine has one core: the no-OpenMP speed check needs two")
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 64, 32, 32)).astype(np.float32)
w = rng.standard_normal((32, 64, 3, 3)).astype(np.float32)
gamma, beta = np.ones(64, np.float32), np.zeros(64, np.float32)
TICK = os.sysconf("SC_CLK_TCK")

def thread_cpu():
    """{native thread id: CPU seconds} of this process's threads (Linux's /proc)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out

def measure(call, seconds=1.0):
    call()  # warm up: workspaces, the worker threads
    workers = {t.native_id for t in threading.enumerate() if t.name.startswith("fastconv")}
    before = thread_cpu()
    wall0, cpu0, n = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - wall0 < seconds or n < 3:
        call()
        n += 1
    ratio = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    after = thread_cpu()
    spent = {t: after[t] - before.get(t, 0.0) for t in after}
    share = sum(v for t, v in spent.items() if t in workers) / max(sum(spent.values()), 1e-9)
    return ratio, share

calls = {
    "max_pool_forward 2x2 s2": lambda: fast.max_pool_forward(x, 2, 2),
    "max_pool_forward 3x3 s2": lambda: fast.max_pool_forward(x, 3, 2),
    "avg_pool_forward 2x2 s2": lambda: fast.avg_pool_forward(x, 2, 2),
    "spatial_batchnorm_forward (train)": lambda: fast.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"}),
}
CONTROL = "conv_forward 3x3, 16 images (control)"
calls[CONTROL] = lambda: fast.conv_forward(x[:16], w, None, pad=1)
for attempt in range(3):
    got = {name: measure(call) for name, call in calls.items()}
    for name, (ratio, share) in got.items():
        print(f"ci: no OpenMP, {threads.blas_threads()} workers: {name}: CPU time / wall time = {ratio:.2f}, "
              f"{100 * share:.0f} % of it on fastconv's workers")
    tested = {k: v for k, v in got.items() if k != CONTROL}
    split = all(share > 0.25 for _, share in tested.values())
    control = got[CONTROL][0]
    if split and all(ratio > 1.5 for ratio, _ in tested.values()):
        print("ci: pooling and batchnorm use both cores without OpenMP")
        break
    if split and control <= 1.5 and all(ratio > 0.75 * control for ratio, _ in tested.values()):
        print(f"ci: this machine is busy (the control reached {control:.2f}, not 1.5): pooling and batchnorm "
              "are judged against it, and run on both workers as it does")
        break
    print("ci: not both cores somewhere; measuring again")
else:
    sys.exit("ci: pooling or batchnorm did not run on both cores without OpenMP")
