"""Cython kernels of fastconv's fast path: im2col/col2im, pooling, spatial batchnorm,
the update rules and Winograd, one included file per family (``common.pxi``,
``im2col.pxi``, ``pooling.pxi``, ``batchnorm.pxi``, ``update.pxi``, ``winograd.pxi``,
``direct.pxi`` with its C loops in ``direct.h`` and ``direct_body.h``; ``peak.pxi``: the
benchmark's floating-point peak).

These functions only loop. The Python modules of ``fastconv/engine/`` own all
policy: they validate arguments, choose and check dtypes, make inputs
C-contiguous, allocate outputs, workspaces and scratch, pick the kernel (the
max-pool phased or direct one) and the thread count. A kernel checks only what
keeps its loops inside the buffers it was given, and raises ValueError there.
Compiler directives (boundscheck, wraparound, ...) are set once in setup.py.

Each kernel's docstring marks its arguments: IN (read only), OUT (overwritten,
its old contents never read), INOUT (read and updated), SCRATCH (contents on
entry and exit mean nothing).

Layouts (one vocabulary everywhere):

* ``x``    (N, C, H, W), one batch chunk of images.
* ``cols`` (C*kh*kw, N*out_h*out_w). Row ``r = (c*kh + i)*kw + j`` holds kernel
  tap (i, j) of channel c; column ``n*P + oh*out_w + ow`` (``P = out_h*out_w``)
  holds output pixel (oh, ow) of image n. So ``w.reshape(F, -1) @ cols`` is
  the convolution, and one group's rows form one contiguous block.
* ``y``    (F, N*P), the GEMM result, scattered into ``out`` (N, F, P).

Input pixel of tap (i, j) for output (oh, ow):
``ih = oh*stride_h - pad_h + i*dil_h``, ``iw = ow*stride_w - pad_w + j*dil_w``;
taps outside the image read as zero (convolution) or are skipped (pooling).

``num_threads`` (>= 1) is the team size of a kernel's parallel loop; the engine
passes 1 or ``omp_max_threads()``. Every parallel loop writes disjoint memory:
a row block of ``cols``, an image plane of ``dx``, ...
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int32_t
from libc.string cimport memcpy, memset
from libc.math cimport INFINITY, sqrt, sqrtf

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fc_have_openmp(void) { return 1; }
    static int fc_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fc_have_openmp(void) { return 0; }
    static int fc_omp_max_threads(void) { return 1; }
    #endif
    #ifndef FASTCONV_SOURCE_ID
    #define FASTCONV_SOURCE_ID 0LL
    #endif
    #ifndef FASTCONV_OPENMP_UNAVAILABLE
    #define FASTCONV_OPENMP_UNAVAILABLE 0
    #endif
    """
    int fc_have_openmp() noexcept nogil
    int fc_omp_max_threads() noexcept nogil
    int FASTCONV_DEBUG_BUILD
    int FASTCONV_OPENMP_UNAVAILABLE
    long long FASTCONV_SOURCE_ID

cdef extern from "cpu.h":
    const char *fc_isa
    const char *fc_target_features
    int fc_cpu_supports(const char *feature) noexcept nogil


def build_info():
    """How this extension was compiled: OpenMP in or not (and whether the compiler had
    none), bounds checks on or not, from which source, for which build ("isa": a name of
    fastconv/kernels/isa.py, "baseline", "native" or an optional build's) and the SIMD
    features its compiler enabled ("features")."""
    return {
        "openmp": bool(fc_have_openmp()),
        # setup.py's probe found no usable OpenMP (not FASTCONV_NO_OPENMP=1): the picker warns
        "openmp_unavailable": bool(FASTCONV_OPENMP_UNAVAILABLE),
        "debug_build": bool(FASTCONV_DEBUG_BUILD),
        "isa": fc_isa.decode("ascii"),
        "features": tuple(fc_target_features.decode("ascii").split()),
        "source_id": int(FASTCONV_SOURCE_ID),  # a hash of the kernels' source at build time
    }


def omp_max_threads():
    """OpenMP's current default team size for the calling thread (``omp_get_max_threads()``,
    which OMP_NUM_THREADS and threadpoolctl set); 1 in a build without OpenMP."""
    return int(fc_omp_max_threads())


def cpu_supports(features):
    """Whether this CPU (and OS) can run code that uses every one of ``features`` (GCC's
    names: "avx2", "avx512f", ...; fastconv/kernels/isa.py lists each build's): asked of the CPU
    by the compiler's runtime (cpuid, and xgetbv for the registers the OS saves); False on
    compilers or machines other than GCC/Clang on x86. ValueError for an unknown name."""
    cdef int has
    answer = True
    for feature in features:
        has = fc_cpu_supports(feature.encode("ascii"))
        if has < 0:
            raise ValueError(f"unknown CPU feature {feature!r}")
        answer = answer and has == 1
    return answer


# The kernel families, one file each; this file is the extension every build compiles.
include "common.pxi"
include "im2col.pxi"
include "pooling.pxi"
include "batchnorm.pxi"
include "update.pxi"
include "activations.pxi"
include "winograd.pxi"
include "direct.pxi"
include "peak.pxi"
