"""Numbers at the edges: NaN and Inf, float32 accumulation, index arithmetic past 2**31.

* **NaN and Inf propagate as in PyTorch** (explicit expectations always, plus a
  comparison with ``torch.nn.functional`` where torch is installed). A
  convolution computes on the zero-padded input, IEEE style: a NaN in ``x``
  makes NaN exactly the outputs whose window reads it; an Inf gives an Inf of
  the sign of the weight it meets; an Inf *weight* meeting the zero padding
  gives NaN (0 * inf), as in PyTorch. Max pooling: a NaN in a window gives
  NaN and its gradient goes to the NaN; a window of -inf gives -inf and its
  gradient goes to the window's first pixel (PyTorch's indices). Average
  pooling: an Inf gives Inf, +inf and -inf together give NaN.
  One difference: with *several* NaNs in one max-pooling window, fastconv
  sends the gradient to the first (row-major, ``np.argmax``'s rule, the tie
  rule of both fastconv modules) while PyTorch 2.13's CPU kernel sends it to
  the last (it takes every NaN it meets); the output, NaN, is the same.
* **float32 accumulation** stays within the tolerance table (``fastconv.testing.TOL``)
  against a float64 reference on reductions of thousands of terms:
  C*kh*kw = 4608 (C=512, 3x3) forward, F*kh*kw = 4608 into dx, N*out_h*out_w =
  4096 into dw and db, 64x64 average-pooling windows; with data of mixed sign
  and all positive (the harder case for a running sum).
* **Index arithmetic** (read from ``fastconv/kernels/`` and ``fastconv/engine/``): every
  index and size in the kernels is ``Py_ssize_t`` (64 bits); the engine's sizes (``K * n * P``,
  chunks, planes) are Python ints. The
  only 32-bit values are max pooling's argmax (``int32``, the flat index
  ``ih * W + iw`` of a pixel in its plane), which ``pool_geometry`` bounds by
  rejecting planes of more than 2**31 - 1 pixels, and the thread count. The
  overflow found (by fuzzing) was elsewhere: stride, pad and dilation went to
  the kernels unbounded, and ``-start + stride - 1`` in ``_first_valid``
  overflowed for stride + pad > 2**63, writing before an im2col row. They are
  now bounded by 2**31 - 1 (as PyTorch bounds pooling), which keeps every
  expression of them below 2**62 (the products ``kh * kw`` and ``oh * stride``
  included). The geometry helpers are checked here on arrays of 2**36
  elements made with zero strides (nothing that size is allocated).
  Not an overflow, but a bound to know: ``chunk_images`` never goes below one
  image, so one image's im2col matrix (C*kh*kw x out_h*out_w) is the smallest
  workspace, whatever ``WORKSPACE_BYTES`` says.
"""

import subprocess
import textwrap

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import fastconv.fast as fast
import fastconv.naive as naive
from fastconv.engine.conv import chunk_images
from fastconv.engine.geometry import conv_geometry, pool_geometry
from fastconv.io.child import python_code
from fastconv.testing import DTYPES, TOL, rel_error

from _helpers import dtype_id, out_size

MODULES = [pytest.param(naive, id="naive"), pytest.param(fast, id="fast")]
CONV = dict(stride=(2, 1), pad=(1, 2), dilation=(1, 2), groups=2)


def _torch():
    return pytest.importorskip("torch")


def _reads(oh, ow, ih, iw, kernel, stride, pad, dilation):
    """Kernel tap (i, j) through which output (oh, ow) reads input pixel (ih, iw), or None."""
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if (oh * stride[0] - pad[0] + i * dilation[0], ow * stride[1] - pad[1] + j * dilation[1]) == (ih, iw):
                return i, j
    return None


def _pairs(kw):
    return {k: (v, v) if np.isscalar(v) else v for k, v in kw.items() if k != "groups"}


