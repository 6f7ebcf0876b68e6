"""Cython kernels of fastconv's fast path: im2col/col2im, pooling and spatial batchnorm.

These functions only loop. The Python wrappers in ``fastconv/fast.py`` own all
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

``num_threads`` (>= 1) is the team size of a kernel's parallel loop; fast.py
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

cdef extern from "_cpu.h":
    const char *fc_isa
    const char *fc_target_features
    int fc_cpu_supports(const char *feature) noexcept nogil


def build_info():
    """How this extension was compiled: OpenMP in or not (and whether the compiler had
    none), bounds checks on or not, from which source, for which build ("isa": a name of
    fastconv/_isa.py, "baseline", "native" or an optional build's) and the SIMD features
    its compiler enabled ("features")."""
    return {
        "openmp": bool(fc_have_openmp()),
        # setup.py's probe found no usable OpenMP (not FASTCONV_NO_OPENMP=1): fastconv/_kernels.py warns
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
    names: "avx2", "avx512f", ...; fastconv/_isa.py lists each build's): asked of the CPU
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


cdef int _check_threads(int num_threads) except -1:
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return num_threads


cdef int _check_channels(Py_ssize_t c_lo, Py_ssize_t c_hi, Py_ssize_t C) except -1:
    if not 0 <= c_lo <= c_hi <= C:
        raise ValueError(f"need 0 <= c_lo <= c_hi <= {C}, got c_lo={c_lo}, c_hi={c_hi}")
    return 0


cdef inline Py_ssize_t _first_valid(Py_ssize_t start, Py_ssize_t step,
                                     Py_ssize_t length) noexcept nogil:
    """First o in [0, length] with ``start + o*step >= 0``."""
    cdef Py_ssize_t a = 0
    if start < 0:
        a = (-start + step - 1) // step
    return min(a, length)


cdef inline Py_ssize_t _end_valid(Py_ssize_t start, Py_ssize_t step, Py_ssize_t length,
                                  Py_ssize_t size) noexcept nogil:
    """One past the last o < length with ``start + o*step < size``."""
    cdef Py_ssize_t b = 0
    if start <= size - 1:
        b = (size - 1 - start) // step + 1
    return min(b, length)


# Stride 1 and out_w == W (a "same"-width convolution, the common case): output
# row oh of one kernel tap reads input row ih = oh + ih0 shifted by iw0 columns,
# and consecutive output rows read consecutive input rows. So the tap's whole
# cols row (out_h*W entries) is ONE contiguous shifted copy of the image plane,
# right except in the border columns ow < lo and ow >= hi, which belong to the
# padding. One long memcpy plus a few stores per row beats out_h short copies
# (docs/performance.md, "im2col and col2im").

cdef inline bint _rows_line_up(Py_ssize_t H, Py_ssize_t W, Py_ssize_t stride_h,
                               Py_ssize_t stride_w, Py_ssize_t out_w) noexcept nogil:
    return stride_h == 1 and stride_w == 1 and out_w == W and H > 0 and W > 0


cdef inline void _flat_span(Py_ssize_t H, Py_ssize_t W, Py_ssize_t ih0, Py_ssize_t iw0,
                            Py_ssize_t out_h, Py_ssize_t* oh_lo, Py_ssize_t* oh_hi,
                            Py_ssize_t* a, Py_ssize_t* b, Py_ssize_t* src0) noexcept nogil:
    """For one tap: output rows [oh_lo, oh_hi) read the image; entries k in [a, b) of
    the cols row pair with pixel src0 + k of the plane, and src0 + k stays in
    [0, H*W) there. Entries of rows [oh_lo, oh_hi) outside [a, b) are border columns."""
    oh_lo[0] = _first_valid(ih0, 1, out_h)
    oh_hi[0] = max(oh_lo[0], _end_valid(ih0, 1, out_h, H))
    src0[0] = ih0 * W + iw0
    a[0] = max(oh_lo[0] * W, -src0[0])
    b[0] = min(oh_hi[0] * W, H * W - src0[0])


cdef inline void _copy_short(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    """Copy one short row (an output row of im2col, tens of pixels). Four loads, then four
    stores: gcc compiles this to vector moves, while a plain ``dst[k] = src[k]`` loop
    becomes a memcpy call per row, whose overhead dominated (docs/performance.md)."""
    cdef Py_ssize_t k = 0
    cdef floating a, b, c, d
    while k + 4 <= n:
        a = src[k]
        b = src[k + 1]
        c = src[k + 2]
        d = src[k + 3]
        dst[k] = a
        dst[k + 1] = b
        dst[k + 2] = c
        dst[k + 3] = d
        k += 4
    while k < n:
        dst[k] = src[k]
        k += 1


cdef inline void _add_short(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    """``dst[k] += src[k]`` over one short row, four at a time (see _copy_short): gcc
    vectorizes it without the aliasing checks and peeling a plain loop gets."""
    cdef Py_ssize_t k = 0
    cdef floating a, b, c, d
    while k + 4 <= n:
        a = dst[k] + src[k]
        b = dst[k + 1] + src[k + 1]
        c = dst[k + 2] + src[k + 2]
        d = dst[k + 3] + src[k + 3]
        dst[k] = a
        dst[k + 1] = b
        dst[k + 2] = c
        dst[k + 3] = d
        k += 4
    while k < n:
        dst[k] += src[k]
        k += 1


cdef inline void _copy(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    """memcpy in pieces of at most 1 KiB. glibc copies longer blocks with ``rep movsb``,
    which is slow on some AMD CPUs when source and destination are misaligned against
    each other, as a shifted tap always is (docs/performance.md)."""
    cdef Py_ssize_t k = 0, piece = 1024 // sizeof(floating)
    while k < n:
        memcpy(dst + k, src + k, min(piece, n - k) * sizeof(floating))
        k += piece


cdef inline void _zero_border_columns(floating* row, Py_ssize_t W, Py_ssize_t oh_lo, Py_ssize_t oh_hi,
                                      Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Zero columns [0, lo) and [hi, W) of rows [oh_lo, oh_hi) of a (rows, W) block.
    Column by column: a row-wise loop would become one tiny memset call per row."""
    cdef Py_ssize_t oh, ow
    for ow in range(lo):
        for oh in range(oh_lo, oh_hi):
            row[oh * W + ow] = 0
    for ow in range(hi, W):
        for oh in range(oh_lo, oh_hi):
            row[oh * W + ow] = 0


cdef inline void _im2col_row_flat(const floating* plane, floating* row,
                                  Py_ssize_t H, Py_ssize_t W, Py_ssize_t ih0, Py_ssize_t iw0,
                                  Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t out_h) noexcept nogil:
    """One tap's cols row (out_h*W entries) from one image plane (H*W pixels)."""
    cdef Py_ssize_t oh_lo, oh_hi, a, b, src0
    _flat_span(H, W, ih0, iw0, out_h, &oh_lo, &oh_hi, &a, &b, &src0)
    if oh_lo > 0:
        memset(row, 0, oh_lo * W * sizeof(floating))
    if oh_hi < out_h:
        memset(row + oh_hi * W, 0, (out_h - oh_hi) * W * sizeof(floating))
    if b > a:
        _copy(row + a, plane + (src0 + a), b - a)
    _zero_border_columns(row, W, oh_lo, oh_hi, lo, hi)


cdef inline void _col2im_row_flat(floating* row, floating* plane,
                                  Py_ssize_t H, Py_ssize_t W, Py_ssize_t ih0, Py_ssize_t iw0,
                                  Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t out_h) noexcept nogil:
    """Add one tap's cols row back into one image plane. The border-column entries of
    the row are zeroed first (they have no pixel), so one flat add is exact."""
    cdef Py_ssize_t oh_lo, oh_hi, a, b, src0, k
    cdef floating* dst
    _flat_span(H, W, ih0, iw0, out_h, &oh_lo, &oh_hi, &a, &b, &src0)
    _zero_border_columns(row, W, oh_lo, oh_hi, lo, hi)
    if b <= a:
        return
    dst = plane + (src0 + a)
    row = row + a
    for k in range(b - a):
        dst[k] += row[k]


cdef int _check_cols(Py_ssize_t rows, Py_ssize_t columns, Py_ssize_t C, Py_ssize_t kh, Py_ssize_t kw,
                     Py_ssize_t N, Py_ssize_t P) except -1:
    """ValueError unless a cols matrix is (rows, columns) = (C*kh*kw, N*P), as im2col and col2im need."""
    if rows != C * kh * kw or columns != N * P:
        raise ValueError(f"cols must have shape ({C * kh * kw}, {N * P}), got ({rows}, {columns})")
    return 0


cdef struct _TapColumns:
    Py_ssize_t iw0  # the input column a kernel column reads at ow = 0
    Py_ssize_t lo   # output columns [lo, hi) read the image, the others the padding
    Py_ssize_t hi


cdef inline _TapColumns _tap_columns(Py_ssize_t j, Py_ssize_t dil_w, Py_ssize_t pad_w, Py_ssize_t stride_w,
                                     Py_ssize_t out_w, Py_ssize_t W) noexcept nogil:
    """Where kernel column j reads the image. Returned by value: a prange body must
    assign its per-iteration variables itself, or OpenMP threads would share them."""
    cdef _TapColumns tap
    tap.iw0 = j * dil_w - pad_w
    tap.lo = _first_valid(tap.iw0, stride_w, out_w)
    tap.hi = max(tap.lo, _end_valid(tap.iw0, stride_w, out_w, W))
    return tap


def im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols,
           Py_ssize_t kh, Py_ssize_t kw,
           Py_ssize_t stride_h, Py_ssize_t stride_w,
           Py_ssize_t pad_h, Py_ssize_t pad_w,
           Py_ssize_t dil_h, Py_ssize_t dil_w,
           Py_ssize_t out_h, Py_ssize_t out_w, int num_threads):
    """Fill ``cols`` with the patches of ``x``.

    x     (N, C, H, W)                  IN
    cols  (C*kh*kw, N*out_h*out_w)      OUT, every entry (zero where a tap reads the padding)
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t P = out_h * out_w
    cdef Py_ssize_t t, r, n, c, i, j, oh, ow, ih
    cdef _TapColumns tap
    cdef bint flat
    cdef floating* dst
    cdef const floating* src
    _check_cols(cols.shape[0], cols.shape[1], C, kh, kw, N, P)
    _check_threads(num_threads)
    if N == 0 or P == 0:
        return
    flat = _rows_line_up(H, W, stride_h, stride_w, out_w)
    with nogil:
        for t in prange(C * kh * kw * N, schedule="static", num_threads=num_threads):
            r = t // N
            n = t - r * N
            c = r // (kh * kw)
            i = (r // kw) % kh
            j = r % kw
            tap = _tap_columns(j, dil_w, pad_w, stride_w, out_w, W)
            if flat:
                _im2col_row_flat(&x[n, c, H - 1, W - 1] - (H * W - 1),
                                 &cols[r, n * P + P - 1] - (P - 1),
                                 H, W, i * dil_h - pad_h, tap.iw0, tap.lo, tap.hi, out_h)
                continue
            for oh in range(out_h):
                ih = oh * stride_h - pad_h + i * dil_h
                # One output row: cols[r, n*P + oh*out_w + (0 .. out_w-1)]. Indexing its
                # last element keeps the row under the bounds checks of a debug build.
                dst = &cols[r, n * P + oh * out_w + out_w - 1] - (out_w - 1)
                if ih < 0 or ih >= H:
                    memset(dst, 0, out_w * sizeof(floating))
                    continue
                if tap.lo > 0:
                    memset(dst, 0, tap.lo * sizeof(floating))
                if tap.hi > tap.lo:
                    src = &x[n, c, ih, tap.iw0 + (tap.hi - 1) * stride_w] - (tap.hi - 1) * stride_w
                    if stride_w == 1:
                        _copy_short(dst + tap.lo, src + tap.lo, tap.hi - tap.lo)
                    else:
                        for ow in range(tap.lo, tap.hi):
                            dst[ow] = src[ow * stride_w]
                if tap.hi < out_w:
                    memset(dst + tap.hi, 0, (out_w - tap.hi) * sizeof(floating))


def col2im(floating[:, ::1] cols, floating[:, :, :, ::1] dx,
           Py_ssize_t kh, Py_ssize_t kw,
           Py_ssize_t stride_h, Py_ssize_t stride_w,
           Py_ssize_t pad_h, Py_ssize_t pad_w,
           Py_ssize_t dil_h, Py_ssize_t dil_w,
           Py_ssize_t out_h, Py_ssize_t out_w, int num_threads):
    """Overwrite ``dx`` with the sum of ``cols``' patches (the adjoint of im2col).

    cols  (C*kh*kw, N*out_h*out_w)      IN; as scratch, its entries at padded positions
                                        (those im2col sets to zero, which have no pixel to
                                        go to) may be overwritten with zeros, no other entry
    dx    (N, C, H, W)                  OUT, every pixel
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t P = out_h * out_w
    cdef Py_ssize_t t, r, n, c, i, j, oh, ow, ih
    cdef _TapColumns tap
    cdef bint flat
    cdef floating* dst
    cdef const floating* src
    _check_cols(cols.shape[0], cols.shape[1], C, kh, kw, N, P)
    _check_threads(num_threads)
    if N == 0:
        return
    flat = P > 0 and _rows_line_up(H, W, stride_h, stride_w, out_w)
    with nogil:
        for t in prange(N * C, schedule="static", num_threads=num_threads):
            n = t // C
            c = t - n * C
            dst = &dx[n, c, H - 1, W - 1] - (H * W - 1)
            memset(dst, 0, H * W * sizeof(floating))
            for i in range(kh):
                for j in range(kw):
                    r = (c * kh + i) * kw + j
                    tap = _tap_columns(j, dil_w, pad_w, stride_w, out_w, W)
                    if tap.hi == tap.lo:
                        continue
                    if flat:
                        _col2im_row_flat(&cols[r, n * P + P - 1] - (P - 1),
                                         &dx[n, c, H - 1, W - 1] - (H * W - 1),
                                         H, W, i * dil_h - pad_h, tap.iw0, tap.lo, tap.hi, out_h)
                        continue
                    for oh in range(out_h):
                        ih = oh * stride_h - pad_h + i * dil_h
                        if ih < 0 or ih >= H:
                            continue
                        src = &cols[r, n * P + oh * out_w + tap.hi - 1] - (tap.hi - 1)
                        dst = &dx[n, c, ih, tap.iw0 + (tap.hi - 1) * stride_w] - (tap.hi - 1) * stride_w
                        if stride_w == 1:
                            _add_short(dst + tap.lo, src + tap.lo, tap.hi - tap.lo)
                        else:
                            for ow in range(tap.lo, tap.hi):
                                dst[ow * stride_w] += src[ow]


