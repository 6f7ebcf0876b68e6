# ============================================================================ Winograd F(2x2, 3x3)
# The kernels of the Winograd convolution (Lavin & Gray 2016), included in _im2col.pyx:
# F(2x2, 3x3) here, F(4x4, 3x3) below; the four kernels at the end take the tile size.
#
# These functions only loop; ``fastconv/engine/winograd.py`` owns the policy (validation,
# chunking, allocation, threads, the GEMMs between the transforms).
#
# A 3x3, stride-1 convolution is cut into output tiles of 2x2 pixels. Tile (ti, tj)
# of image n reads the 4x4 input patch whose top-left pixel is
# ``(2*ti - pad_h, 2*tj - pad_w)`` (pixels outside the image read as zero) and writes
# the output pixels ``(2*ti + a, 2*tj + b)``, a, b in {0, 1}, that exist. In the
# transformed domain the convolution is 16 independent products, one per point
# ``p = 4*r + s`` of the 4x4 tile: ``M[p] = U[p] @ V[p]``.
#
# Layouts (``T = n * tiles_h * tiles_w`` tiles, numbered ``(img*tiles_h + ti)*tiles_w + tj``):
#
# * ``V``  (16, C, T): transformed input tiles, ``B^T d B`` per tile and channel.
# * ``M``  (16, F, T): products, turned into output by ``A^T m A``.
#
# Each point's (planes, T) block is C-contiguous; the blocks may lie further apart than
# their size (the engine pads them, since blocks a power of two apart share cache sets).
#
# The transforms (B^T, A^T and G are exact in binary floating point):
# ``B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]``,
# ``A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]``, ``G = [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]``.
# Backward runs their adjoints: ``dm = A dy A^T`` and ``dd = B dv B^T``.
#
# Every parallel loop runs over (image, channel) or (image, filter) planes and
# writes disjoint memory, so results never depend on the thread count.

# Per-plane workers. Each works on a tile row at a time, through row buffers, so that
# its inner loops run over the tiles of the row (contiguous in V and M: vectorizable).
# Their scratch comes from the caller: one row of ``scratch`` per OpenMP thread.

cdef inline void _padded_row(const floating* x, Py_ssize_t ih, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad_w,
                             Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t Wp, floating* row) noexcept nogil:
    """row[j] = x[ih, j - pad_w] for j0 <= j < j1, zero elsewhere in [0, Wp) (all zero when
    row ih is outside the image): the input rows of a tile row, padded."""
    if ih < 0 or ih >= H:
        memset(row, 0, Wp * sizeof(floating))
        return
    memset(row, 0, j0 * sizeof(floating))
    memcpy(row + j0, x + ih * W + (j0 - pad_w), (j1 - j0) * sizeof(floating))
    memset(row + j1, 0, (Wp - j1) * sizeof(floating))


cdef inline void _store_padded_row(const floating* row, Py_ssize_t ih, Py_ssize_t H, Py_ssize_t W,
                                   Py_ssize_t pad_w, Py_ssize_t j0, Py_ssize_t j1, floating* x) noexcept nogil:
    """x[ih, j - pad_w] = row[j] for j0 <= j < j1 when row ih is inside the image: the
    reverse of _padded_row (the padding's entries are dropped)."""
    if 0 <= ih < H:
        memcpy(x + ih * W + (j0 - pad_w), row + j0, (j1 - j0) * sizeof(floating))