# ---------------------------------------------------------------------------- convolution
@pytest.mark.parametrize("m", MODULES)
def test_conv_nan_in_x_poisons_exactly_the_windows_that_read_it(m, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    n0, c0, h0, w0 = 1, 3, 2, 3
    x[n0, c0, h0, w0] = np.nan
    out, _ = m.conv_forward(x, w, None, **CONV)
    p = _pairs(CONV)
    expected = np.zeros(out.shape, dtype=bool)
    for f in range(3, 6):  # the filters of channel 3's group
        for oh in range(out.shape[2]):
            for ow in range(out.shape[3]):
                reads = _reads(oh, ow, h0, w0, (3, 2), p["stride"], p["pad"], p["dilation"])
                expected[n0, f, oh, ow] = reads is not None
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(np.isnan(out), expected)


@pytest.mark.parametrize("m", MODULES)
def test_conv_inf_in_x_gives_inf_of_the_weights_sign(m, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 6, 7)).astype(dtype)
    w = rng.standard_normal((4, 2, 3, 3)).astype(dtype)
    x[0, 1, 3, 2] = np.inf
    out, _ = m.conv_forward(x, w, None, stride=1, pad=1)
    for f in range(4):
        for oh in range(out.shape[2]):
            for ow in range(out.shape[3]):
                tap = _reads(oh, ow, 3, 2, (3, 3), (1, 1), (1, 1), (1, 1))
                want = np.sign(w[f, 1][tap]) * np.inf if tap else None
                got = out[0, f, oh, ow]
                assert (got == want) if tap else np.isfinite(got), (f, oh, ow, got, want)


# inf * 0 and inf - inf make the NaNs this test expects: numpy's warning about them is expected too.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("m", MODULES)
def test_conv_inf_weight_meeting_the_padding_gives_nan(m, dtype):
    x = np.ones((1, 1, 4, 4), dtype=dtype)
    w = np.ones((1, 1, 3, 3), dtype=dtype)
    w[0, 0, 0, 0] = np.inf  # reads the padding in the first output row and column
    out, _ = m.conv_forward(x, w, None, stride=1, pad=1)
    expected = np.full((4, 4), np.inf)
    expected[0, :] = expected[:, 0] = np.nan
    np.testing.assert_array_equal(out[0, 0], expected)


