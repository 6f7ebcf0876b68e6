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
