"""Build script: declares the Cython extension ``fastconv.kernels._im2col``, and on x86-64
more builds of the same kernels for newer CPUs, one per entry of fastconv/kernels/isa.py's
``OPTIONAL``: ``fastconv.kernels._im2col_avx512`` (AVX-512 F/BW/VL/DQ/CD) and
``fastconv.kernels._im2col_avx2`` (AVX2), each compiled with -m<feature> for exactly the
features isa.py lists (optional: if the compiler cannot build one, only a warning;
fastconv/kernels/picker.py loads one only on a CPU that has all its features). Every build
is compiled with -ffp-contract=off: no a * b + c becomes an FMA (which AVX-512F has),
so all builds give the same bits.

Everything else about the package lives in pyproject.toml.

Environment switches (read at build time):

* ``FASTCONV_CYTHON_DEBUG=1`` builds with bounds checks, wraparound and
  initialized-memoryview checks turned on (and -O0 -g), for tests that hunt
  out-of-bounds access. ``fastconv.show_config()`` reports which build is in.
* ``FASTCONV_NO_OPENMP=1`` builds without OpenMP even where the compiler has it
  (the kernels then run on fastconv's own worker threads, as where it has none).
* ``FASTCONV_NATIVE=1`` adds ``-march=native`` (opt-in only: a binary built
  that way may crash with SIGILL on an older CPU); no optional builds then.
"""

import hashlib
import os
import platform
import runpy
import subprocess
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


