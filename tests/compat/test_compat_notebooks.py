"""What the CS231n notebooks call after the import swap (issue 26 items 4-6): mixed float32 /
float64 calls computed as numpy promotes them (the core API stays strict), the im2col names
the star imports bring (checked against index arithmetic written here), and the documented
choice that the ``*_naive`` names run the fast path."""

import numpy as np
import pytest

from fastconv import fast, layers
from fastconv.compat import cs231n as L
from fastconv.testing import rel_error, tol

from _helpers import ROOT

f32, f64 = np.float32, np.float64
MIXED = [(f32, f64), (f64, f32)]
MIXED_IDS = ["x-float32-params-float64", "x-float64-params-float32"]


# ---------------------------------------------------------------- item 4: numpy's promotion in compat
def _normalized(x, axis, eps=1e-5):
    """(x - mean) / sqrt(var + eps) over ``axis``, in float64."""
    x = x.astype(f64)
    return (x - x.mean(axis=axis, keepdims=True)) / np.sqrt(x.var(axis=axis, keepdims=True) + eps)


@pytest.mark.parametrize("x_dtype, p_dtype", MIXED, ids=MIXED_IDS)
def test_normalizations_compute_mixed_dtypes_in_float64_as_numpy_does(rng, x_dtype, p_dtype):
    x2 = rng.standard_normal((6, 5)).astype(x_dtype)
    x4 = rng.standard_normal((3, 4, 3, 2)).astype(x_dtype)
    g5, b5 = (rng.standard_normal(5).astype(p_dtype) for _ in range(2))
    g4, b4 = (rng.standard_normal(4).astype(p_dtype) for _ in range(2))
    cases = {
        "batchnorm": (
            lambda: L.batchnorm_forward(x2, g5, b5, {"mode": "train"}),
            L.batchnorm_backward,
            _normalized(x2, 0) * g5 + b5,
            x2,
            g5,
            b5,
        ),
        "layernorm": (
            lambda: L.layernorm_forward(x2, g5, b5, {}),
            L.layernorm_backward,
            _normalized(x2, 1) * g5 + b5,
            x2,
            g5,
            b5,
        ),
        "spatial_batchnorm": (
            lambda: L.spatial_batchnorm_forward(x4, g4, b4, {"mode": "train"}),
            L.spatial_batchnorm_backward,
            _normalized(x4, (0, 2, 3)) * g4.reshape(1, 4, 1, 1) + b4.reshape(1, 4, 1, 1),
            x4,
            g4,
            b4,
        ),
        "spatial_groupnorm": (
            lambda: L.spatial_groupnorm_forward(x4, g4, b4, 2, {}),
            L.spatial_groupnorm_backward,
            (_normalized(x4.reshape(3, 2, -1), 2).reshape(x4.shape) * g4.reshape(1, 4, 1, 1) + b4.reshape(1, 4, 1, 1)),
            x4,
            g4,
            b4,
        ),
    }
    for name, (forward, backward, expected, x, g, b) in cases.items():
        out, cache = forward()
        assert out.dtype == np.result_type(x, g) == f64, name
        assert rel_error(out, expected) < 1e-9, name
        dout = rng.standard_normal(out.shape).astype(x_dtype)  # either dtype: numpy promotes
        dx, dgamma, dbeta = backward(dout, cache)
        assert dx.dtype == dgamma.dtype == dbeta.dtype == f64, name
        # the same call with every operand in float64 (float32 to float64 is exact)
        bn = {"mode": "train"}
        x64, g64, b64 = x.astype(f64), g.astype(f64), b.astype(f64)
        extra = {"batchnorm": (bn,), "layernorm": ({},), "spatial_batchnorm": (bn,), "spatial_groupnorm": (2, {})}
        ref_out, ref_cache = getattr(L, f"{name}_forward")(x64, g64, b64, *extra[name])
        for got, want in zip((dx, dgamma, dbeta), backward(dout.astype(f64), ref_cache)):
            assert rel_error(got, want) < 1e-12, name