def scatter_output(const floating[:, ::1] y, floating[:, :, ::1] out,
                   const floating[::1] b, bint has_bias, bint relu, int num_threads):
    """``out[n, f, p] = y[f, n*P + p] (+ b[f])``: GEMM result to NCHW. With ``relu``,
    ``max(value, 0)`` as np.maximum computes it (NaN stays NaN).

    y     (F, N*P)                      IN
    out   (N, F, P)                     OUT
    b     (F,)                          IN, read only when ``has_bias``
    """
    cdef Py_ssize_t N = out.shape[0], F = out.shape[1], P = out.shape[2]
    cdef Py_ssize_t t, n, f, p, base
    cdef floating bias, v
    if y.shape[0] != F or y.shape[1] != N * P:
        raise ValueError(f"y must have shape ({F}, {N * P}), got ({y.shape[0]}, {y.shape[1]})")
    if has_bias and b.shape[0] != F:
        raise ValueError(f"b must have shape ({F},), got ({b.shape[0]},)")
    _check_threads(num_threads)
    with nogil:
        for t in prange(N * F, schedule="static", num_threads=num_threads):
            n = t // F
            f = t - n * F
            base = n * P
            bias = b[f] if has_bias else 0
            if relu:
                for p in range(P):
                    v = y[f, base + p] + bias if has_bias else y[f, base + p]
                    out[n, f, p] = v if (v >= 0 or v != v) else 0
            elif has_bias:
                for p in range(P):
                    out[n, f, p] = y[f, base + p] + bias
            else:
                for p in range(P):
                    out[n, f, p] = y[f, base + p]


