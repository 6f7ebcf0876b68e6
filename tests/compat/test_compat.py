"""The tutorial drop-ins (fastconv.compat.cs231n, fastconv.compat.sichkar) against fastconv.naive.

Each compat function must compute what the reference loop layers compute,
forward and backward, in both dtypes, with the tutorials' dictionaries; the
sandwich layers must equal the composition of the naive layers; bad
dictionaries must raise errors that name the key.
"""

import numpy as np
import pytest

from fastconv import naive
from fastconv.compat import cs231n, sichkar
from fastconv.testing import assert_close, tol

# (x shape, w shape, stride, pad): square and non-square, stride 1 and 2, pad 0..3.
CONV_CASES = [
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1),
    ((2, 3, 9, 7), (4, 3, 3, 5), 2, 1),
    ((1, 1, 7, 8), (2, 1, 2, 3), 2, 0),
    ((2, 2, 6, 5), (3, 2, 5, 5), 1, 3),
    ((3, 3, 11, 10), (2, 3, 7, 7), 3, 3),
]
CONV_IDS = [f"x{x[2]}x{x[3]}-k{w[2]}x{w[3]}-s{s}-p{p}" for x, w, s, p in CONV_CASES]

# (x shape, pool_height, pool_width, stride): non-square windows, overlap, windows that do not tile.
POOL_CASES = [
    ((2, 3, 8, 8), 2, 2, 2),
    ((2, 2, 9, 7), 3, 2, 2),
    ((1, 3, 7, 10), 2, 3, 1),
    ((2, 1, 11, 9), 3, 3, 2),
]
POOL_IDS = [f"x{x[2]}x{x[3]}-k{ph}x{pw}-s{s}" for x, ph, pw, s in POOL_CASES]

CONV_FORWARDS = {
    "conv_forward_naive": cs231n.conv_forward_naive,
    "conv_forward_fast": cs231n.conv_forward_fast,
    "conv_forward_im2col": cs231n.conv_forward_im2col,
    "conv_forward_strides": cs231n.conv_forward_strides,
}
CONV_BACKWARDS = {
    "conv_forward_naive": cs231n.conv_backward_naive,
    "conv_forward_fast": cs231n.conv_backward_fast,
    "conv_forward_im2col": cs231n.conv_backward_im2col,
    "conv_forward_strides": cs231n.conv_backward_strides,
}
POOL_FUNCS = {
    "naive": (cs231n.max_pool_forward_naive, cs231n.max_pool_backward_naive),
    "fast": (cs231n.max_pool_forward_fast, cs231n.max_pool_backward_fast),
    "reshape": (cs231n.max_pool_forward_reshape, cs231n.max_pool_backward_reshape),
    "im2col": (cs231n.max_pool_forward_im2col, cs231n.max_pool_backward_im2col),
}


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def conv_data(rng, case, dtype):
    x_shape, w_shape, _, _ = case
    return randn(rng, x_shape, dtype), randn(rng, w_shape, dtype), randn(rng, w_shape[:1], dtype)


# ------------------------------------------------------------------ convolution
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
@pytest.mark.parametrize("name", list(CONV_FORWARDS))
def test_cs231n_conv_equals_naive(rng, name, case, dtype):
    x, w, b = conv_data(rng, case, dtype)
    stride, pad = case[2], case[3]
    out, cache = CONV_FORWARDS[name](x, w, b, {"stride": stride, "pad": pad})
    ref, ref_cache = naive.conv_forward(x, w, b, stride, pad)
    assert_close(out, ref, dtype, "out")
    dout = randn(rng, ref.shape, dtype)
    for got, want, what in zip(
        CONV_BACKWARDS[name](dout, cache), naive.conv_backward(dout, ref_cache), ("dx", "dw", "db")
    ):
        assert_close(got, want, dtype, what)


@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_sichkar_cnn_equals_naive(rng, case, dtype):
    x, w, b = conv_data(rng, case, dtype)
    stride, pad = case[2], case[3]
    out, cache = sichkar.cnn_forward_naive(x, w, b, {"stride": stride, "pad": pad})
    ref, ref_cache = naive.conv_forward(x, w, b, stride, pad)
    assert_close(out, ref, dtype, "feature_maps")
    dout = randn(rng, ref.shape, dtype)
    for got, want, what in zip(
        sichkar.cnn_backward_naive(dout, cache), naive.conv_backward(dout, ref_cache), ("dx", "dw", "db")
    ):
        assert_close(got, want, dtype, what)