@pytest.mark.parametrize("x_dtype, dout_dtype", MIXED, ids=["x-float32-dout-float64", "x-float64-dout-float32"])
def test_relu_backward_takes_a_dout_of_the_other_dtype(rng, x_dtype, dout_dtype):
    x = rng.standard_normal((4, 7)).astype(x_dtype)
    x[0, 0] = 1e-40 if x_dtype == f64 else x[0, 0]  # positive in float64, 0 once cast to float32
    dout = rng.standard_normal(x.shape).astype(dout_dtype)
    _, cache = L.relu_forward(x)
    dx = L.relu_backward(dout, cache)
    assert dx.dtype == dout_dtype  # the originals: dx = dout.copy(); dx[x <= 0] = 0
    assert np.array_equal(dx, np.where(x > 0, dout, 0))


def _max_pool_backward_reference(x, dout, k, s):
    """Each output's gradient to the first maximum of its window, in x's dtype (np.zeros_like(x))."""
    dx = np.zeros_like(x)
    N, C, out_h, out_w = dout.shape
    for n in range(N):
        for c in range(C):
            for oh in range(out_h):
                for ow in range(out_w):
                    window = x[n, c, oh * s : oh * s + k, ow * s : ow * s + k]
                    i, j = divmod(int(np.argmax(window)), k)
                    dx[n, c, oh * s + i, ow * s + j] += dout[n, c, oh, ow]
    return dx


@pytest.mark.parametrize("x_dtype, dout_dtype", MIXED, ids=["x-float32-dout-float64", "x-float64-dout-float32"])
def test_max_pool_backward_takes_a_dout_of_the_other_dtype(rng, x_dtype, dout_dtype):
    x = rng.standard_normal((2, 3, 6, 6)).astype(x_dtype)
    out, cache = L.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    dout = rng.standard_normal(out.shape).astype(dout_dtype)
    dx = L.max_pool_backward_fast(dout, cache)
    assert dx.dtype == x_dtype
    assert np.array_equal(dx, _max_pool_backward_reference(x, dout.astype(x_dtype), 2, 2))


@pytest.mark.parametrize("x_dtype, dout_dtype", MIXED, ids=["x-float32-dout-float64", "x-float64-dout-float32"])
def test_batchnorm_backward_takes_a_dout_of_the_other_dtype(rng, x_dtype, dout_dtype):
    x = rng.standard_normal((8, 5)).astype(x_dtype)
    gamma, beta = (rng.standard_normal(5).astype(x_dtype) for _ in range(2))
    _, cache = L.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dout = rng.standard_normal(x.shape).astype(dout_dtype)
    dx, dgamma, dbeta = L.batchnorm_backward(dout, cache)
    assert dx.dtype == dgamma.dtype == dbeta.dtype == f64
    # reference: batchnorm's backward formula in float64
    xhat = _normalized(x, 0)
    d64 = dout.astype(f64)
    inv_std = 1 / np.sqrt(x.astype(f64).var(axis=0) + 1e-5)
    dxhat = d64 * gamma
    want = inv_std / 8 * (8 * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    assert rel_error(dx, want) < tol(f32)  # the cache was computed in x's dtype
    assert rel_error(dgamma, (d64 * xhat).sum(axis=0)) < tol(f32)
    assert np.array_equal(dbeta, d64.sum(axis=0))


@pytest.mark.parametrize("x_dtype, dout_dtype", MIXED, ids=["x-float32-dout-float64", "x-float64-dout-float32"])
def test_dropout_backward_takes_a_dout_of_the_other_dtype(rng, x_dtype, dout_dtype):
    x = rng.uniform(1, 2, (50, 8)).astype(x_dtype)  # nonzero: the kept units are where out != 0
    out, cache = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 3})
    dout = rng.standard_normal(x.shape).astype(dout_dtype)
    dx = L.dropout_backward(dout, cache)
    assert dx.dtype == f64  # dout * mask, as numpy promotes it
    assert rel_error(dx, dout.astype(f64) * (out != 0) / 0.5) < 1e-12


