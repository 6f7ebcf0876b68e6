"""Direct convolution (``algorithm="direct"``): the policy around the kernels of
fastconv/kernels/direct.pxi and fastconv/kernels/direct.h.

No im2col matrix and no GEMM: each image is copied into a small zero-padded buffer
(per thread, L1/L2-sized for a first layer), and a register tile of filters x vectors
of output pixels accumulates the taps straight from it (fastconv/kernels/direct.h says how). It wins
where a layer has few input channels, the first layer of a network, whose im2col GEMM
has too little depth to run well (docs/performance.md, "Direct convolution").

* Forward: ``out = conv(x, w) + b``, the images on OpenMP threads (or fastconv's workers,
  as ``threads.over_planes`` decides), each output's taps summed in (c, i, j) order; a
  tile of outputs near the top or bottom skips the kernel rows that read only padding
  (``_kernel_rows``: their products are +-0; not for a NaN or infinite weight).
* dW: per fixed block of images (``_DW_BLOCKS`` at most; how many depends on N only),
  vector accumulators of filters x taps, reduced once per block in lane order; the blocks
  are added in order. So dw is the same for any thread count.
* dx: the same forward kernel run on dout, "upsampled" by the stride into the packed
  buffer and correlated with the flipped, transposed filters (a transposed convolution).
* db: the sum of dout in float64, per block of images as dW (its kernel packs dout).
* The fused conv-relu-pool layer with a 2x2 / 2 pool: the forward kernel convolves a band
  of output rows, pools it (+ b, max, ReLU, argmax) while it is in cache and moves on, so
  the full-size output is never stored (``pools_in_kernel``); other pools run over it.

Every stride, padding, dilation and group count is served; what is refused (by
``unsupported``, with a ValueError naming ``algorithm``) is a layer whose per-thread
buffers would pass ``SCRATCH_BYTES_MAX``: direct convolution is for small layers.
"""

import functools

import numpy as np

from ..kernels import picker
from . import activations
from .checks import finite, shape_size
from .pooling import max_pool_planes
from .threads import over_planes
from .workspaces import workspace

#: Bytes of one logical vector in every build (fastconv/kernels/direct.h).
VECTOR_BYTES = 64

#: Largest per-thread buffer (bytes) of a direct convolution's forward, dx or dW pass.
SCRATCH_BYTES_MAX = 16 << 20

#: dW is summed per block of images; at most this many blocks (enough for the threads).
_DW_BLOCKS = 8


def _lanes(itemsize):
    return VECTOR_BYTES // itemsize


