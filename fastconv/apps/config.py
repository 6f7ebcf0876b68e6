"""``fastconv.show_config()``: how this installation was built and will run."""

import os
import platform
import sys

import numpy as np

from ..engine.runtimes import RUNTIMES


def openmp_text(openmp):
    """How the kernels use threads, for ``fastconv config`` and ``fastconv bench``'s report."""
    return "yes" if openmp else "no (kernels on fastconv's threads)"


def configuration():
    """What ``show_config`` prints, as a dict: the versions, the kernel build in use
    (its ``build_info()``) and why, and the thread settings of OpenMP and the BLAS."""
    from .. import __version__

    info = {
        "fastconv": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "extension": False,
        "openmp": False,
        "debug_build": None,
        "omp_max_threads": None,
        "blas": [],
        "env": {
            k: os.environ.get(k)
            for k in (
                "OMP_NUM_THREADS",
                "OMP_WAIT_POLICY",
                "GOMP_SPINCOUNT",
                "OPENBLAS_NUM_THREADS",
                "OPENBLAS_THREAD_TIMEOUT",
                "OPENBLAS_CORETYPE",
            )
        },
        "imported_before_numpy": RUNTIMES.openblas_timeout_before_numpy,
        "openmp_wait_policy": RUNTIMES.openmp_wait_policy,
        "openmp_spin_count": RUNTIMES.openmp_spin_count,
    }
    try:
        from ..kernels.picker import kernels, reason
    except ImportError as exc:  # no extension at all
        info["extension_error"] = str(exc)
    except ValueError as exc:  # the extension is there, but FASTCONV_KERNELS asks for what it cannot give
        info["kernels_error"] = str(exc)
    else:
        info["extension"] = True
        info.update(kernels.build_info())
        info["omp_max_threads"] = kernels.omp_max_threads()
        info["kernels"] = kernels.__name__
        info["kernels_reason"] = reason
        from ..engine import threads

        info["conv_workers"] = threads.blas_threads()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    else:
        info["blas"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
            for p in threadpool_info()
        ]
    return info


def show_config():
    """Print the version, whether the extension and OpenMP are in, threads and BLAS."""
    info = configuration()
    print(f"fastconv {info['fastconv']} (Python {info['python']}, numpy {info['numpy']})")
    print(f"platform: {info['platform']}")
    if info["extension"]:
        print(
            f"extension {info['kernels']}: built for {info['isa']} instructions, in use "
            f"because {info['kernels_reason']}" + (" (DEBUG: bounds checks on)" if info["debug_build"] else "")
        )
        if info["openmp"]:
            print(
                f"OpenMP: {openmp_text(True)}, threads: {info['omp_max_threads']}, "
                f"idle-thread policy: {info['openmp_wait_policy']}"
                + (f" after GOMP_SPINCOUNT={info['openmp_spin_count']} spins" if info["openmp_spin_count"] else "")
            )
        else:
            print(
                f"OpenMP: {openmp_text(False)}: pooling, batchnorm and Adam split over "
                f"{info['conv_workers']} worker thread(s), one kernel thread each"
            )
            if info.get("openmp_unavailable"):
                print(
                    "note: the compiler had no usable OpenMP when fastconv was built (Apple clang "
                    "without libomp, say): a single image's convolution runs on one thread; "
                    "CONTRIBUTING.md says how to build with OpenMP"
                )
        if info["conv_workers"] > 1:
            print(
                f"convolution: chunks of images on {info['conv_workers']} worker threads, one BLAS "
                "thread each (as many as the BLAS may use)"
            )
        else:
            print("convolution: in the calling thread (the BLAS may use one thread)")
        if info["openmp"] and info["openmp_wait_policy"] != "PASSIVE":
            print(
                "note: a libgomp with spinning idle threads was loaded before fastconv (PyTorch "
                "ships one), so fastconv.fast runs its OpenMP kernels on one thread; for full speed "
                "export OMP_WAIT_POLICY=PASSIVE or import fastconv first"
            )
    elif "kernels_error" in info:
        # the message names FASTCONV_KERNELS and what it may be
        print(f"extension fastconv.kernels._im2col: built, but not loaded: {info['kernels_error']}")
        print("  fastconv.fast runs once that is fixed; fastconv.naive works meanwhile")
    else:
        print(f"extension fastconv.kernels._im2col: MISSING or unusable ({info.get('extension_error')})")
        print("  build it with `pip install -e .` in the source tree; fastconv.naive works without it")
    env = " ".join(f"{k}={v}" for k, v in info["env"].items() if v is not None)
    print(f"environment: {env or '(none of the thread variables set)'}")
    if not info["imported_before_numpy"] and info["env"]["OPENBLAS_THREAD_TIMEOUT"] is None:
        print(
            "note: numpy was loaded before fastconv, so OpenBLAS's idle threads spin for 0.1 s "
            "after each call; export OPENBLAS_THREAD_TIMEOUT=10 (or import fastconv first) "
            "for faster convolutions"
        )
    if isinstance(info["blas"], str):
        print(f"BLAS: unknown ({info['blas']})")
    else:
        for lib in info["blas"]:
            print(
                f"thread pool: {lib['internal_api']} {lib['version'] or ''} "
                f"arch={lib['architecture']} threads={lib['num_threads']} ({lib['filepath']})"
            )


def add_arguments(parser):
    """``fastconv config`` takes no arguments."""


def run(args):
    show_config()
    return 0
