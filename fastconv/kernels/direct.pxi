# Direct convolution kernels (algorithm="direct"), included at the end of _im2col.pyx.
#
# The loops are C (fastconv/kernels/direct.h, direct_body.h); these entry points check that
# every read and write stays inside the buffers they were given, and run the images (or
# the fixed blocks of images of dW) on OpenMP threads. fastconv/engine/direct.py owns the
# policy: weight packing, tap offsets, buffer sizes.

cdef extern from "direct.h":
    ctypedef struct fc_taprows:
        Py_ssize_t kh, kw, dil_h, step, lo, hi
    int FC_NR8, FC_NR4, FC_NR3, FC_NR2, FC_NR1, FC_WF_F32, FC_WT_F32, FC_WF_F64, FC_WT_F64, FC_RBYTES
    void fc_pack_f32(const float *src, Py_ssize_t H, Py_ssize_t W, Py_ssize_t up_h, Py_ssize_t up_w,
                     Py_ssize_t at_h, Py_ssize_t at_w, float *dst, Py_ssize_t Hb, Py_ssize_t S,
                     Py_ssize_t Wq, int zeroed) noexcept nogil
    void fc_pack_f64(const double *src, Py_ssize_t H, Py_ssize_t W, Py_ssize_t up_h, Py_ssize_t up_w,
                     Py_ssize_t at_h, Py_ssize_t at_w, double *dst, Py_ssize_t Hb, Py_ssize_t S,
                     Py_ssize_t Wq, int zeroed) noexcept nogil
    int fc_direct_image_f32(const float *buf, Py_ssize_t row_step, const Py_ssize_t *off, Py_ssize_t taps,
                            const float *wpk, Py_ssize_t G, Py_ssize_t Fg, int FT, const float *bias,
                            float *out, Py_ssize_t out_h, Py_ssize_t out_w, const fc_taprows *rows) noexcept nogil
    int fc_direct_image_f64(const double *buf, Py_ssize_t row_step, const Py_ssize_t *off, Py_ssize_t taps,
                            const double *wpk, Py_ssize_t G, Py_ssize_t Fg, int FT, const double *bias,
                            double *out, Py_ssize_t out_h, Py_ssize_t out_w, const fc_taprows *rows) noexcept nogil
    int fc_direct_pool2_image_f32(const float *buf, Py_ssize_t row_step, const Py_ssize_t *off,
                                  Py_ssize_t taps, const float *wpk, Py_ssize_t G, Py_ssize_t Fg, int FT,
                                  const float *bias, Py_ssize_t out_w, Py_ssize_t band, float *y,
                                  Py_ssize_t pooled_h, Py_ssize_t pooled_w, float *z, int32_t *am,
                                  const fc_taprows *rows) noexcept nogil
    int fc_direct_pool2_image_f64(const double *buf, Py_ssize_t row_step, const Py_ssize_t *off,
                                  Py_ssize_t taps, const double *wpk, Py_ssize_t G, Py_ssize_t Fg, int FT,
                                  const double *bias, Py_ssize_t out_w, Py_ssize_t band, double *y,
                                  Py_ssize_t pooled_h, Py_ssize_t pooled_w, double *z, int32_t *am,
                                  const fc_taprows *rows) noexcept nogil
    void fc_pack_dout_f32(const float *dout, Py_ssize_t F, Py_ssize_t out_h, Py_ssize_t out_w,
                          float *dpk, double *db) noexcept nogil
    void fc_pack_dout_f64(const double *dout, Py_ssize_t F, Py_ssize_t out_h, Py_ssize_t out_w,
                          double *dpk, double *db) noexcept nogil
    void fc_dout_sums_f32(const float *dpk, Py_ssize_t F, Py_ssize_t out_h, Py_ssize_t out_w,
                          double *db) noexcept nogil
    void fc_dout_sums_f64(const double *dpk, Py_ssize_t F, Py_ssize_t out_h, Py_ssize_t out_w,
                          double *db) noexcept nogil
    void fc_direct_dw_image_f32(const float *buf, Py_ssize_t row_step, const Py_ssize_t *off,
                                Py_ssize_t tapsp, const float *dpk, Py_ssize_t G, Py_ssize_t Fg,
                                Py_ssize_t out_h, Py_ssize_t out_w, float *accv) noexcept nogil
    void fc_direct_dw_image_f64(const double *buf, Py_ssize_t row_step, const Py_ssize_t *off,
                                Py_ssize_t tapsp, const double *dpk, Py_ssize_t G, Py_ssize_t Fg,
                                Py_ssize_t out_h, Py_ssize_t out_w, double *accv) noexcept nogil
    void fc_dw_reduce_f32(const float *accv, Py_ssize_t F, Py_ssize_t taps, Py_ssize_t tapsp,
                          float *parts) noexcept nogil
    void fc_dw_reduce_f64(const double *accv, Py_ssize_t F, Py_ssize_t taps, Py_ssize_t tapsp,
                          double *parts) noexcept nogil