def gather_dout(const floating[:, :, ::1] dout, floating[:, ::1] dy, double[::1] db,
                bint want_db, int num_threads):
    """``dy[f, n*P + p] = dout[n, f, p]`` and, if ``want_db``, ``db[f] += sum_{n,p} dout[n, f, p]``
    (summed in double, four independent partial sums per row).

    dout  (N, F, P)                     IN
    dy    (F, N*P)                      OUT
    db    (F,)                          INOUT, only when ``want_db``
    """
    cdef Py_ssize_t N = dout.shape[0], F = dout.shape[1], P = dout.shape[2]
    cdef Py_ssize_t n, f, p, P4 = P - P % 4
    cdef double a0, a1, a2, a3
    cdef floating* dst
    cdef const floating* src
    if dy.shape[0] != F or dy.shape[1] != N * P:
        raise ValueError(f"dy must have shape ({F}, {N * P}), got ({dy.shape[0]}, {dy.shape[1]})")
    if want_db and db.shape[0] != F:
        raise ValueError(f"db must have shape ({F},), got ({db.shape[0]},)")
    _check_threads(num_threads)
    if N == 0 or P == 0:
        return
    with nogil:
        for f in prange(F, schedule="static", num_threads=num_threads):
            a0 = 0
            a1 = 0
            a2 = 0
            a3 = 0
            for n in range(N):
                src = &dout[n, f, P - 1] - (P - 1)
                dst = &dy[f, n * P + P - 1] - (P - 1)
                memcpy(dst, src, P * sizeof(floating))
                if want_db:
                    for p in range(0, P4, 4):
                        a0 = a0 + src[p]
                        a1 = a1 + src[p + 1]
                        a2 = a2 + src[p + 2]
                        a3 = a3 + src[p + 3]
                    for p in range(P4, P):
                        a0 = a0 + src[p]
            if want_db:
                db[f] += (a0 + a1) + (a2 + a3)


# ---------------------------------------------------------------- pooling
# Planes are passed flattened: x (N*C, H, W), out/argmax/dout (N*C, out_h*out_w).

cdef inline void _reaching_columns(Py_ssize_t kw, Py_ssize_t stride_w, Py_ssize_t pad_w, Py_ssize_t W,
                                   Py_ssize_t out_w, Py_ssize_t* j_lo, Py_ssize_t* j_hi) noexcept nogil:
    """The kernel columns [j_lo, j_hi) that reach the image for some ow (``j - pad_w +
    ow*stride_w`` in [0, W)): a window far wider than the image (kw up to 2**31 - 1 with
    pad = kw // 2) then costs O(W), not O(kw). Empty (j_hi <= j_lo) if none does."""
    j_lo[0] = max(0, pad_w - (out_w - 1) * stride_w)
    j_hi[0] = min(kw, pad_w + W)


cdef inline bint _beats(floating b, floating a) noexcept nogil:
    """Whether b replaces a as the running maximum: b > a, or b is NaN and a is not (the
    first NaN wins). Written so that GCC vectorizes the loops that use it: ``(b > a) |
    ((b != b) & (a == a))`` on a select's result stops its vectorizer ("no vectype")."""
    return (a == a) & (not (b <= a))


cdef inline void _offer(floating* max_row, int32_t* arg_row, Py_ssize_t k, floating v, int32_t i) noexcept nogil:
    """Output k's running maximum and its index take (v, i) if v beats them."""
    cdef floating mo = max_row[k]
    cdef bint take = _beats(v, mo)
    max_row[k] = v if take else mo
    arg_row[k] = i if take else arg_row[k]