def _round_up(n, m):
    return -(-n // m) * m


class _Packing:
    """How one pass packs its input planes: (up_h, up_w, at_h, at_w, Hb, S, Wq), the output
    size the kernel computes and the row step of its output rows."""

    def __init__(self, up, at, Hb, S, Wq, out_hw, stride_h):
        self.up, self.at, self.Hb, self.S, self.Wq = up, at, Hb, S, Wq
        self.out_h, self.out_w = out_hw
        self.stride_h = stride_h
        self.plane = Hb * S * Wq

    def args(self):
        return (*self.up, *self.at, self.Hb, self.S, self.Wq, self.stride_h)


def _forward_packing(g, lanes):
    """x packed for the forward pass and dW: phases of the stride along W."""
    S = g.stride_w
    Wq = _round_up(g.out_w, lanes) + (g.kw - 1) * g.dil_w // S
    Hb = (g.out_h - 1) * g.stride_h + (g.kh - 1) * g.dil_h + 1
    return _Packing((1, 1), (g.pad_h, g.pad_w), Hb, S, Wq, (g.out_h, g.out_w), g.stride_h)


def _dx_packing(g, lanes):
    """dout packed for dx: its pixel (oh, ow) at (oh*stride_h + A_h, ow*stride_w + A_w),
    A = dilation*(kernel - 1) - pad, so that dx is a stride-1 correlation of it with the
    flipped filters."""
    at = ((g.kh - 1) * g.dil_h - g.pad_h, (g.kw - 1) * g.dil_w - g.pad_w)
    Wq = _round_up(g.W, lanes) + (g.kw - 1) * g.dil_w
    Hb = g.H + (g.kh - 1) * g.dil_h
    return _Packing((g.stride_h, g.stride_w), at, Hb, 1, Wq, (g.H, g.W), 1)


def _tap_offsets(pk, groups, planes, kh, kw, dil_h, dil_w, padded_to=None):
    """(groups, taps) offsets: tap (c, i, j) of group gi reads plane gi*planes + c at
    (i*dil_h, j*dil_w); padded with copies of the last tap to ``padded_to`` taps. A
    read-only array, made once for the same arguments (each pass of a layer asks for
    the same offsets at every call: 15-30 us of numpy each time)."""
    return _offsets(pk.plane, pk.S, pk.Wq, groups, planes, kh, kw, dil_h, dil_w, padded_to)


@functools.lru_cache(maxsize=64)
def _offsets(plane, S, Wq, groups, planes, kh, kw, dil_h, dil_w, padded_to):
    """_tap_offsets of the packing (plane, S, Wq): logical pixel (r, q) of plane c at
    c*plane + r*S*Wq + (q % S)*Wq + q // S (fastconv/kernels/direct.h)."""
    c = np.arange(groups * planes, dtype=np.intp)[:, None, None]
    i = (np.arange(kh, dtype=np.intp) * dil_h)[:, None]
    j = np.arange(kw, dtype=np.intp) * dil_w
    off = (c * plane + i * S * Wq + (j % S) * Wq + j // S).reshape(groups, planes * kh * kw)
    if padded_to is not None and padded_to > off.shape[1]:
        off = np.concatenate([off, np.repeat(off[:, -1:], padded_to - off.shape[1], axis=1)], axis=1)
    off = np.ascontiguousarray(off).reshape(-1)
    off.flags.writeable = False
    return off


def _kernel_rows(g, w):
    """The kernels' ``kernel_rows`` of a pass over taps (c, i, j) of g's kernel with weights
    w: (kh, kw, dil_h), so that a tile skips the kernel rows that read only padding (their
    products are +-0), or none (empty) where a weight is NaN or infinite (times a padding
    zero it makes the NaN that the naive loops make)."""
    if not finite(w):
        return np.empty(0, dtype=np.intp)
    return np.array([g.kh, g.kw, g.dil_h], dtype=np.intp)


def _pack_weights(w2, groups, FT):
    """w2 (groups, Fg, taps) as (groups, blocks of FT filters, taps, FT), zeros past Fg."""
    G, Fg, taps = w2.shape
    nfb = -(-Fg // FT)
    wpk = np.zeros((G, nfb * FT, taps), dtype=w2.dtype)
    wpk[:, :Fg] = w2
    return np.ascontiguousarray(wpk.reshape(G, nfb, FT, taps).transpose(0, 1, 3, 2)).reshape(-1)


def _tile(filters):
    """The filters FT of the forward tile for a pass with ``filters`` filters per group,
    among the tiles of the build in use: the fewest filter slots padded with zeros, the
    widest tile among equals."""
    return min(picker.kernels.direct_tiles()["forward"], key=lambda ft: (-(-filters // ft) * ft, -ft))


def _scratch_items(g, itemsize):
    """Per-thread scratch items of the forward pass, of dx and of dW."""
    lanes = _lanes(itemsize)
    fw, dx = _forward_packing(g, lanes), _dx_packing(g, lanes)
    taps = (g.C // g.groups) * g.kh * g.kw
    # dW's accumulators, bounded for the dW tile of any build (up to 8 x 8): the bound
    # must not depend on the build
    acc = (g.F + 8) * (taps + 8) * lanes
    dpk = g.F * g.out_h * _round_up(g.out_w, lanes)
    return g.C * fw.plane, g.F * dx.plane, g.C * fw.plane + dpk + acc


def unsupported(g):
    """What ``algorithm="direct"`` cannot serve in geometry ``g``, or None (the bound is
    float64's, so that both dtypes and fastconv.naive refuse the same layers)."""
    need = max(_scratch_items(g, 8)) * 8
    if need > SCRATCH_BYTES_MAX:
        return (
            f"a layer whose per-thread buffers fit in {SCRATCH_BYTES_MAX / 2**20:g} MiB "
            f"(small channels and images), got {need / 2**20:.1f} MiB"
        )
    return None


def _run(images, work, kernel):
    """``kernel(lo, hi, threads)`` over images [0, images) as the engine runs its other
    per-plane kernels (``threads.over_planes``: OpenMP threads, or its workers when OpenMP must
    stay on one thread)."""
    over_planes(images, work, kernel)


def _conv(kernels, x, out, w2, b, off, taps, pk, FT, rows):
    """out = the direct convolution of x's packed images with w2 (groups, Fg, taps)
    (``rows``: ``_kernel_rows``)."""
    groups = w2.shape[0]
    wpk = _pack_weights(w2, groups, FT)
    has_bias = b is not None
    bias = np.ascontiguousarray(b) if has_bias else np.empty(0, dtype=x.dtype)
    size = x.shape[1] * pk.plane

    def kernel(lo, hi, threads):
        scratch = workspace("direct_buf", threads * size, x.dtype).reshape(threads, size)
        kernels.direct_conv(
            x[lo:hi], out[lo:hi], wpk, off, bias, has_bias, groups, taps, FT, *pk.args(), rows, scratch, threads
        )

    _run(x.shape[0], out.size * taps, kernel)


def conv_forward(g, x, w, b, out=None):
    """The direct convolution's output (N, F, out_h, out_w) (+ b), in ``out`` if given."""
    kernels = picker.kernels
    out = np.empty(g.out_shape, dtype=x.dtype) if out is None else out
    if g.N == 0:
        return out
    pk = _forward_packing(g, _lanes(x.itemsize))
    Cg, Fg = g.C // g.groups, g.F // g.groups
    taps = Cg * g.kh * g.kw
    off = _tap_offsets(pk, g.groups, Cg, g.kh, g.kw, g.dil_h, g.dil_w)
    _conv(kernels, x, out, w.reshape(g.groups, Fg, taps), b, off, taps, pk, _tile(Fg), _kernel_rows(g, w))
    return out


def _dx(g, dout, w):
    """dx (N, C, H, W): the transposed convolution of dout."""
    kernels = picker.kernels
    dx = np.empty((g.N, g.C, g.H, g.W), dtype=dout.dtype)
    pk = _dx_packing(g, _lanes(dout.itemsize))
    Cg, Fg = g.C // g.groups, g.F // g.groups
    taps = Fg * g.kh * g.kw
    off = _tap_offsets(pk, g.groups, Fg, g.kh, g.kw, g.dil_h, g.dil_w)
    # the filters of the transposed pass: w'[gi, c, (f, i, j)] = w[gi*Fg + f, c, kh-1-i, kw-1-j]
    wt = w[:, :, ::-1, ::-1].reshape(g.groups, Fg, Cg, g.kh * g.kw).transpose(0, 2, 1, 3)
    # conv_backward runs this pass for finite weights only
    _conv(kernels, dout, dx, wt.reshape(g.groups, Cg, taps), None, off, taps, pk, _tile(Cg), _kernel_rows(g, w))
    return dx


def _dw(g, x, dout, argmax=None):
    """(dw (F, C // groups, kh, kw), db float64 (F,)): per block of images, then the blocks
    in order. With ``argmax`` (N, F, ph, pw), ``dout`` is a max pool's output gradient
    (N, F, ph, pw), routed to the convolution's output inside the kernel, image by image."""
    kernels = picker.kernels
    lanes = _lanes(x.itemsize)
    pk = _forward_packing(g, lanes)
    Cg = g.C // g.groups
    taps = Cg * g.kh * g.kw
    tapsp = _round_up(taps, kernels.direct_tiles()["dw"][x.dtype.name][1])
    off = _tap_offsets(pk, g.groups, Cg, g.kh, g.kw, g.dil_h, g.dil_w, padded_to=tapsp)
    blocks = min(g.N, _DW_BLOCKS)
    bounds = np.array([g.N * k // blocks for k in range(blocks + 1)], dtype=np.intp)
    parts = np.empty((blocks, g.F * taps), dtype=x.dtype)
    db_parts = np.empty((blocks, g.F))
    size = kernels.direct_dw_scratch(
        g.C, pk.Hb, pk.S, pk.Wq, g.F, g.out_h, g.out_w, tapsp, x.itemsize, argmax is not None
    )

    def kernel(lo, hi, threads):
        scratch = workspace("direct_dw", threads * size, x.dtype).reshape(threads, size)
        i0, i1 = bounds[lo], bounds[hi]
        route = () if argmax is None else (argmax[i0:i1], g.out_h, g.out_w)
        kernels.direct_dw(
            x[i0:i1],
            dout[i0:i1],
            parts[lo:hi],
            db_parts[lo:hi],
            bounds,
            lo,
            off,
            g.groups,
            taps,
            tapsp,
            *pk.at,
            pk.Hb,
            pk.S,
            pk.Wq,
            pk.stride_h,
            scratch,
            threads,
            *route,
        )

    _run(blocks, shape_size(g.out_shape) * taps, kernel)
    dw, db = parts[0].copy(), db_parts[0].copy()
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN propagate, as in the kernels
        for part, db_part in zip(parts[1:], db_parts[1:]):  # in block order: the same bits for any thread count
            dw += part
            db += db_part
    return dw.reshape(g.w_shape), db


def conv_backward(g, x, w, has_bias, dout, need_dx):
    """(dx or None, dw, db or None) of the direct convolution."""
    dout = np.ascontiguousarray(dout)
    if g.N == 0:
        dx = np.empty_like(x) if need_dx else None
        return dx, np.zeros(g.w_shape, x.dtype), (np.zeros(g.F, x.dtype) if has_bias else None)
    dw, db = _dw(g, x, dout)
    db = db.astype(x.dtype) if has_bias else None
    dx = None
    if need_dx and finite(w):
        dx = _dx(g, dout, w)
    elif need_dx:
        # the transposed pass multiplies every weight by the zeros around dout too, and a
        # NaN or infinite weight would spread where the naive loops never take it: im2col's
        # dx (whose col2im drops the products that fall in the padding) runs instead
        from .conv import conv_backward as im2col_backward  # conv imports this module

        dx = im2col_backward(dout, (x, w, has_bias, g, ("im2col", False)))[0]
    return dx, dw, db


#: Largest band of convolution rows (bytes, all filters) that the fused 2x2 / 2 pool
#: keeps before pooling it: it stays in L1/L2 beside the packed image.
POOL_BAND_BYTES = 64 << 10


def pools_in_kernel(pg):
    """Whether the fused layer's pooling runs inside the direct kernel (2x2, stride 2, no
    padding: the pool of fastconv's models and of CS231n's networks) rather than over the
    stored convolution output."""
    return (pg.kh, pg.kw, pg.stride_h, pg.stride_w, pg.pad_h, pg.pad_w) == (2, 2, 2, 2, 0, 0)


def _pool_band(pooled_h, out_w, F, itemsize, nr, lanes):
    """The even number of convolution rows that the fused kernel convolves before it pools
    them: the fewest register tiles of ``nr`` vectors of ``lanes`` pixels over the
    2*pooled_h rows, the smallest band among equals, within POOL_BAND_BYTES (two rows at
    least)."""
    vecs = -(-out_w // lanes)
    rows = 2 * pooled_h

    def tiles(band):
        full, rest = divmod(rows, band)
        return full * -(-band * vecs // nr) + -(-rest * vecs // nr)

    bands = [b for b in range(2, rows + 1, 2) if b == 2 or F * b * out_w * itemsize <= POOL_BAND_BYTES]
    return min(bands, key=lambda b: (tiles(b), b))


def conv_relu_pool_forward(g, pg, x, w, b):
    """(out, argmax) of conv -> ReLU -> max pool on the direct convolution's output:
    the same result as the three layers (ReLU commutes with the max, so it runs on the
    pooled values only); argmax (N*F*pooled_h*pooled_w,) in NCHW order. A 2x2 / 2 pool runs
    in the kernel, on bands of output rows while they are in cache (the full-size
    output is never stored); other pools run over the stored output."""
    if pools_in_kernel(pg):
        return _conv_pool2(g, pg, x, w, b)
    # the convolution's output lives in a reused workspace (a fresh one costs page faults)
    y = conv_forward(g, x, w, b, workspace("direct_y", shape_size(g.out_shape), x.dtype).reshape(g.out_shape))
    planes = g.N * g.F
    z = np.empty(pg.out_shape, dtype=x.dtype)
    argmax = np.empty(planes * pg.out_h * pg.out_w, dtype=np.int32)
    y3, z3 = y.reshape(planes, g.out_h, g.out_w), z.reshape(planes, pg.out_h, pg.out_w)
    a3 = argmax.reshape(planes, pg.out_h, pg.out_w)
    over_planes(planes, y.size, lambda lo, hi, threads: max_pool_planes(y3[lo:hi], z3[lo:hi], a3[lo:hi], pg, threads))
    out = activations.relu_forward(z)[0]
    return out, argmax


def _conv_pool2(g, pg, x, w, b):
    """conv_relu_pool_forward's 2x2 / 2 pool, inside the kernel (direct_conv_relu_pool2)."""
    kernels = picker.kernels
    out = np.empty(pg.out_shape, dtype=x.dtype)
    argmax = np.empty(pg.out_shape, dtype=np.int32)
    if g.N == 0:
        return out, argmax.reshape(-1)
    pk = _forward_packing(g, _lanes(x.itemsize))
    Cg, Fg = g.C // g.groups, g.F // g.groups
    taps = Cg * g.kh * g.kw
    off = _tap_offsets(pk, g.groups, Cg, g.kh, g.kw, g.dil_h, g.dil_w)
    FT = _tile(Fg)
    wpk = _pack_weights(w.reshape(g.groups, Fg, taps), g.groups, FT)
    has_bias = b is not None
    bias = np.ascontiguousarray(b) if has_bias else np.empty(0, dtype=x.dtype)
    tiles = kernels.direct_tiles()
    band = _pool_band(pg.out_h, g.out_w, g.F, x.itemsize, tiles["forward"][FT], tiles["register_bytes"] // x.itemsize)
    size = g.C * pk.plane + g.F * band * g.out_w + _lanes(x.itemsize)  # the pool reads a vector past the band
    rows = _kernel_rows(g, w)

    def kernel(lo, hi, threads):
        scratch = workspace("direct_buf", threads * size, x.dtype).reshape(threads, size)
        kernels.direct_conv_relu_pool2(
            x[lo:hi],
            out[lo:hi],
            argmax[lo:hi],
            g.out_h,
            g.out_w,
            wpk,
            off,
            bias,
            has_bias,
            g.groups,
            taps,
            FT,
            *pk.args(),
            rows,
            band,
            scratch,
            threads,
        )

    _run(g.N, shape_size(g.out_shape) * taps, kernel)
    return out, argmax.reshape(-1)


def conv_relu_pool_backward(g, pg, x, w, has_bias, dout, out, argmax, need_dx):
    """(dx, dw, db) of conv_relu_pool_forward: each pooled gradient (where the pooled value
    was positive) to its window's argmax, then the direct convolution's backward."""
    planes = g.N * g.F
    dz = activations.relu_backward(dout, out)
    if not need_dx and g.N:
        # dW alone: the kernel routes each image's gradient itself, in cache (no pass of the
        # convolution's full-size gradient through memory); the same bits
        dw, db = _dw(g, x, dz, argmax.reshape(dz.shape))
        return None, dw, (db.astype(x.dtype) if has_bias else None)
    dz = dz.reshape(planes, pg.out_h * pg.out_w)
    dy = workspace("direct_y", shape_size(g.out_shape), x.dtype).reshape(g.out_shape)
    dy2, a2 = dy.reshape(planes, g.out_h * g.out_w), argmax.reshape(planes, -1)
    over_planes(
        planes,
        dy.size,
        lambda lo, hi, threads: picker.kernels.max_pool_backward(dz[lo:hi], a2[lo:hi], dy2[lo:hi], threads),
    )
    return conv_backward(g, x, w, has_bias, dy, need_dx)


def hardware_fma(build_info):
    """Whether a kernel build (its ``build_info()``) runs the direct kernels on FMA
    instructions: the AVX-512 build and AVX2 with FMA do; the baseline build computes each
    lane with libm's fma (the same bits, many times slower), so "auto" passes it over."""
    features = build_info["features"]
    return "avx512f" in features or ("avx2" in features and "fma" in features)