#: The filters of a forward tile, widest first: every build has those of direct_tiles()
#: (the AVX2 build has no 8-filter tile: fastconv/kernels/direct.h).
DIRECT_FILTER_TILES = (8, 4, 3, 2, 1)


def direct_tiles():
    """This build's register tiles: {"forward": {filters: register vectors of output
    pixels} (the tiles it has, widest first), "dw": {dtype name: (filters, taps)},
    "register_bytes": the bytes of one register vector (64, 32 or 16)}. fastconv/engine/direct.py
    packs the weights and pads the taps to them; a row segment of the packed layout is 64
    bytes in every build."""
    rows = dict(zip(DIRECT_FILTER_TILES, (FC_NR8, FC_NR4, FC_NR3, FC_NR2, FC_NR1)))
    return {"forward": {ft: nr for ft, nr in rows.items() if nr > 0},
            "dw": {"float32": (FC_WF_F32, FC_WT_F32), "float64": (FC_WF_F64, FC_WT_F64)},
            "register_bytes": FC_RBYTES}


cdef inline Py_ssize_t _dw_taps(Py_ssize_t itemsize) noexcept nogil:
    return FC_WT_F32 if itemsize == 4 else FC_WT_F64


cdef int _check_tile_filters(int FT) except -1:
    if FT not in direct_tiles()["forward"]:
        raise ValueError(f"FT must be one of {tuple(direct_tiles()['forward'])}, got {FT}")
    return 0


cdef inline Py_ssize_t _lanes(Py_ssize_t itemsize) noexcept nogil:
    return 64 // itemsize


cdef int _check_packing(Py_ssize_t H, Py_ssize_t W, Py_ssize_t up_h, Py_ssize_t up_w,
                        Py_ssize_t Hb, Py_ssize_t S, Py_ssize_t Wq) except -1:
    if H < 1 or W < 1 or up_h < 1 or up_w < 1 or Hb < 1 or S < 1 or Wq < 1:
        raise ValueError(f"bad packing: H={H}, W={W}, up=({up_h}, {up_w}), Hb={Hb}, S={S}, Wq={Wq}")
    return 0


cdef int _check_reads(const Py_ssize_t[::1] off, Py_ssize_t count, Py_ssize_t row_step,
                      Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t lanes, Py_ssize_t size) except -1:
    """Every vector that the loops load, buf[base + off[t] : + lanes] for the last output
    segment's base, lies in the packed buffer of ``size`` items."""
    cdef Py_ssize_t segs = (out_w + lanes - 1) // lanes
    cdef Py_ssize_t last = (out_h - 1) * row_step + (segs - 1) * lanes + lanes
    cdef Py_ssize_t t
    if off.shape[0] < count:
        raise ValueError(f"off must hold {count} offsets, got {off.shape[0]}")
    if out_h < 1 or out_w < 1 or row_step < 0:
        raise ValueError(f"bad output size ({out_h}, {out_w}) or row step {row_step}")
    for t in range(count):
        if off[t] < 0 or off[t] + last > size:
            raise ValueError(f"tap offset {off[t]} reads outside the packed buffer of {size} items")
    return 0