cdef inline void _max_update_pair(const floating* src, floating* max_row, int32_t* arg_row, int32_t idx,
                                  Py_ssize_t n) noexcept nogil:
    """_max_plane_direct's update by two adjacent kernel columns at stride 2 (2x2 / 2
    pooling): the first maximum of each pixel pair, then of the row so far and that (the
    same pick as taking them one after the other). Both loads in one loop body: GCC splits
    even and odd pixels with vector shuffles (a loop per column loads one lane at a time)."""
    cdef Py_ssize_t k
    cdef floating v0, v1
    cdef bint odd
    cdef int32_t one = 1, two = 2  # int32 constants: a bare literal is a C long, 64-bit lanes
    for k in range(n):
        v0 = src[2 * k]
        v1 = src[2 * k + 1]
        odd = _beats(v1, v0)
        _offer(max_row, arg_row, k, v1 if odd else v0, idx + one if odd else idx)
        idx = idx + two


cdef void _max_plane_direct(const floating* xp, floating* op, int32_t* ap,
                            Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w,
                            Py_ssize_t kh, Py_ssize_t stride_h, Py_ssize_t stride_w,
                            Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t j_lo, Py_ssize_t nj,
                            const Py_ssize_t* first, const Py_ssize_t* count) noexcept nogil:
    """One plane, any geometry: each output row is updated in place, tap by tap
    (kernel column j_lo + jj reaches output columns [first[jj], first[jj] + count[jj]))."""
    cdef Py_ssize_t oh, ow, h0, h1, ih, jj, lo, n, k, iw0
    cdef floating v, mo
    cdef bint take
    cdef int32_t idx0
    cdef floating* max_row
    cdef int32_t* arg_row
    cdef const floating* src
    # two kernel columns at stride 2 that reach the same outputs (2x2 / 2 pooling, any padding)
    cdef bint pair = nj == 2 and stride_w == 2 and first[0] == first[1] and count[0] == count[1]
    for oh in range(out_h):
        h0 = oh * stride_h - pad_h
        h1 = min(h0 + kh, H)
        h0 = max(h0, 0)
        max_row = op + oh * out_w
        arg_row = ap + oh * out_w
        for ow in range(out_w):
            max_row[ow] = -INFINITY
            arg_row[ow] = <int32_t>(h0 * W + max(ow * stride_w - pad_w, 0))
        for ih in range(h0, h1):
            if pair:
                iw0 = j_lo - pad_w + first[0] * 2
                _max_update_pair(xp + ih * W + iw0, max_row + first[0], arg_row + first[0],
                                 <int32_t>(ih * W + iw0), count[0])
                continue
            for jj in range(nj):
                n = count[jj]
                lo = first[jj]
                iw0 = j_lo + jj - pad_w + lo * stride_w  # the first pixel this column reads
                src = xp + ih * W + iw0
                idx0 = <int32_t>(ih * W + iw0)
                for k in range(n):
                    v = src[k * stride_w]
                    mo = max_row[lo + k]
                    take = (v > mo) | ((v != v) & (mo == mo))
                    max_row[lo + k] = v if take else mo
                    arg_row[lo + k] = (idx0 + <int32_t>(k * stride_w)) if take else arg_row[lo + k]


cdef inline void _split_row2(const floating* xr, floating* d, Py_ssize_t W, Py_ssize_t pad_w,
                             Py_ssize_t phase_len) noexcept nogil:
    """_max_plane_phased's row split for stride_w == 2, both phases in one pass: with
    the stride a constant, the compiler turns the even/odd split into vector shuffles
    (a runtime stride leaves it one scalar load at a time)."""
    cdef Py_ssize_t e, k, iw, p
    cdef Py_ssize_t a = max(_first_valid(-pad_w, 2, phase_len), _first_valid(1 - pad_w, 2, phase_len))
    cdef Py_ssize_t b = max(a, min(_end_valid(-pad_w, 2, phase_len, W), _end_valid(1 - pad_w, 2, phase_len, W)))
    cdef floating* d0 = d + a
    cdef floating* d1 = d + phase_len + a
    cdef const floating* s = xr + (2 * a - pad_w)
    for k in range(b - a):
        d0[k] = s[2 * k]
        d1[k] = s[2 * k + 1]
    for p in range(2):  # the entries outside [a, b): padding, or a pixel only one phase has
        for e in range(a):
            iw = p - pad_w + 2 * e
            d[p * phase_len + e] = xr[iw] if 0 <= iw < W else -INFINITY
        for e in range(b, phase_len):
            iw = p - pad_w + 2 * e
            d[p * phase_len + e] = xr[iw] if 0 <= iw < W else -INFINITY


cdef inline void _max_update_phases3(const floating* even, const floating* odd, floating* max_row,
                                     int32_t* arg_row, int32_t idx, Py_ssize_t n) noexcept nogil:
    """_max_plane_phased's update by one input row for kw == 3, stride_w == 2: window
    columns 0, 1, 2 of output k are even[k], odd[k], even[k + 1]. The third wins only if
    it beats both others, the second if it beats the first (each "beats" between two
    loaded values: see _beats); then the row so far against that. n is a multiple of 8:
    no tail."""
    cdef Py_ssize_t k
    cdef floating v0, v1, v2, u
    cdef bint b10, b2
    cdef int32_t i1, one = 1, two = 2
    for k in range(n):
        v0 = even[k]
        v1 = odd[k]
        v2 = even[k + 1]
        b10 = _beats(v1, v0)
        b2 = _beats(v2, v0) & _beats(v2, v1)
        u = v1 if b10 else v0
        i1 = idx + one if b10 else idx
        _offer(max_row, arg_row, k, v2 if b2 else u, idx + two if b2 else i1)
        idx = idx + two