def test_conv_caches_are_interchangeable(rng):
    """A cache from conv_forward_naive goes to conv_backward_fast (they are one path)."""
    x, w, b = conv_data(rng, CONV_CASES[1], np.float64)
    out, cache = cs231n.conv_forward_naive(x, w, b, {"stride": 2, "pad": 1})
    dout = randn(rng, out.shape, np.float64)
    for got, want in zip(cs231n.conv_backward_fast(dout, cache), cs231n.conv_backward_naive(dout, cache)):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------ max pooling
def pool_reference(rng, case, dtype):
    x_shape, ph, pw, stride = case
    x = randn(rng, x_shape, dtype)
    ref, ref_cache = naive.max_pool_forward(x, (ph, pw), stride)
    dout = randn(rng, ref.shape, dtype)
    return x, ref, dout, naive.max_pool_backward(dout, ref_cache)


@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
@pytest.mark.parametrize("variant", list(POOL_FUNCS))
def test_cs231n_max_pool_equals_naive(rng, variant, case, dtype):
    _, ph, pw, stride = case
    x, ref, dout, dx_ref = pool_reference(rng, case, dtype)
    forward, backward = POOL_FUNCS[variant]
    out, cache = forward(x, {"pool_height": ph, "pool_width": pw, "stride": stride})
    assert_close(out, ref, dtype, "out")
    assert_close(backward(dout, cache), dx_ref, dtype, "dx")


@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_sichkar_max_pooling_equals_naive(rng, case, dtype):
    _, ph, pw, stride = case
    x, ref, dout, dx_ref = pool_reference(rng, case, dtype)
    out, cache = sichkar.max_pooling_forward_naive(x, {"pooling_height": ph, "pooling_width": pw, "stride": stride})
    assert_close(out, ref, dtype, "pooled_output")
    assert_close(sichkar.max_pooling_backward_naive(dout, cache), dx_ref, dtype, "dx")