@pytest.mark.parametrize("x_dtype, dout_dtype", MIXED, ids=["x-float32-dout-float64", "x-float64-dout-float32"])
def test_the_tutorial_layers_take_a_dout_of_the_other_dtype(rng, x_dtype, dout_dtype):
    from fastconv.compat import sichkar as T

    x = rng.standard_normal((2, 2, 4, 4)).astype(x_dtype)
    pooling = {"pooling_height": 2, "pooling_width": 2, "stride": 2}
    out, cache = T.max_pooling_forward_naive(x, pooling)
    dout = rng.standard_normal(out.shape).astype(dout_dtype)
    dx = T.max_pooling_backward_naive(dout, cache)
    assert dx.dtype == x_dtype and np.array_equal(dx, _max_pool_backward_reference(x, dout.astype(x_dtype), 2, 2))
    _, cache = T.average_pooling_forward_naive(x, pooling)
    dx = T.average_pooling_backward_naive(dout, cache)
    assert dx.dtype == x_dtype
    assert rel_error(dx, np.repeat(np.repeat(dout.astype(x_dtype), 2, axis=2), 2, axis=3) / 4) < tol(x_dtype)
    s, cache = T.sigmoid_forward(x)
    dout = rng.standard_normal(x.shape).astype(dout_dtype)
    dx = T.sigmoid_backward(dout, cache)
    assert dx.dtype == f64 and rel_error(dx, dout.astype(f64) * s * (1 - s.astype(f64))) < 1e-12


def test_the_core_api_stays_strict_about_mixed_dtypes(rng):
    x = rng.standard_normal((4, 3)).astype(f32)
    g, b = np.ones(3), np.zeros(3)
    with pytest.raises(TypeError, match="must share one dtype"):
        layers.batchnorm_forward(x, g, b, {"mode": "train"})
    with pytest.raises(TypeError, match="must share one dtype"):
        layers.layernorm_forward(x, g, b)
    _, cache = layers.relu_forward(x)
    with pytest.raises(TypeError, match="dout must have the forward pass's dtype float32"):
        layers.relu_backward(np.ones((4, 3)), cache)
    _, cache = fast.max_pool_forward(rng.standard_normal((1, 1, 4, 4)).astype(f32), 2)
    with pytest.raises(TypeError, match="dout must have the forward pass's dtype float32"):
        fast.max_pool_backward(np.ones((1, 1, 2, 2)), cache)


# ---------------------------------------------------------------- item 5: im2col.py and im2col_cython names
STAR_IMPORT_NAMES = (
    "get_im2col_indices",
    "im2col_indices",
    "col2im_indices",
    "im2col_cython",
    "col2im_cython",
    "col2im_6d_cython",
)


def test_every_name_of_the_im2col_star_imports_exists():
    namespace = {}
    exec("from fastconv.compat.cs231n import *", namespace)
    missing = [name for name in STAR_IMPORT_NAMES if name not in namespace]
    assert not missing


def _geometry(shape, fh, fw, pad, stride):
    N, C, H, W = shape
    return (H + 2 * pad - fh) // stride + 1, (W + 2 * pad - fw) // stride + 1


def _cols_reference(x, fh, fw, pad, stride):
    """CS231n's columns by index arithmetic: row (c*fh + i)*fw + j, column (oh*out_w + ow)*N + n."""
    N, C, H, W = x.shape
    out_h, out_w = _geometry(x.shape, fh, fw, pad, stride)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.zeros((C * fh * fw, out_h * out_w * N), dtype=x.dtype)
    for c in range(C):
        for i in range(fh):
            for j in range(fw):
                for oh in range(out_h):
                    for ow in range(out_w):
                        for n in range(N):
                            cols[(c * fh + i) * fw + j, (oh * out_w + ow) * N + n] = xp[
                                n, c, oh * stride + i, ow * stride + j
                            ]
    return cols