cdef void _max_plane_phased(const floating* xp, floating* op, int32_t* ap,
                            Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w,
                            Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                            Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t out_w8, Py_ssize_t phase_len,
                            floating* phases, floating* max_row, int32_t* arg_row) noexcept nogil:
    """One plane, the same result as _max_plane_direct (faster for overlapping windows).

    First every input row is split into its stride_w phases, padded with -inf:
    phase p, entry e holds padded column p + e*stride_w (pixel iw = that - pad_w).
    Window column j of output ow is then entry ow + j // stride_w of phase
    j % stride_w: every tap reads consecutive entries, over the same out_w8
    (a multiple of 8) output columns, so the compiler vectorizes the update
    without gathers or tails, and each input row is split once however many
    windows overlap it. -inf entries never win, so padding needs no test."""
    cdef Py_ssize_t oh, ow, h0, h1, ih, j, p, e, e_lo, e_hi, iw
    cdef floating v, mo
    cdef bint take
    cdef int32_t base, s32 = <int32_t>stride_w
    cdef floating* d
    cdef const floating* src
    cdef const floating* xr
    for ih in range(H):
        xr = xp + ih * W
        if stride_w == 2:
            _split_row2(xr, phases + ih * 2 * phase_len, W, pad_w, phase_len)
            continue
        for p in range(stride_w):
            d = phases + (ih * stride_w + p) * phase_len
            e_lo = _first_valid(p - pad_w, stride_w, phase_len)  # entries whose pixel is in the row
            e_hi = max(e_lo, _end_valid(p - pad_w, stride_w, phase_len, W))
            for e in range(e_lo):
                d[e] = -INFINITY
            for e in range(e_lo, e_hi):
                d[e] = xr[p - pad_w + e * stride_w]
            for e in range(e_hi, phase_len):
                d[e] = -INFINITY
    for oh in range(out_h):
        h0 = oh * stride_h - pad_h
        h1 = min(h0 + kh, H)
        h0 = max(h0, 0)
        for ow in range(out_w8):
            max_row[ow] = -INFINITY
            iw = ow * stride_w - pad_w
            arg_row[ow] = <int32_t>(h0 * W + (iw if iw > 0 else 0))
        for ih in range(h0, h1):
            if kw == 3 and stride_w == 2:
                src = phases + ih * 2 * phase_len
                _max_update_phases3(src, src + phase_len, max_row, arg_row, <int32_t>(ih * W - pad_w), out_w8)
                continue
            for j in range(kw):
                src = phases + (ih * stride_w + j % stride_w) * phase_len + j // stride_w
                base = <int32_t>(ih * W + j - pad_w)
                for ow in range(out_w8):
                    v = src[ow]
                    mo = max_row[ow]
                    take = (v > mo) | ((v != v) & (mo == mo))
                    max_row[ow] = v if take else mo
                    arg_row[ow] = (base + <int32_t>ow * s32) if take else arg_row[ow]
        for ow in range(out_w):
            op[oh * out_w + ow] = max_row[ow]
            ap[oh * out_w + ow] = arg_row[ow]


def max_pool_direct_columns(Py_ssize_t W, Py_ssize_t out_w, Py_ssize_t kw, Py_ssize_t stride_w,
                            Py_ssize_t pad_w):
    """Length of max_pool_direct's column table (at least 1): the kernel columns that reach
    an image W pixels wide."""
    cdef Py_ssize_t j_lo, j_hi
    _reaching_columns(kw, stride_w, pad_w, W, out_w, &j_lo, &j_hi)
    return max(j_hi - j_lo, 1)


def max_pool_direct(const floating[:, :, ::1] x, floating[:, :, ::1] out, int32_t[:, :, ::1] argmax,
                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                    Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t[:, ::1] columns, int num_threads):
    """Max over each window of valid (unpadded) pixels of x into out; ``argmax`` is the flat
    index ``ih*W + iw`` of the first maximum in row-major window order. NaN counts as the
    maximum (the first NaN wins), so a NaN in a window gives NaN; a window of -inf gives
    -inf and its first valid pixel.

    Any geometry (max_pool_phased is faster for overlapping windows). The loops run
    (plane, oh, window row ih, window column j, ow): the innermost updates a whole output
    row at once, branch-free, visiting each window's pixels in row-major order.

    x        (N*C, H, W)                IN
    out      (N*C, out_h, out_w)        OUT
    argmax   (N*C, out_h, out_w) int32  OUT
    columns  (2, max_pool_direct_columns(...)) intp  SCRATCH: each reaching kernel
             column's first output column and count
    """
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    cdef Py_ssize_t t, jj, iw0, j_lo, j_hi, nj
    if out.shape[0] != planes or argmax.shape[0] != planes or argmax.shape[1] != out_h or argmax.shape[2] != out_w:
        raise ValueError("out and argmax must have shape (N*C, out_h, out_w) matching x")
    _reaching_columns(kw, stride_w, pad_w, W, out_w, &j_lo, &j_hi)
    nj = max(j_hi - j_lo, 0)
    if columns.shape[0] != 2 or columns.shape[1] < max(nj, 1):
        raise ValueError(f"columns must have shape (2, {max(nj, 1)}) or more columns, "
                         f"got ({columns.shape[0]}, {columns.shape[1]})")
    _check_threads(num_threads)
    if out_w == 0 or out_h == 0 or planes == 0:
        return
    for jj in range(nj):
        iw0 = j_lo + jj - pad_w
        columns[0, jj] = _first_valid(iw0, stride_w, out_w)
        columns[1, jj] = max(0, _end_valid(iw0, stride_w, out_w, W) - columns[0, jj])
    with nogil:
        for t in prange(planes, schedule="static", num_threads=num_threads):
            _max_plane_direct(&x[t, H - 1, W - 1] - (H * W - 1),
                              &out[t, out_h - 1, out_w - 1] - (out_h * out_w - 1),
                              &argmax[t, out_h - 1, out_w - 1] - (out_h * out_w - 1),
                              H, W, out_h, out_w, kh, stride_h, stride_w, pad_h, pad_w, j_lo, nj,
                              &columns[0, 0], &columns[1, 0])


def max_pool_phased_scratch(H, W, out_w, kw, stride_w):
    """What one thread of max_pool_phased needs for planes of H x W pixels (computed in
    Python integers, so nothing overflows): (entries of its row of ``scratch``, entries of
    its row of ``best``), or None where that kernel cannot run (indices past int32)."""
    out_w8 = (out_w + 7) // 8 * 8  # an output row in whole 8-lane vectors
    phase_len = out_w8 + (kw - 1) // stride_w + 1  # entries of one stride phase of an input row
    if H * W + kw + out_w8 * stride_w >= 2**31 - 1:  # every lane's index must fit int32
        return None
    return H * stride_w * phase_len + out_w8, out_w8