cdef void _wino_input_plane(const floating* x, floating* V, Py_ssize_t H, Py_ssize_t W,
                       Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                       Py_ssize_t point_stride, floating* buf) noexcept nogil:
    """One (image, channel) plane x (H, W) into V[p * point_stride + tile].
    buf: 8 * (2 * tiles_w + 2) scratch elements."""
    cdef Py_ssize_t Wp = 2 * tiles_w + 2, ti, tj, r, k, j0, j1
    cdef floating* rows = buf  # the tile row's 4 input rows, zero-padded: (4, Wp)
    cdef floating* u = buf + 4 * Wp  # B^T d on them: (4, Wp)
    cdef floating* v0
    cdef floating* v1
    cdef floating* v2
    cdef floating* v3
    cdef floating* uk
    j0 = min(max(pad_w, 0), Wp)  # rows[j] holds x[ih, j - pad_w] for j0 <= j < j1
    j1 = min(max(pad_w + W, j0), Wp)
    for ti in range(tiles_h):
        for r in range(4):
            _padded_row(x, 2 * ti - pad_h + r, H, W, pad_w, j0, j1, Wp, rows + r * Wp)
        for tj in range(Wp):  # B^T d: rows combined, every column at once
            u[tj] = rows[tj] - rows[2 * Wp + tj]
            u[Wp + tj] = rows[Wp + tj] + rows[2 * Wp + tj]
            u[2 * Wp + tj] = rows[2 * Wp + tj] - rows[Wp + tj]
            u[3 * Wp + tj] = rows[Wp + tj] - rows[3 * Wp + tj]
        for k in range(4):  # (B^T d) B: the same on each tile's 4 columns
            uk = u + k * Wp
            v0 = V + (4 * k + 0) * point_stride + ti * tiles_w
            v1 = V + (4 * k + 1) * point_stride + ti * tiles_w
            v2 = V + (4 * k + 2) * point_stride + ti * tiles_w
            v3 = V + (4 * k + 3) * point_stride + ti * tiles_w
            for tj in range(tiles_w):
                v0[tj] = uk[2 * tj] - uk[2 * tj + 2]
                v1[tj] = uk[2 * tj + 1] + uk[2 * tj + 2]
                v2[tj] = uk[2 * tj + 2] - uk[2 * tj + 1]
                v3[tj] = uk[2 * tj + 1] - uk[2 * tj + 3]


cdef void _wino_output_plane(const floating* M, floating* out, floating b0, Py_ssize_t out_h, Py_ssize_t out_w,
                        Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t point_stride,
                        floating* buf) noexcept nogil:
    """One (image, filter) plane: out (out_h, out_w) from M[p * point_stride + tile], plus b0.
    buf: 12 * tiles_w scratch elements."""
    cdef Py_ssize_t ti, tj, s, oh, last
    cdef floating* ua = buf  # row 0 of A^T m, per column s: (4, tiles_w)
    cdef floating* ub = buf + 4 * tiles_w  # row 1
    cdef floating* y = buf + 8 * tiles_w  # y00, y01, y10, y11: (4, tiles_w)
    cdef const floating* m0
    cdef const floating* m1
    cdef const floating* m2
    cdef const floating* m3
    cdef floating* o
    last = out_w // 2  # tiles whose two columns both exist
    for ti in range(tiles_h):
        for s in range(4):  # A^T m: rows combined, for each tile's column s
            m0 = M + (0 + s) * point_stride + ti * tiles_w
            m1 = M + (4 + s) * point_stride + ti * tiles_w
            m2 = M + (8 + s) * point_stride + ti * tiles_w
            m3 = M + (12 + s) * point_stride + ti * tiles_w
            for tj in range(tiles_w):
                ua[s * tiles_w + tj] = m0[tj] + m1[tj] + m2[tj]
                ub[s * tiles_w + tj] = m1[tj] - m2[tj] - m3[tj]
        for tj in range(tiles_w):  # (A^T m) A
            y[tj] = ua[tj] + ua[tiles_w + tj] + ua[2 * tiles_w + tj] + b0
            y[tiles_w + tj] = ua[tiles_w + tj] - ua[2 * tiles_w + tj] - ua[3 * tiles_w + tj] + b0
            y[2 * tiles_w + tj] = ub[tj] + ub[tiles_w + tj] + ub[2 * tiles_w + tj] + b0
            y[3 * tiles_w + tj] = ub[tiles_w + tj] - ub[2 * tiles_w + tj] - ub[3 * tiles_w + tj] + b0
        for oh in range(2 * ti, min(2 * ti + 2, out_h)):
            o = out + oh * out_w
            s = 2 * (oh - 2 * ti) * tiles_w  # y00/y01 for the tile's first row, y10/y11 for its second
            for tj in range(last):
                o[2 * tj] = y[s + tj]
                o[2 * tj + 1] = y[s + tiles_w + tj]
            if last < tiles_w:  # odd out_w: the last tile's first column only
                o[2 * last] = y[s + last]


