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


cdef inline void _row_max3(const floating* src, floating* even, floating* odd, floating* hv,
                           int32_t* hi, int32_t idx, Py_ssize_t m, Py_ssize_t n8) noexcept nogil:
    """_max_plane_rows's pass over one input row for kw == 3, stride_w == 2: output k's
    window columns are src[2k], src[2k + 1], src[2k + 2] (all in the row for k < n); its
    first maximum (value and flat index) goes to hv[k], hi[k], for k < n8 (a multiple of
    8 >= n: whole vectors, no scalar tail; the lanes past n are junk). m (n, or n8 where
    src[2 * n8] is still in the plane: then the split has no scalar tail either) windows'
    columns are split, the rest of even and odd keep what they held. The row is split
    into its even and odd columns first: with the stride a constant, GCC turns that into
    vector shuffles, and the pick reads consecutive entries, branch-free (on overlapping
    stride-2 loads straight from src it gave up and ran one window at a time)."""
    cdef Py_ssize_t k
    cdef floating v0, v1, v2, u
    cdef bint b1, b2
    cdef int32_t i1, one = 1, two = 2  # int32 constants: a bare literal is a C long, 64-bit lanes
    for k in range(m):
        even[k] = src[2 * k]
        odd[k] = src[2 * k + 1]
    even[m] = src[2 * m]
    for k in range(n8):
        v0 = even[k]
        v1 = odd[k]
        v2 = even[k + 1]
        b1 = _beats(v1, v0)
        b2 = _beats(v2, v0) & _beats(v2, v1)  # _beats on a select's result stops GCC's vectorizer
        u = v1 if b1 else v0
        i1 = idx + one if b1 else idx
        hv[k] = v2 if b2 else u
        hi[k] = idx + two if b2 else i1
        idx = idx + two


cdef inline void _col_max3(const floating* r0, const floating* r1, const floating* r2, const int32_t* i0,
                           const int32_t* i1, const int32_t* i2, floating* mo, int32_t* ao,
                           Py_ssize_t w8) noexcept nogil:
    """_max_plane_rows's output row from three window rows' maxima (r0, r1, r2 and their
    indices): the first of them that no later one beats, over w8 lanes (whole vectors)."""
    cdef Py_ssize_t k
    cdef floating v0, v1, v2, u
    cdef int32_t j0, j1, j2, ju
    cdef bint b1, b2
    for k in range(w8):
        v0 = r0[k]
        v1 = r1[k]
        v2 = r2[k]
        j0 = i0[k]  # every load unconditional: a load under a condition is a branch, no vector
        j1 = i1[k]
        j2 = i2[k]
        b1 = _beats(v1, v0)
        b2 = _beats(v2, v0) & _beats(v2, v1)  # _beats on a select's result stops GCC's vectorizer
        u = v1 if b1 else v0
        ju = j1 if b1 else j0
        mo[k] = v2 if b2 else u
        ao[k] = j2 if b2 else ju


