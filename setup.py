"""Build script: declares the Cython extension ``fastconv._im2col``, and on x86 a
second build of the same kernels with AVX2, ``fastconv._im2col_avx2`` (optional:
if the compiler cannot build it, only a warning; fastconv/_kernels.py loads it
only on a CPU that has AVX2).

Everything else about the package lives in pyproject.toml.

Environment switches (read at build time):

* ``FASTCONV_CYTHON_DEBUG=1`` builds with bounds checks, wraparound and
  initialized-memoryview checks turned on (and -O0 -g), for tests that hunt
  out-of-bounds access. ``fastconv.show_config()`` reports which build is in.
* ``FASTCONV_NO_OPENMP=1`` builds without OpenMP even where the compiler has it.
* ``FASTCONV_NATIVE=1`` adds ``-march=native`` (opt-in only: a binary built
  that way may crash with SIGILL on an older CPU); no AVX2 build then.
"""
import hashlib
import os
import platform
import sys
import tempfile
import textwrap
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTCONV_CYTHON_DEBUG", "0") not in ("", "0")
NO_OPENMP = os.environ.get("FASTCONV_NO_OPENMP", "0") not in ("", "0")
NATIVE = os.environ.get("FASTCONV_NATIVE", "0") not in ("", "0")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
    """
)


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or None if the compiler lacks it."""
    if sys.platform == "win32":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    for cflags, lflags in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(OPENMP_PROBE)
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(
                    objs, os.path.join(tmp, "probe"), extra_postargs=lflags
                )
            except Exception:
                continue
        return cflags, lflags
    return None


#: The kernels' source: _im2col.pyx and the files it includes.
KERNEL_SOURCES = ["fastconv/_im2col.pyx", "fastconv/_winograd.pxi"]


def _source_id():
    """48 bits of the kernels' source hash, compiled into both builds: fastconv/_kernels.py
    refuses an AVX2 module left over from other source (an optional build that failed)."""
    digest = hashlib.sha256()
    for name in KERNEL_SOURCES:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), name), "rb") as f:
            digest.update(f.read())
    return int(digest.hexdigest()[:12], 16)


class BuildExt(build_ext):
    """build_ext that probes the compiler for OpenMP before compiling."""

    def build_extensions(self):
        flags = None if NO_OPENMP else _openmp_flags(self.compiler)
        if flags is None and not NO_OPENMP:
            warnings.warn(
                "fastconv: this compiler has no usable OpenMP; building the "
                "im2col kernels single-threaded (BLAS still uses its own threads)."
            )
        is_msvc = self.compiler.compiler_type == "msvc"
        for ext in self.extensions:
            if flags is not None:
                ext.extra_compile_args += flags[0]
                ext.extra_link_args += flags[1]
            avx2 = ext.name.endswith("_avx2")
            if not is_msvc:
                ext.extra_compile_args += ["-O0", "-g"] if DEBUG else ["-O3"]
                if NATIVE:
                    ext.extra_compile_args += ["-march=native"]
                if avx2:  # AVX2 only: no -mfma, so no contraction changes a result
                    ext.extra_compile_args += ["-mavx2"]
            ext.define_macros += [
                ("FASTCONV_ISA_AVX2", "1" if avx2 else "0"),
                ("FASTCONV_ISA_NATIVE", "1" if NATIVE else "0"),
                ("FASTCONV_DEBUG_BUILD", "1" if DEBUG else "0"),
                ("FASTCONV_SOURCE_ID", f"{_source_id()}LL"),
                ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ]
        super().build_extensions()


extensions = [
    Extension(
        "fastconv._im2col",
        ["fastconv/_im2col.pyx"],
        include_dirs=[numpy.get_include()],
        depends=KERNEL_SOURCES[1:],
    )
]
# The AVX2 build: GCC/Clang on x86-64, and not when -march=native already targets this CPU.
if (not NATIVE and sys.platform != "win32"
        and platform.machine().lower() in ("x86_64", "amd64")):
    extensions.append(
        Extension(
            "fastconv._im2col_avx2",
            ["fastconv/_im2col_avx2.pyx"],
            include_dirs=[numpy.get_include()],
            depends=KERNEL_SOURCES,
            optional=True,
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        # One generated-C folder per build mode, so that switching the debug
        # flag always regenerates the C code instead of reusing a stale file.
        build_dir=os.path.join("build", "cython-debug" if DEBUG else "cython"),
    ),
    cmdclass={"build_ext": BuildExt},
)