cdef double _wino_output_adjoint_plane(const floating* dout, floating* dM, Py_ssize_t out_h, Py_ssize_t out_w,
                                  Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t point_stride,
                                  floating* buf) noexcept nogil:
    """One (image, filter) plane: dM[p * point_stride + tile] = A dy A^T; returns the
    plane's sum (in double, for db). buf: 12 * tiles_w scratch elements."""
    cdef Py_ssize_t ti, tj, r, oh, last
    cdef floating* y = buf  # the tile row's dy, zero past the edge: y00, y01, y10, y11 (4, tiles_w)
    cdef floating* u = buf + 4 * tiles_w  # A dy: rows 0-3, columns 0-1: (8, tiles_w)
    cdef floating* d0
    cdef floating* d1
    cdef floating* d2
    cdef floating* d3
    cdef const floating* o
    cdef double total = 0
    last = out_w // 2
    for ti in range(tiles_h):
        for r in range(2):
            oh = 2 * ti + r
            if oh >= out_h:
                memset(y + 2 * r * tiles_w, 0, 2 * tiles_w * sizeof(floating))
                continue
            o = dout + oh * out_w
            for tj in range(last):
                y[2 * r * tiles_w + tj] = o[2 * tj]
                y[(2 * r + 1) * tiles_w + tj] = o[2 * tj + 1]
            if last < tiles_w:
                y[2 * r * tiles_w + last] = o[2 * last]
                y[(2 * r + 1) * tiles_w + last] = 0
            for tj in range(out_w):
                total += o[tj]
        for tj in range(tiles_w):  # A dy: (y0, y0 + y1, y0 - y1, -y1) for columns 0 and 1
            for r in range(2):
                u[(0 + r) * tiles_w + tj] = y[r * tiles_w + tj]
                u[(2 + r) * tiles_w + tj] = y[r * tiles_w + tj] + y[(2 + r) * tiles_w + tj]
                u[(4 + r) * tiles_w + tj] = y[r * tiles_w + tj] - y[(2 + r) * tiles_w + tj]
                u[(6 + r) * tiles_w + tj] = -y[(2 + r) * tiles_w + tj]
        for r in range(4):  # (A dy) A^T, the same on columns
            d0 = dM + (4 * r + 0) * point_stride + ti * tiles_w
            d1 = dM + (4 * r + 1) * point_stride + ti * tiles_w
            d2 = dM + (4 * r + 2) * point_stride + ti * tiles_w
            d3 = dM + (4 * r + 3) * point_stride + ti * tiles_w
            for tj in range(tiles_w):
                d0[tj] = u[2 * r * tiles_w + tj]
                d1[tj] = u[2 * r * tiles_w + tj] + u[(2 * r + 1) * tiles_w + tj]
                d2[tj] = u[2 * r * tiles_w + tj] - u[(2 * r + 1) * tiles_w + tj]
                d3[tj] = -u[(2 * r + 1) * tiles_w + tj]
    return total