cdef void _max_plane_rows(const floating* xp, floating* op, int32_t* ap,
                          Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w,
                          Py_ssize_t kh, Py_ssize_t stride_h, Py_ssize_t pad_h, Py_ssize_t pad_w,
                          Py_ssize_t S, floating* hv, int32_t* hi, floating* split) noexcept nogil:
    """One plane of max_pool_rows (kw == 3, stride_w == 2), separably: first each input row
    that some window reaches gives, per output column, the first maximum of its three
    window columns (row ih of hv, hi: S entries apart); then each output row is the first
    maximum of those over its window rows. The first maximum of the first row that holds
    the window's maximum is the window's first maximum in row-major order, so the result
    is max_pool_direct's; each input row is scanned once, not once per window over it.
    Every vector loop runs over whole vectors of 8 lanes: an output row is stored whole
    (its junk lanes land in the next row, written after it) while that stays in the
    plane, else built in scratch and copied."""
    cdef Py_ssize_t ih, oh, ow, h0, h1, k, ow_lo, ow_hi, rows, n, n8, w8, first
    cdef floating v, m
    cdef bint take, fits
    cdef floating* hvr
    cdef int32_t* hir
    cdef floating* mrow
    cdef int32_t* arow
    # output columns whose three window columns all lie in the row: the vector loop's range
    ow_lo = min((pad_w + 1) // 2, out_w)
    ow_hi = ow_lo
    if W - 3 + pad_w >= 0:
        ow_hi = max(ow_lo, min(out_w, (W - 3 + pad_w) // 2 + 1))
    n = ow_hi - ow_lo
    n8 = (n + 7) // 8 * 8
    w8 = (out_w + 7) // 8 * 8
    rows = min(H, (out_h - 1) * stride_h - pad_h + kh)  # rows past it are in no window
    for ih in range(rows):
        hvr = hv + ih * S
        hir = hi + ih * S
        first = ih * W + 2 * ow_lo - pad_w  # the first column of output ow_lo's window
        if n > 0:
            _row_max3(xp + first, split, split + S + 1, hvr + ow_lo, hir + ow_lo, <int32_t>first,
                      n8 if first + 2 * n8 < H * W else n, n8)
        for ow in range(ow_lo):
            _edge_max3(xp, hvr, hir, ih, W, ow, pad_w)
        for ow in range(ow_hi, out_w):
            _edge_max3(xp, hvr, hir, ih, W, ow, pad_w)
    for oh in range(out_h):
        h0 = oh * stride_h - pad_h
        h1 = min(h0 + kh, H)
        h0 = max(h0, 0)
        fits = oh * out_w + w8 <= out_h * out_w
        mrow = op + oh * out_w if fits else hv + H * S
        arow = ap + oh * out_w if fits else hi + H * S
        if h1 - h0 == 3:
            _col_max3(hv + h0 * S, hv + (h0 + 1) * S, hv + (h0 + 2) * S,
                      hi + h0 * S, hi + (h0 + 1) * S, hi + (h0 + 2) * S, mrow, arow, w8)
        else:
            for k in range(w8):
                mrow[k] = hv[h0 * S + k]
                arow[k] = hi[h0 * S + k]
            for ih in range(h0 + 1, h1):
                hvr = hv + ih * S
                hir = hi + ih * S
                for k in range(w8):
                    v = hvr[k]
                    m = mrow[k]
                    take = _beats(v, m)
                    mrow[k] = v if take else m
                    arow[k] = hir[k] if take else arow[k]
        if not fits:
            memcpy(op + oh * out_w, mrow, out_w * sizeof(floating))
            memcpy(ap + oh * out_w, arow, out_w * sizeof(int32_t))


cdef inline void _edge_max3(const floating* xp, floating* hvr, int32_t* hir, Py_ssize_t ih, Py_ssize_t W,
                            Py_ssize_t ow, Py_ssize_t pad_w) noexcept nogil:
    """_max_plane_rows's output column ow of row ih when its window reaches the padding:
    the first maximum of its columns in the row, in order."""
    cdef Py_ssize_t c
    cdef Py_ssize_t c0 = 2 * ow - pad_w
    cdef floating v
    for c in range(max(c0, 0), min(c0 + 3, W)):
        v = xp[ih * W + c]
        if c == max(c0, 0) or _beats(v, hvr[ow]):
            hvr[ow] = v
            hir[ow] = <int32_t>(ih * W + c)


def max_pool_rows_scratch(H, out_w):
    """(entries of one thread's row of max_pool_rows's ``hmax`` and ``hidx`` scratch, the
    stride of its rows), in Python integers, so nothing overflows: H + 1 rows of
    out_w rounded up to whole vectors of 8 (and 8 more: the vector loop may start one
    column in), plus a row's split into even and odd columns."""
    S = (out_w + 7) // 8 * 8 + 8
    return (H + 1) * S + 2 * S + 1, S


def max_pool_rows(const floating[:, :, ::1] x, floating[:, :, ::1] out, int32_t[:, :, ::1] argmax,
                  Py_ssize_t kh, Py_ssize_t stride_h, Py_ssize_t pad_h, Py_ssize_t pad_w,
                  floating[:, ::1] hmax, int32_t[:, ::1] hidx, int num_threads):
    """max_pool_direct's result, bit for bit, for windows 3 columns wide at column stride 2
    (any height, row stride and padding), by a max over each row's window columns
    first, then over the window rows (see _max_plane_rows): faster where windows overlap.

    x        (N*C, H, W)                IN
    out      (N*C, out_h, out_w)        OUT
    argmax   (N*C, out_h, out_w) int32  OUT
    hmax     (num_threads, max_pool_rows_scratch(H, out_w)[0])        SCRATCH, a row per thread
    hidx     (num_threads, max_pool_rows_scratch(H, out_w)[0]) int32  SCRATCH, a row per thread
    """
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    cdef Py_ssize_t t, S
    # NULL first: Cython copies them into the parallel block (firstprivate), which sets each
    # thread's own; copying an unset pointer is what -Wmaybe-uninitialized warned about.
    cdef floating* hv = NULL
    cdef int32_t* hi = NULL
    if out.shape[0] != planes or argmax.shape[0] != planes or argmax.shape[1] != out_h or argmax.shape[2] != out_w:
        raise ValueError("out and argmax must have shape (N*C, out_h, out_w) matching x")
    if kh < 1 or stride_h < 1 or not 0 <= pad_h <= kh // 2 or not 0 <= pad_w <= 1:
        raise ValueError(f"max_pool_rows needs kh >= 1, stride_h >= 1, 0 <= pad_h <= kh // 2 and "
                         f"0 <= pad_w <= 1, got kh={kh}, stride_h={stride_h}, pad=({pad_h}, {pad_w})")
    if out_h > 0 and ((out_h - 1) * stride_h - pad_h + kh > H + pad_h or 2 * (out_w - 1) - pad_w + 3 > W + pad_w):
        raise ValueError(f"out ({out_h}, {out_w}) does not fit x ({H}, {W}) for this window")
    if H * W + 2 * out_w + 16 >= 2**31 - 1:  # every lane's index, junk lanes too, must fit int32
        raise ValueError("max_pool_rows cannot index planes this large in int32: use max_pool_direct")
    _check_threads(num_threads)
    need, S = max_pool_rows_scratch(H, out_w)
    if hmax.shape[0] < num_threads or hmax.shape[1] < need or hidx.shape[0] < num_threads \
            or hidx.shape[1] < need:
        raise ValueError(f"hmax and hidx must have at least ({num_threads}, {need}) entries")
    if out_w == 0 or out_h == 0 or planes == 0:
        return
    # the junk lanes read split entries past the row's: set them once, to finite values
    for t in range(num_threads):
        memset(&hmax[t, (H + 1) * S], 0, (need - (H + 1) * S) * sizeof(floating))
    with nogil, parallel(num_threads=num_threads):
        hv = &hmax[threadid(), 0]
        hi = &hidx[threadid(), 0]
        for t in prange(planes, schedule="static"):
            _max_plane_rows(&x[t, H - 1, W - 1] - (H * W - 1),
                            &out[t, out_h - 1, out_w - 1] - (out_h * out_w - 1),
                            &argmax[t, out_h - 1, out_w - 1] - (out_h * out_w - 1),
                            H, W, out_h, out_w, kh, stride_h, pad_h, pad_w, S, hv, hi, hv + (H + 1) * S)


cdef extern from "direct.h":
    void fc_max3s2_plane_f32(const float *x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w,
                             Py_ssize_t kh, Py_ssize_t stride_h, Py_ssize_t pad_h, const float *end, float *out,
                             int32_t *am) noexcept nogil
    void fc_max3s2_plane_f64(const double *x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w,
                             Py_ssize_t kh, Py_ssize_t stride_h, Py_ssize_t pad_h, const double *end, double *out,
                             int32_t *am) noexcept nogil
    Py_ssize_t fc_pool2_backward_plane_f32(const float *dout, const int32_t *am, Py_ssize_t H, Py_ssize_t W,
                                           Py_ssize_t out_h, Py_ssize_t out_w, float *dx) noexcept nogil
    Py_ssize_t fc_pool2_backward_plane_f64(const double *dout, const int32_t *am, Py_ssize_t H, Py_ssize_t W,
                                           Py_ssize_t out_h, Py_ssize_t out_w, double *dx) noexcept nogil
    void fc_pool2_plane_f32(const float *x, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w, float inv,
                            const float *end, float *out, int32_t *am) noexcept nogil
    void fc_pool2_plane_f64(const double *x, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w, double inv,
                            const double *end, double *out, int32_t *am) noexcept nogil


cdef int _check_pool2(const floating[:, :, ::1] x, floating[:, :, ::1] out, int num_threads) except -1:
    """The checks of max_pool2 and avg_pool2; 1 if there is a window to pool, else 0."""
    cdef Py_ssize_t H = x.shape[1], W = x.shape[2], out_h = out.shape[1], out_w = out.shape[2]
    if out.shape[0] != x.shape[0]:
        raise ValueError("out must have shape (N*C, out_h, out_w) matching x")
    if 2 * out_h > H or 2 * out_w > W:
        raise ValueError(f"out ({out_h}, {out_w}) does not fit x ({H}, {W}) for 2x2 windows at stride 2")
    if H * W + W + 64 >= 2**31 - 1:  # every lane's index, a row's last lanes too, must fit int32
        raise ValueError("the 2x2 / 2 kernels cannot index planes this large in int32: use the general ones")
    _check_threads(num_threads)
    return 1 if out_h * out_w * x.shape[0] else 0


cdef void _pool2_planes(const floating[:, :, ::1] x, floating[:, :, ::1] out, int32_t* am,
                        int num_threads) noexcept nogil:
    """fc_pool2_plane on every plane: max with the argmaxes (am, out's shape), average if am is NULL."""
    cdef Py_ssize_t W = x.shape[2], out_h = out.shape[1], out_w = out.shape[2], t
    cdef floating inv = 0.25
    cdef const floating* end = &x[x.shape[0] - 1, x.shape[1] - 1, W - 1] + 1
    for t in prange(x.shape[0], schedule="static", num_threads=num_threads):
        if floating is float:
            fc_pool2_plane_f32(&x[t, 0, 0], W, out_h, out_w, inv, end, &out[t, 0, 0],
                               am + t * out_h * out_w if am != NULL else NULL)
        else:
            fc_pool2_plane_f64(&x[t, 0, 0], W, out_h, out_w, inv, end, &out[t, 0, 0],
                               am + t * out_h * out_w if am != NULL else NULL)


def max_pool2(const floating[:, :, ::1] x, floating[:, :, ::1] out, int32_t[:, :, ::1] argmax, int num_threads):
    """max_pool_direct's result, bit for bit, for 2x2 windows at stride 2 without padding,
    on the build's vector registers (fastconv/kernels/direct.h, fc_pool2_plane): out_h
    and out_w may be at most H // 2 and W // 2 (the windows that fit).

    x        (N*C, H, W)                IN
    out      (N*C, out_h, out_w)        OUT
    argmax   (N*C, out_h, out_w) int32  OUT
    """
    if argmax.shape[0] != out.shape[0] or argmax.shape[1] != out.shape[1] or argmax.shape[2] != out.shape[2]:
        raise ValueError("out and argmax must have shape (N*C, out_h, out_w) matching x")
    if _check_pool2(x, out, num_threads):
        with nogil:
            _pool2_planes(x, out, &argmax[0, 0, 0], num_threads)


def avg_pool2(const floating[:, :, ::1] x, floating[:, :, ::1] out, int num_threads):
    """avg_pool_forward's result, bit for bit, for 2x2 windows at stride 2 without padding,
    as max_pool2 runs them.

    x        (N*C, H, W)                IN
    out      (N*C, out_h, out_w)        OUT
    """
    if _check_pool2(x, out, num_threads):
        with nogil:
            _pool2_planes(x, out, NULL, num_threads)


def max_pool3s2(const floating[:, :, ::1] x, floating[:, :, ::1] out, int32_t[:, :, ::1] argmax,
                Py_ssize_t kh, Py_ssize_t stride_h, Py_ssize_t pad_h, int num_threads):
    """max_pool_direct's result, bit for bit, for windows 3 columns wide at column stride 2
    without column padding (any height, row stride and row padding), on the build's
    vector registers (fastconv/kernels/direct.h, fc_max3s2_plane).

    x        (N*C, H, W)                IN
    out      (N*C, out_h, out_w)        OUT
    argmax   (N*C, out_h, out_w) int32  OUT
    """
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2], t
    cdef const floating* end
    if out.shape[0] != planes or argmax.shape[0] != planes or argmax.shape[1] != out_h or argmax.shape[2] != out_w:
        raise ValueError("out and argmax must have shape (N*C, out_h, out_w) matching x")
    if kh < 1 or stride_h < 1 or not 0 <= pad_h < kh:
        raise ValueError(f"max_pool3s2 needs kh >= 1, stride_h >= 1 and 0 <= pad_h < kh, "
                         f"got kh={kh}, stride_h={stride_h}, pad_h={pad_h}")
    if 2 * out_w + 1 > W or (out_h > 0 and (out_h - 1) * stride_h - pad_h >= H):
        raise ValueError(f"out ({out_h}, {out_w}) does not fit x ({H}, {W}) for this window")
    if H * W + 4 * W + 64 >= 2**31 - 1:  # every lane's index, a row's last lanes too, must fit int32
        raise ValueError("max_pool3s2 cannot index planes this large in int32: use max_pool_direct")
    _check_threads(num_threads)
    if out_w == 0 or out_h == 0 or planes == 0:
        return
    end = &x[planes - 1, H - 1, W - 1] + 1
    with nogil:
        for t in prange(planes, schedule="static", num_threads=num_threads):
            if floating is float:
                fc_max3s2_plane_f32(&x[t, 0, 0], H, W, out_h, out_w, kh, stride_h, pad_h, end, &out[t, 0, 0],
                                    &argmax[t, 0, 0])
            else:
                fc_max3s2_plane_f64(&x[t, 0, 0], H, W, out_h, out_w, kh, stride_h, pad_h, end, &out[t, 0, 0],
                                    &argmax[t, 0, 0])


def max_pool2_backward(const floating[:, :, ::1] dout, const int32_t[:, :, ::1] argmax,
                       floating[:, :, ::1] dx, int num_threads):
    """max_pool_backward's result, bit for bit, for 2x2 windows at stride 2 without padding,
    each pixel of dx written once (fastconv/kernels/direct.h, fc_pool2_backward_plane); a
    plane with an argmax outside its window goes through max_pool_backward's scatter
    (ValueError, as there, if one lies outside its plane).

    dout     (N*C, out_h, out_w)        IN
    argmax   (N*C, out_h, out_w) int32  IN, flat indices ``ih*W + iw``
    dx       (N*C, H, W)                OUT
    """
    cdef Py_ssize_t planes = dx.shape[0], H = dx.shape[1], W = dx.shape[2]
    cdef Py_ssize_t out_h = dout.shape[1], out_w = dout.shape[2], t, off
    cdef Py_ssize_t bad = 0
    if (dout.shape[0] != planes or argmax.shape[0] != planes or argmax.shape[1] != out_h
            or argmax.shape[2] != out_w):
        raise ValueError("dout and argmax must have shape (N*C, out_h, out_w) matching dx")
    if 2 * out_h > H or 2 * out_w > W:
        raise ValueError(f"dout ({out_h}, {out_w}) does not fit dx ({H}, {W}) for 2x2 windows at stride 2")
    if H * W + W + 64 >= 2**31 - 1:  # the lanes' int32 indices
        raise ValueError("the 2x2 / 2 kernels cannot index planes this large in int32: use the general ones")
    _check_threads(num_threads)
    if planes * H * W == 0:
        return
    with nogil:
        for t in prange(planes, schedule="static", num_threads=num_threads):
            if floating is float:
                off = fc_pool2_backward_plane_f32(&dout[t, 0, 0] if out_h * out_w else NULL,
                                                  &argmax[t, 0, 0] if out_h * out_w else NULL,
                                                  H, W, out_h, out_w, &dx[t, 0, 0])
            else:
                off = fc_pool2_backward_plane_f64(&dout[t, 0, 0] if out_h * out_w else NULL,
                                                  &argmax[t, 0, 0] if out_h * out_w else NULL,
                                                  H, W, out_h, out_w, &dx[t, 0, 0])
            if off:
                bad += _scatter_plane(&dout[t, 0, 0], &argmax[t, 0, 0], &dx[t, 0, 0], H * W, out_h * out_w)
    if bad:
        raise ValueError(f"argmax holds {bad} index(es) outside its plane of {H * W} pixels: it does not "
                         "come from a max pool of this shape")


cdef inline Py_ssize_t _scatter_plane(const floating* dout, const int32_t* argmax, floating* dx,
                                      Py_ssize_t HW, Py_ssize_t P) noexcept nogil:
    """dx (HW pixels) = zeros plus each of the P values of dout at its argmax; returns how
    many argmaxes lie outside [0, HW) (skipped)."""
    cdef Py_ssize_t o, k, bad = 0
    if HW:
        memset(dx, 0, HW * sizeof(floating))
    for o in range(P):
        k = argmax[o]
        if k < 0 or k >= HW:
            bad += 1
            continue
        dx[k] += dout[o]
    return bad


def max_pool_backward(const floating[:, ::1] dout, const int32_t[:, ::1] argmax,
                      floating[:, ::1] dx, int num_threads):
    """Overwrite ``dx`` with zeros plus each ``dout`` routed to its argmax. ValueError if
    an argmax lies outside its plane (it did not come from a max pool of this shape).

    dout    (N*C, out_h*out_w)          IN
    argmax  (N*C, out_h*out_w) int32    IN, flat indices ``ih*W + iw``
    dx      (N*C, H*W)                  OUT
    """
    cdef Py_ssize_t planes = dx.shape[0], HW = dx.shape[1], P = dout.shape[1]
    cdef Py_ssize_t t
    cdef Py_ssize_t bad = 0  # argmax entries outside [0, HW), counted in the loop, raised after it
    if dout.shape[0] != planes or argmax.shape[0] != planes or argmax.shape[1] != P:
        raise ValueError("dout and argmax must have shape (N*C, out_h*out_w) matching dx")
    _check_threads(num_threads)
    with nogil:
        for t in prange(planes, schedule="static", num_threads=num_threads):
            bad += _scatter_plane(&dout[t, 0] if P else NULL, &argmax[t, 0] if P else NULL,
                                  &dx[t, 0] if HW else NULL, HW, P)
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