def _col2im_reference(cols, shape, fh, fw, pad, stride):
    """Each column entry added back to the pixel it came from (the padding dropped)."""
    N, C, H, W = shape
    out_h, out_w = _geometry(shape, fh, fw, pad, stride)
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for c in range(C):
        for i in range(fh):
            for j in range(fw):
                for oh in range(out_h):
                    for ow in range(out_w):
                        for n in range(N):
                            xp[n, c, oh * stride + i, ow * stride + j] += cols[
                                (c * fh + i) * fw + j, (oh * out_w + ow) * N + n
                            ]
    return xp[:, :, pad : pad + H, pad : pad + W]


IM2COL_CASES = [  # (N, C, H, W), field_height, field_width, padding, stride
    ((2, 3, 5, 5), 3, 3, 1, 1),
    ((2, 2, 7, 6), 3, 5, 1, 2),  # non-square kernel, stride 2 (the original Cython's row is wrong here)
    ((1, 1, 4, 5), 2, 1, 0, 1),  # batch 1, one channel
    ((3, 2, 4, 4), 5, 5, 1, 1),  # a kernel larger than the unpadded input
    ((2, 3, 6, 6), 3, 3, 0, 2),  # windows that do not tile the input (the original asserts)
]
IM2COL_IDS = [f"k{fh}x{fw}-s{s}-p{p}-N{shape[0]}C{shape[1]}" for shape, fh, fw, p, s in IM2COL_CASES]