cdef void _wino_input_adjoint_plane(const floating* dV, floating* dx, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                               Py_ssize_t point_stride, floating* buf) noexcept nogil:
    """One (image, channel) plane: dx (H, W) = the sum over tiles of B dv B^T, each at
    its 4x4 patch (tiles overlap by 2 pixels; pixels outside the image are dropped).
    buf: 20 * tiles_w + 4 * (2 * tiles_w + 2) scratch elements."""
    cdef Py_ssize_t Wp = 2 * tiles_w + 2, ti, tj, r, s, j0, j1
    cdef floating* u = buf  # B dv, entry (r, s) of every tile of the row: (16, tiles_w)
    cdef floating* acc = buf + 16 * tiles_w  # the 4 padded rows h0 .. h0 + 3 being summed: (4, Wp)
    cdef floating* e = buf + 16 * tiles_w + 4 * Wp  # one row of B dv B^T per tile, 4 columns: (4, tiles_w)
    cdef const floating* v0
    cdef const floating* v1
    cdef const floating* v2
    cdef const floating* v3
    cdef floating* a
    cdef floating* ur
    j0 = min(max(pad_w, 0), Wp)
    j1 = min(max(pad_w + W, j0), Wp)
    memset(acc, 0, 4 * Wp * sizeof(floating))
    for ti in range(tiles_h):
        for s in range(4):  # B dv: column s of every tile, rows combined
            v0 = dV + (0 + s) * point_stride + ti * tiles_w
            v1 = dV + (4 + s) * point_stride + ti * tiles_w
            v2 = dV + (8 + s) * point_stride + ti * tiles_w
            v3 = dV + (12 + s) * point_stride + ti * tiles_w
            for tj in range(tiles_w):
                u[(0 + s) * tiles_w + tj] = v0[tj]
                u[(4 + s) * tiles_w + tj] = v1[tj] - v2[tj] + v3[tj]
                u[(8 + s) * tiles_w + tj] = v1[tj] + v2[tj] - v0[tj]
                u[(12 + s) * tiles_w + tj] = -v3[tj]
        for r in range(4):  # row r of (B dv) B^T, added into padded row 2 ti + r
            ur = u + 4 * r * tiles_w
            for tj in range(tiles_w):
                e[tj] = ur[tj]
                e[tiles_w + tj] = ur[tiles_w + tj] - ur[2 * tiles_w + tj] + ur[3 * tiles_w + tj]
                e[2 * tiles_w + tj] = ur[tiles_w + tj] + ur[2 * tiles_w + tj] - ur[tj]
                e[3 * tiles_w + tj] = -ur[3 * tiles_w + tj]
            # Tile tj's columns 0-3 land on 2 tj .. 2 tj + 3: an even column 2 k takes
            # column 0 of tile k and column 2 of tile k - 1, an odd one columns 1 and 3.
            a = acc + ((2 * ti + r) % 4) * Wp
            a[0] += e[0]
            a[1] += e[tiles_w]
            for tj in range(1, tiles_w):
                a[2 * tj] += e[tj] + e[2 * tiles_w + tj - 1]
                a[2 * tj + 1] += e[tiles_w + tj] + e[3 * tiles_w + tj - 1]
            a[2 * tiles_w] += e[3 * tiles_w - 1]
            a[2 * tiles_w + 1] += e[4 * tiles_w - 1]
        # padded rows 2 ti and 2 ti + 1 are complete: no later tile row reaches them
        for r in range(2):
            a = acc + ((2 * ti + r) % 4) * Wp
            _store_padded_row(a, 2 * ti + r - pad_h, H, W, pad_w, j0, j1, dx)
            memset(a, 0, Wp * sizeof(floating))
    for r in range(2, 4):  # the last tile row's bottom two rows
        _store_padded_row(acc + ((2 * tiles_h - 2 + r) % 4) * Wp, 2 * tiles_h - 2 + r - pad_h, H, W, pad_w,
                          j0, j1, dx)


# ============================================================================ Winograd F(4x4, 3x3)
# The same scheme with output tiles of 4x4 pixels: tile (ti, tj) reads the 6x6 input patch
# whose top-left pixel is ``(4*ti - pad_h, 4*tj - pad_w)`` (tiles overlap by 2 pixels) and
# writes the output pixels ``(4*ti + a, 4*tj + b)``, a, b < 4, that exist; 36 points
# ``p = 6*r + s``: V (36, C, T), M (36, F, T). 36 multiplications per tile, filter and
# channel for 16 output pixels, against 16 for 4 pixels in F(2x2, 3x3) (Lavin & Gray 2016):
# ``B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
#          [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]``,
# ``A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]``;
# G (its 1/6, 1/12 and 1/24 are not exact in binary) is applied in fastconv/engine/winograd.py.
#
# Each 2-D transform is two passes of a 1-D one, on the rows of a tile, then on its columns.
# The four transforms are C (fastconv/kernels/winograd4.h: each tile's 6x6 patch in registers,
# a vector of 8 tiles of a tile row at a time); the functions below pick the dtype's.