def max_pool_phased(const floating[:, :, ::1] x, floating[:, :, ::1] out, int32_t[:, :, ::1] argmax,
                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                    Py_ssize_t pad_h, Py_ssize_t pad_w, floating[:, ::1] scratch, int32_t[:, ::1] best,
                    int num_threads):
    """max_pool_direct's result, bit for bit, by splitting each input row into its
    stride_w phases first (see _max_plane_phased): faster for overlapping windows.

    x        (N*C, H, W)                IN
    out      (N*C, out_h, out_w)        OUT
    argmax   (N*C, out_h, out_w) int32  OUT
    scratch  (num_threads, max_pool_phased_scratch(...)[0])  SCRATCH, a row per thread
    best     (num_threads, max_pool_phased_scratch(...)[1]) int32  SCRATCH, a row per thread
    """
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    cdef Py_ssize_t t, out_w8, phase_len
    # NULL first: Cython copies them into the parallel block (firstprivate), which sets each
    # thread's own; copying an unset pointer is what -Wmaybe-uninitialized warned about.
    cdef floating* phases = NULL
    cdef int32_t* arg_row = NULL
    if out.shape[0] != planes or argmax.shape[0] != planes or argmax.shape[1] != out_h or argmax.shape[2] != out_w:
        raise ValueError("out and argmax must have shape (N*C, out_h, out_w) matching x")
    _check_threads(num_threads)
    need = max_pool_phased_scratch(H, W, out_w, kw, stride_w)
    if need is None:
        raise ValueError("max_pool_phased cannot index planes this large in int32: use max_pool_direct")
    if scratch.shape[0] < num_threads or scratch.shape[1] < need[0] or best.shape[0] < num_threads \
            or best.shape[1] < need[1]:
        raise ValueError(f"scratch and best must have at least ({num_threads}, {need[0]}) and "
                         f"({num_threads}, {need[1]}) entries")
    if out_w == 0 or out_h == 0 or planes == 0:
        return
    out_w8 = need[1]
    phase_len = out_w8 + (kw - 1) // stride_w + 1
    with nogil, parallel(num_threads=num_threads):
        phases = &scratch[threadid(), 0]
        arg_row = &best[threadid(), 0]
        for t in prange(planes, schedule="static"):
            _max_plane_phased(&x[t, H - 1, W - 1] - (H * W - 1),
                              &out[t, out_h - 1, out_w - 1] - (out_h * out_w - 1),
                              &argmax[t, out_h - 1, out_w - 1] - (out_h * out_w - 1),
                              H, W, out_h, out_w, kh, kw, stride_h, stride_w, pad_h, pad_w, out_w8, phase_len,
                              phases, phases + H * stride_w * phase_len, arg_row)


def max_pool_backward(const floating[:, ::1] dout, const int32_t[:, ::1] argmax,
                      floating[:, ::1] dx, int num_threads):
    """Overwrite ``dx`` with zeros plus each ``dout`` routed to its argmax. ValueError if
    an argmax lies outside its plane (it did not come from a max pool of this shape).

    dout    (N*C, out_h*out_w)          IN
    argmax  (N*C, out_h*out_w) int32    IN, flat indices ``ih*W + iw``
    dx      (N*C, H*W)                  OUT
    """
    cdef Py_ssize_t planes = dx.shape[0], HW = dx.shape[1], P = dout.shape[1]
    cdef Py_ssize_t t, o, k
    cdef Py_ssize_t bad = 0  # argmax entries outside [0, HW), counted in the loop, raised after it
    if dout.shape[0] != planes or argmax.shape[0] != planes or argmax.shape[1] != P:
        raise ValueError("dout and argmax must have shape (N*C, out_h*out_w) matching dx")
    _check_threads(num_threads)
    with nogil:
        for t in prange(planes, schedule="static", num_threads=num_threads):
            if HW > 0:
                memset(&dx[t, HW - 1] - (HW - 1), 0, HW * sizeof(floating))
            for o in range(P):
                k = argmax[t, o]
                if k < 0 or k >= HW:
                    bad += 1
                    continue
                dx[t, k] += dout[t, o]
    if bad:
        raise ValueError(f"argmax holds {bad} index(es) outside its plane of {HW} pixels: it does not "
                         "come from a max pool of this shape")


def avg_pool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                     Py_ssize_t pad_h, Py_ssize_t pad_w, int num_threads):
    """Mean over each window of x; padded zeros count in the divisor (kh*kw). Same loop
    order as max_pool_direct.

    x    (N*C, H, W)                    IN
    out  (N*C, out_h, out_w)            OUT
    """
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    cdef Py_ssize_t t, oh, ow, h0, h1, ih, j, iw0, lo, hi, j_lo, j_hi
    cdef floating inv = 1.0 / (kh * kw)
    cdef floating* orow
    cdef const floating* xrow
    if out.shape[0] != planes:
        raise ValueError("out must have shape (N*C, out_h, out_w) matching x")
    _check_threads(num_threads)
    if out_w == 0:
        return
    _reaching_columns(kw, stride_w, pad_w, W, out_w, &j_lo, &j_hi)
    with nogil:
        for t in prange(planes, schedule="static", num_threads=num_threads):
            for oh in range(out_h):
                h0 = oh * stride_h - pad_h
                h1 = min(h0 + kh, H)
                h0 = max(h0, 0)
                orow = &out[t, oh, out_w - 1] - (out_w - 1)
                memset(orow, 0, out_w * sizeof(floating))
                for ih in range(h0, h1):
                    xrow = &x[t, ih, W - 1] - (W - 1)
                    for j in range(j_lo, j_hi):
                        iw0 = j - pad_w
                        lo = _first_valid(iw0, stride_w, out_w)
                        hi = _end_valid(iw0, stride_w, out_w, W)
                        for ow in range(lo, hi):
                            orow[ow] += xrow[iw0 + ow * stride_w]
                for ow in range(out_w):
                    orow[ow] *= inv


cdef void _avg_tiles_backward(const floating* gp, floating* dp, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t kh, Py_ssize_t kw,
                              Py_ssize_t pad_h, Py_ssize_t pad_w, floating inv) noexcept nogil:
    """avg_pool_backward of one plane when the windows tile it (stride == kernel): every
    pixel lies in at most one window, (ih + pad_h) // kh, (iw + pad_w) // kw, so each is
    written once, with no zero-fill first and no read-modify-write. ``+ zero`` keeps
    the general path's bits (there 0.0 + (-0.0) gives +0.0)."""
    cdef Py_ssize_t ih, oh, ow, j, iw0, lo, hi, cover
    cdef floating zero = 0
    cdef floating v
    cdef floating* drow
    cdef const floating* grow
    cover = max(0, min(W, out_w * kw - pad_w))  # pixels [0, cover) of a row are in a window
    for ih in range(H):
        drow = dp + ih * W
        oh = (ih + pad_h) // kh
        if oh >= out_h:
            memset(drow, 0, W * sizeof(floating))
            continue
        grow = gp + oh * out_w
        if kw == 2 and pad_w == 0:  # a constant stride: vector shuffles
            for ow in range(out_w):
                v = grow[ow] * inv + zero
                drow[2 * ow] = v
                drow[2 * ow + 1] = v
        else:
            for j in range(kw):
                iw0 = j - pad_w
                lo = _first_valid(iw0, kw, out_w)
                hi = _end_valid(iw0, kw, out_w, W)
                for ow in range(lo, hi):
                    drow[iw0 + ow * kw] = grow[ow] * inv + zero
        if cover < W:
            memset(drow + cover, 0, (W - cover) * sizeof(floating))