@pytest.mark.parametrize("m", MODULES)
def test_conv_backward_nan_in_dout(m, dtype):
    """dx is NaN on the pixels the NaN output read (its group's channels), dw[f] and db[f] NaN."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    out, cache = m.conv_forward(x, w, b, **CONV)
    dout = rng.standard_normal(out.shape).astype(dtype)
    n0, f0, oh0, ow0 = 0, 4, 1, 2
    dout[n0, f0, oh0, ow0] = np.nan
    dx, dw, db = m.conv_backward(dout, cache)
    p = _pairs(CONV)
    expected = np.zeros(x.shape, dtype=bool)
    for c in (2, 3):
        for ih in range(x.shape[2]):
            for iw in range(x.shape[3]):
                reads = _reads(oh0, ow0, ih, iw, (3, 2), p["stride"], p["pad"], p["dilation"])
                expected[n0, c, ih, iw] = reads is not None
    np.testing.assert_array_equal(np.isnan(dx), expected)
    assert np.isnan(dw[f0]).all() and not np.isnan(np.delete(dw, f0, axis=0)).any()
    assert np.isnan(db[f0]) and not np.isnan(np.delete(db, f0)).any()


# inf * 0 and inf - inf make the NaNs this test expects: numpy's warning about them is expected too.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_conv_nan_and_inf_as_torch(dtype):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 9, 8)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    x[0, 1, 4, 4], x[1, 2, 0, 7], x[1, 3, 5, 1] = np.nan, np.inf, -np.inf
    w[5, 0, 0, 0] = np.inf
    dout_np = rng.standard_normal((2, 6, out_size(9, 3, 2, 1), out_size(8, 2, 1, 2, 2))).astype(dtype)
    dout_np[1, 0, 2, 3] = np.nan
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = F.conv2d(xt, wt, bt, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    yt.backward(torch.from_numpy(dout_np))
    want = [yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()]
    for m in (naive, fast):
        out, cache = m.conv_forward(x, w, b, **CONV)
        got = [out, *m.conv_backward(dout_np, cache)]
        for name, g, t in zip(("out", "dx", "dw", "db"), got, want):
            _same_specials(g, t, dtype, f"{m.__name__} {name}")


def _same_specials(got, want, dtype, what):
    """Same NaN positions, same signed Infs, finite values within the tolerance table."""
    assert got.shape == want.shape and got.dtype == dtype, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(
        np.where(np.isinf(got), got, 0), np.where(np.isinf(want), want, 0), err_msg=f"{what}: Inf positions or signs"
    )
    fin = np.isfinite(want)
    assert rel_error(got[fin], want[fin]) < TOL[np.dtype(dtype).type], what


# ---------------------------------------------------------------------------- pooling
def _pool_input(dtype):
    """Planes with windows (2x2, stride 2) holding: a NaN, two NaNs, -inf only, +inf, -inf and a number."""
    x = np.arange(32, dtype=dtype).reshape(1, 2, 4, 4) / 7 - 2
    x[0, 0, 0, 1] = np.nan  # window (0, 0): NaN with numbers -> NaN, gradient to (0, 1)
    x[0, 0, 2:4, 0:2] = -np.inf  # window (1, 0): -inf only -> -inf, gradient to (2, 0)
    x[0, 0, 3, 3] = np.inf  # window (1, 1): +inf
    x[0, 1, 1, 0] = x[0, 1, 0, 1] = np.nan  # window (0, 0) of plane 1: first NaN (row-major) is (0, 1)
    x[0, 1, 2, 2] = -np.inf  # window (1, 1) of plane 1: -inf among numbers is ignored
    return x


@pytest.mark.parametrize("m", MODULES)
def test_max_pool_nan_and_inf(m, dtype):
    x = _pool_input(dtype)
    out, cache = m.max_pool_forward(x, 2)
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 1, 0] == -np.inf and out[0, 0, 1, 1] == np.inf
    assert np.isnan(out[0, 1, 0, 0]) and out[0, 1, 1, 1] == x[0, 1, 2:4, 2:4].max()
    dx = m.max_pool_backward(np.full(out.shape, 2.0, dtype=dtype), cache)
    expected = np.zeros_like(x)
    for c, i, j in [(0, 0, 1), (0, 2, 0), (0, 3, 3), (1, 0, 1)]:
        expected[0, c, i, j] = 2
    expected[0, 0, 0:2, 2:4][np.unravel_index(np.argmax(x[0, 0, 0:2, 2:4]), (2, 2))] = 2
    expected[0, 1, 0:2, 2:4][np.unravel_index(np.argmax(x[0, 1, 0:2, 2:4]), (2, 2))] = 2
    expected[0, 1, 2:4, 0:2][np.unravel_index(np.argmax(x[0, 1, 2:4, 0:2]), (2, 2))] = 2
    expected[0, 1, 2:4, 2:4][np.unravel_index(np.nanargmax(x[0, 1, 2:4, 2:4]), (2, 2))] = 2
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("m", MODULES)
def test_max_pool_window_of_padding_and_minus_inf(m, dtype):
    """Padding counts as -inf: a window of -inf pixels and padding gives -inf, gradient to its first pixel."""
    x = np.full((1, 1, 3, 3), -np.inf, dtype=dtype)
    x[0, 0, 2, 2] = 1.0
    out, cache = m.max_pool_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(out[0, 0], [[-np.inf, -np.inf], [-np.inf, 1.0]])
    dx = m.max_pool_backward(np.ones(out.shape, dtype=dtype), cache)
    expected = np.zeros((3, 3))
    expected[0, 0] = 1  # window (0, 0) covers pixels (0..1, 0..1): first is (0, 0)
    expected[0, 1] = 1  # window (0, 1) covers (0..1, 1..2)
    expected[1, 0] = 1  # window (1, 0) covers (1..2, 0..1)
    expected[2, 2] = 1
    np.testing.assert_array_equal(dx[0, 0], expected)


# inf * 0 and inf - inf make the NaNs this test expects: numpy's warning about them is expected too.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("m", MODULES)
def test_avg_pool_inf_and_nan(m, dtype):
    x = np.ones((1, 1, 4, 4), dtype=dtype)
    x[0, 0, 0, 0] = np.inf
    x[0, 0, 0, 2], x[0, 0, 1, 3] = np.inf, -np.inf
    x[0, 0, 3, 3] = np.nan
    out, cache = m.avg_pool_forward(x, 2)
    assert out[0, 0, 0, 0] == np.inf and np.isnan(out[0, 0, 0, 1]) and np.isnan(out[0, 0, 1, 1])
    assert out[0, 0, 1, 0] == 1.0
    dout = np.ones(out.shape, dtype=dtype)
    dout[0, 0, 1, 0] = np.inf
    dx = m.avg_pool_backward(dout, cache)
    assert (dx[0, 0, 2:, :2] == np.inf).all() and (dx[0, 0, :2] == 0.25).all() and (dx[0, 0, 2:, 2:] == 0.25).all()


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_nan_and_inf_as_torch(kind, dtype):
    """Every window holds at most one NaN (see the module docstring for several)."""
    torch = _torch()
    F = torch.nn.functional
    x = np.random.default_rng(9).standard_normal((2, 2, 8, 8)).astype(dtype)
    x[0, 0, 1, 1] = x[1, 1, 6, 6] = np.nan
    x[0, 1, 3, 4] = np.inf
    x[1, 0, 0:3, 0:3] = -np.inf  # windows of -inf only, with and without padding
    x[0, 0, 6, 1], x[0, 0, 6, 2] = np.inf, -np.inf
    for kernel, stride, pad in [(2, 2, 0), (3, 2, 1), ((3, 2), 1, (1, 0))]:
        xt = torch.tensor(x, requires_grad=True)
        if kind == "max":
            yt = F.max_pool2d(xt, kernel, stride, pad)
        else:
            yt = F.avg_pool2d(xt, kernel, stride, pad, count_include_pad=True)
        dout = np.cos(np.arange(yt.numel(), dtype=dtype)).reshape(yt.shape)
        yt.backward(torch.from_numpy(dout))
        for m in (naive, fast):
            out, cache = getattr(m, f"{kind}_pool_forward")(x, kernel, stride, pad)
            dx = getattr(m, f"{kind}_pool_backward")(dout, cache)
            what = f"{m.__name__} {kind} k{kernel} s{stride} p{pad}"
            _same_specials(out, yt.detach().numpy(), dtype, what + " out")
            _same_specials(dx, xt.grad.numpy(), dtype, what + " dx")


@pytest.mark.parametrize("m", MODULES)
def test_max_pool_several_nans_gradient_goes_to_the_first(m):
    x = np.zeros((1, 1, 2, 3))
    x[0, 0, 0, 2] = x[0, 0, 1, 0] = x[0, 0, 1, 1] = np.nan
    out, cache = m.max_pool_forward(x, (2, 3))
    assert np.isnan(out).all()
    dx = m.max_pool_backward(np.ones(out.shape), cache)
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 1], [0, 0, 0]])


# ---------------------------------------------------------------------------- float32 accumulation
def _conv64(x, w, pad):
    """A float64 convolution (stride 1) by sliding windows and einsum, independent of fastconv."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(x, w.shape[2:], axis=(2, 3))  # (N, C, out_h, out_w, kh, kw)
    return np.einsum("ncpqij,fcij->nfpq", windows, w.astype(np.float64), optimize=True)


