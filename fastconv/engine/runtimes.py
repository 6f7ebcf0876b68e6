"""What fastconv tells the OpenMP and OpenBLAS runtimes before they load.

The fast path alternates BLAS calls (OpenBLAS's own threads) with OpenMP kernels. Idle
workers of either runtime that spin-wait steal the cores from the next call
(docs/performance.md, "Idle threads"). Both runtimes read their settings once, when they
load, so this module must run before numpy (OpenBLAS) and the kernels (libgomp) are
imported: ``fastconv/__init__.py`` calls ``prepare()`` first thing. It imports nothing
but the standard library. ``fastconv.engine.threads`` holds the rest of the thread policy.
"""

import os
import sys
from typing import NamedTuple


class Runtimes(NamedTuple):
    """What ``prepare()`` found and set."""

    #: OMP_WAIT_POLICY as libgomp runs it: "PASSIVE" unless the user chose another policy,
    #: or a libgomp was loaded before fastconv (PyTorch ships one with the same name, which
    #: the kernels then share): it has read the variable already, usually to spin.
    openmp_wait_policy: str
    #: True when fastconv set OPENBLAS_THREAD_TIMEOUT before numpy loaded OpenBLAS.
    openblas_timeout_before_numpy: bool
    #: GOMP_SPINCOUNT as fastconv found or set it: OPENMP_SPIN_COUNT when the user set
    #: neither it nor OMP_WAIT_POLICY, the user's value, or None (unset).
    openmp_spin_count: str | None = None


#: How long (in libgomp's busy-wait loops) an idle OpenMP worker spins before it sleeps:
#: about 0.5 ms of CPU time after the last parallel region on the Zen 3 guest (2026-12-07).
#: A sleeping worker took 0.1-0.2 ms to wake there, at every kernel call; a spin that ends
#: this soon leaves an idle process no CPU to burn and the next GEMM its core
#: (docs/performance.md, "Idle threads: OpenMP and OpenBLAS").
OPENMP_SPIN_COUNT = "10000"


def _libgomp_already_loaded() -> bool:
    """True if some libgomp is mapped into this process already (Linux only)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


def prepare() -> Runtimes:
    """Ask libgomp to let idle workers sleep after a short spin (OMP_WAIT_POLICY=PASSIVE,
    GOMP_SPINCOUNT=OPENMP_SPIN_COUNT, unless the user set either) and OpenBLAS to park its
    idle workers after about 10 ms instead of 0.1 s (OPENBLAS_THREAD_TIMEOUT=10, unless
    set); returns what took effect (a Runtimes)."""
    preset = os.environ.get("OMP_WAIT_POLICY")
    preloaded = _libgomp_already_loaded()
    if preset is None:  # a user's PASSIVE means no spin at all
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    policy = (preset or "default (spinning)") if preloaded else os.environ["OMP_WAIT_POLICY"]
    before_numpy = "numpy" not in sys.modules
    if before_numpy:  # OpenBLAS reads it once, when numpy loads it
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "10")
    return Runtimes(policy.upper(), before_numpy, os.environ.get("GOMP_SPINCOUNT"))


#: What ``prepare()`` set when fastconv was first imported (it runs once per process).
RUNTIMES = prepare()