def avg_pool_backward(const floating[:, :, ::1] dout, floating[:, :, ::1] dx,
                      Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t stride_h, Py_ssize_t stride_w,
                      Py_ssize_t pad_h, Py_ssize_t pad_w, int num_threads):
    """Overwrite ``dx`` with each ``dout`` divided by kh*kw and spread over its window.

    dout  (N*C, out_h, out_w)           IN
    dx    (N*C, H, W)                   OUT
    """
    cdef Py_ssize_t planes = dx.shape[0], H = dx.shape[1], W = dx.shape[2]
    cdef Py_ssize_t out_h = dout.shape[1], out_w = dout.shape[2]
    cdef Py_ssize_t t, oh, ow, h0, h1, ih, j, iw0, lo, hi, j_lo, j_hi
    cdef floating inv = 1.0 / (kh * kw)
    cdef const floating* grow
    cdef floating* drow
    if dout.shape[0] != planes:
        raise ValueError("dout must have shape (N*C, out_h, out_w) matching dx")
    _check_threads(num_threads)
    # Windows that tile the planes (stride == kernel): each pixel is written once.
    cdef bint tiles = kh == stride_h and kw == stride_w and out_h > 0
    if out_w == 0 or H == 0 or W == 0:
        return
    _reaching_columns(kw, stride_w, pad_w, W, out_w, &j_lo, &j_hi)
    with nogil:
        for t in prange(planes, schedule="static", num_threads=num_threads):
            if tiles:
                _avg_tiles_backward(&dout[t, out_h - 1, out_w - 1] - (out_h * out_w - 1),
                                    &dx[t, H - 1, W - 1] - (H * W - 1),
                                    H, W, out_h, out_w, kh, kw, pad_h, pad_w, inv)
                continue
            memset(&dx[t, H - 1, W - 1] - (H * W - 1), 0, H * W * sizeof(floating))
            for oh in range(out_h):
                h0 = oh * stride_h - pad_h
                h1 = min(h0 + kh, H)
                h0 = max(h0, 0)
                grow = &dout[t, oh, out_w - 1] - (out_w - 1)
                for ih in range(h0, h1):
                    drow = &dx[t, ih, W - 1] - (W - 1)
                    for j in range(j_lo, j_hi):
                        iw0 = j - pad_w
                        lo = _first_valid(iw0, stride_w, out_w)
                        hi = _end_valid(iw0, stride_w, out_w, W)
                        for ow in range(lo, hi):
                            drow[iw0 + ow * stride_w] += grow[ow] * inv


# ---------------------------------------------------------------- spatial batch normalization
# x, out, dout and dx are passed as (N, C, H*W): channel c's M = N*H*W values are N runs
# of H*W. Per-channel sums are kept in double, four partial sums at a time.

# Eight running sums each: one 512-bit vector of doubles (two 256-bit ones), added in
# the same order by every build. With four, the AVX-512 build fused two steps into one
# vector and then added its lanes one by one to keep the order (docs/performance.md).

cdef inline double _total8(const double* s) noexcept nogil:
    """The eight running sums added in one fixed order (every build the same bits)."""
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


cdef inline double _sum_run(const floating* a, Py_ssize_t n, double shift) noexcept nogil:
    """sum(a[k] - shift) over one run."""
    cdef Py_ssize_t k, i, n8 = n - n % 8
    cdef double s[8]
    memset(s, 0, sizeof(s))
    for k in range(0, n8, 8):
        for i in range(8):
            s[i] = s[i] + (a[k + i] - shift)
    for k in range(n8, n):
        s[0] = s[0] + (a[k] - shift)
    return _total8(s)


cdef inline double _sum_sq_run(const floating* a, Py_ssize_t n, double shift) noexcept nogil:
    """sum((a[k] - shift)**2) over one run."""
    cdef Py_ssize_t k, i, n8 = n - n % 8
    cdef double s[8]
    cdef double d
    memset(s, 0, sizeof(s))
    for k in range(0, n8, 8):
        for i in range(8):
            d = a[k + i] - shift
            s[i] = s[i] + d * d
    for k in range(n8, n):
        d = a[k] - shift
        s[0] = s[0] + d * d
    return _total8(s)


cdef inline double _sum_prod_run(const floating* a, const floating* b, Py_ssize_t n, double shift) noexcept nogil:
    """sum(a[k] * (b[k] - shift)) over one run."""
    cdef Py_ssize_t k, i, n8 = n - n % 8
    cdef double s[8]
    memset(s, 0, sizeof(s))
    for k in range(0, n8, 8):
        for i in range(8):
            s[i] = s[i] + a[k + i] * (b[k + i] - shift)
    for k in range(n8, n):
        s[0] = s[0] + a[k] * (b[k] - shift)
    return _total8(s)


def bn_channel_stats(const floating[:, :, ::1] x, double[::1] mean, double[::1] var,
                     Py_ssize_t c_lo, Py_ssize_t c_hi, int num_threads):
    """mean[c] and the biased variance var[c] of channel c of x, for c in [c_lo, c_hi),
    in two passes (the second sums squared deviations from the mean: no cancellation).

    x     (N, C, HW)                    IN
    mean  (C,) double                   OUT
    var   (C,) double                   OUT
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2], c, n
    cdef double M = <double>(N * HW), s, m
    if mean.shape[0] != C or var.shape[0] != C:
        raise ValueError(f"mean and var must have shape ({C},)")
    if N * HW == 0:
        raise ValueError("x must hold at least one value per channel")
    _check_channels(c_lo, c_hi, C)
    _check_threads(num_threads)
    with nogil:
        for c in prange(c_lo, c_hi, schedule="static", num_threads=num_threads):
            s = 0
            for n in range(N):
                s = s + _sum_run(&x[n, c, HW - 1] - (HW - 1), HW, 0.0)
            m = s / M
            s = 0
            for n in range(N):
                s = s + _sum_sq_run(&x[n, c, HW - 1] - (HW - 1), HW, m)
            mean[c] = m
            var[c] = s / M


def bn_affine(const floating[:, :, ::1] x, const double[::1] shift, const double[::1] scale,
              const double[::1] offset, floating[:, :, ::1] out, Py_ssize_t c_lo, Py_ssize_t c_hi,
              int num_threads):
    """out[n, c] = (x[n, c] - shift[c]) * scale[c] + offset[c] for c in [c_lo, c_hi): the
    normalization, (x - mean) * gamma / std + beta (subtracting first keeps a large mean exact).

    x       (N, C, HW)                  IN
    shift, scale, offset  (C,) double   IN
    out     (N, C, HW)                  OUT
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2], t, n, c, k, Cr
    cdef floating sh, sc, of
    cdef const floating* src
    cdef floating* dst
    if out.shape[0] != N or out.shape[1] != C or out.shape[2] != HW:
        raise ValueError("out must have x's shape")
    if shift.shape[0] != C or scale.shape[0] != C or offset.shape[0] != C:
        raise ValueError(f"shift, scale and offset must have shape ({C},)")
    _check_channels(c_lo, c_hi, C)
    _check_threads(num_threads)
    Cr = c_hi - c_lo
    if HW == 0 or Cr == 0:
        return
    with nogil:
        for t in prange(N * Cr, schedule="static", num_threads=num_threads):
            n = t // Cr
            c = c_lo + t - n * Cr
            sh = <floating>shift[c]
            sc = <floating>scale[c]
            of = <floating>offset[c]
            src = &x[n, c, HW - 1] - (HW - 1)
            dst = &out[n, c, HW - 1] - (HW - 1)
            for k in range(HW):
                dst[k] = (src[k] - sh) * sc + of