def test_max_pool_ties_go_to_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    out, cache = cs231n.max_pool_forward_naive(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    dx = cs231n.max_pool_backward_naive(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx, [[[[1.0, 0.0], [0.0, 0.0]]]])


# ------------------------------------------------------------------ layers without loops
@pytest.mark.parametrize("module", [cs231n, sichkar], ids=["cs231n", "sichkar"])
def test_affine_relu_losses_equal_naive(rng, module, dtype):
    x, w, b = randn(rng, (4, 3, 2, 5), dtype), randn(rng, (30, 7), dtype), randn(rng, (7,), dtype)
    out, cache = module.affine_forward(x, w, b)
    ref, ref_cache = naive.affine_forward(x, w, b)
    assert_close(out, ref, dtype, "affine out")
    dout = randn(rng, ref.shape, dtype)
    for got, want, what in zip(
        module.affine_backward(dout, cache), naive.affine_backward(dout, ref_cache), ("dx", "dw", "db")
    ):
        assert_close(got, want, dtype, what)

    r, r_cache = module.relu_forward(ref)
    r_ref, r_ref_cache = naive.relu_forward(ref)
    assert_close(r, r_ref, dtype, "relu out")
    assert_close(module.relu_backward(dout, r_cache), naive.relu_backward(dout, r_ref_cache), dtype, "relu dx")

    y = rng.integers(0, 7, size=4)
    losses = [("softmax_loss", naive.softmax_loss)] + ([("svm_loss", naive.svm_loss)] if module is cs231n else [])
    for name, reference in losses:
        loss, dscores = getattr(module, name)(ref, y)
        loss_ref, dscores_ref = reference(ref, y)
        assert abs(loss - loss_ref) <= 1e-12 * max(1.0, abs(loss_ref)), name
        assert_close(dscores, dscores_ref, dtype, f"{name} dscores")


@pytest.mark.parametrize("spatial", [False, True], ids=["batchnorm", "spatial_batchnorm"])
def test_cs231n_batchnorm_equals_naive(rng, spatial, dtype):
    shape = (6, 3, 4, 5) if spatial else (6, 5)
    D = shape[1]
    forward = cs231n.spatial_batchnorm_forward if spatial else cs231n.batchnorm_forward
    backward = cs231n.spatial_batchnorm_backward if spatial else cs231n.batchnorm_backward
    ref_forward = naive.spatial_batchnorm_forward if spatial else naive.batchnorm_forward
    ref_backward = naive.spatial_batchnorm_backward if spatial else naive.batchnorm_backward
    x = randn(rng, shape, dtype) * 2 + 1
    gamma, beta = randn(rng, (D,), dtype), randn(rng, (D,), dtype)
    # compat starts the running variance at 0 (CS231n), the core at 1: give the reference CS231n's start
    bn_param = {"mode": "train", "momentum": 0.8}
    ref_param = {"mode": "train", "momentum": 0.8, "running_var": np.zeros(D, dtype)}

    out, cache = forward(x, gamma, beta, bn_param)
    ref, ref_cache = ref_forward(x, gamma, beta, ref_param)
    assert_close(out, ref, dtype, "out")
    assert_close(bn_param["running_mean"], ref_param["running_mean"], dtype, "running_mean")
    assert_close(bn_param["running_var"], ref_param["running_var"], dtype, "running_var")
    dout = randn(rng, shape, dtype)
    for got, want, what in zip(backward(dout, cache), ref_backward(dout, ref_cache), ("dx", "dgamma", "dbeta")):
        assert_close(got, want, dtype, what)

    bn_param["mode"] = ref_param["mode"] = "test"
    out, cache = forward(x, gamma, beta, bn_param)
    assert cache is None
    assert_close(out, ref_forward(x, gamma, beta, ref_param)[0], dtype, "test-mode out")


def test_cs231n_batchnorm_alt_is_batchnorm_backward():
    assert cs231n.batchnorm_backward_alt is cs231n.batchnorm_backward


# ------------------------------------------------------------------ dropout: p is the KEEP probability
def test_cs231n_dropout_keeps_with_probability_p(rng, dtype):
    x = randn(rng, (200, 100), dtype) + 10  # no zeros in x
    out, cache = cs231n.dropout_forward(x, {"mode": "train", "p": 0.3, "seed": 7})
    assert out.dtype == dtype
    kept = out != 0
    assert 0.28 < kept.mean() < 0.32  # 20000 units: 0.3 +- 0.02 is over 6 standard deviations
    np.testing.assert_allclose(out[kept], x[kept] / dtype(0.3), rtol=1e-6)
    dout = randn(rng, x.shape, dtype)
    dx = cs231n.dropout_backward(dout, cache)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx[~kept], 0)
    np.testing.assert_allclose(dx[kept], dout[kept] / dtype(0.3), rtol=1e-6)


def test_cs231n_dropout_equals_naive_with_drop_probability_1_minus_p(rng):
    x = randn(rng, (8, 9), np.float64)
    out, _ = cs231n.dropout_forward(x, {"mode": "train", "p": 0.75, "seed": 3})
    ref, _ = naive.dropout_forward(x, 0.25, train=True, rng=3)
    np.testing.assert_array_equal(out, ref)


def test_cs231n_dropout_seeds_and_test_mode(rng):
    x = randn(rng, (50, 40), np.float64)
    a, _ = cs231n.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 1})
    b, _ = cs231n.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 1})
    np.testing.assert_array_equal(a, b)
    # Without a seed, numpy's global legacy state decides, so np.random.seed makes runs repeatable.
    state = np.random.get_state()
    try:
        np.random.seed(231)
        c, _ = cs231n.dropout_forward(x, {"mode": "train", "p": 0.5})
        d, _ = cs231n.dropout_forward(x, {"mode": "train", "p": 0.5})
        np.random.seed(231)
        e, _ = cs231n.dropout_forward(x, {"mode": "train", "p": 0.5})
    finally:
        np.random.set_state(state)
    np.testing.assert_array_equal(c, e)
    assert not np.array_equal(c, d)
    out, cache = cs231n.dropout_forward(x, {"mode": "test", "p": 0.5})
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(cs231n.dropout_backward(x, cache), x)
    out, cache = cs231n.dropout_forward(x, {"mode": "train", "p": 1})  # CS231n: dropout=1 means none
    np.testing.assert_array_equal(out, x)