@pytest.mark.parametrize("dtype", [f32, f64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape, fh, fw, pad, stride", IM2COL_CASES, ids=IM2COL_IDS)
def test_im2col_names_match_the_index_arithmetic(rng, shape, fh, fw, pad, stride, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    want = _cols_reference(x, fh, fw, pad, stride)
    for got in (L.im2col_indices(x, fh, fw, pad, stride), L.im2col_cython(x, fh, fw, pad, stride)):
        assert got.dtype == dtype and got.shape == want.shape
        assert np.array_equal(got, want)

    k, i, j = L.get_im2col_indices(shape, fh, fw, pad, stride)
    out_h, out_w = _geometry(shape, fh, fw, pad, stride)
    assert k.shape == (shape[1] * fh * fw, 1) and i.shape == j.shape == (shape[1] * fh * fw, out_h * out_w)
    for r in range(k.shape[0]):
        c, rest = divmod(r, fh * fw)
        for p in range(out_h * out_w):
            oh, ow = divmod(p, out_w)
            assert (k[r, 0], i[r, p], j[r, p]) == (c, oh * stride + rest // fw, ow * stride + rest % fw)

    cols = rng.standard_normal(want.shape).astype(dtype)
    before = cols.copy()
    want_x = _col2im_reference(cols, shape, fh, fw, pad, stride)
    N, C, H, W = shape
    for got in (
        L.col2im_indices(cols, shape, fh, fw, pad, stride),
        L.col2im_cython(cols, N, C, H, W, fh, fw, pad, stride),
    ):
        assert got.dtype == dtype and got.shape == shape
        assert rel_error(got, want_x) < tol(dtype)
    assert np.array_equal(cols, before)  # the caller's columns are not used as scratch
    # the adjoint identity, in float64
    x64, c64 = x.astype(f64), cols.astype(f64)
    assert (
        abs(
            np.vdot(L.im2col_indices(x64, fh, fw, pad, stride), c64)
            - np.vdot(x64, L.col2im_indices(c64, shape, fh, fw, pad, stride))
        )
        < 1e-9 * np.abs(c64).sum()
    )


@pytest.mark.parametrize("shape, fh, fw, pad, stride", IM2COL_CASES, ids=IM2COL_IDS)
def test_col2im_6d_cython_adds_each_patch_back(rng, shape, fh, fw, pad, stride):
    N, C, H, W = shape
    out_h, out_w = _geometry(shape, fh, fw, pad, stride)
    cols = rng.standard_normal((C, fh, fw, N, out_h, out_w))
    want = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    for c in range(C):
        for i in range(fh):
            for j in range(fw):
                for n in range(N):
                    for oh in range(out_h):
                        for ow in range(out_w):
                            want[n, c, oh * stride + i, ow * stride + j] += cols[c, i, j, n, oh, ow]
    got = L.col2im_6d_cython(cols, N, C, H, W, fh, fw, pad, stride)
    assert got.shape == shape and rel_error(got, want[:, :, pad : pad + H, pad : pad + W]) < tol(f64)


def test_conv_forward_im2col_as_fast_layers_writes_it(rng):
    """fast_layers.py's conv_forward_im2col: one GEMM on im2col_cython's columns."""
    x = rng.standard_normal((3, 2, 7, 6))
    w = rng.standard_normal((4, 2, 3, 5))
    b = rng.standard_normal(4)
    cols = L.im2col_cython(x, 3, 5, 1, 2)
    out_h, out_w = _geometry(x.shape, 3, 5, 1, 2)
    out = (w.reshape(4, -1).dot(cols) + b.reshape(-1, 1)).reshape(4, out_h, out_w, 3).transpose(3, 0, 1, 2)
    want, _ = L.conv_forward_fast(x, w, b, {"stride": 2, "pad": 1})
    assert rel_error(out, want) < tol(f64)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: L.im2col_indices(np.ones((1, 1, 3, 3)), 5, 5, 0, 1), ValueError, "larger than the padded input"),
        (lambda: L.im2col_cython(np.ones((1, 1, 3, 3)), 2, 2, -1, 1), ValueError, "padding must be >= 0"),
        (lambda: L.im2col_cython(np.ones((1, 1, 3, 3)), 2, 2, 0, 0), ValueError, "stride must be >= 1"),
        (lambda: L.im2col_cython(np.ones((1, 3, 3)), 2, 2, 0, 1), ValueError, "x must be a 4-D array"),
        (lambda: L.im2col_cython(np.ones((1, 1, 3, 3), np.float16), 2, 2, 0, 1), TypeError, "float32 or float64"),
        (lambda: L.col2im_indices(np.ones((4, 3)), (1, 1, 3, 3), 2, 2, 0, 1), ValueError, "cols must have shape"),
        (
            lambda: L.col2im_6d_cython(np.ones((1, 2, 2, 1, 2, 3)), 1, 1, 3, 3, 2, 2, 0, 1),
            ValueError,
            "cols must have shape",
        ),
        (lambda: L.get_im2col_indices((1, 1, 3), 2, 2), ValueError, "x_shape must be"),
        (lambda: L.get_im2col_indices((1, 1, 3, 3), 2**40, 2), ValueError, "field_height must be <="),
    ],
    ids=[
        "field-too-large",
        "pad-negative",
        "stride-0",
        "x-3d",
        "float16",
        "cols-shape",
        "cols-6d-shape",
        "x_shape",
        "huge-field",
    ],
)
def test_im2col_names_refuse_bad_arguments_naming_them(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------- item 6: *_naive names
def test_the_naive_names_run_the_fast_path_and_the_docs_say_what_the_notebooks_then_show():
    """The choice: ``*_naive`` are the fast path (code written against them gets the speed);
    the loop reference is ``fastconv.naive``, and the docs' tutorial page (linked from the
    README's swap section) says what the notebooks' "fast vs naive" cells print after the swap."""
    assert L.conv_forward_naive is L.conv_forward_fast and L.conv_backward_naive is L.conv_backward_fast
    assert L.max_pool_forward_naive is L.max_pool_forward_fast
    page = (ROOT / "docs" / "tutorials.md").read_text()
    differences = page.split("What differs from the tutorials", 1)[1].split("\n## ", 1)[0]
    assert '"fast vs naive"' in differences and "fastconv.naive" in differences
    assert "difference of 0" in differences and "speedup of about 1x" in differences
