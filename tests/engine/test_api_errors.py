"""The public API of fastconv.naive and fastconv.fast: same functions, dtypes kept,
any memory layout accepted, and every invalid argument rejected with an error
that names it. Every test runs against both modules.
"""

import inspect

import numpy as np
import pytest

import fastconv.fast as fast
import fastconv.naive as naive
from fastconv.testing import DTYPES, assert_close

from _helpers import dtype_id

MODULES = [pytest.param(naive, id="naive"), pytest.param(fast, id="fast")]

CONV_POOL_API = [
    "conv_forward",
    "conv_backward",
    "max_pool_forward",
    "max_pool_backward",
    "avg_pool_forward",
    "avg_pool_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
]
SHARED_API = [
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "dropout_forward",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "groupnorm_forward",
    "groupnorm_backward",
    "softmax_loss",
    "svm_loss",
]
API = CONV_POOL_API + SHARED_API


@pytest.mark.parametrize("name", API)
def test_same_functions_and_signatures(name):
    assert inspect.signature(getattr(naive, name)) == inspect.signature(getattr(fast, name))


@pytest.mark.parametrize("name", CONV_POOL_API)
def test_conv_and_pool_are_not_shared(name):
    """Conv and pooling must have their own implementation in each module."""
    assert getattr(naive, name) is not getattr(fast, name)


def test_naive_exports_nothing_untested():
    """Every public function of fastconv.naive is in API, so the dtype test below covers it."""
    public = {
        name
        for name, obj in vars(naive).items()
        if callable(obj)
        and not name.startswith("_")
        and getattr(obj, "__module__", "").startswith("fastconv.")
        and obj.__module__ in ("fastconv.naive", "fastconv.layers")
    }
    assert public == set(API)