# ------------------------------------------------------------------ sandwich layers
def test_conv_relu_pool_equals_naive_composition(rng, dtype):
    x, w, b = randn(rng, (2, 3, 9, 8), dtype), randn(rng, (4, 3, 3, 3), dtype), randn(rng, (4,), dtype)
    conv_param = {"stride": 1, "pad": 1}
    pool_param = {"pool_height": 3, "pool_width": 2, "stride": 2}
    out, cache = cs231n.conv_relu_pool_forward(x, w, b, conv_param, pool_param)

    a, conv_cache = naive.conv_forward(x, w, b, 1, 1)
    s, relu_cache = naive.relu_forward(a)
    ref, pool_cache = naive.max_pool_forward(s, (3, 2), 2)
    assert_close(out, ref, dtype, "out")
    dout = randn(rng, ref.shape, dtype)
    refs = naive.conv_backward(naive.relu_backward(naive.max_pool_backward(dout, pool_cache), relu_cache), conv_cache)
    for got, want, what in zip(cs231n.conv_relu_pool_backward(dout, cache), refs, ("dx", "dw", "db")):
        assert_close(got, want, dtype, what)


def test_conv_relu_equals_naive_composition(rng, dtype):
    x, w, b = randn(rng, (2, 2, 7, 6), dtype), randn(rng, (3, 2, 3, 2), dtype), randn(rng, (3,), dtype)
    out, cache = cs231n.conv_relu_forward(x, w, b, {"stride": 2, "pad": 2})
    a, conv_cache = naive.conv_forward(x, w, b, 2, 2)
    ref, relu_cache = naive.relu_forward(a)
    assert_close(out, ref, dtype, "out")
    dout = randn(rng, ref.shape, dtype)
    refs = naive.conv_backward(naive.relu_backward(dout, relu_cache), conv_cache)
    for got, want, what in zip(cs231n.conv_relu_backward(dout, cache), refs, ("dx", "dw", "db")):
        assert_close(got, want, dtype, what)


def test_affine_relu_equals_naive_composition(rng, dtype):
    x, w, b = randn(rng, (5, 2, 3, 3), dtype), randn(rng, (18, 6), dtype), randn(rng, (6,), dtype)
    out, cache = cs231n.affine_relu_forward(x, w, b)
    a, fc_cache = naive.affine_forward(x, w, b)
    ref, relu_cache = naive.relu_forward(a)
    assert_close(out, ref, dtype, "out")
    dout = randn(rng, ref.shape, dtype)
    refs = naive.affine_backward(naive.relu_backward(dout, relu_cache), fc_cache)
    for got, want, what in zip(cs231n.affine_relu_backward(dout, cache), refs, ("dx", "dw", "db")):
        assert_close(got, want, dtype, what)


def test_conv_bn_relu_equals_naive_composition(rng, dtype):
    x, w, b = randn(rng, (3, 2, 6, 6), dtype), randn(rng, (4, 2, 3, 3), dtype), randn(rng, (4,), dtype)
    gamma, beta = randn(rng, (4,), dtype), randn(rng, (4,), dtype)
    out, cache = cs231n.conv_bn_relu_forward(x, w, b, gamma, beta, {"stride": 1, "pad": 1}, {"mode": "train"})
    a, conv_cache = naive.conv_forward(x, w, b, 1, 1)
    an, bn_cache = naive.spatial_batchnorm_forward(a, gamma, beta, {"mode": "train"})
    ref, relu_cache = naive.relu_forward(an)
    assert_close(out, ref, dtype, "out")
    dout = randn(rng, ref.shape, dtype)
    da, dgamma, dbeta = naive.spatial_batchnorm_backward(naive.relu_backward(dout, relu_cache), bn_cache)
    refs = naive.conv_backward(da, conv_cache) + (dgamma, dbeta)
    got = cs231n.conv_bn_relu_backward(dout, cache)
    assert len(got) == 5
    # batchnorm divides by the batch's standard deviation, which amplifies float32 rounding
    tolerance = 1e-3 if dtype == np.float32 else None
    for g, want, what in zip(got, refs, ("dx", "dw", "db", "dgamma", "dbeta")):
        if what == "db":
            # Batchnorm removes any per-channel constant, so db is exactly 0 in exact arithmetic and
            # both sides hold rounding noise: compare against the size of the terms that cancel.
            assert g.dtype == dtype
            scale = np.abs(da).sum(axis=(0, 2, 3)).max()
            assert np.abs(g - want).max() / scale < (tolerance or tol(dtype)) * 10
        else:
            assert_close(g, want, dtype, what, tolerance=tolerance)


