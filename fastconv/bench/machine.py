"""What a result was measured on: CPU, cores, library versions, thread pools, environment."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from ..apps.config import openmp_text

#: Environment variables that change how the BLAS / OpenMP / PyTorch thread pools behave.
THREAD_ENV = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_THREAD_TIMEOUT",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OMP_PROC_BIND",
    "MKL_NUM_THREADS",
)
_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512_bf16", "amx_tile")


def cpu_info():
    """CPU model, flags of interest and core counts, from /proc/cpuinfo where there is one."""
    info = {"model": platform.processor() or platform.machine(), "flags": [], "logical_cpus": os.cpu_count()}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["usable_cpus"] = os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    info["model"] = fields.get("model name", info["model"])
    info["vendor"] = fields.get("vendor_id")
    info["family_model"] = f"{fields.get('cpu family')}/{fields.get('model')}"
    flags = set(fields.get("flags", "").split())
    info["flags"] = [f for f in _FLAGS if f in flags]
    cores = {line.split(":")[1].strip() for line in text.splitlines() if line.startswith("core id")}
    info["physical_cores"] = len(cores) or None
    return info


def memory_total_mib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def fastconv_path():
    """The folder of the fastconv package this process runs (an install's, or a source tree's)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def versions():
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "fastconv_path": fastconv_path()}
    for dist in ("fastconv", "numpy", "threadpoolctl", "torch", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def thread_settings(torch=None):
    """threadpoolctl's view (which OpenBLAS kernels: 'architecture'), the environment, fastconv's build."""
    from threadpoolctl import threadpool_info

    from ..apps.config import configuration

    build = configuration()
    info = {
        "env": {name: os.environ.get(name) for name in THREAD_ENV},
        "threadpools": threadpool_info(),
        "fastconv_build": {
            k: build.get(k)
            for k in (
                "extension",
                "openmp",
                "openmp_unavailable",
                "debug_build",
                "omp_max_threads",
                "kernels",
                "isa",
                "features",
                "kernels_reason",
            )
        },
    }
    blas = [p for p in info["threadpools"] if p.get("user_api") == "blas"]
    info["openblas_kernels"] = ", ".join(f"{p.get('internal_api')} {p.get('architecture')}" for p in blas) or None
    if torch is not None:
        info["torch_parallel_info"] = torch.__config__.parallel_info()
    return info


def describe(doc):
    """Two lines for the top of a report: the machine, the versions and the BLAS kernels."""
    m, v, t = doc["machine"], doc["versions"], doc["threads"]
    coretype = t["env"].get("OPENBLAS_CORETYPE")
    family = f"family/model {m['cpu']['family_model']}, " if m["cpu"].get("family_model") else ""
    cpu = (
        f"{m['cpu']['model']} ({family}{m['cpu']['usable_cpus']} usable CPUs"
        f"{', ' + ' '.join(m['cpu']['flags']) if m['cpu']['flags'] else ''})"
    )
    libs = ", ".join(f"{k} {v[k]}" for k in ("fastconv", "numpy", "torch") if v.get(k))
    build = t.get("fastconv_build", {})
    openmp = "" if build.get("openmp") is None else f", OpenMP: {openmp_text(build['openmp'])}"
    return (
        f"Machine: {cpu}, {m.get('memory_mib')} MiB RAM; Python {v['python']}, {libs}.\n"
        f"OpenBLAS kernels: {t['openblas_kernels']} (OPENBLAS_CORETYPE="
        f"{coretype if coretype is not None else 'unset'}); fastconv kernels: "
        f"{build.get('kernels')} ({build.get('isa')} build{openmp})."
    )


def collect(torch=None):
    return {
        "machine": {"cpu": cpu_info(), "memory_mib": memory_total_mib()},
        "versions": versions(),
        "threads": thread_settings(torch),
    }