# ---------------------------------------------------------------------------- dtype preservation
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("m", MODULES)
def test_every_function_keeps_the_dtype(m, dtype, rng):
    called = set()

    def check(name, *arrays):
        called.add(name)
        for a in arrays:
            if a is not None:
                assert isinstance(a, np.ndarray) and a.dtype == dtype, f"{name}: got {getattr(a, 'dtype', a)}"

    def arr(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x, w, b = arr(2, 4, 6, 5), arr(4, 2, 3, 2), arr(4)
    for bias in (b, None):
        out, cache = m.conv_forward(x, w, bias, stride=(2, 1), pad=1, dilation=(1, 2), groups=2)
        check("conv_forward", out)
        dx, dw, db = m.conv_backward(np.ones_like(out), cache)
        check("conv_backward", dx, dw, db)
    for bias in (b, None):
        out, cache = m.conv_relu_pool_forward(
            x, w, bias, stride=(2, 1), pad=1, pool_size=2, pool_stride=1, dilation=(1, 2), groups=2
        )
        check("conv_relu_pool_forward", out)
        check("conv_relu_pool_backward", *m.conv_relu_pool_backward(np.ones_like(out), cache))
    for kind in ("max", "avg"):
        out, cache = getattr(m, f"{kind}_pool_forward")(x, 3, 2, 1)
        check(f"{kind}_pool_forward", out)
        check(f"{kind}_pool_backward", getattr(m, f"{kind}_pool_backward")(np.ones_like(out), cache))
    out, cache = m.affine_forward(x, arr(120, 3), arr(3))
    check("affine_forward", out)
    check("affine_backward", *m.affine_backward(np.ones_like(out), cache))
    for name in ("relu", "sigmoid"):
        out, cache = getattr(m, f"{name}_forward")(x)
        check(f"{name}_forward", out)
        check(f"{name}_backward", getattr(m, f"{name}_backward")(np.ones_like(out), cache))
    for train in (True, False):
        out, cache = m.dropout_forward(x, 0.5, train=train, rng=np.random.default_rng(0))
        check("dropout_forward", out)
        check("dropout_backward", m.dropout_backward(np.ones_like(out), cache))
    for name, data, D in (("batchnorm", arr(5, 3), 3), ("spatial_batchnorm", x, 4)):
        bn_param = {"mode": "train"}
        out, cache = getattr(m, f"{name}_forward")(data, arr(D), arr(D), bn_param)
        check(f"{name}_forward", out, bn_param["running_mean"], bn_param["running_var"])
        check(f"{name}_backward", *getattr(m, f"{name}_backward")(np.ones_like(out), cache))
        bn_param["mode"] = "test"
        check(f"{name}_forward", getattr(m, f"{name}_forward")(data, arr(D), arr(D), bn_param)[0])
    out, cache = m.layernorm_forward(arr(5, 3), arr(3), arr(3))
    check("layernorm_forward", out)
    check("layernorm_backward", *m.layernorm_backward(np.ones_like(out), cache))
    out, cache = m.groupnorm_forward(x, arr(4), arr(4), 2)
    check("groupnorm_forward", out)
    check("groupnorm_backward", *m.groupnorm_backward(np.ones_like(out), cache))
    for name in ("softmax_loss", "svm_loss"):
        loss, dscores = getattr(m, name)(arr(4, 3), np.array([0, 2, 1, 0]))
        assert isinstance(loss, float)
        check(name, dscores)
    assert called == set(API)


# ---------------------------------------------------------------------------- memory layouts
def _fortran(a):
    return np.asfortranarray(a)


def _strided(a):
    """A view with steps in every axis (every other element of a bigger buffer)."""
    big = np.full(tuple(2 * s + 1 for s in a.shape), np.nan, dtype=a.dtype)
    view = big[tuple(slice(1, None, 2) for _ in a.shape)]
    view[...] = a
    assert not view.flags.c_contiguous or a.size <= 1
    return view


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _negative_strides(a):
    """The same values, stored backwards: every stride negative."""
    flipped = np.flip(np.flip(a).copy())
    assert all(s < 0 for s, n in zip(flipped.strides, flipped.shape) if n > 1)
    return flipped


LAYOUTS = [
    pytest.param(_fortran, id="fortran"),
    pytest.param(_strided, id="strided"),
    pytest.param(_read_only, id="read-only"),
    pytest.param(_negative_strides, id="negative-strides"),
]


def _assert_same(got, want, dtype, what):
    if want is None:
        assert got is None, what
    else:
        assert_close(got, want, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("m", MODULES)
def test_conv_any_layout_same_answer(m, layout, dtype, rng):
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kwargs = dict(stride=(2, 1), pad=(1, 2), dilation=(1, 2), groups=2)
    out, cache = m.conv_forward(x, w, b, **kwargs)
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = m.conv_backward(dout, cache)

    args = [layout(a) for a in (x, w, b, dout)]
    before = [a.copy() for a in args]
    out2, cache2 = m.conv_forward(*args[:3], **kwargs)
    grads2 = m.conv_backward(args[3], cache2)
    _assert_same(out2, out, dtype, "out")
    for name, got, want in zip(("dx", "dw", "db"), grads2, grads):
        _assert_same(got, want, dtype, name)
    for a, a0 in zip(args, before):  # inputs are never written to
        np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("m", MODULES)
def test_conv_relu_pool_any_layout_same_answer(m, layout, dtype, rng):
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kwargs = dict(stride=(2, 1), pad=(1, 2), dilation=(1, 2), groups=2, pool_size=(2, 3), pool_stride=(1, 2))
    out, cache = m.conv_relu_pool_forward(x, w, b, **kwargs)
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = m.conv_relu_pool_backward(dout, cache)
    args = [layout(a) for a in (x, w, b, dout)]
    before = [a.copy() for a in args]
    out2, cache2 = m.conv_relu_pool_forward(*args[:3], **kwargs)
    grads2 = m.conv_relu_pool_backward(args[3], cache2)
    _assert_same(out2, out, dtype, "out")
    for name, got, want in zip(("dx", "dw", "db"), grads2, grads):
        _assert_same(got, want, dtype, name)
    for a, a0 in zip(args, before):  # inputs are never written to
        np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("m", MODULES)
def test_spatial_batchnorm_any_layout_same_answer(m, layout, dtype, rng):
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    gamma, beta = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    out, cache = m.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = m.spatial_batchnorm_backward(dout, cache)
    args = [layout(a) for a in (x, gamma, beta, dout)]
    before = [a.copy() for a in args]
    out2, cache2 = m.spatial_batchnorm_forward(*args[:3], {"mode": "train"})
    grads2 = m.spatial_batchnorm_backward(args[3], cache2)
    _assert_same(out2, out, dtype, "out")
    for name, got, want in zip(("dx", "dgamma", "dbeta"), grads2, grads):
        _assert_same(got, want, dtype, name)
    for a, a0 in zip(args, before):  # inputs are never written to
        np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("m", MODULES)
def test_pool_any_layout_same_answer(m, kind, layout, dtype, rng):
    forward, backward = getattr(m, f"{kind}_pool_forward"), getattr(m, f"{kind}_pool_backward")
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    out, cache = forward(x, (3, 2), (2, 1), (1, 1))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = backward(dout, cache)
    x2, dout2 = layout(x), layout(dout)
    before = [x2.copy(), dout2.copy()]
    out2, cache2 = forward(x2, (3, 2), (2, 1), (1, 1))
    _assert_same(out2, out, dtype, "out")
    _assert_same(backward(dout2, cache2), dx, dtype, "dx")
    np.testing.assert_array_equal(x2, before[0])
    np.testing.assert_array_equal(dout2, before[1])


@pytest.mark.parametrize("m", MODULES)
def test_int_like_hyperparameters(m, rng):
    """numpy integers and lists are ints and pairs too."""
    x = rng.standard_normal((1, 2, 6, 7))
    w = rng.standard_normal((2, 1, 3, 3))
    ref, _ = m.conv_forward(x, w, stride=(2, 1), pad=1, dilation=1, groups=2)
    out, _ = m.conv_forward(x, w, stride=[np.int64(2), 1], pad=np.int32(1), dilation=np.uint8(1), groups=np.int64(2))
    np.testing.assert_array_equal(out, ref)
    ref, _ = m.max_pool_forward(x, (2, 3), None, 1)
    out, _ = m.max_pool_forward(x, [np.int16(2), 3], None, [1, np.int64(1)])
    np.testing.assert_array_equal(out, ref)


# ---------------------------------------------------------------------------- invalid arguments
def _z(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


X, W, B = _z(2, 3, 6, 6), _z(4, 3, 3, 3), _z(4)


def _conv_backward_with(dout, dtype=np.float64):
    def call(m):
        _, cache = m.conv_forward(X.astype(dtype), W.astype(dtype), B.astype(dtype), pad=1)
        return m.conv_backward(dout, cache)

    return call


def _pool_backward_with(kind, dout):
    def call(m):
        _, cache = getattr(m, f"{kind}_pool_forward")(X, 2)
        return getattr(m, f"{kind}_pool_backward")(dout, cache)

    return call


# (id, call(module), exception type, regex the message must match: it names the argument)
# fmt: off
ERRORS = [
    # conv: ranks, types, dtypes
    ("conv-x-3d", lambda m: m.conv_forward(_z(3, 6, 6), W), ValueError, r"^x must be a 4-D"),
    ("conv-x-5d", lambda m: m.conv_forward(_z(1, 2, 3, 6, 6), W), ValueError, r"^x must be a 4-D"),
    ("conv-w-3d", lambda m: m.conv_forward(X, _z(3, 3, 3)), ValueError, r"^w must be a 4-D"),
    ("conv-b-2d", lambda m: m.conv_forward(X, W, _z(4, 1)), ValueError, r"^b must be a 1-D"),
    ("conv-x-list", lambda m: m.conv_forward(X.tolist(), W), TypeError, r"^x must be a numpy"),
    ("conv-x-int", lambda m: m.conv_forward(X.astype(np.int64), W), TypeError, r"^x must have dtype"),
    ("conv-x-float16", lambda m: m.conv_forward(X.astype(np.float16), W), TypeError, r"^x must have dtype"),
    ("conv-w-int", lambda m: m.conv_forward(X, W.astype(np.int32)), TypeError, r"^w must have dtype"),
    ("conv-b-float16", lambda m: m.conv_forward(X, W, B.astype(np.float16)), TypeError, r"^b must have dtype"),
    ("conv-mixed-x-w", lambda m: m.conv_forward(X.astype(np.float32), W), TypeError, r"x, w must share one dtype"),
    ("conv-mixed-b", lambda m: m.conv_forward(X, W, B.astype(np.float32)), TypeError, r"x, w, b must share.*b: float32"),
    # conv: shapes
    ("conv-channel-mismatch", lambda m: m.conv_forward(X, _z(4, 2, 3, 3)), ValueError, r"^w must have shape"),
    ("conv-b-wrong-length", lambda m: m.conv_forward(X, W, _z(5)), ValueError, r"^b must have shape \(F,\)"),
    ("conv-x-no-channels", lambda m: m.conv_forward(_z(2, 0, 6, 6), _z(4, 0, 3, 3)), ValueError, r"^x must have shape"),
    ("conv-x-empty-image", lambda m: m.conv_forward(_z(2, 3, 0, 6), W), ValueError, r"^x must have shape"),
    ("conv-w-no-filters", lambda m: m.conv_forward(X, _z(0, 3, 3, 3)), ValueError, r"^w must have shape"),
    ("conv-kernel-too-large", lambda m: m.conv_forward(X, _z(4, 3, 7, 3)), ValueError, r"kernel .* larger than the padded input"),
    ("conv-kernel-too-large-dilated", lambda m: m.conv_forward(X, W, pad=1, dilation=(1, 4)), ValueError, r"kernel .*dilation.* larger than the padded input"),
    # conv: hyperparameters
    ("conv-stride-0", lambda m: m.conv_forward(X, W, stride=0), ValueError, r"^stride must be >= 1"),
    ("conv-stride-negative", lambda m: m.conv_forward(X, W, stride=(1, -2)), ValueError, r"^stride must be >= 1"),
    ("conv-stride-float", lambda m: m.conv_forward(X, W, stride=1.5), TypeError, r"^stride must be an int"),
    ("conv-stride-integral-float", lambda m: m.conv_forward(X, W, stride=2.0), TypeError, r"^stride must be an int"),
    ("conv-stride-str", lambda m: m.conv_forward(X, W, stride="2"), TypeError, r"^stride must be an int"),
    ("conv-stride-bool", lambda m: m.conv_forward(X, W, stride=True), TypeError, r"^stride must be an int"),
    ("conv-stride-triple", lambda m: m.conv_forward(X, W, stride=(1, 1, 1)), ValueError, r"^stride must be an int or a pair"),
    ("conv-stride-none", lambda m: m.conv_forward(X, W, stride=None), TypeError, r"^stride must be an int"),
    ("conv-pad-negative", lambda m: m.conv_forward(X, W, pad=-1), ValueError, r"^pad must be >= 0"),
    ("conv-pad-float", lambda m: m.conv_forward(X, W, pad=(0.5, 1)), TypeError, r"^pad must be an int"),
    ("conv-dilation-0", lambda m: m.conv_forward(X, W, dilation=0), ValueError, r"^dilation must be >= 1"),
    ("conv-dilation-float", lambda m: m.conv_forward(X, W, dilation=1.0), TypeError, r"^dilation must be an int"),
    ("conv-groups-0", lambda m: m.conv_forward(X, W, groups=0), ValueError, r"^groups must be >= 1"),
    ("conv-groups-float", lambda m: m.conv_forward(X, W, groups=1.0), TypeError, r"^groups must be an int"),
    ("conv-groups-not-dividing-C", lambda m: m.conv_forward(X, _z(4, 1, 3, 3), groups=2), ValueError, r"^groups=2 must divide .*C=3"),
    ("conv-groups-not-dividing-F", lambda m: m.conv_forward(_z(2, 4, 6, 6), _z(3, 2, 3, 3), groups=2), ValueError, r"^groups=2 must divide .*F=3"),
    ("conv-groups-wrong-w", lambda m: m.conv_forward(_z(2, 4, 6, 6), _z(4, 4, 3, 3), groups=2), ValueError, r"^w must have shape .*groups=2"),
    # conv backward
    ("conv-dout-shape", _conv_backward_with(_z(2, 4, 6, 5)), ValueError, r"^dout must have the forward output's shape"),
    ("conv-dout-3d", _conv_backward_with(_z(4, 6, 6)), ValueError, r"^dout must have the forward output's shape"),
    ("conv-dout-dtype", _conv_backward_with(_z(2, 4, 6, 6, dtype=np.float32)), TypeError, r"^dout must have the forward pass's dtype"),
    ("conv-dout-dtype-f32-forward", _conv_backward_with(_z(2, 4, 6, 6), np.float32), TypeError, r"^dout must have the forward pass's dtype"),
    ("conv-dout-int", _conv_backward_with(_z(2, 4, 6, 6, dtype=np.int64)), TypeError, r"^dout must have dtype"),
    ("conv-dout-list", _conv_backward_with(_z(2, 4, 6, 6).tolist()), TypeError, r"^dout must be a numpy"),
]

for kind in ("max", "avg"):
    fwd = f"{kind}_pool_forward"
    ERRORS += [
        (f"{kind}pool-x-3d", lambda m, f=fwd: getattr(m, f)(_z(3, 6, 6), 2), ValueError, r"^x must be a 4-D"),
        (f"{kind}pool-x-int", lambda m, f=fwd: getattr(m, f)(X.astype(np.int32), 2), TypeError, r"^x must have dtype"),
        (f"{kind}pool-x-float16", lambda m, f=fwd: getattr(m, f)(X.astype(np.float16), 2), TypeError, r"^x must have dtype"),
        (f"{kind}pool-x-empty-image", lambda m, f=fwd: getattr(m, f)(_z(2, 3, 6, 0), 1), ValueError, r"^x must have shape"),
        (f"{kind}pool-kernel-0", lambda m, f=fwd: getattr(m, f)(X, 0), ValueError, r"^kernel_size must be >= 1"),
        (f"{kind}pool-kernel-float", lambda m, f=fwd: getattr(m, f)(X, 2.0), TypeError, r"^kernel_size must be an int"),
        (f"{kind}pool-kernel-too-large", lambda m, f=fwd: getattr(m, f)(X, (7, 2)), ValueError, r"^kernel_size .* larger than the padded input"),
        (f"{kind}pool-stride-0", lambda m, f=fwd: getattr(m, f)(X, 2, 0), ValueError, r"^stride must be >= 1"),
        (f"{kind}pool-stride-float", lambda m, f=fwd: getattr(m, f)(X, 2, 1.5), TypeError, r"^stride must be an int"),
        (f"{kind}pool-pad-negative", lambda m, f=fwd: getattr(m, f)(X, 2, 1, -1), ValueError, r"^pad must be >= 0"),
        (f"{kind}pool-pad-over-half-kernel", lambda m, f=fwd: getattr(m, f)(X, 3, 1, 2), ValueError, r"^pad must be at most half the kernel"),
        (f"{kind}pool-pad-over-half-kernel-w", lambda m, f=fwd: getattr(m, f)(X, (4, 2), 1, (2, 2)), ValueError, r"^pad must be at most half the kernel"),
        (f"{kind}pool-dout-shape", _pool_backward_with(kind, _z(2, 3, 3, 2)), ValueError, r"^dout must have the forward output's shape"),
        (f"{kind}pool-dout-dtype", _pool_backward_with(kind, _z(2, 3, 3, 3, dtype=np.float32)), TypeError, r"^dout must have the forward pass's dtype"),
    ]



def _crp_backward_with(dout):
    def call(m):
        _, cache = m.conv_relu_pool_forward(X, W, B, pad=1, pool_size=2)
        return m.conv_relu_pool_backward(dout, cache)
    return call


ERRORS += [
    # conv -> ReLU -> max pool: the conv's checks, then the pool's under their own names
    ("crp-x-3d", lambda m: m.conv_relu_pool_forward(_z(3, 6, 6), W), ValueError, r"^x must be a 4-D"),
    ("crp-w-int", lambda m: m.conv_relu_pool_forward(X, W.astype(np.int32)), TypeError, r"^w must have dtype"),
    ("crp-pool-size-0", lambda m: m.conv_relu_pool_forward(X, W, B, pad=1, pool_size=0), ValueError, r"^pool_size must be >= 1"),
    ("crp-pool-stride-float", lambda m: m.conv_relu_pool_forward(X, W, B, pool_stride=1.5), TypeError, r"^pool_stride must be an int"),
    ("crp-pool-pad-over-half", lambda m: m.conv_relu_pool_forward(X, W, B, pool_size=2, pool_pad=2), ValueError, r"^pool_pad must be at most half the pool_size"),
    ("crp-pool-too-large", lambda m: m.conv_relu_pool_forward(X, W, B, pool_size=5), ValueError, r"^pool_size .* larger than the padded input .* the convolution's output"),
    ("crp-dout-shape", _crp_backward_with(_z(2, 4, 3, 2)), ValueError, r"^dout must have the forward output's shape"),
    ("crp-dout-dtype", _crp_backward_with(_z(2, 4, 3, 3, dtype=np.float32)), TypeError, r"^dout must have the forward pass's dtype"),
]

ERRORS += [
    # shared layers
    ("affine-w-rows", lambda m: m.affine_forward(_z(2, 3, 4), _z(11, 5), _z(5)), ValueError, r"^w must have shape \(D, M\)"),
    ("affine-b-shape", lambda m: m.affine_forward(_z(2, 12), _z(12, 5), _z(4)), ValueError, r"^b must have shape"),
    ("affine-mixed", lambda m: m.affine_forward(_z(2, 12, dtype=np.float32), _z(12, 5), _z(5)), TypeError, r"x, w, b must share"),
    ("affine-dout-shape", lambda m: m.affine_backward(_z(2, 4), m.affine_forward(_z(2, 12), _z(12, 5), _z(5))[1]), ValueError, r"^dout"),
    ("relu-int", lambda m: m.relu_forward(np.zeros(3, dtype=np.int64)), TypeError, r"^x must have dtype"),
    ("relu-dout-shape", lambda m: m.relu_backward(_z(3), m.relu_forward(_z(4))[1]), ValueError, r"^dout"),
    ("sigmoid-dout-dtype", lambda m: m.sigmoid_backward(_z(4, dtype=np.float32), m.sigmoid_forward(_z(4))[1]), TypeError, r"^dout"),
    ("dropout-p-1", lambda m: m.dropout_forward(_z(3), 1.0), ValueError, r"^p \(the drop probability\)"),
    ("dropout-p-negative", lambda m: m.dropout_forward(_z(3), -0.1), ValueError, r"^p \(the drop probability\)"),
    ("dropout-p-str", lambda m: m.dropout_forward(_z(3), "0.5"), ValueError, r"^p \(the drop probability\)"),
    ("batchnorm-x-4d", lambda m: m.batchnorm_forward(_z(2, 3, 1, 1), _z(3), _z(3), {}), ValueError, r"^x must be a 2-D"),
    ("batchnorm-gamma-shape", lambda m: m.batchnorm_forward(_z(2, 3), _z(4), _z(3), {}), ValueError, r"^gamma and beta must have shape"),
    ("batchnorm-mode", lambda m: m.batchnorm_forward(_z(2, 3), _z(3), _z(3), {"mode": "eval"}), ValueError, r"^bn_param\['mode'\]"),
    ("batchnorm-param-type", lambda m: m.batchnorm_forward(_z(2, 3), _z(3), _z(3), None), TypeError, r"^bn_param must be a dict"),
    ("batchnorm-mixed", lambda m: m.batchnorm_forward(_z(2, 3), _z(3, dtype=np.float32), _z(3), {}), TypeError, r"x, gamma, beta must share"),
    ("spatial-batchnorm-x-2d", lambda m: m.spatial_batchnorm_forward(_z(2, 3), _z(3), _z(3), {}), ValueError, r"^x must be a 4-D"),
    ("spatial-batchnorm-gamma-shape", lambda m: m.spatial_batchnorm_forward(_z(2, 3, 2, 2), _z(2), _z(2), {}), ValueError, r"^gamma and beta"),
    ("softmax-y-range", lambda m: m.softmax_loss(_z(2, 3), np.array([0, 3])), ValueError, r"^y must hold class labels in \[0, 3\)"),
    ("softmax-y-negative", lambda m: m.softmax_loss(_z(2, 3), np.array([-1, 0])), ValueError, r"^y must hold class labels"),
    ("softmax-y-float", lambda m: m.softmax_loss(_z(2, 3), np.array([0.0, 1.0])), TypeError, r"^y must be an integer"),
    ("softmax-y-shape", lambda m: m.softmax_loss(_z(2, 3), np.array([0, 1, 2])), ValueError, r"^y must have shape"),
    ("softmax-scores-1d", lambda m: m.softmax_loss(_z(3), np.array([0])), ValueError, r"^scores must be a 2-D"),
    ("svm-y-range", lambda m: m.svm_loss(_z(2, 3), np.array([0, 5])), ValueError, r"^y must hold class labels"),
    ("svm-scores-int", lambda m: m.svm_loss(np.zeros((2, 3), dtype=np.int64), np.array([0, 1])), TypeError, r"^scores must have dtype"),
]
# fmt: on


@pytest.mark.parametrize("call, exc, match", [pytest.param(*e[1:], id=e[0]) for e in ERRORS])
@pytest.mark.parametrize("m", MODULES)
def test_invalid_argument(m, call, exc, match):
    with pytest.raises(exc, match=match):
        call(m)


@pytest.mark.parametrize("m", MODULES)
def test_kernel_that_fits_only_with_padding_is_accepted(m):
    """The bound is the padded input: a kernel larger than the image but not than image + 2*pad works."""
    out, _ = m.conv_forward(_z(1, 1, 2, 3), _z(1, 1, 4, 5), pad=(1, 1))
    assert out.shape == (1, 1, 1, 1)
    out, _ = m.max_pool_forward(_z(1, 1, 1, 3), (2, 3), 1, 1)
    assert out.shape == (1, 1, 2, 3)
