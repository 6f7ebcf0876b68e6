"""The Cython kernels im2col / col2im, called directly.

Layout (see the docstring of fastconv/kernels/_im2col.pyx): ``cols`` is
(C*kh*kw, N*out_h*out_w); row ``r = (c*kh + i)*kw + j`` is kernel tap (i, j)
of channel c, column ``n*P + oh*out_w + ow`` is output pixel (oh, ow) of image
n; the tap reads ``x[n, c, oh*stride_h - pad_h + i*dil_h, ow*stride_w - pad_w + j*dil_w]``,
zero outside the image. The references below are that sentence written as loops.
"""

import numpy as np
import pytest

import fastconv.kernels._im2col as _im2col
from fastconv.testing import DTYPES, AdjointError, check_adjoint, tol

from _helpers import dtype_id, out_size, pair_id


def im2col_reference(x, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):
    N, C, H, W = x.shape
    P = out_h * out_w
    cols = np.zeros((C * kh * kw, N * P), dtype=x.dtype)
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for n in range(N):
                    for oh in range(out_h):
                        for ow in range(out_w):
                            ih = oh * sh - ph + i * dh
                            iw = ow * sw - pw + j * dw
                            if 0 <= ih < H and 0 <= iw < W:
                                cols[r, n * P + oh * out_w + ow] = x[n, c, ih, iw]
    return cols


def col2im_reference(cols, x_shape, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):
    """The adjoint of im2col_reference: every column entry added back to the pixel it came from."""
    N, C, H, W = x_shape
    P = out_h * out_w
    dx = np.zeros(x_shape, dtype=cols.dtype)
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for n in range(N):
                    for oh in range(out_h):
                        for ow in range(out_w):
                            ih = oh * sh - ph + i * dh
                            iw = ow * sw - pw + j * dw
                            if 0 <= ih < H and 0 <= iw < W:
                                dx[n, c, ih, iw] += cols[r, n * P + oh * out_w + ow]
    return dx


# (N, C, H, W, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
GEOMETRIES = [
    (1, 1, 4, 4, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 3, 5, 7, (3, 5), (2, 2), (1, 1), (1, 1)),  # non-square kernel and image
    (2, 2, 7, 5, (5, 3), (1, 2), (0, 2), (1, 1)),
    (1, 2, 6, 6, (2, 2), (2, 2), (0, 0), (1, 1)),
    (2, 1, 9, 8, (3, 3), (3, 3), (3, 3), (2, 2)),  # stride 3, pad 3, dilation 2
    (1, 3, 5, 6, (2, 3), (1, 1), (2, 3), (2, 1)),
    (3, 2, 2, 3, (4, 5), (1, 1), (2, 2), (1, 1)),  # kernel larger than the unpadded image
    (1, 1, 1, 1, (1, 1), (1, 1), (0, 0), (1, 1)),
    (2, 2, 8, 3, (1, 1), (3, 2), (0, 1), (1, 1)),  # 1x1 with stride and pad
    (1, 2, 4, 9, (2, 4), (2, 3), (1, 2), (2, 2)),
    (2, 2, 3, 3, (3, 3), (1, 1), (3, 3), (2, 2)),  # mostly padding
    (1, 1, 6, 4, (4, 6), (1, 1), (0, 1), (1, 1)),  # kernel wider than the image
    # stride 1 with out_w == W: the kernels' one-copy-per-tap path ("same" width)
    (2, 3, 5, 7, (3, 5), (1, 1), (0, 2), (1, 1)),  # out_h < H, pad_w only
    (1, 2, 6, 5, (3, 3), (1, 1), (2, 2), (2, 2)),  # dilation 2
    (2, 1, 4, 6, (1, 7), (1, 1), (1, 3), (1, 1)),  # out_h > H: whole rows of padding
    (1, 1, 3, 2, (3, 5), (1, 1), (1, 2), (1, 1)),  # kernel wider than the image
    (2, 2, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1)),  # the CIFAR hidden layer, small
]


def _id(geo):
    N, C, H, W, k, s, p, d = geo
    return f"n{N}c{C}-x{H}x{W}-k{k[0]}x{k[1]}-s{pair_id(s)}-p{pair_id(p)}-d{pair_id(d)}"