cdef extern from "winograd4.h":
    Py_ssize_t fw_scratch(Py_ssize_t tiles_h, Py_ssize_t tiles_w) noexcept nogil
    void fw_input_plane_f32(const float *x, float *V, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad_h,
                            Py_ssize_t pad_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                            Py_ssize_t point_stride, float *buf) noexcept nogil
    void fw_input_plane_f64(const double *x, double *V, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad_h,
                            Py_ssize_t pad_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                            Py_ssize_t point_stride, double *buf) noexcept nogil
    void fw_output_plane_f32(const float *M, float *out, float b0, Py_ssize_t out_h, Py_ssize_t out_w,
                             Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t point_stride) noexcept nogil
    void fw_output_plane_f64(const double *M, double *out, double b0, Py_ssize_t out_h, Py_ssize_t out_w,
                             Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t point_stride) noexcept nogil
    double fw_output_adjoint_plane_f32(const float *dout, float *dM, Py_ssize_t out_h, Py_ssize_t out_w,
                                       Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t point_stride,
                                       float *buf) noexcept nogil
    double fw_output_adjoint_plane_f64(const double *dout, double *dM, Py_ssize_t out_h, Py_ssize_t out_w,
                                       Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t point_stride,
                                       double *buf) noexcept nogil
    void fw_input_adjoint_plane_f32(const float *dV, float *dx, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad_h,
                                    Py_ssize_t pad_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                                    Py_ssize_t point_stride, float *buf) noexcept nogil
    void fw_input_adjoint_plane_f64(const double *dV, double *dx, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad_h,
                                    Py_ssize_t pad_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                                    Py_ssize_t point_stride, double *buf) noexcept nogil


cdef inline void _wino4_input_plane(const floating* x, floating* V, Py_ssize_t H, Py_ssize_t W,
                                    Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                                    Py_ssize_t point_stride, floating* buf) noexcept nogil:
    """_wino_input_plane for F(4x4, 3x3): V[p * point_stride + tile], 36 points."""
    if floating is float:
        fw_input_plane_f32(x, V, H, W, pad_h, pad_w, tiles_h, tiles_w, point_stride, buf)
    else:
        fw_input_plane_f64(x, V, H, W, pad_h, pad_w, tiles_h, tiles_w, point_stride, buf)


cdef inline void _wino4_output_plane(const floating* M, floating* out, floating b0, Py_ssize_t out_h,
                                     Py_ssize_t out_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                                     Py_ssize_t point_stride, floating* buf) noexcept nogil:
    """_wino_output_plane for F(4x4, 3x3) (buf unused)."""
    if floating is float:
        fw_output_plane_f32(M, out, b0, out_h, out_w, tiles_h, tiles_w, point_stride)
    else:
        fw_output_plane_f64(M, out, b0, out_h, out_w, tiles_h, tiles_w, point_stride)


cdef inline double _wino4_output_adjoint_plane(const floating* dout, floating* dM, Py_ssize_t out_h,
                                               Py_ssize_t out_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                                               Py_ssize_t point_stride, floating* buf) noexcept nogil:
    """_wino_output_adjoint_plane for F(4x4, 3x3): dM = A dy A^T, and the plane's sum."""
    if floating is float:
        return fw_output_adjoint_plane_f32(dout, dM, out_h, out_w, tiles_h, tiles_w, point_stride, buf)
    else:
        return fw_output_adjoint_plane_f64(dout, dM, out_h, out_w, tiles_h, tiles_w, point_stride, buf)


cdef inline void _wino4_input_adjoint_plane(const floating* dV, floating* dx, Py_ssize_t H, Py_ssize_t W,
                                            Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t tiles_h,
                                            Py_ssize_t tiles_w, Py_ssize_t point_stride,
                                            floating* buf) noexcept nogil:
    """_wino_input_adjoint_plane for F(4x4, 3x3): the sum over tiles of B dv B^T."""
    if floating is float:
        fw_input_adjoint_plane_f32(dV, dx, H, W, pad_h, pad_w, tiles_h, tiles_w, point_stride, buf)
    else:
        fw_input_adjoint_plane_f64(dV, dx, H, W, pad_h, pad_w, tiles_h, tiles_w, point_stride, buf)