cdef int _tap_rows(const Py_ssize_t[::1] kernel_rows, Py_ssize_t taps, Py_ssize_t H, Py_ssize_t up_h,
                   Py_ssize_t at_h, Py_ssize_t stride_h, fc_taprows *rows) except -1:
    """rows (fc_taprows) from kernel_rows = (kh, kw, dil_h) of the taps and the packing;
    returns 0 for an empty kernel_rows (every tap runs), 1 otherwise."""
    if kernel_rows.shape[0] == 0:
        return 0
    if kernel_rows.shape[0] != 3:
        raise ValueError(f"kernel_rows must be empty or (kh, kw, dil_h), got {kernel_rows.shape[0]} values")
    rows.kh, rows.kw, rows.dil_h = kernel_rows[0], kernel_rows[1], kernel_rows[2]
    if rows.kh < 1 or rows.kw < 1 or rows.dil_h < 1 or taps % (rows.kh * rows.kw):
        raise ValueError(f"kernel_rows must be (kh, kw, dil_h) >= 1 with kh * kw dividing taps={taps}, "
                         f"got ({rows.kh}, {rows.kw}, {rows.dil_h})")
    rows.step = stride_h
    rows.lo = at_h
    rows.hi = at_h + (H - 1) * up_h
    return 1


def direct_conv(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                const floating[::1] wpk, const Py_ssize_t[::1] off, const floating[::1] b, bint has_bias,
                Py_ssize_t groups, Py_ssize_t taps, int FT,
                Py_ssize_t up_h, Py_ssize_t up_w, Py_ssize_t at_h, Py_ssize_t at_w,
                Py_ssize_t Hb, Py_ssize_t S, Py_ssize_t Wq, Py_ssize_t stride_h,
                const Py_ssize_t[::1] kernel_rows, floating[:, ::1] scratch, int num_threads):
    """Direct convolution of each image of x into out, through a packed copy per image.

    x       (N, Cin, H, W)                    IN: the images (for dx: dout)
    out     (N, F, out_h, out_w)              OUT
    wpk     (groups * nfb * taps * FT,)       IN: weights per group and block of FT filters
                                              (FT one of direct_tiles()["forward"])
    off     (groups * taps,)                  IN: each tap's offset in the packed image
    b       (F,)                              IN, read only when ``has_bias``
    kernel_rows ((kh, kw, dil_h) or empty)    IN: the taps are Cin/groups runs of kh*kw taps,
                                              (c, i, j) in order, tap row i reading packed
                                              row oh*stride_h + i*dil_h: a tile skips the tap
                                              rows that read only zero rows (only for finite
                                              weights: inf * 0 is NaN); empty: every tap
    scratch (num_threads, >= Cin*Hb*S*Wq)     SCRATCH: the packed image of each thread

    Packing puts x's pixel (h, w) at logical (h*up_h + at_h, w*up_w + at_w) of a zeroed
    (Hb, S*Wq) plane, logical column q at phase q % S, index q // S (fastconv/kernels/direct.h);
    output row oh starts at packed row oh*stride_h.
    """
    cdef Py_ssize_t N = x.shape[0], Cin = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = out.shape[1], out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t Fg, nfb, plane, size, row_step, n, c, tid
    cdef floating *buf
    cdef const floating *bias
    cdef unsigned char[::1] packed
    cdef fc_taprows rows
    cdef int skip
    _check_threads(num_threads)
    _check_packing(H, W, up_h, up_w, Hb, S, Wq)
    _check_tile_filters(FT)
    skip = _tap_rows(kernel_rows, taps, H, up_h, at_h, stride_h, &rows)
    if out.shape[0] != N:
        raise ValueError(f"out must hold {N} images, got {out.shape[0]}")
    if groups < 1 or F % groups or taps < 1:
        raise ValueError(f"groups={groups} must divide F={F}, taps={taps} must be >= 1")
    Fg = F // groups
    nfb = (Fg + FT - 1) // FT
    if wpk.shape[0] < groups * nfb * taps * FT:
        raise ValueError(f"wpk must hold {groups * nfb * taps * FT} weights, got {wpk.shape[0]}")
    if has_bias and b.shape[0] != F:
        raise ValueError(f"b must have shape ({F},), got ({b.shape[0]},)")
    plane = Hb * S * Wq
    size = Cin * plane
    row_step = stride_h * S * Wq
    if scratch.shape[0] < num_threads or scratch.shape[1] < size:
        raise ValueError(f"scratch must be at least ({num_threads}, {size}), got ({scratch.shape[0]}, {scratch.shape[1]})")
    _check_reads(off, groups * taps, row_step, out_h, out_w, _lanes(sizeof(floating)), size)
    if N == 0:
        return
    bias = &b[0] if has_bias else NULL
    packed = bytearray(num_threads)  # per thread: whether its buffer's zeros are in place
    with nogil:
        # dynamic: when the host slows one vCPU, the other takes more images (images are
        # independent: the same bits)
        for n in prange(N, schedule="dynamic", num_threads=num_threads):
            tid = threadid()
            buf = &scratch[tid, 0]
            for c in range(Cin):
                if floating is float:
                    fc_pack_f32(&x[n, c, 0, 0], H, W, up_h, up_w, at_h, at_w, buf + c * plane, Hb, S, Wq,
                                packed[tid])
                else:
                    fc_pack_f64(&x[n, c, 0, 0], H, W, up_h, up_w, at_h, at_w, buf + c * plane, Hb, S, Wq,
                                packed[tid])
            packed[tid] = 1
            if floating is float:
                fc_direct_image_f32(buf, row_step, &off[0], taps, &wpk[0], groups, Fg, FT, bias,
                                    &out[n, 0, 0, 0], out_h, out_w, &rows if skip else NULL)
            else:
                fc_direct_image_f64(buf, row_step, &off[0], taps, &wpk[0], groups, Fg, FT, bias,
                                    &out[n, 0, 0, 0], out_h, out_w, &rows if skip else NULL)