# ------------------------------------------------------------------ dtype policy
@pytest.mark.parametrize("module", [cs231n, sichkar], ids=["cs231n", "sichkar"])
def test_float64_data_with_float32_weights_computes_in_float32(rng, module):
    """The tutorials' models keep float32 parameters and feed float64 data: that runs, in float32."""
    x = randn(rng, (2, 3, 8, 8), np.float64)
    w, b = randn(rng, (4, 3, 3, 3), np.float32), randn(rng, (4,), np.float32)
    conv = cs231n.conv_forward_naive if module is cs231n else sichkar.cnn_forward_naive
    conv_back = cs231n.conv_backward_naive if module is cs231n else sichkar.cnn_backward_naive
    out, cache = conv(x, w, b, {"stride": 1, "pad": 1})
    ref, ref_cache = naive.conv_forward(x.astype(np.float32), w, b, 1, 1)
    assert_close(out, ref, np.float32, "out")
    dout = randn(rng, out.shape, np.float64)  # cast to float32 too
    dx, dw, db = conv_back(dout, cache)
    dx_ref, dw_ref, db_ref = naive.conv_backward(dout.astype(np.float32), ref_cache)
    assert_close(dx, dx_ref, np.float64, "dx (x's dtype)", tolerance=1e-4)
    assert_close(dw, dw_ref, np.float32, "dw")
    assert_close(db, db_ref, np.float32, "db")

    xa = randn(rng, (3, 10), np.float64)
    wa, ba = randn(rng, (10, 4), np.float32), randn(rng, (4,), np.float64)
    out, cache = module.affine_forward(xa, wa, ba)
    assert out.dtype == np.float32
    dx, dw, db = module.affine_backward(np.ones((3, 4), np.float32), cache)
    assert (dx.dtype, dw.dtype, db.dtype) == (np.float64, np.float32, np.float64)


def test_sichkar_convnet1_step_runs_on_float64_data_with_float32_parameters(rng):
    """The tutorial's ConvNet1 loss, as written there, after swapping the import: float64 CIFAR-like
    data and float32 parameters. It runs in float32 and equals the naive layers on float32 data."""
    x = randn(rng, (3, 3, 12, 12), np.float64) * 50
    y = rng.integers(0, 10, size=3)
    w1, b1 = randn(rng, (5, 3, 7, 7), np.float32) * 1e-2, np.zeros(5, np.float32)
    w2, b2 = randn(rng, (5 * 6 * 6, 8), np.float32) * 1e-2, np.zeros(8, np.float32)
    w3, b3 = randn(rng, (8, 10), np.float32) * 1e-2, np.zeros(10, np.float32)
    cnn_params = {"stride": 1, "pad": 3}
    pooling_params = {"pooling_height": 2, "pooling_width": 2, "stride": 2}

    S = sichkar
    cnn_output, cache_cnn = S.cnn_forward_naive(x, w1, b1, cnn_params)
    relu_output_1, cache_relu_1 = S.relu_forward(cnn_output)
    pooling_output, cache_pooling = S.max_pooling_forward_naive(relu_output_1, pooling_params)
    affine_hidden, cache_affine_hidden = S.affine_forward(pooling_output, w2, b2)
    relu_output_2, cache_relu_2 = S.relu_forward(affine_hidden)
    scores, cache_affine_output = S.affine_forward(relu_output_2, w3, b3)
    loss, d_scores = S.softmax_loss(scores, y)
    dx3, dw3, db3 = S.affine_backward(d_scores, cache_affine_output)
    dx2, dw2, db2 = S.affine_backward(S.relu_backward(dx3, cache_relu_2), cache_affine_hidden)
    d_relu_1 = S.relu_backward(S.max_pooling_backward_naive(dx2, cache_pooling), cache_relu_1)
    dx1, dw1, db1 = S.cnn_backward_naive(d_relu_1, cache_cnn)

    a, c1 = naive.conv_forward(x.astype(np.float32), w1, b1, 1, 3)
    r1, cr1 = naive.relu_forward(a)
    p, cp = naive.max_pool_forward(r1, 2, 2)
    h, ch = naive.affine_forward(p, w2, b2)
    r2, cr2 = naive.relu_forward(h)
    s_ref, cs = naive.affine_forward(r2, w3, b3)
    loss_ref, ds_ref = naive.softmax_loss(s_ref, y)
    e3 = naive.affine_backward(ds_ref, cs)
    e2 = naive.affine_backward(naive.relu_backward(e3[0], cr2), ch)
    e1 = naive.conv_backward(naive.relu_backward(naive.max_pool_backward(e2[0], cp), cr1), c1)

    assert scores.dtype == np.float32 and abs(loss - loss_ref) < 1e-4 * abs(loss_ref)
    for got, want, what in [
        (dw3, e3[1], "dw3"),
        (db3, e3[2], "db3"),
        (dw2, e2[1], "dw2"),
        (db2, e2[2], "db2"),
        (dw1, e1[1], "dw1"),
        (db1, e1[2], "db1"),
    ]:
        assert_close(got, want, np.float32, what, tolerance=1e-3)
    assert dx1.dtype == np.float64 and dx1.shape == x.shape