def _args(geo):
    N, C, H, W, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geo
    out_h, out_w = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    assert out_h >= 1 and out_w >= 1
    return (kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w)


@pytest.mark.parametrize("num_threads", [1, None], ids=["1thread", "default-threads"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("geo", GEOMETRIES, ids=_id)
def test_im2col_matches_index_arithmetic(rng, geo, dtype, num_threads):
    N, C, H, W = geo[:4]
    args = _args(geo)
    kh, kw, out_h, out_w = args[0], args[1], args[-2], args[-1]
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    cols = np.full((C * kh * kw, N * out_h * out_w), np.nan, dtype=dtype)  # every entry must be written
    _im2col.im2col(x, cols, *args, num_threads or _im2col.omp_max_threads())
    np.testing.assert_array_equal(cols, im2col_reference(x, *args))


@pytest.mark.parametrize("num_threads", [1, None], ids=["1thread", "default-threads"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("geo", GEOMETRIES, ids=_id)
def test_col2im_matches_index_arithmetic(rng, geo, dtype, num_threads):
    N, C, H, W = geo[:4]
    args = _args(geo)
    kh, kw, out_h, out_w = args[0], args[1], args[-2], args[-1]
    cols = rng.standard_normal((C * kh * kw, N * out_h * out_w)).astype(dtype)
    expected = col2im_reference(cols.astype(np.float64), (N, C, H, W), *args)
    dx = np.full((N, C, H, W), np.nan, dtype=dtype)  # col2im overwrites, it does not accumulate
    _im2col.col2im(cols, dx, *args, num_threads or _im2col.omp_max_threads())
    scale = max(np.max(np.abs(expected)), 1.0)
    assert np.max(np.abs(dx - expected)) / scale < tol(dtype)


@pytest.mark.parametrize("geo", GEOMETRIES, ids=_id)
def test_col2im_changes_cols_only_where_im2col_puts_padding(rng, geo):
    """col2im may use cols as scratch, but only its padded entries (zero in every
    im2col), which it may set to zero; every other entry stays as it was."""
    N, C, H, W = geo[:4]
    args = _args(geo)
    kh, kw, out_h, out_w = args[0], args[1], args[-2], args[-1]
    padded = im2col_reference(np.ones((N, C, H, W)), *args) == 0
    cols = rng.standard_normal((C * kh * kw, N * out_h * out_w))
    before = cols.copy()
    _im2col.col2im(cols, np.empty((N, C, H, W)), *args, 1)
    changed = cols != before
    assert not (changed & ~padded).any()
    assert (cols[changed] == 0).all()


def _im2col_pair(geo, dtype, forget_row=None):
    """im2col and col2im of ``geo`` as two functions of one array (check_adjoint's form);
    ``forget_row``: a col2im that drops that row of cols (a wrong transpose)."""
    N, C, H, W = geo[:4]
    args = _args(geo)

    def im2col(x):
        cols = np.empty((C * args[0] * args[1], N * args[-2] * args[-1]), dtype=dtype)
        _im2col.im2col(x, cols, *args, 1)
        return cols

    def col2im(c):
        if forget_row is not None:
            c[forget_row] = 0  # check_adjoint passes a copy
        dx = np.empty((N, C, H, W), dtype=dtype)
        _im2col.col2im(c, dx, *args, 1)
        return dx

    return im2col, col2im


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("geo", GEOMETRIES, ids=_id)
def test_adjoint_identity(rng, geo, dtype):
    """<im2col(x), c> == <x, col2im(c)>: col2im is exactly the transpose of im2col."""
    N, C, H, W = geo[:4]
    args = _args(geo)
    kh, kw, out_h, out_w = args[0], args[1], args[-2], args[-1]
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    c = rng.standard_normal((C * kh * kw, N * out_h * out_w)).astype(dtype)
    # relative to the sum of |terms|, so that cancellation cannot hide or fake an error
    assert check_adjoint(*_im2col_pair(geo, dtype), x, c) < tol(dtype)


def test_adjoint_identity_catches_a_wrong_col2im(rng):
    """The adjoint test is not vacuous: dropping one tap from col2im breaks it."""
    geo = GEOMETRIES[1]
    N, C, H, W = geo[:4]
    args = _args(geo)
    x = rng.standard_normal((N, C, H, W))
    c = rng.standard_normal((C * args[0] * args[1], N * args[-2] * args[-1]))
    with pytest.raises(AdjointError, match="relative error"):
        check_adjoint(*_im2col_pair(geo, np.float64, forget_row=4), x, c)


@pytest.mark.parametrize(
    "geo",
    [
        (4, 8, 20, 24, (3, 3), (2, 1), (1, 2), (1, 2)),  # row by row
        (4, 8, 20, 24, (3, 3), (1, 1), (1, 1), (1, 1)),
    ],  # flat: stride 1, same width
    ids=["rows", "flat"],
)
def test_im2col_and_col2im_give_the_same_bits_on_any_thread_count(rng, geo):
    """8 OpenMP threads (more than the cores, so that they are preempted mid-loop) write the
    same cols and dx as one: a per-iteration variable that the threads of a prange share
    by mistake shows up here. Repeated, since a race is not certain."""
    N, C, H, W = geo[:4]
    args = _args(geo)
    kh, kw, out_h, out_w = args[0], args[1], args[-2], args[-1]
    x = rng.standard_normal((N, C, H, W))
    c = rng.standard_normal((C * kh * kw, N * out_h * out_w))
    cols1, dx1 = np.empty_like(c), np.empty_like(x)
    _im2col.im2col(x, cols1, *args, 1)
    _im2col.col2im(c.copy(), dx1, *args, 1)
    for _ in range(50):
        cols2, dx2 = np.empty_like(c), np.empty_like(x)
        _im2col.im2col(x, cols2, *args, 8)
        _im2col.col2im(c.copy(), dx2, *args, 8)
        assert cols2.tobytes() == cols1.tobytes() and dx2.tobytes() == dx1.tobytes()


def test_kernels_reject_a_wrong_cols_shape():
    x = np.zeros((2, 3, 5, 5))
    args = (3, 3, 1, 1, 1, 1, 1, 1, 5, 5)
    with pytest.raises(ValueError, match="cols"):
        _im2col.im2col(x, np.zeros((27, 49)), *args, 1)
    with pytest.raises(ValueError, match="cols"):
        _im2col.col2im(np.zeros((26, 50)), np.zeros_like(x), *args, 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_im2col_accepts_read_only_input(dtype):
    x = np.arange(2 * 2 * 4 * 5, dtype=dtype).reshape(2, 2, 4, 5)
    x.flags.writeable = False
    args = (2, 3, 1, 2, 1, 0, 1, 1, 5, 2)
    cols = np.empty((2 * 2 * 3, 2 * 5 * 2), dtype=dtype)
    _im2col.im2col(x, cols, *args, 1)
    np.testing.assert_array_equal(cols, im2col_reference(x, *args))


# (H, W, kernel, stride, pad): the two max-pool kernels, phased (rows split into
# stride phases; the engine runs it for overlapping windows) and direct, must agree bitwise.
POOL_PATH_GEOMETRIES = [
    (8, 9, (3, 3), (2, 2), (1, 1)),
    (7, 6, (3, 2), (1, 1), (1, 1)),
    (9, 11, (5, 4), (2, 3), (2, 2)),
    (1, 13, (1, 7), (1, 3), (0, 3)),
    (6, 5, (4, 4), (3, 3), (2, 2)),
    (32, 32, (3, 3), (2, 2), (0, 0)),  # stride_w 2: the vectorized row split (W4max3x3s2's planes)
    (6, 7, (3, 5), (1, 2), (0, 2)),
    (4, 3, (4, 4), (2, 2), (2, 2)),
    (3, 2, (3, 3), (2, 2), (1, 1)),
    (5, 5, (2, 2), (2, 2), (0, 0)),  # 2x2 / 2 unpadded: the vector kernel max_pool2 too
    (32, 32, (2, 2), (2, 2), (0, 0)),  # W4max2x2s2's planes: whole vectors only
    (7, 35, (2, 2), (2, 2), (0, 0)),  # out_w 17: whole vectors and a row's last lanes in every build
    (2, 3, (2, 2), (2, 2), (0, 0)),  # one window
    (4, 9, (2, 2), (2, 2), (1, 1)),  # padded: not max_pool2's
    (5, 7, (2, 1), (3, 3), (0, 0)),  # stride wider than the window
    # 3 columns at stride 2 (any rows): the separable row kernel too
    (33, 33, (3, 3), (2, 2), (1, 1)),  # out_w 17: two whole vectors and one lane
    (9, 34, (1, 3), (1, 2), (0, 1)),  # one window row
    (10, 19, (2, 3), (3, 2), (1, 0)),  # two window rows, rows in no window
    (11, 70, (5, 3), (2, 2), (2, 1)),  # five window rows
    (7, 3, (4, 3), (1, 2), (2, 1)),  # every window reaches the padding
    (4, 1, (3, 3), (1, 2), (1, 1)),  # one column
    (12, 4, (3, 3), (3, 2), (0, 0)),  # one output column
    # 3 columns at stride 2 without column padding: max_pool3s2 too
    (7, 35, (3, 3), (2, 2), (0, 0)),  # out_w 17: whole vectors and a row's last lanes in every build
    (5, 3, (3, 3), (2, 2), (0, 0)),  # one window
    (10, 40, (4, 3), (3, 2), (1, 0)),  # padded rows
    (11, 19, (5, 3), (1, 2), (2, 0)),  # row stride 1, five window rows
]


def _max_pool_kernels(x, out_h, out_w, kh, kw, sh, sw, ph, pw, threads):
    """{kernel name: (out, argmax)} of the max-pool kernels (rows where the geometry allows)
    on the planes x, every output and scratch prefilled with garbage (each entry must be
    written; junk lanes may hold anything)."""
    H, W = x.shape[1:]
    results = {}
    names = ("phased", "direct") + (("rows",) if kw == 3 and sw == 2 else ())
    names += ("pool2",) if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0) else ()
    names += ("3s2",) if (kw, sw, pw) == (3, 2, 0) else ()
    for name in names:
        out = np.full((x.shape[0], out_h, out_w), 7, dtype=x.dtype)
        argmax = np.full((x.shape[0], out_h, out_w), -1, dtype=np.int32)
        if name == "phased":
            rows, lanes = _im2col.max_pool_phased_scratch(H, W, out_w, kw, sw)
            scratch = np.full((threads, rows), np.nan, dtype=x.dtype)
            best = np.full((threads, lanes), -5, dtype=np.int32)
            _im2col.max_pool_phased(x, out, argmax, kh, kw, sh, sw, ph, pw, scratch, best, threads)
        elif name == "pool2":
            _im2col.max_pool2(x, out, argmax, threads)
        elif name == "3s2":
            _im2col.max_pool3s2(x, out, argmax, kh, sh, ph, threads)
        elif name == "rows":
            size = _im2col.max_pool_rows_scratch(H, out_w)[0]
            hmax = np.full((threads, size), np.nan, dtype=x.dtype)
            hidx = np.full((threads, size), -5, dtype=np.int32)
            _im2col.max_pool_rows(x, out, argmax, kh, sh, ph, pw, hmax, hidx, threads)
        else:
            columns = np.full((2, _im2col.max_pool_direct_columns(W, out_w, kw, sw, pw)), -9, dtype=np.intp)
            _im2col.max_pool_direct(x, out, argmax, kh, kw, sh, sw, ph, pw, columns, threads)
        results[name] = (out, argmax)
    return results


@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(
    "geo", POOL_PATH_GEOMETRIES, ids=lambda g: f"x{g[0]}x{g[1]}-k{g[2][0]}x{g[2][1]}-s{pair_id(g[3])}-p{pair_id(g[4])}"
)
def test_max_pool_phased_and_direct_kernels_agree(rng, geo, dtype, threads):
    H, W, (kh, kw), (sh, sw), (ph, pw) = geo
    out_h, out_w = out_size(H, kh, sh, ph, 1), out_size(W, kw, sw, pw, 1)
    x = rng.integers(-3, 4, size=(5, H, W)).astype(dtype)  # ties in most windows
    x[0, 0, 0] = np.nan
    x[1, :, :] = -np.inf
    x[2, H // 2, W // 2] = np.inf
    results = _max_pool_kernels(x, out_h, out_w, kh, kw, sh, sw, ph, pw, threads)
    out_d, arg_d = results.pop("direct")
    for name, (out, arg) in results.items():
        np.testing.assert_array_equal(out, out_d, err_msg=name)
        np.testing.assert_array_equal(arg, arg_d, err_msg=name)
    assert (arg_d >= 0).all() and (arg_d < H * W).all()
    if kw == 3 and sw == 2:
        assert "rows" in results
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        assert "pool2" in results
    if (kw, sw, pw) == (3, 2, 0):
        assert "3s2" in results


@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("H, W", [(5, 5), (32, 32), (7, 35), (2, 3), (9, 70)])
def test_avg_pool2_equals_the_general_kernel(rng, H, W, dtype, threads):
    """avg_pool2 (2x2 / 2 on vector registers) sums each window as avg_pool_forward does,
    from +0.0 in row-major order: the same bits, -0.0, NaN and infinities included."""
    x = rng.standard_normal((5, H, W)).astype(dtype)
    x[0, :2, :2] = -0.0  # +0.0 + -0.0 is +0.0: a sum started at the first pixel would keep -0.0
    x[1, 0, 0], x[2, -1, -1], x[3, 0, 1] = np.nan, np.inf, -np.inf
    x[4] *= dtype(1e30) if dtype == np.float64 else dtype(1e15)  # large terms: rounding depends on the order
    out_h, out_w = H // 2, W // 2
    general, fast2 = np.full((2, 5, out_h, out_w), 7, dtype=dtype)
    _im2col.avg_pool_forward(x, general, 2, 2, 2, 2, 0, 0, threads)
    _im2col.avg_pool2(x, fast2, threads)
    assert general.tobytes() == fast2.tobytes()
    assert np.signbit(fast2[0, 0, 0]) == np.signbit(general[0, 0, 0]) and not np.signbit(fast2[0, 0, 0])


def test_the_avg_pool2_comparison_can_fail(rng):
    """The data above tells orders apart: a sum of the columns first, or from the first
    pixel, gives other bits."""
    x = rng.standard_normal((1, 32, 32)) * 1e30
    x[0, :2, :2] = -0.0
    w = x.reshape(16, 2, 16, 2)
    by_columns = ((w[:, 0, :, 0] + w[:, 1, :, 0]) + (w[:, 0, :, 1] + w[:, 1, :, 1])) * 0.25
    from_first = (((w[:, 0, :, 0] + w[:, 0, :, 1]) + w[:, 1, :, 0]) + w[:, 1, :, 1]) * 0.25
    out = np.empty((1, 16, 16))
    _im2col.avg_pool2(x, out, 1)
    assert out[0].tobytes() != by_columns.tobytes() and np.signbit(from_first[0, 0]) != np.signbit(out[0, 0, 0])


def test_max_pool3s2_refuses_shapes_it_cannot_pool():
    x = np.zeros((3, 8, 9))
    out, argmax = np.empty((3, 3, 4)), np.empty((3, 3, 4), np.int32)
    with pytest.raises(ValueError, match=r"out \(3, 5\) does not fit x \(8, 9\) for this window"):
        _im2col.max_pool3s2(x, np.empty((3, 3, 5)), np.empty((3, 3, 5), np.int32), 3, 2, 0, 1)
    with pytest.raises(ValueError, match=r"out \(5, 4\) does not fit x \(8, 9\)"):  # a window below the plane
        _im2col.max_pool3s2(x, np.empty((3, 5, 4)), np.empty((3, 5, 4), np.int32), 3, 2, 0, 1)
    with pytest.raises(ValueError, match="0 <= pad_h < kh"):  # a window of padding rows only
        _im2col.max_pool3s2(x, out, argmax, 2, 2, 2, 1)
    with pytest.raises(ValueError, match="out and argmax must have shape"):
        _im2col.max_pool3s2(x, out, np.empty((3, 3, 3), np.int32), 3, 2, 0, 1)
    with pytest.raises(ValueError, match="num_threads"):
        _im2col.max_pool3s2(x, out, argmax, 3, 2, 0, 0)


def test_max_pool2_refuses_shapes_it_cannot_pool():
    x = np.zeros((3, 8, 9))
    with pytest.raises(ValueError, match=r"out \(4, 5\) does not fit x \(8, 9\) for 2x2 windows at stride 2"):
        _im2col.max_pool2(x, np.empty((3, 4, 5)), np.empty((3, 4, 5), np.int32), 1)
    with pytest.raises(ValueError, match="out and argmax must have shape"):
        _im2col.max_pool2(x, np.empty((3, 4, 4)), np.empty((2, 4, 4), np.int32), 1)
    with pytest.raises(ValueError, match="num_threads"):
        _im2col.max_pool2(x, np.empty((3, 4, 4)), np.empty((3, 4, 4), np.int32), 0)
    with pytest.raises(ValueError, match=r"out \(5, 4\) does not fit x \(8, 9\)"):
        _im2col.avg_pool2(x, np.empty((3, 5, 4)), 1)
    with pytest.raises(ValueError, match="out must have shape"):
        _im2col.avg_pool2(x, np.empty((2, 4, 4)), 1)


def test_the_pool_kernels_comparison_can_fail(rng):
    """The agreement test's data has ties, a NaN and a window of -inf: a pick of the last
    maximum instead of the first, or of the first non-NaN, gives other argmaxes there."""
    x = rng.integers(-3, 4, size=(5, 32, 32)).astype(np.float64)
    x[0, 0, 0] = np.nan
    x[1] = -np.inf
    out, argmax = np.empty((5, 16, 16)), np.empty((5, 16, 16), np.int32)
    _im2col.max_pool2(x, out, argmax, 1)
    windows = x.reshape(5, 16, 2, 16, 2).transpose(0, 1, 3, 2, 4).reshape(5, 16, 16, 4)
    last = 3 - np.argmax(windows[..., ::-1] == out[..., None], axis=-1)  # the last maximum of each window
    oh, ow = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    last_index = (2 * oh + last // 2) * 32 + 2 * ow + last % 2
    assert (last_index != argmax).any()
    assert argmax[1, 0, 0] == 0 and np.isnan(out[0, 0, 0])


def test_max_pool_kernels_reject_scratch_too_small():
    x = np.zeros((3, 8, 9))
    out, argmax = np.empty((3, 4, 4)), np.empty((3, 4, 4), dtype=np.int32)
    rows, lanes = _im2col.max_pool_phased_scratch(8, 9, 4, 3, 2)
    with pytest.raises(ValueError, match="scratch"):
        _im2col.max_pool_phased(
            x, out, argmax, 3, 3, 2, 2, 1, 1, np.empty((1, rows - 1)), np.empty((1, lanes), np.int32), 1
        )
    with pytest.raises(ValueError, match="scratch"):  # a row per thread
        _im2col.max_pool_phased(
            x, out, argmax, 3, 3, 2, 2, 1, 1, np.empty((1, rows)), np.empty((1, lanes), np.int32), 2
        )
    size = _im2col.max_pool_rows_scratch(8, 4)[0]
    with pytest.raises(ValueError, match="hmax and hidx"):
        _im2col.max_pool_rows(x, out, argmax, 3, 2, 1, 1, np.empty((1, size - 1)), np.empty((1, size), np.int32), 1)
    with pytest.raises(ValueError, match="hmax and hidx"):  # a row per thread
        _im2col.max_pool_rows(x, out, argmax, 3, 2, 1, 1, np.empty((1, size)), np.empty((1, size), np.int32), 2)
    with pytest.raises(ValueError, match="does not fit"):  # out too wide for x
        _im2col.max_pool_rows(
            x,
            np.empty((3, 4, 6)),
            np.empty((3, 4, 6), np.int32),
            3,
            2,
            1,
            1,
            np.empty((1, 2 * size)),
            np.empty((1, 2 * size), np.int32),
            1,
        )
    with pytest.raises(ValueError, match="pad"):  # the kernel's columns pad by at most 1
        _im2col.max_pool_rows(x, out, argmax, 3, 2, 1, 2, np.empty((1, size)), np.empty((1, size), np.int32), 1)
    with pytest.raises(ValueError, match="columns"):
        _im2col.max_pool_direct(x, out, argmax, 3, 3, 2, 2, 1, 1, np.empty((2, 2), np.intp), 1)
    with pytest.raises(ValueError, match="num_threads"):
        _im2col.max_pool_direct(x, out, argmax, 3, 3, 2, 2, 1, 1, np.empty((2, 3), np.intp), 0)


def test_max_pool_backward_rejects_an_argmax_outside_its_plane():
    """A corrupted argmax raises instead of being skipped: before, the gradient it
    carried vanished without a word."""
    dout = np.ones((2, 4))
    dx = np.empty((2, 9))
    for bad in (-1, 9):
        argmax = np.zeros((2, 4), dtype=np.int32)
        argmax[1, 2] = bad
        with pytest.raises(ValueError, match="argmax holds 1 index"):
            _im2col.max_pool_backward(dout, argmax, dx, 1)


def _pool2_backward_data(rng, H, W, dtype):
    """dout with -0.0, NaN and infinities, and argmaxes at each window's four corners (from a
    max pool of x with ties and NaN), planes of H x W."""
    x = rng.integers(-2, 3, (6, H, W)).astype(dtype)  # small integers: ties in most windows
    x[1, 0, -1], x[2, -1, -1] = np.nan, np.inf
    out_h, out_w = H // 2, W // 2
    out, argmax = np.empty((6, out_h, out_w), dtype), np.empty((6, out_h, out_w), np.int32)
    _im2col.max_pool2(x, out, argmax, 1)
    dout = rng.standard_normal((6, out_h, out_w)).astype(dtype)
    dout[0] = -0.0  # the scatter adds to +0.0: -0.0 comes out +0.0
    if out_h * out_w:
        dout[3, 0, 0], dout[4, -1, -1], dout[5, 0, -1] = np.nan, -np.inf, np.inf
    return dout, argmax


def _scatter_backward(dout, argmax, H, W, threads=1):
    dx = np.full((dout.shape[0], H * W), 7, dout.dtype)
    P = dout.shape[1] * dout.shape[2]
    n = dout.shape[0]
    _im2col.max_pool_backward(dout.reshape(n, P), argmax.reshape(n, P), dx, threads)
    return dx.reshape(-1, H, W)


@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("H, W", [(32, 32), (5, 5), (7, 35), (2, 3), (9, 70), (4, 34), (3, 1)])
def test_max_pool2_backward_equals_the_scatter(rng, H, W, dtype, threads):
    """max_pool2_backward writes each pixel once (the four corners of a window, +0.0 where
    no window reaches): the scatter's bits, -0.0 as +0.0, NaN and infinities routed alone."""
    dout, argmax = _pool2_backward_data(rng, H, W, dtype)
    fast = np.full((6, H, W), 7, dtype)
    _im2col.max_pool2_backward(dout, argmax, fast, threads)
    general = _scatter_backward(dout, argmax, H, W, threads)
    assert fast.tobytes() == general.tobytes()
    assert not np.signbit(fast[0]).any()


def test_the_max_pool2_backward_comparison_can_fail(rng):
    """The data tells a copy of dout apart (-0.0 kept), and a gradient at another corner."""
    dout, argmax = _pool2_backward_data(rng, 8, 8, np.float32)
    general = _scatter_backward(dout, argmax, 8, 8)
    kept = general.copy()
    kept[0].reshape(-1)[argmax[0].reshape(-1)] = dout[0].reshape(-1)  # -0.0 written as it is
    assert kept.tobytes() != general.tobytes()
    moved = _scatter_backward(dout, argmax ^ 1, 8, 8)  # the next column's corner
    assert moved.tobytes() != general.tobytes()


def test_max_pool2_backward_with_an_argmax_outside_its_window():
    """An index elsewhere in the plane (a cache not from a 2x2 / 2 pool) still goes where it
    points, as the scatter routes it; one outside the plane raises as the scatter does."""
    dout = np.arange(1, 33, dtype=np.float64).reshape(2, 4, 4)
    argmax = np.empty((2, 4, 4), np.int32)
    _im2col.max_pool2(np.zeros((2, 8, 8)), np.empty((2, 4, 4)), argmax, 1)
    argmax[1, 2, 3] = 0  # window (2, 3) of plane 1 sends its gradient to pixel (0, 0)
    fast = np.empty((2, 8, 8))
    _im2col.max_pool2_backward(dout, argmax, fast, 2)
    assert fast.tobytes() == _scatter_backward(dout, argmax, 8, 8).tobytes()
    assert fast[1, 0, 0] == dout[1, 0, 0] + dout[1, 2, 3] and fast[1, 4:6, 6:8].sum() == 0
    argmax[0, 1, 1] = 64
    with pytest.raises(ValueError, match="argmax holds 1 index"):
        _im2col.max_pool2_backward(dout, argmax, fast, 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("window", [16, 15, 3], ids=["last", "overlapped", "first"])
def test_max_pool2_backward_with_an_argmax_outside_its_window_in_a_rows_tail(dtype, window):
    """17 windows a row: the last ones run as the row's last vector of windows again (lanes
    before the tail were checked with the vector before). An index outside its window in
    the tail, in the windows run twice, or before them, still goes where it points."""
    dout = np.arange(1, 2 * 3 * 17 + 1, dtype=dtype).reshape(2, 3, 17)
    argmax = np.empty((2, 3, 17), np.int32)
    _im2col.max_pool2(np.zeros((2, 6, 34), dtype), np.empty((2, 3, 17), dtype), argmax, 1)
    argmax[1, 1, window] = 0
    fast = np.empty((2, 6, 34), dtype)
    _im2col.max_pool2_backward(dout, argmax, fast, 1)
    assert fast.tobytes() == _scatter_backward(dout, argmax, 6, 34).tobytes()
    assert fast[1, 0, 0] == dout[1, 0, 0] + dout[1, 1, window]


def test_max_pool2_backward_refuses_shapes_it_cannot_serve():
    dout, argmax = np.empty((3, 4, 4)), np.zeros((3, 4, 4), np.int32)
    with pytest.raises(ValueError, match="does not fit dx"):
        _im2col.max_pool2_backward(dout, argmax, np.empty((3, 7, 8)), 1)
    with pytest.raises(ValueError, match="matching dx"):
        _im2col.max_pool2_backward(dout, argmax[:2], np.empty((3, 8, 8)), 1)
    with pytest.raises(ValueError, match="matching dx"):
        _im2col.max_pool2_backward(dout, argmax, np.empty((2, 8, 8)), 1)
    with pytest.raises(ValueError):
        _im2col.max_pool2_backward(dout, argmax, np.empty((3, 8, 8)), 0)
    with pytest.raises((TypeError, ValueError)):
        _im2col.max_pool2_backward(dout, argmax.astype(np.int64), np.empty((3, 8, 8)), 1)


# (H, W, kernel, pad): windows that tile the image (stride == kernel), which
# avg_pool_backward writes pixel by pixel instead of zero-filling and adding.
AVG_TILE_GEOMETRIES = [
    (8, 8, (2, 2), (0, 0)),
    (7, 9, (2, 2), (0, 0)),  # a last row and column in no window
    (7, 9, (2, 2), (1, 1)),
    (9, 10, (3, 3), (1, 1)),
    (5, 11, (2, 3), (1, 0)),
    (4, 6, (1, 1), (0, 0)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(
    "geo", AVG_TILE_GEOMETRIES, ids=lambda g: f"x{g[0]}x{g[1]}-k{g[2][0]}x{g[2][1]}-p{pair_id(g[3])}"
)
def test_avg_pool_backward_tiles_bitwise(rng, geo, dtype):
    """Each pixel gets 0.0 + dout * (1 / (kh*kw)) from its window, or 0.0: the same bits
    as zero-fill-then-add (a -0.0 gradient gives +0.0), NaN and inf passed through."""
    H, W, (kh, kw), (ph, pw) = geo
    out_h, out_w = out_size(H, kh, kh, ph, 1), out_size(W, kw, kw, pw, 1)
    dout = rng.standard_normal((3, out_h, out_w)).astype(dtype)
    dout[0, 0, 0] = -0.0
    dout[1, -1, -1] = np.nan
    dout[2, 0, -1] = -np.inf
    inv = dtype(1.0 / (kh * kw))
    expected = np.zeros((3, H, W), dtype=dtype)
    for oh in range(out_h):
        for ow in range(out_w):
            for i in range(kh):
                for j in range(kw):
                    ih, iw = oh * kh - ph + i, ow * kw - pw + j
                    if 0 <= ih < H and 0 <= iw < W:
                        expected[:, ih, iw] += dout[:, oh, ow] * inv
    dx = np.full((3, H, W), 7, dtype=dtype)  # stale values must all be overwritten
    _im2col.avg_pool_backward(dout, dx, kh, kw, kh, kw, ph, pw, 1)
    assert dx.tobytes() == expected.tobytes()