def _conv64_backward(x, w, dout, pad):
    """(dx, dw, db) of _conv64 in float64: dx tap by tap, dw by sliding windows."""
    x64, w64, d64 = (a.astype(np.float64) for a in (x, w, dout))
    kh, kw = w.shape[2:]
    H, W = x.shape[2:]
    oh, ow = dout.shape[2:]
    dxp = np.zeros((x.shape[0], x.shape[1], H + 2 * pad, W + 2 * pad))
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i : i + oh, j : j + ow] += np.einsum("nfpq,fc->ncpq", d64, w64[:, :, i, j], optimize=True)
    xp = np.pad(x64, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))
    dw = np.einsum("ncpqij,nfpq->fcij", windows, d64, optimize=True)
    return dxp[:, :, pad : pad + H, pad : pad + W], dw, d64.sum(axis=(0, 2, 3))


def _data(rng, shape, positive):
    return (rng.random(shape) if positive else rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("positive", [False, True], ids=["mixed-sign", "positive"])
def test_float32_conv_forward_reduction_of_4608_terms(positive):
    rng = np.random.default_rng(4)
    x, w, b = _data(rng, (2, 512, 8, 8), positive), _data(rng, (16, 512, 3, 3), positive), _data(rng, (16,), positive)
    ref = _conv64(x, w, 1) + b.astype(np.float64)[:, None, None]
    for m in (fast, naive):
        out, _ = m.conv_forward(x, w, b, stride=1, pad=1)
        assert out.dtype == np.float32
        err = rel_error(out, ref)
        assert err < TOL[np.float32], f"{m.__name__}: {err:.3g}"


@pytest.mark.parametrize("positive", [False, True], ids=["mixed-sign", "positive"])
def test_float32_conv_backward_reductions_of_thousands_of_terms(positive):
    """dx sums F*kh*kw = 4608 terms, dw and db N*out_h*out_w = 4096."""
    rng = np.random.default_rng(5)
    x, w, b = _data(rng, (4, 8, 32, 32), positive), _data(rng, (512, 8, 3, 3), positive), _data(rng, (512,), positive)
    out, cache = fast.conv_forward(x, w, b, stride=1, pad=1)
    dout = _data(rng, out.shape, positive)
    got = fast.conv_backward(dout, cache)
    want = _conv64_backward(x, w, dout, 1)
    for name, g, r in zip(("dx", "dw", "db"), got, want):
        assert g.dtype == np.float32
        err = rel_error(g, r)
        assert err < TOL[np.float32], f"{name}: {err:.3g}"


def test_reference_float64_conv_is_right():
    """The einsum references above agree with fastconv.naive in float64 (so they test something)."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    out, cache = naive.conv_forward(x, w, np.zeros(4), stride=1, pad=1)
    assert rel_error(out, _conv64(x, w, 1)) < TOL[np.float64]
    dout = rng.standard_normal(out.shape)
    for g, r in zip(naive.conv_backward(dout, cache), _conv64_backward(x, w, dout, 1)):
        assert rel_error(g, r) < TOL[np.float64]


@pytest.mark.parametrize("offset", [0.0, 1000.0])
@pytest.mark.parametrize("m", MODULES)
def test_float32_average_pooling_over_4096_pixels(m, offset):
    rng = np.random.default_rng(7)
    x = (rng.random((2, 3, 64, 64)) + offset).astype(np.float32)
    out, cache = m.avg_pool_forward(x, 64)
    ref = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    assert out.dtype == np.float32 and rel_error(out, ref) < TOL[np.float32]
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx = m.avg_pool_backward(dout, cache)
    assert rel_error(dx, np.broadcast_to(dout.astype(np.float64) / 4096, x.shape)) < TOL[np.float32]


# ---------------------------------------------------------------------------- index arithmetic
def _fake(shape, dtype=np.float32):
    """An array of ``shape`` that allocates one element (every stride zero, read-only)."""
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


def test_conv_geometry_past_2_31_elements_without_allocating():
    N, C, H, W = 2**20, 64, 32, 32  # 2**36 elements, 256 GiB if it existed
    x, w = _fake((N, C, H, W)), _fake((128, 64, 3, 3))
    assert x.size == 2**36 and x.nbytes == 2**38 and x.strides == (0, 0, 0, 0)
    g = conv_geometry(x, w, None, stride=1, pad=1)
    assert g.out_shape == (N, 128, 32, 32)
    assert np.prod(g.out_shape, dtype=object) == 2**37  # exact (Python ints), past int32 and uint32
    per_image = C * 9 * 32 * 32 * 4
    for itemsize in (4, 8):
        chunk = chunk_images(g, itemsize)
        assert chunk == max(1, fast.WORKSPACE_BYTES // (per_image // 4 * itemsize))
        assert chunk == 1 or chunk * per_image // 4 * itemsize <= fast.WORKSPACE_BYTES
    # one huge image: the chunk cannot go below one image, the workspace bound then gives way
    g = conv_geometry(_fake((3, 1, 2**16, 2**16)), _fake((1, 1, 3, 3)), None, stride=1, pad=1)
    assert g.out_shape == (3, 1, 2**16, 2**16) and chunk_images(g, 4) == 1
    # strides and dilation far apart, all at the bound
    g = conv_geometry(
        _fake((2**20, 1, 2**11, 2**11)), _fake((1, 1, 2, 2)), None, stride=2**31 - 1, pad=2**31 - 1, dilation=2**31 - 1
    )
    assert (g.out_h, g.out_w) == (out_size(2**11, 2, 2**31 - 1, 2**31 - 1, 2**31 - 1),) * 2


def test_pool_geometry_and_the_int32_argmax_bound():
    g = pool_geometry(_fake((2**20, 3, 2**15, 2**15)), 2)  # planes of 2**30 pixels: argmax < 2**30
    assert g.out_shape == (2**20, 3, 2**14, 2**14)
    pool_geometry(_fake((1, 1, 1, 2**31 - 1)), 1)  # the largest plane whose indices fit int32
    for shape in [(1, 1, 2, 2**30), (1, 1, 2**16, 2**16)]:
        with pytest.raises(ValueError, match=r"x planes must have at most 2\*\*31 - 1 pixels"):
            pool_geometry(_fake(shape), 2)


@pytest.mark.parametrize("bad", [-1, 4 * 6, 2**31 - 1], ids=["negative", "one-past-the-plane", "int32-max"])
def test_an_argmax_outside_its_plane_raises(bad):
    """A cache whose argmax was corrupted (by the caller, or by a bug) raises in the
    backward pass of fast's max pool and fused conv layer; the index is never written
    through, and the gradient it carries never vanishes without a word."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4, 6))
    out, cache = fast.max_pool_forward(x, 2)
    cache[0][1, 2, 0, 1] = bad
    with pytest.raises(ValueError, match="argmax"):
        fast.max_pool_backward(np.ones_like(out), cache)
    w, b = rng.standard_normal((3, 3, 3, 3)), rng.standard_normal(3)
    out, cache = fast.conv_relu_pool_forward(x, w, b, pad=1)
    cache[6][5] = bad  # the argmax, in chunk layout
    with pytest.raises(ValueError, match="argmax"):
        fast.conv_relu_pool_backward(np.ones_like(out), cache)


@pytest.mark.parametrize("name", ["stride", "pad", "dilation"])
@pytest.mark.parametrize("m", MODULES)
def test_conv_hyperparameters_above_2_31_are_rejected(m, name):
    x, w = np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 1, 1))
    for bad in (2**31, (1, 2**40), np.uint64(2**63), 2**100):
        with pytest.raises(ValueError, match=rf"^{name} must be <= 2\*\*31 - 1"):
            m.conv_forward(x, w, **{name: bad})