def direct_conv_relu_pool2(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] z,
                           int32_t[:, :, :, ::1] argmax, Py_ssize_t out_h, Py_ssize_t out_w,
                           const floating[::1] wpk, const Py_ssize_t[::1] off, const floating[::1] b,
                           bint has_bias, Py_ssize_t groups, Py_ssize_t taps, int FT,
                           Py_ssize_t up_h, Py_ssize_t up_w, Py_ssize_t at_h, Py_ssize_t at_w,
                           Py_ssize_t Hb, Py_ssize_t S, Py_ssize_t Wq, Py_ssize_t stride_h,
                           const Py_ssize_t[::1] kernel_rows, Py_ssize_t band, floating[:, ::1] scratch,
                           int num_threads):
    """conv (+ b) -> 2x2 / 2 max pool -> ReLU: direct_conv's convolution of each image, band
    rows of its output at a time, each band pooled while it is in cache (the output of
    out_h x out_w per plane is never written whole).

    z       (N, F, out_h // 2, out_w // 2)    OUT: np.maximum(the pooled values, 0)
    argmax  (N, F, out_h // 2, out_w // 2)    OUT int32: each window's first maximum (a NaN
                                              counts as the maximum, the first one wins) as
                                              ih*out_w + iw, as max_pool_direct gives it
    band    (even, >= 2)                      output rows convolved before they are pooled
    scratch (num_threads, >= Cin*Hb*S*Wq + F*band*out_w + 64 bytes)   SCRATCH: the packed image,
                                              the band

    The other arguments are direct_conv's (x, wpk, off, b, has_bias, groups, taps, FT, the
    packing and kernel_rows), out_h and out_w the convolution's output size.
    """
    cdef Py_ssize_t N = x.shape[0], Cin = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = z.shape[1], pooled_h = z.shape[2], pooled_w = z.shape[3]
    cdef Py_ssize_t Fg, nfb, plane, size, need, row_step, n, c, tid
    cdef floating *buf
    cdef const floating *bias
    cdef unsigned char[::1] packed
    cdef fc_taprows rows
    cdef int skip
    _check_threads(num_threads)
    _check_packing(H, W, up_h, up_w, Hb, S, Wq)
    _check_tile_filters(FT)
    skip = _tap_rows(kernel_rows, taps, H, up_h, at_h, stride_h, &rows)
    if z.shape[0] != N or pooled_h != out_h // 2 or pooled_w != out_w // 2 or pooled_h < 1 or pooled_w < 1:
        raise ValueError(f"z must have shape ({N}, F, {out_h // 2}, {out_w // 2}) (>= 1 pooled row and column), "
                         f"got ({z.shape[0]}, {F}, {pooled_h}, {pooled_w})")
    if (argmax.shape[0] != N or argmax.shape[1] != F or argmax.shape[2] != pooled_h
            or argmax.shape[3] != pooled_w):
        raise ValueError("argmax must have z's shape")
    if out_h * out_w >= 2**31:
        raise ValueError(f"an output plane of {out_h} x {out_w} cannot be indexed in int32")
    if band < 2 or band % 2:
        raise ValueError(f"band must be even and >= 2, got {band}")
    if groups < 1 or F % groups or taps < 1:
        raise ValueError(f"groups={groups} must divide F={F}, taps={taps} must be >= 1")
    Fg = F // groups
    nfb = (Fg + FT - 1) // FT
    if wpk.shape[0] < groups * nfb * taps * FT:
        raise ValueError(f"wpk must hold {groups * nfb * taps * FT} weights, got {wpk.shape[0]}")
    if has_bias and b.shape[0] != F:
        raise ValueError(f"b must have shape ({F},), got ({b.shape[0]},)")
    plane = Hb * S * Wq
    size = Cin * plane
    need = size + F * band * out_w + _lanes(sizeof(floating))  # the pool reads a vector past the band
    row_step = stride_h * S * Wq
    if scratch.shape[0] < num_threads or scratch.shape[1] < need:
        raise ValueError(f"scratch must be at least ({num_threads}, {need}), got ({scratch.shape[0]}, {scratch.shape[1]})")
    _check_reads(off, groups * taps, row_step, out_h, out_w, _lanes(sizeof(floating)), size)
    if N == 0:
        return
    bias = &b[0] if has_bias else NULL
    packed = bytearray(num_threads)  # per thread: whether its buffer's zeros are in place
    with nogil:
        # dynamic: when the host slows one vCPU, the other takes more images (images are
        # independent: the same bits)
        for n in prange(N, schedule="dynamic", num_threads=num_threads):
            tid = threadid()
            buf = &scratch[tid, 0]
            for c in range(Cin):
                if floating is float:
                    fc_pack_f32(&x[n, c, 0, 0], H, W, up_h, up_w, at_h, at_w, buf + c * plane, Hb, S, Wq,
                                packed[tid])
                else:
                    fc_pack_f64(&x[n, c, 0, 0], H, W, up_h, up_w, at_h, at_w, buf + c * plane, Hb, S, Wq,
                                packed[tid])
            packed[tid] = 1
            if floating is float:
                fc_direct_pool2_image_f32(buf, row_step, &off[0], taps, &wpk[0], groups, Fg, FT, bias, out_w,
                                          band, buf + size, pooled_h, pooled_w, &z[n, 0, 0, 0],
                                          &argmax[n, 0, 0, 0], &rows if skip else NULL)
            else:
                fc_direct_pool2_image_f64(buf, row_step, &off[0], taps, &wpk[0], groups, Fg, FT, bias, out_w,
                                          band, buf + size, pooled_h, pooled_w, &z[n, 0, 0, 0],
                                          &argmax[n, 0, 0, 0], &rows if skip else NULL)