def test_float16_input_is_rejected():
    """Integers are converted (tests/compat/test_compat_tutorials.py); float16 is not a computing dtype."""
    x = np.ones((1, 1, 4, 4), dtype=np.float16)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        cs231n.conv_forward_naive(x, np.ones((1, 1, 3, 3)), np.zeros(1), {"stride": 1, "pad": 1})


def test_cs231n_requires_bias():
    with pytest.raises(TypeError, match="b must be"):
        cs231n.conv_forward_naive(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), None, {"stride": 1, "pad": 1})


# ------------------------------------------------------------------ dictionary validation
X4 = np.ones((1, 2, 6, 6))
W4 = np.ones((3, 2, 3, 3))
B4 = np.zeros(3)


def conv_call(params):
    return cs231n.conv_forward_naive(X4, W4, B4, params)


def cnn_call(params):
    return sichkar.cnn_forward_naive(X4, W4, B4, params)


def pool_call(params):
    return cs231n.max_pool_forward_naive(X4, params)


def pooling_call(params):
    return sichkar.max_pooling_forward_naive(X4, params)


def crp_call(params):
    return cs231n.conv_relu_pool_forward(X4, W4, B4, {"stride": 1, "pad": 1}, params)


def dropout_call(params):
    return cs231n.dropout_forward(X4, params)


def bn_call(params):
    return cs231n.batchnorm_forward(np.ones((4, 3)), np.ones(3), np.zeros(3), params)