def winograd_scratch(int tile, Py_ssize_t tiles_h, Py_ssize_t tiles_w):
    """Scratch elements per OpenMP thread that the four Winograd kernels of F(tile x tile, 3x3) need
    for (tiles_h, tiles_w) tiles per plane."""
    _check_tile(tile)
    if tiles_h < 1 or tiles_w < 1:
        raise ValueError(f"tiles_h and tiles_w must be >= 1, got ({tiles_h}, {tiles_w})")
    if tile == 4:
        return fw_scratch(tiles_h, tiles_w)
    return 20 * tiles_w + 4 * (2 * tiles_w + 2)


cdef int _check_tile(int tile) except -1:
    if tile != 2 and tile != 4:
        raise ValueError(f"tile must be 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)), got {tile}")
    return 0


cdef int _check_planes(Py_ssize_t row_stride, Py_ssize_t item_stride, Py_ssize_t rows, Py_ssize_t width,
                       Py_ssize_t itemsize, str name) except -1:
    """The kernels walk each plane as one block of rows * width elements."""
    if (width > 1 and item_stride != itemsize) or (rows > 1 and row_stride != width * itemsize):
        raise ValueError(f"each plane of {name} must be contiguous")
    return 0


cdef int _check_winograd(int tile, Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                         Py_ssize_t n, Py_ssize_t planes, tuple shape, str name,
                         floating[:, ::1] scratch, int num_threads) except -1:
    """The tiles cover the (out_h, out_w) output, ``name`` (points, planes, tiles) matches
    them, and the scratch is large enough: the kernels index by these sizes unchecked."""
    _check_tile(tile)
    _check_threads(num_threads)
    cdef Py_ssize_t need_h = (out_h + tile - 1) // tile, need_w = (out_w + tile - 1) // tile
    if tiles_h != need_h or tiles_w != need_w:
        raise ValueError(f"(tiles_h, tiles_w) must be ({need_h}, {need_w}) for a ({out_h}, {out_w}) output "
                         f"in {tile}x{tile} tiles, got ({tiles_h}, {tiles_w})")
    expected = ((tile + 2) * (tile + 2), planes, n * tiles_h * tiles_w)
    if shape != expected:
        raise ValueError(f"{name} must have shape {expected}, got {shape}")
    if scratch.shape[0] < num_threads or scratch.shape[1] < winograd_scratch(tile, tiles_h, tiles_w):
        raise ValueError(f"scratch must be at least ({num_threads}, {winograd_scratch(tile, tiles_h, tiles_w)}), "
                         f"got ({scratch.shape[0]}, {scratch.shape[1]})")
    return 0


cdef Py_ssize_t _point_stride(Py_ssize_t point, Py_ssize_t plane, Py_ssize_t item, Py_ssize_t planes,
                              Py_ssize_t tiles, Py_ssize_t itemsize, str name) except -1:
    """Items from one point's (planes, tiles) block of ``name`` to the next, from its strides
    in bytes: each block C-contiguous, the blocks any whole number of items apart without
    overlapping (a workspace pads them: blocks a power of two apart share cache sets)."""
    if (tiles > 1 and item != itemsize) or (planes > 1 and plane != tiles * itemsize):
        raise ValueError(f"each point's (planes, tiles) block of {name} must be C-contiguous")
    if point % itemsize or point < planes * tiles * itemsize:
        raise ValueError(f"the points of {name} must be at least a (planes, tiles) block and a whole number "
                         f"of items apart, got {point} bytes")
    return point // itemsize