def direct_dw_scratch(Py_ssize_t Cin, Py_ssize_t Hb, Py_ssize_t S, Py_ssize_t Wq, Py_ssize_t F,
                      Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t tapsp, Py_ssize_t itemsize,
                      bint routed=False):
    """Items of direct_dw's scratch per thread: the packed image, the packed dout, the
    vector accumulators (F filters of tapsp taps) and, ``routed`` (with argmax) when rows do
    not fill their segments, one image's routed dout."""
    cdef Py_ssize_t lanes = _lanes(itemsize)
    cdef Py_ssize_t segs = (out_w + lanes - 1) // lanes
    cdef Py_ssize_t image = F * out_h * out_w if routed and out_w % lanes else 0
    return Cin * Hb * S * Wq + F * out_h * segs * lanes + F * tapsp * lanes + image


def direct_dw(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dout, floating[:, ::1] parts,
              double[:, ::1] db_parts, const Py_ssize_t[::1] bounds, Py_ssize_t block_lo,
              const Py_ssize_t[::1] off, Py_ssize_t groups, Py_ssize_t taps, Py_ssize_t tapsp,
              Py_ssize_t at_h, Py_ssize_t at_w, Py_ssize_t Hb, Py_ssize_t S, Py_ssize_t Wq,
              Py_ssize_t stride_h, floating[:, ::1] scratch, int num_threads,
              const int32_t[:, :, :, ::1] argmax=None, Py_ssize_t out_h=0, Py_ssize_t out_w=0):
    """The weight gradient of a direct convolution, per fixed block of images.

    x       (N, Cin, H, W)                 IN
    dout    (N, F, out_h, out_w)           IN; with argmax: (N, F, ph, pw), the gradient of a
                                           max pool over the convolution's output
    argmax  (N, F, ph, pw) int32 or None   IN: each pooled value's flat index oh*out_w + ow in
                                           its plane of the convolution's output (out_h,
                                           out_w given then): the convolution's dout is dout
                                           routed there (max_pool_backward's sums, in its
                                           order), one image at a time in the scratch
    parts   (blocks, F * taps)             OUT: block k's sum over images [bounds[block_lo + k],
                                           bounds[block_lo + k + 1]) (x and dout's images
                                           counted from bounds[block_lo])
    db_parts (blocks, F)                   OUT: block k's sums of dout, in double
    off     (groups * tapsp,)              IN: each tap's offset in the packed image, padded
                                           to tapsp (a multiple of the dtype's
                                           direct_tiles()["dw"][dtype][1])
    scratch (num_threads, direct_dw_scratch(...))   SCRATCH

    Each block sums its images in order, then the vector lanes in lane order, whatever the
    thread count: the caller adds the blocks in order.
    """
    cdef Py_ssize_t N = x.shape[0], Cin = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = dout.shape[1], Pp = dout.shape[2] * dout.shape[3]
    cdef bint routed = argmax is not None
    cdef Py_ssize_t blocks = parts.shape[0], lanes = _lanes(sizeof(floating))
    cdef Py_ssize_t WT = _dw_taps(sizeof(floating))
    cdef Py_ssize_t segs, Fg, plane, size, dsize, need, row_step, k, n, c, f, tid, first, P
    cdef Py_ssize_t bad = 0  # argmax entries outside their plane, counted in the loop, raised after it
    cdef floating *buf
    cdef floating *dpk
    cdef floating *accv
    cdef floating *dimg
    cdef const floating *dsrc
    cdef bint whole
    _check_threads(num_threads)
    _check_packing(H, W, 1, 1, Hb, S, Wq)
    if dout.shape[0] != N:
        raise ValueError(f"dout must hold {N} images, got {dout.shape[0]}")
    if routed:
        if (argmax.shape[0] != N or argmax.shape[1] != F or argmax.shape[2] != dout.shape[2]
                or argmax.shape[3] != dout.shape[3]):
            raise ValueError("argmax must have dout's shape (N, F, ph, pw)")
        if out_h < 1 or out_w < 1:
            raise ValueError(f"out_h={out_h} and out_w={out_w} must be positive with argmax")
    else:
        out_h, out_w = dout.shape[2], dout.shape[3]
    P = out_h * out_w
    segs = (out_w + lanes - 1) // lanes
    whole = out_w % lanes == 0  # rows fill their segments: a routed dout goes straight into dpk
    if groups < 1 or F % groups or taps < 1 or tapsp < taps or tapsp % WT:
        raise ValueError(f"groups={groups} must divide F={F}; need 1 <= taps={taps} <= tapsp={tapsp}, "
                         f"tapsp a multiple of {WT}")
    Fg = F // groups
    if parts.shape[1] != F * taps:
        raise ValueError(f"parts must have {F * taps} columns, got {parts.shape[1]}")
    if db_parts.shape[0] != blocks or db_parts.shape[1] != F:
        raise ValueError(f"db_parts must have shape ({blocks}, {F}), got ({db_parts.shape[0]}, {db_parts.shape[1]})")
    if block_lo < 0 or bounds.shape[0] < block_lo + blocks + 1:
        raise ValueError(f"bounds must hold {block_lo + blocks + 1} entries, got {bounds.shape[0]}")
    first = bounds[block_lo]
    for k in range(block_lo, block_lo + blocks):
        if not first <= bounds[k] <= bounds[k + 1] <= first + N:
            raise ValueError(f"bounds must rise within [{first}, {first + N}]")
    plane = Hb * S * Wq
    size = Cin * plane
    dsize = F * out_h * segs * lanes
    need = direct_dw_scratch(Cin, Hb, S, Wq, F, out_h, out_w, tapsp, sizeof(floating), routed)
    row_step = stride_h * S * Wq
    if scratch.shape[0] < num_threads or scratch.shape[1] < need:
        raise ValueError(f"scratch must be at least ({num_threads}, {need}), got ({scratch.shape[0]}, {scratch.shape[1]})")
    _check_reads(off, groups * tapsp, row_step, out_h, out_w, lanes, size)
    with nogil:
        # dynamic, as the forward's images: a block's sums never depend on its thread
        for k in prange(blocks, schedule="dynamic", num_threads=num_threads):
            tid = threadid()
            buf = &scratch[tid, 0]
            dpk = buf + size
            accv = dpk + dsize
            memset(accv, 0, sizeof(floating) * F * tapsp * lanes)
            memset(&db_parts[k, 0], 0, sizeof(double) * F)
            for n in range(bounds[block_lo + k] - first, bounds[block_lo + k + 1] - first):
                for c in range(Cin):  # after the block's first image, the zeros are in place
                    if floating is float:
                        fc_pack_f32(&x[n, c, 0, 0], H, W, 1, 1, at_h, at_w, buf + c * plane, Hb, S, Wq,
                                    n > bounds[block_lo + k] - first)
                    else:
                        fc_pack_f64(&x[n, c, 0, 0], H, W, 1, 1, at_h, at_w, buf + c * plane, Hb, S, Wq,
                                    n > bounds[block_lo + k] - first)
                if routed:  # this image's dout, in cache, instead of a full-batch pass through memory
                    # rows that fill their segments: routed straight into the packed planes
                    dimg = dpk if whole else accv + F * tapsp * lanes
                    for f in range(F):
                        bad += _scatter_plane(&dout[n, f, 0, 0] if Pp else NULL, &argmax[n, f, 0, 0] if Pp else NULL,
                                              dimg + f * P, P, Pp)
                    dsrc = NULL if whole else dimg
                else:
                    dsrc = &dout[n, 0, 0, 0]
                if floating is float:
                    if dsrc == NULL:
                        fc_dout_sums_f32(dpk, F, out_h, out_w, &db_parts[k, 0])
                    else:
                        fc_pack_dout_f32(dsrc, F, out_h, out_w, dpk, &db_parts[k, 0])
                    fc_direct_dw_image_f32(buf, row_step, &off[0], tapsp, dpk, groups, Fg, out_h, out_w, accv)
                else:
                    if dsrc == NULL:
                        fc_dout_sums_f64(dpk, F, out_h, out_w, &db_parts[k, 0])
                    else:
                        fc_pack_dout_f64(dsrc, F, out_h, out_w, dpk, &db_parts[k, 0])
                    fc_direct_dw_image_f64(buf, row_step, &off[0], tapsp, dpk, groups, Fg, out_h, out_w, accv)
            if floating is float:
                fc_dw_reduce_f32(accv, F, taps, tapsp, &parts[k, 0])
            else:
                fc_dw_reduce_f64(accv, F, taps, tapsp, &parts[k, 0])
    if bad:
        raise ValueError(f"argmax holds {bad} index(es) outside its plane of {P} pixels: it does not "
                         "come from a max pool of this shape")