POOL_OK = {"pool_height": 2, "pool_width": 2, "stride": 2}
POOLING_OK = {"pooling_height": 2, "pooling_width": 2, "stride": 2}
BAD_DICTS = [
    # (call, params, exception, text the message must contain)
    (conv_call, {"pad": 1}, ValueError, "conv_param['stride'] is missing"),
    (conv_call, {"stride": 1}, ValueError, "conv_param['pad'] is missing"),
    (conv_call, {"stride": 0, "pad": 1}, ValueError, "conv_param['stride'] must be >= 1"),
    (conv_call, {"stride": 1, "pad": -1}, ValueError, "conv_param['pad'] must be >= 0"),
    (conv_call, {"stride": 1.0, "pad": 1}, TypeError, "conv_param['stride']"),
    (conv_call, {"stride": 1, "pad": 1.5}, TypeError, "conv_param['pad']"),
    (conv_call, {"stride": True, "pad": 1}, TypeError, "conv_param['stride']"),
    (conv_call, [1, 1], TypeError, "conv_param must be a dict"),
    (cnn_call, {"stride": 1}, ValueError, "cnn_params['pad'] is missing"),
    (cnn_call, {"stride": "1", "pad": 1}, TypeError, "cnn_params['stride']"),
    (cnn_call, None, TypeError, "cnn_params must be a dict"),
    (pool_call, {"pool_width": 2, "stride": 2}, ValueError, "pool_param['pool_height'] is missing"),
    (pool_call, {"pool_height": 2, "stride": 2}, ValueError, "pool_param['pool_width'] is missing"),
    (pool_call, {"pool_height": 2, "pool_width": 2}, ValueError, "pool_param['stride'] is missing"),
    (pool_call, {**POOL_OK, "pool_height": 0}, ValueError, "pool_param['pool_height'] must be >= 1"),
    (pool_call, {**POOL_OK, "pool_width": (2, 2)}, TypeError, "pool_param['pool_width'] must be an int"),
    (pool_call, {**POOL_OK, "stride": 2.0}, TypeError, "pool_param['stride']"),
    (pool_call, POOLING_OK, ValueError, "pool_param['pool_height'] is missing"),
    (crp_call, {"pool_height": 2, "pool_width": 2}, ValueError, "pool_param['stride'] is missing"),
    (pooling_call, POOL_OK, ValueError, "pooling_params['pooling_height'] is missing"),
    (pooling_call, {**POOLING_OK, "pooling_width": 0}, ValueError, "pooling_params['pooling_width'] must be >= 1"),
    (pooling_call, {**POOLING_OK, "stride": None}, TypeError, "pooling_params['stride']"),
    (dropout_call, {"p": 0.5}, ValueError, "dropout_param['mode'] is missing"),
    (dropout_call, {"mode": "train"}, ValueError, "dropout_param['p'] is missing"),
    (dropout_call, {"mode": "eval", "p": 0.5}, ValueError, "dropout_param['mode'] must be 'train' or 'test'"),
    (dropout_call, {"mode": "train", "p": 0}, ValueError, "dropout_param['p'] (the keep probability)"),
    (dropout_call, {"mode": "train", "p": 1.5}, ValueError, "dropout_param['p'] (the keep probability)"),
    (dropout_call, {"mode": "train", "p": "0.5"}, TypeError, "dropout_param['p']"),
    (dropout_call, {"mode": "train", "p": 0.5, "seed": 1.5}, TypeError, "dropout_param['seed']"),
    (bn_call, {}, ValueError, "bn_param['mode'] is missing"),
    (bn_call, {"mode": "training"}, ValueError, "bn_param['mode'] must be 'train' or 'test'"),
    (bn_call, {"mode": "train", "eps": 0}, ValueError, "bn_param['eps']"),
    (bn_call, {"mode": "train", "momentum": 2}, ValueError, "bn_param['momentum']"),
    (bn_call, {"mode": "test", "running_mean": np.zeros(4)}, ValueError, "bn_param['running_mean']"),
    (bn_call, {"mode": "test", "running_var": [1, 1, 1]}, TypeError, "bn_param['running_var']"),
]


@pytest.mark.parametrize(
    "call, params, exc, text", BAD_DICTS, ids=[f"{c.__name__}-{i}" for i, (c, *_) in enumerate(BAD_DICTS)]
)
def test_bad_dictionary_names_the_key(call, params, exc, text):
    with pytest.raises(exc) as info:
        call(params)
    assert text in str(info.value)


def test_extra_keys_are_ignored(rng):
    x, w, b = conv_data(rng, CONV_CASES[0], np.float64)
    out, _ = cs231n.conv_forward_naive(x, w, b, {"stride": 1, "pad": 1, "note": "from an old notebook"})
    assert_close(out, naive.conv_forward(x, w, b, 1, 1)[0], np.float64, "out")


def test_public_names():
    cs231n_names = {
        "conv_forward_naive",
        "conv_backward_naive",
        "conv_forward_fast",
        "conv_backward_fast",
        "conv_forward_im2col",
        "conv_backward_im2col",
        "conv_forward_strides",
        "conv_backward_strides",
        "max_pool_forward_naive",
        "max_pool_backward_naive",
        "max_pool_forward_fast",
        "max_pool_backward_fast",
        "affine_forward",
        "affine_backward",
        "relu_forward",
        "relu_backward",
        "softmax_loss",
        "svm_loss",
        "conv_relu_forward",
        "conv_relu_backward",
        "conv_relu_pool_forward",
        "conv_relu_pool_backward",
        "affine_relu_forward",
        "affine_relu_backward",
        "batchnorm_forward",
        "batchnorm_backward",
        "spatial_batchnorm_forward",
        "spatial_batchnorm_backward",
        "dropout_forward",
        "dropout_backward",
    }
    sichkar_names = {
        "cnn_forward_naive",
        "cnn_backward_naive",
        "max_pooling_forward_naive",
        "max_pooling_backward_naive",
        "affine_forward",
        "affine_backward",
        "relu_forward",
        "relu_backward",
        "softmax_loss",
    }
    for module, names in ((cs231n, cs231n_names), (sichkar, sichkar_names)):
        assert names <= set(module.__all__)
        assert all(callable(getattr(module, n)) for n in module.__all__)