@pytest.mark.parametrize("m", MODULES)
def test_pool_hyperparameters_above_2_31_are_rejected(m):
    x = np.zeros((1, 1, 5, 5))
    for kwargs, name in [
        (dict(kernel_size=2**31), "kernel_size"),
        (dict(kernel_size=2, stride=2**63), "stride"),
        (dict(kernel_size=(2**32, 2**32), pad=2**31), "kernel_size"),
    ]:
        with pytest.raises(ValueError, match=rf"^{name} must be <= 2\*\*31 - 1"):
            m.max_pool_forward(x, **kwargs)


@pytest.mark.parametrize("m", MODULES)
def test_an_output_larger_than_any_array_is_rejected_naming_pad(m):
    with pytest.raises(ValueError, match=r"pad \(2147483647, 2147483647\).*larger than any array"):
        m.conv_forward(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), pad=2**31 - 1)


def test_conv_with_hyperparameters_at_the_bound(dtype):
    """pad = stride = 2**31 - 1: three windows per axis, two of them all padding (= the bias)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 5, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    big = 2**31 - 1
    expected = np.broadcast_to(b[None, :, None, None], (2, 4, 3, 3)).copy()
    expected[:, :, 1, 1] += np.einsum("ncij,fcij->nf", x[:, :, :3, :3].astype(np.float64), w)
    dout = rng.standard_normal((2, 4, 3, 3)).astype(dtype)
    for m in (naive, fast):
        out, cache = m.conv_forward(x, w, b, stride=big, pad=big)
        assert rel_error(out, expected) < TOL[np.dtype(dtype).type], m.__name__
        dx, dw, db = m.conv_backward(dout, cache)
        want_dx = np.zeros(x.shape)
        want_dx[:, :, :3, :3] = np.einsum("nf,fcij->ncij", dout[:, :, 1, 1].astype(np.float64), w)
        assert rel_error(dx, want_dx) < TOL[np.dtype(dtype).type], m.__name__
        assert rel_error(dw, np.einsum("nf,ncij->fcij", dout[:, :, 1, 1], x[:, :, :3, :3])) < TOL[np.dtype(dtype).type]
    # dilation at the bound with a one-tap-wide kernel, and a window far wider than the image
    out, _ = fast.conv_forward(x, w[:, :, :, :1], b, dilation=(1, big))
    assert rel_error(out, naive.conv_forward(x, w[:, :, :, :1], b, dilation=(1, big))[0]) < TOL[np.dtype(dtype).type]
    for kind in ("max", "avg"):
        args = (x, (3, 2**20), 1, (1, 2**19))
        got = getattr(fast, f"{kind}_pool_forward")(*args)[0]
        assert rel_error(got, getattr(naive, f"{kind}_pool_forward")(*args)[0]) < TOL[np.dtype(dtype).type]


def test_pooling_window_of_2_31_columns_takes_no_longer_than_the_image():
    """kernel_size (3, 2**31 - 1) with pad (1, 2**30 - 1) is valid (pad <= kernel // 2) and covers a
    7-pixel-wide image many times over; the kernels must not loop over all 2**31 - 1 columns.
    Run in a subprocess with a time limit: a regression hangs it, not the test run."""
    code = textwrap.dedent("""
        import numpy as np, fastconv.fast as fast, fastconv.naive as naive
        x = np.random.default_rng(0).standard_normal((1, 2, 5, 7))
        for kind in ("max", "avg"):
            args = (x, (3, 2**31 - 1), 1, (1, 2**30 - 1))
            out, cache = getattr(fast, kind + "_pool_forward")(*args)
            ref, ref_cache = getattr(naive, kind + "_pool_forward")(*args)
            assert out.shape == ref.shape == (1, 2, 5, 7) and np.allclose(out, ref, rtol=1e-12, atol=0)
            dx = getattr(fast, kind + "_pool_backward")(np.ones_like(out), cache)
            assert np.allclose(dx, getattr(naive, kind + "_pool_backward")(np.ones_like(ref), ref_cache))
        print("ok")
    """)
    try:
        run = subprocess.run(python_code(code), capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("max/avg pooling with a (3, 2**31 - 1) window on a 5x7 image ran for over 20 s")
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
