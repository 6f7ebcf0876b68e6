"""What ``import fastconv`` tells the OpenMP runtime before it loads
(``fastconv.engine.runtimes``): idle workers spin briefly, then sleep; a user's setting wins.

Each case runs in a fresh interpreter: libgomp reads its variables once, when it loads, and
this test process imported fastconv (which set them) long ago."""

import os
import subprocess

import pytest

from fastconv.engine.runtimes import OPENMP_SPIN_COUNT
from fastconv.io.child import python_code
from fastconv.kernels.picker import kernels as _kernels

_OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

_SETTINGS = """
import os
import fastconv
from fastconv.engine.runtimes import RUNTIMES
print(os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT"), RUNTIMES.openmp_spin_count)
"""


def _env(**given):
    """This process's environment without the OpenMP variables fastconv sets, plus ``given``."""
    env = {k: v for k, v in os.environ.items() if k not in _OPENMP_VARIABLES}
    env.update(given)
    return env


def _run(code, env, *args):
    run = subprocess.run(python_code(code, *args), env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


@pytest.mark.parametrize(
    "given, expected",
    [
        ({}, ["PASSIVE", OPENMP_SPIN_COUNT, OPENMP_SPIN_COUNT]),  # fastconv's: a bounded spin
        ({"OMP_WAIT_POLICY": "PASSIVE"}, ["PASSIVE", "None", "None"]),  # the user's: no spin at all
        ({"OMP_WAIT_POLICY": "active"}, ["active", "None", "None"]),
        ({"GOMP_SPINCOUNT": "0"}, ["PASSIVE", "0", "0"]),  # the user's count is kept
        ({"GOMP_SPINCOUNT": "2M"}, ["PASSIVE", "2M", "2M"]),
    ],
    ids=["unset", "user-passive", "user-active", "user-spin-0", "user-spin-2M"],
)
def test_the_spin_is_fastconvs_only_when_the_user_set_neither_variable(given, expected):
    assert _run(_SETTINGS, _env(**given)) == expected


_IDLE_CPU = """
import sys, time
import numpy as np
from fastconv import fast
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
w = rng.standard_normal((16, 3, 5, 5)).astype(np.float32)
fast.conv_forward(x, w, None, algorithm="direct")  # an OpenMP team of 2 exists from here on
time.sleep(0.1)
idle = []
for _ in range(5):
    fast.conv_forward(x, w, None, algorithm="direct")
    start = time.process_time()  # every thread of the process: the workers' spin too
    time.sleep(0.1)
    idle.append(time.process_time() - start)
print(1e3 * sum(idle))
"""


@pytest.mark.skipif(
    not _kernels.build_info()["openmp"] or (os.cpu_count() or 1) < 2,
    reason="needs a build with OpenMP and at least 2 CPUs",
)
@pytest.mark.parametrize("spin", [None, "INFINITE"], ids=["fastconvs-spin", "endless-spin"])
def test_an_idle_process_uses_no_cpu_after_a_kernel(spin):
    """After each call, 0.1 s idle: fastconv's spin ends within about a millisecond, so the
    workers burn almost no CPU (10000 spins: about 0.5 ms on a Zen 3 guest); an endless
    spin (a user's GOMP_SPINCOUNT=INFINITE) burns the whole pause, which shows that the
    measurement sees spinning workers."""
    env = _env(OMP_NUM_THREADS="2", **({"GOMP_SPINCOUNT": spin} if spin else {}))
    (cpu_ms,) = _run(_IDLE_CPU, env)
    if spin is None:
        assert float(cpu_ms) < 50, f"idle OpenMP workers used {cpu_ms} ms of CPU in 0.5 s"
    else:
        assert float(cpu_ms) > 250, f"spinning OpenMP workers used only {cpu_ms} ms of CPU in 0.5 s"
