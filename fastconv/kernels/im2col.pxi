# ---------------------------------------------------------------- im2col and col2im
# im2col/col2im and the passes between the GEMM layout (F, N*P) and NCHW (included in _im2col.pyx).

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