def _brew_prefix(formula):
    """Homebrew's prefix of ``formula`` (``brew --prefix libomp``), or None without brew."""
    try:
        out = subprocess.run(["brew", "--prefix", formula], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    prefix = out.stdout.strip()
    return prefix if out.returncode == 0 and os.path.isdir(prefix) else None


def _openmp_candidates():
    """(compile_args, link_args) to try, in order, for this platform's compilers."""
    if sys.platform == "win32":
        # MSVC: OpenMP 2.0, which wants signed loop indices (every prange runs on Py_ssize_t).
        return [(["/openmp"], [])]
    if sys.platform == "darwin":
        # Apple clang has no -fopenmp of its own: the preprocessor flag plus LLVM's libomp,
        # from Homebrew (`brew install libomp`, keg-only: its paths must be given) or the
        # default search paths; a GCC from Homebrew (CC=gcc-14) takes -fopenmp.
        candidates = []
        prefix = _brew_prefix("libomp")
        if prefix:
            inc, lib = os.path.join(prefix, "include"), os.path.join(prefix, "lib")
            candidates.append((["-Xpreprocessor", "-fopenmp", f"-I{inc}"], [f"-L{lib}", "-lomp", f"-Wl,-rpath,{lib}"]))
        candidates.append((["-Xpreprocessor", "-fopenmp"], ["-lomp"]))
        candidates.append((["-fopenmp"], ["-fopenmp"]))
        return candidates
    return [(["-fopenmp"], ["-fopenmp"])]


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or None if the compiler lacks it."""
    for cflags, lflags in _openmp_candidates():
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(OPENMP_PROBE)
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=lflags)
            except Exception:  # noqa: BLE001  (any compile or link error: these flags do not give OpenMP)
                continue
        return cflags, lflags
    return None


HERE = os.path.dirname(os.path.abspath(__file__))

#: The kernels' source: _im2col.pyx and the files it includes.
KERNELS = "fastconv/kernels"
KERNEL_SOURCES = [
    f"{KERNELS}/{name}"
    for name in (
        "_im2col.pyx",
        "common.pxi",
        "im2col.pxi",
        "pooling.pxi",
        "batchnorm.pxi",
        "update.pxi",
        "activations.pxi",
        "winograd.pxi",
        "direct.pxi",
        "direct.h",
        "direct_body.h",
        "winograd4.h",
        "winograd4_body.h",
        "peak.pxi",
        "cpu.h",
    )
]

#: The names of the builds and the CPU features of each (fastconv/kernels/isa.py, loaded by path:
#: fastconv cannot be imported before it is built).
ISA = runpy.run_path(os.path.join(HERE, KERNELS, "isa.py"))

#: Tuning flags of an optional build beyond its -m<feature> flags. The AVX-512 build keeps
#: 256-bit vectors (with AVX-512's masks, 32 registers and new instructions): 512-bit ones
#: made the short loops of the 3x3 pooling and Winograd kernels slower (docs/performance.md).
TUNING = {"avx512": ["-mprefer-vector-width=256"]}


def _source_id():
    """48 bits of the kernels' source hash, compiled into every build: fastconv/kernels/picker.py
    refuses an optional module left over from other source (an optional build that failed)."""
    digest = hashlib.sha256()
    for name in KERNEL_SOURCES:
        with open(os.path.join(HERE, name), "rb") as f:
            digest.update(f.read())
    return int(digest.hexdigest()[:12], 16)


class BuildExt(build_ext):
    """build_ext that probes the compiler for OpenMP before compiling, and compiles the
    builds side by side (one compiler per core) unless told otherwise (``-j``)."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        flags = None if NO_OPENMP else _openmp_flags(self.compiler)
        unavailable = flags is None and not NO_OPENMP
        if unavailable:
            # pip shows this only with -v: the build also records it (build_info()'s
            # "openmp_unavailable"), and fastconv/kernels/picker.py warns at import.
            warnings.warn(
                "fastconv: this compiler has no usable OpenMP; building the kernels without "
                "it (they run on fastconv's own worker threads; CONTRIBUTING.md: building).",
                stacklevel=1,
            )
        is_msvc = self.compiler.compiler_type == "msvc"
        optional = {ISA["module_name"](b.isa): b for b in ISA["OPTIONAL"]}
        for ext in self.extensions:
            if flags is not None:
                ext.extra_compile_args += flags[0]
                ext.extra_link_args += flags[1]
            build = optional.get(ext.name)
            isa = build.isa if build else (ISA["NATIVE"] if NATIVE else ISA["BASELINE"])
            if not is_msvc:
                ext.extra_compile_args += ["-O0", "-g"] if DEBUG else ["-O3"]
                ext.extra_compile_args += ["-ffp-contract=off"]  # no FMA contraction: the same bits
                # sqrt need not set errno (the same results): else its call is a branch, and no loop vectorizes
                ext.extra_compile_args += ["-fno-math-errno"]
                if NATIVE:
                    ext.extra_compile_args += ["-march=native"]
                if build:
                    ext.extra_compile_args += [f"-m{f}" for f in build.features] + TUNING.get(isa, [])
            ext.define_macros += [
                ("FASTCONV_ISA", isa),
                ("FASTCONV_DEBUG_BUILD", "1" if DEBUG else "0"),
                ("FASTCONV_OPENMP_UNAVAILABLE", "1" if unavailable else "0"),
                ("FASTCONV_SOURCE_ID", f"{_source_id()}LL"),
                ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ]
        super().build_extensions()


INCLUDE_DIRS = [numpy.get_include(), KERNELS]  # for cpu.h and direct.h

extensions = [
    Extension(
        ISA["module_name"](ISA["BASELINE"]),
        [f"{KERNELS}/_im2col.pyx"],
        include_dirs=INCLUDE_DIRS,
        depends=KERNEL_SOURCES[1:],
    )
]
# The optional builds: GCC/Clang on x86-64, and not when -march=native already targets this CPU.
if not NATIVE and sys.platform != "win32" and platform.machine().lower() in ("x86_64", "amd64"):
    for build in ISA["OPTIONAL"]:
        extensions.append(
            Extension(
                ISA["module_name"](build.isa),
                [ISA["module_name"](build.isa).replace(".", "/") + ".pyx"],
                include_dirs=INCLUDE_DIRS,
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