def winograd_input(const floating[:, :, :, ::1] x, floating[:, :, :] V, Py_ssize_t pad_h, Py_ssize_t pad_w,
                   int tile, Py_ssize_t tiles_h, Py_ssize_t tiles_w, floating[:, ::1] scratch, int num_threads):
    """V[p, c, t] = (B^T d B)[p] for each tile t of each image and channel c, in F(tile x tile, 3x3).

    x       : (n, C, H, W)                                IN
    V       : ((tile + 2)**2, C, n * tiles_h * tiles_w)   OUT, every element written
    scratch : (>= num_threads, >= winograd_scratch(tile, tiles_h, tiles_w))  SCRATCH
    """
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], tiles = tiles_h * tiles_w, plane
    cdef Py_ssize_t point_stride
    _check_winograd(tile, x.shape[2] + 2 * pad_h - 2, x.shape[3] + 2 * pad_w - 2, tiles_h, tiles_w, n, C,
                    (V.shape[0], V.shape[1], V.shape[2]), "V", scratch, num_threads)
    point_stride = _point_stride(V.strides[0], V.strides[1], V.strides[2], V.shape[1], V.shape[2], V.itemsize, "V")
    if n * C == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        for plane in prange(n * C, schedule="static"):
            if tile == 4:
                _wino4_input_plane(&x[plane // C, plane % C, 0, 0], &V[0, plane % C, (plane // C) * tiles],
                                   x.shape[2], x.shape[3], pad_h, pad_w, tiles_h, tiles_w,
                                   point_stride, &scratch[threadid(), 0])
            else:
                _wino_input_plane(&x[plane // C, plane % C, 0, 0], &V[0, plane % C, (plane // C) * tiles],
                                  x.shape[2], x.shape[3], pad_h, pad_w, tiles_h, tiles_w,
                                  point_stride, &scratch[threadid(), 0])


def winograd_output(const floating[:, :, :] M, floating[:, :, :, :] out, const floating[::1] bias, bint has_bias,
                    int tile, Py_ssize_t tiles_h, Py_ssize_t tiles_w, floating[:, ::1] scratch, int num_threads):
    """out[img, f] = A^T m A (+ bias[f]) per tile, cropped at the image's edge, in F(tile x tile,
    3x3). Each (img, f) plane of ``out`` must be contiguous; the planes may lie in any order.

    M       : ((tile + 2)**2, F, n * tiles_h * tiles_w)   IN
    out     : (n, F, out_h, out_w)                        OUT, every element written
    bias    : (F,) if has_bias, else unused               IN
    scratch : (>= num_threads, >= winograd_scratch(tile, tiles_h, tiles_w))  SCRATCH
    """
    cdef Py_ssize_t n = out.shape[0], F = out.shape[1], tiles = tiles_h * tiles_w, plane
    cdef Py_ssize_t point_stride
    _check_winograd(tile, out.shape[2], out.shape[3], tiles_h, tiles_w, n, F, (M.shape[0], M.shape[1], M.shape[2]),
                    "M", scratch, num_threads)
    _check_planes(out.strides[2], out.strides[3], out.shape[2], out.shape[3], out.itemsize, "out")
    if has_bias and bias.shape[0] != F:
        raise ValueError(f"bias must have shape ({F},), got ({bias.shape[0]},)")
    point_stride = _point_stride(M.strides[0], M.strides[1], M.strides[2], M.shape[1],
                                 M.shape[2], M.itemsize, "M")
    if n * F == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        for plane in prange(n * F, schedule="static"):
            if tile == 4:
                _wino4_output_plane(&M[0, plane % F, (plane // F) * tiles], &out[plane // F, plane % F, 0, 0],
                                    bias[plane % F] if has_bias else 0, out.shape[2], out.shape[3],
                                    tiles_h, tiles_w, point_stride, &scratch[threadid(), 0])
            else:
                _wino_output_plane(&M[0, plane % F, (plane // F) * tiles], &out[plane // F, plane % F, 0, 0],
                                   bias[plane % F] if has_bias else 0, out.shape[2], out.shape[3],
                                   tiles_h, tiles_w, point_stride, &scratch[threadid(), 0])


def winograd_output_adjoint(const floating[:, :, :, :] dout, floating[:, :, :] dM, double[::1] db,
                            bint has_bias, int tile, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                            floating[:, ::1] scratch, int num_threads):
    """dM[:, f, t] = A dy A^T per tile (dy: the tile's tile x tile of dout, zero past the edge);
    db[f] += the sum of dout[:, f] (in double, images in order) when has_bias. Each
    (img, f) plane of ``dout`` must be contiguous; the planes may lie in any order.

    dout    : (n, F, out_h, out_w)                        IN
    dM      : ((tile + 2)**2, F, n * tiles_h * tiles_w)   OUT, every element written
    db      : (F,) if has_bias, else unused               INOUT (added to)
    scratch : (>= num_threads, >= winograd_scratch(tile, tiles_h, tiles_w))  SCRATCH
    """
    cdef Py_ssize_t n = dout.shape[0], F = dout.shape[1], tiles = tiles_h * tiles_w, f, img
    cdef Py_ssize_t point_stride
    cdef double total
    _check_winograd(tile, dout.shape[2], dout.shape[3], tiles_h, tiles_w, n, F,
                    (dM.shape[0], dM.shape[1], dM.shape[2]), "dM", scratch, num_threads)
    _check_planes(dout.strides[2], dout.strides[3], dout.shape[2], dout.shape[3], dout.itemsize, "dout")
    if has_bias and db.shape[0] != F:
        raise ValueError(f"db must have shape ({F},), got ({db.shape[0]},)")
    point_stride = _point_stride(dM.strides[0], dM.strides[1], dM.strides[2], dM.shape[1],
                                 dM.shape[2], dM.itemsize, "dM")
    if n * F == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        for f in prange(F, schedule="static"):
            total = 0
            for img in range(n):
                if tile == 4:
                    total = total + _wino4_output_adjoint_plane(
                        &dout[img, f, 0, 0], &dM[0, f, img * tiles], dout.shape[2], dout.shape[3], tiles_h,
                        tiles_w, point_stride, &scratch[threadid(), 0])
                else:
                    total = total + _wino_output_adjoint_plane(
                        &dout[img, f, 0, 0], &dM[0, f, img * tiles], dout.shape[2], dout.shape[3], tiles_h,
                        tiles_w, point_stride, &scratch[threadid(), 0])
            if has_bias:
                db[f] += total


def winograd_input_adjoint(const floating[:, :, :] dV, floating[:, :, :, ::1] dx, Py_ssize_t pad_h,
                           Py_ssize_t pad_w, int tile, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                           floating[:, ::1] scratch, int num_threads):
    """dx[img, c] = the adjoint of the input transform of its tiles' dV, in F(tile x tile, 3x3).

    dV      : ((tile + 2)**2, C, n * tiles_h * tiles_w)   IN
    dx      : (n, C, H, W)                                OUT, every element written
    scratch : (>= num_threads, >= winograd_scratch(tile, tiles_h, tiles_w))  SCRATCH
    """
    cdef Py_ssize_t n = dx.shape[0], C = dx.shape[1], tiles = tiles_h * tiles_w, plane
    cdef Py_ssize_t point_stride
    _check_winograd(tile, dx.shape[2] + 2 * pad_h - 2, dx.shape[3] + 2 * pad_w - 2, tiles_h, tiles_w, n, C,
                    (dV.shape[0], dV.shape[1], dV.shape[2]), "dV", scratch, num_threads)
    point_stride = _point_stride(dV.strides[0], dV.strides[1], dV.strides[2], dV.shape[1],
                                 dV.shape[2], dV.itemsize, "dV")
    if n * C == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        for plane in prange(n * C, schedule="static"):
            if tile == 4:
                _wino4_input_adjoint_plane(&dV[0, plane % C, (plane // C) * tiles],
                                           &dx[plane // C, plane % C, 0, 0], dx.shape[2], dx.shape[3], pad_h,
                                           pad_w, tiles_h, tiles_w, point_stride,
                                           &scratch[threadid(), 0])
            else:
                _wino_input_adjoint_plane(&dV[0, plane % C, (plane // C) * tiles],
                                          &dx[plane // C, plane % C, 0, 0], dx.shape[2], dx.shape[3], pad_h,
                                          pad_w, tiles_h, tiles_w, point_stride,
                                          &scratch[threadid(), 0])