def bn_backward_sums(const floating[:, :, ::1] dout, const floating[:, :, ::1] x, const double[::1] mean,
                     double[::1] sum_dout, double[::1] sum_dout_xc, Py_ssize_t c_lo, Py_ssize_t c_hi,
                     int num_threads):
    """Per channel c in [c_lo, c_hi): sum(dout) and sum(dout * (x - mean)) (dbeta, and dgamma times std).

    dout, x      (N, C, HW)             IN
    mean         (C,) double            IN
    sum_dout     (C,) double            OUT
    sum_dout_xc  (C,) double            OUT
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2], c, n
    cdef double s, sx
    if dout.shape[0] != N or dout.shape[1] != C or dout.shape[2] != HW:
        raise ValueError("dout must have x's shape")
    if mean.shape[0] != C or sum_dout.shape[0] != C or sum_dout_xc.shape[0] != C:
        raise ValueError(f"mean, sum_dout and sum_dout_xc must have shape ({C},)")
    _check_channels(c_lo, c_hi, C)
    _check_threads(num_threads)
    if HW == 0:
        sum_dout[c_lo:c_hi] = 0
        sum_dout_xc[c_lo:c_hi] = 0
        return
    with nogil:
        for c in prange(c_lo, c_hi, schedule="static", num_threads=num_threads):
            s = 0
            sx = 0
            for n in range(N):
                s = s + _sum_run(&dout[n, c, HW - 1] - (HW - 1), HW, 0.0)
                sx = sx + _sum_prod_run(&dout[n, c, HW - 1] - (HW - 1), &x[n, c, HW - 1] - (HW - 1), HW, mean[c])
            sum_dout[c] = s
            sum_dout_xc[c] = sx


def bn_backward_dx(const floating[:, :, ::1] dout, const floating[:, :, ::1] x, const double[::1] mean,
                   const double[::1] dout_scale, const double[::1] xc_scale, const double[::1] offset,
                   floating[:, :, ::1] dx, Py_ssize_t c_lo, Py_ssize_t c_hi, int num_threads):
    """dx[n, c] = dout_scale[c] * dout[n, c] + xc_scale[c] * (x[n, c] - mean[c]) + offset[c]
    for c in [c_lo, c_hi).

    dout, x                          (N, C, HW)   IN
    mean, dout_scale, xc_scale, offset  (C,) double  IN
    dx                               (N, C, HW)   OUT
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2], t, n, c, k, Cr
    cdef floating s_dout, s_xc, off, m
    cdef const floating* grad
    cdef const floating* src
    cdef floating* dst
    if dout.shape[0] != N or dout.shape[1] != C or dout.shape[2] != HW or dx.shape[0] != N \
            or dx.shape[1] != C or dx.shape[2] != HW:
        raise ValueError("dout and dx must have x's shape")
    if mean.shape[0] != C or dout_scale.shape[0] != C or xc_scale.shape[0] != C or offset.shape[0] != C:
        raise ValueError(f"mean, dout_scale, xc_scale and offset must have shape ({C},)")
    _check_channels(c_lo, c_hi, C)
    _check_threads(num_threads)
    Cr = c_hi - c_lo
    if HW == 0 or Cr == 0:
        return
    with nogil:
        for t in prange(N * Cr, schedule="static", num_threads=num_threads):
            n = t // Cr
            c = c_lo + t - n * Cr
            s_dout = <floating>dout_scale[c]
            s_xc = <floating>xc_scale[c]
            off = <floating>offset[c]
            m = <floating>mean[c]
            grad = &dout[n, c, HW - 1] - (HW - 1)
            src = &x[n, c, HW - 1] - (HW - 1)
            dst = &dx[n, c, HW - 1] - (HW - 1)
            for k in range(HW):
                dst[k] = s_dout * grad[k] + s_xc * (src[k] - m) + off


# ---------------------------------------------------------------- Adam
def adam_update(const floating[::1] w, const floating[::1] dw, floating[::1] m, floating[::1] v,
                floating[::1] out, double one_minus_b1, double one_minus_b2, double b1, double b2,
                double c1, double c2, double lr, double eps, int num_threads):
    """One Adam step in one pass: the operations of fastconv.optim's formulas, one element
    at a time in the same order and precision as numpy runs them on whole arrays (every
    constant rounded to w's dtype first, as numpy does with a Python float), so the same
    bits: m = b1 m + (1 - b1) dw; v = b2 v + (dw dw)(1 - b2);
    out = w - (m / c1) lr / (sqrt(v / c2) + eps).

    w, dw   (P,)  IN
    m, v    (P,)  IN/OUT, the state
    out     (P,)  OUT (may not alias w)
    """
    cdef Py_ssize_t P = w.shape[0], blocks, blk, k, lo, hi
    cdef floating fb1 = <floating>b1, fb2 = <floating>b2, f1 = <floating>one_minus_b1
    cdef floating f2 = <floating>one_minus_b2, fc1 = <floating>c1, fc2 = <floating>c2
    cdef floating flr = <floating>lr, feps = <floating>eps, g, den
    if dw.shape[0] != P or m.shape[0] != P or v.shape[0] != P or out.shape[0] != P:
        raise ValueError("dw, m, v and out must have w's length")
    _check_threads(num_threads)
    blocks = (P + 4095) // 4096
    with nogil:
        for blk in prange(blocks, schedule="static", num_threads=num_threads):
            lo = blk * 4096
            hi = min(lo + 4096, P)
            # two loops over the block (in cache): one loop over all five arrays needs
            # more runtime alias checks than GCC vectorizes with
            for k in range(lo, hi):
                g = dw[k]
                m[k] = m[k] * fb1 + f1 * g
                v[k] = v[k] * fb2 + (g * g) * f2
            for k in range(lo, hi):
                if floating is float:
                    den = sqrtf(v[k] / fc2) + feps
                else:
                    den = sqrt(v[k] / fc2) + feps
                out[k] = w[k] - (m[k] / fc1) * flr / den


include "_winograd.pxi"
