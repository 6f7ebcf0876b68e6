"""What tutorial code brings to the compat modules: the rest of CS231n's names (layernorm,
spatial groupnorm, the norm sandwiches), integer arrays, CS231n's batchnorm running
statistics, and the "numpy only" tutorial's ConvNet1 and extra layers (fastconv.compat.sichkar).

References are written here (CS231n-style numpy code, loops), or are the core layers,
which tests/engine/test_norm_layers.py and tests/engine/test_layers.py check against numerical gradients.
"""

import numpy as np
import pytest

from fastconv import fast, layers, naive
from fastconv.compat import cs231n, sichkar
from fastconv.testing import DTYPES, GRAD_TOL, assert_close, numerical_gradient, rel_error

from _helpers import dtype_id

# Every public name of CS231n's assignment-2 layers.py, fast_layers.py and layer_utils.py.
CS231N_LAYERS = [
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "layernorm_forward",
    "layernorm_backward",
    "dropout_forward",
    "dropout_backward",
    "conv_forward_naive",
    "conv_backward_naive",
    "max_pool_forward_naive",
    "max_pool_backward_naive",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "spatial_groupnorm_forward",
    "spatial_groupnorm_backward",
    "svm_loss",
    "softmax_loss",
]
CS231N_FAST_LAYERS = [
    "conv_forward_im2col",
    "conv_backward_im2col",
    "conv_forward_strides",
    "conv_backward_strides",
    "conv_forward_fast",
    "conv_backward_fast",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "max_pool_forward_reshape",
    "max_pool_backward_reshape",
    "max_pool_forward_im2col",
    "max_pool_backward_im2col",
]
CS231N_LAYER_UTILS = [
    "affine_relu_forward",
    "affine_relu_backward",
    "conv_relu_forward",
    "conv_relu_backward",
    "conv_bn_relu_forward",
    "conv_bn_relu_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
]


def randn(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def test_every_cs231n_name_is_there():
    names = set(cs231n.__all__)
    for name in CS231N_LAYERS + CS231N_FAST_LAYERS + CS231N_LAYER_UTILS:
        assert name in names, name
        assert callable(getattr(cs231n, name)), name
    ns = {}
    exec("from fastconv.compat.cs231n import *", ns)  # the one-import swap
    assert {"layernorm_forward", "spatial_groupnorm_forward", "affine_bn_relu_forward"} <= set(ns)


# ------------------------------------------------------------------ layernorm and spatial groupnorm
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_layernorm_equals_the_core(rng, dtype):
    x, gamma, beta = randn(rng, (4, 5), dtype) * 3 + 1, randn(rng, (5,), dtype), randn(rng, (5,), dtype)
    out, cache = cs231n.layernorm_forward(x, gamma, beta, {"eps": 1e-4, "mode": "train"})
    ref, ref_cache = layers.layernorm_forward(x, gamma, beta, 1e-4)
    assert_close(out, ref, dtype, "out")
    dout = randn(rng, x.shape, dtype)
    for got, want, what in zip(
        cs231n.layernorm_backward(dout, cache), layers.layernorm_backward(dout, ref_cache), ("dx", "dgamma", "dbeta")
    ):
        assert_close(got, want, dtype, what)


@pytest.mark.parametrize("shape", [(6,), (1, 6, 1, 1)], ids=["gamma-C", "gamma-1C11"])
def test_spatial_groupnorm_takes_both_gamma_shapes(rng, shape):
    """CS231n's notebook makes gamma (1, C, 1, 1) and checks dgamma in that shape."""
    x = randn(rng, (2, 6, 3, 4)) * 4 + 10
    gamma, beta = randn(rng, shape), randn(rng, shape)
    out, cache = cs231n.spatial_groupnorm_forward(x, gamma, beta, 3, {"mode": "train"})
    ref, ref_cache = layers.groupnorm_forward(x, gamma.reshape(6), beta.reshape(6), 3)
    np.testing.assert_array_equal(out, ref)
    dout = randn(rng, x.shape)
    dx, dgamma, dbeta = cs231n.spatial_groupnorm_backward(dout, cache)
    assert dgamma.shape == dbeta.shape == shape
    want = layers.groupnorm_backward(dout, ref_cache)
    np.testing.assert_array_equal(dx, want[0])
    np.testing.assert_array_equal(dgamma.reshape(6), want[1])

    def forward(_):
        return cs231n.spatial_groupnorm_forward(x, gamma, beta, 3, {})[0]

    assert rel_error(dgamma, numerical_gradient(forward, gamma, dout)) < GRAD_TOL


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("norm", ["bn", "ln"])
def test_affine_norm_relu_equals_the_composition(rng, dtype, norm):
    x, w, b = randn(rng, (6, 2, 3), dtype), randn(rng, (6, 5), dtype), randn(rng, (5,), dtype)
    gamma, beta = randn(rng, (5,), dtype), randn(rng, (5,), dtype)
    forward = cs231n.affine_bn_relu_forward if norm == "bn" else cs231n.affine_ln_relu_forward
    backward = cs231n.affine_bn_relu_backward if norm == "bn" else cs231n.affine_ln_relu_backward
    out, cache = forward(x, w, b, gamma, beta, {"mode": "train"})
    a, fc_cache = layers.affine_forward(x, w, b)
    if norm == "bn":
        an, n_cache = layers.batchnorm_forward(a, gamma, beta, {"mode": "train"})
    else:
        an, n_cache = layers.layernorm_forward(a, gamma, beta)
    ref, relu_cache = layers.relu_forward(an)
    assert_close(out, ref, dtype, "out")
    dout = randn(rng, ref.shape, dtype)
    norm_backward = layers.batchnorm_backward if norm == "bn" else layers.layernorm_backward
    da, dgamma, dbeta = norm_backward(layers.relu_backward(dout, relu_cache), n_cache)
    want = layers.affine_backward(da, fc_cache) + (dgamma, dbeta)
    got = backward(dout, cache)
    assert len(got) == 5
    for g, r, what in zip(got, want, ("dx", "dw", "db", "dgamma", "dbeta")):
        assert_close(g, r, dtype, what, tolerance=1e-3 if dtype == np.float32 else None)


NORM_ERRORS = [
    (
        "ln-param-not-dict",
        lambda: cs231n.layernorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), None),
        TypeError,
        r"^ln_param must be a dict",
    ),
    (
        "ln-eps-zero",
        lambda: cs231n.layernorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), {"eps": 0}),
        ValueError,
        r"^ln_param\['eps'\] must be a positive number",
    ),
    (
        "gn-param-not-dict",
        lambda: cs231n.spatial_groupnorm_forward(np.ones((1, 4, 2, 2)), np.ones(4), np.zeros(4), 2, [("eps", 1e-5)]),
        TypeError,
        r"^gn_param must be a dict",
    ),
    (
        "gn-eps-str",
        lambda: cs231n.spatial_groupnorm_forward(np.ones((1, 4, 2, 2)), np.ones(4), np.zeros(4), 2, {"eps": "small"}),
        TypeError,
        r"^gn_param\['eps'\]",
    ),
    (
        "gn-G-float",
        lambda: cs231n.spatial_groupnorm_forward(np.ones((1, 4, 2, 2)), np.ones(4), np.zeros(4), 2.0, {}),
        TypeError,
        r"^G must be an int",
    ),
    (
        "gn-G-not-dividing",
        lambda: cs231n.spatial_groupnorm_forward(np.ones((1, 4, 2, 2)), np.ones(4), np.zeros(4), 3, {}),
        ValueError,
        r"^groups must divide the channel count C = 4, got groups=3",
    ),
    (
        "gn-gamma-shape",
        lambda: cs231n.spatial_groupnorm_forward(np.ones((1, 4, 2, 2)), np.ones((1, 4, 2, 1)), np.zeros(4), 2, {}),
        ValueError,
        r"^gamma must have shape \(C,\) or \(1, C, 1, 1\), got \(1, 4, 2, 1\)",
    ),
    (
        "gn-gamma-channels",
        lambda: cs231n.spatial_groupnorm_forward(
            np.ones((1, 4, 2, 2)), np.ones((1, 2, 1, 1)), np.zeros((1, 2, 1, 1)), 2, {}
        ),
        ValueError,
        r"^gamma and beta must have shape \(4,\)",
    ),
]


def test_a_pool_window_larger_than_the_conv_output_names_pool_param():
    with pytest.raises(ValueError, match=r"^pool_param's window does not fit the convolution's output: pool_size"):
        cs231n.conv_relu_pool_forward(
            np.ones((1, 1, 4, 4)),
            np.ones((1, 1, 3, 3)),
            np.zeros(1),
            {"stride": 1, "pad": 0},
            {"pool_height": 3, "pool_width": 3, "stride": 1},
        )


@pytest.mark.parametrize("call, exc, match", [pytest.param(*e[1:], id=e[0]) for e in NORM_ERRORS])
def test_normalization_arguments_are_checked(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------ integer and bool arrays
def test_integer_bias_is_converted_to_the_weights_dtype(rng):
    """CS231n's conv check: ``b = np.array([0, 128])``-style integer biases with float64 data."""
    x = np.linspace(-0.1, 0.5, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    w = np.linspace(-0.2, 0.3, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    b = np.array([0, 128])
    with pytest.raises(TypeError, match="b must have dtype float32 or float64"):
        fast.conv_forward(x, w, b, 2, 1)  # the core API stays strict
    out, cache = cs231n.conv_forward_naive(x, w, b, {"stride": 2, "pad": 1})
    ref, ref_cache = naive.conv_forward(x, w, b.astype(np.float64), 2, 1)
    assert_close(out, ref, np.float64, "out")
    dx, dw, db = cs231n.conv_backward_naive(np.ones_like(out), cache)
    assert db.dtype == np.float64  # an integer's gradient comes back in the computing dtype
    assert_close(db, naive.conv_backward(np.ones_like(out), ref_cache)[2], np.float64, "db")


def test_integer_gamma_in_batchnorm(rng):
    """The batchnorm cell: ``gamma = np.asarray([3, 4, 5])`` with float64 data."""
    x = randn(rng, (20, 3)) * 5 + 12
    gamma, beta = np.asarray([3, 4, 5]), np.asarray([0, -1, 6])
    with pytest.raises(TypeError, match="gamma must have dtype"):
        layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    out, _ = cs231n.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    ref, _ = layers.batchnorm_forward(x, gamma.astype(float), beta.astype(float), {"mode": "train"})
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_allclose(out.std(axis=0), [3, 4, 5], rtol=1e-4)


def test_raw_uint8_images_into_float32_weights(rng):
    images = rng.integers(0, 256, (2, 1, 6, 6), dtype=np.uint8)
    w, b = randn(rng, (3, 1, 3, 3), np.float32), np.zeros(3, np.float32)
    out, cache = cs231n.conv_relu_pool_forward(
        images, w, b, {"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}
    )
    ref, _ = fast.conv_relu_pool_forward(images.astype(np.float32), w, b, 1, 1, pool_size=2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)
    dx, dw, db = cs231n.conv_relu_pool_backward(np.ones_like(out), cache)
    assert (dx.dtype, dw.dtype, db.dtype) == (np.float32,) * 3
    out, _ = sichkar.cnn_forward_naive(images, w, b, {"stride": 1, "pad": 1})
    assert out.dtype == np.float32


def test_integer_weights_compute_in_float64(rng):
    x = randn(rng, (2, 4), np.float32)
    w, b = np.arange(12).reshape(4, 3) - 5, np.array([1, 0, -1])
    out, cache = cs231n.affine_forward(x, w, b)
    ref, _ = layers.affine_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    assert_close(out, ref, np.float64, "out")
    dx, dw, db = cs231n.affine_backward(np.ones_like(out), cache)
    assert (dx.dtype, dw.dtype, db.dtype) == (np.float32, np.float64, np.float64)


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.bool_], ids=dtype_id)
def test_integer_and_bool_inputs_of_the_other_layers(rng, dtype):
    x = rng.integers(0, 2 if dtype == np.bool_ else 5, (2, 2, 4, 4)).astype(dtype)
    xf = x.astype(np.float64)
    checks = [
        (cs231n.relu_forward(x)[0], layers.relu_forward(xf)[0]),
        (
            cs231n.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})[0],
            naive.max_pool_forward(xf, 2)[0],
        ),
        (
            sichkar.max_pooling_forward_naive(x, {"pooling_height": 2, "pooling_width": 2, "stride": 2})[0],
            naive.max_pool_forward(xf, 2)[0],
        ),
        (
            cs231n.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 1})[0],
            layers.dropout_forward(xf, 0.5, rng=1)[0],
        ),
        (
            cs231n.spatial_batchnorm_forward(x, np.ones(2), np.zeros(2), {"mode": "train"})[0],
            layers.spatial_batchnorm_forward(xf, np.ones(2), np.zeros(2), {"mode": "train"})[0],
        ),
    ]
    for got, want in checks:
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    scores = x.reshape(2, -1)[:, :5]
    for name in ("softmax_loss", "svm_loss"):
        loss, dscores = getattr(cs231n, name)(scores, np.array([0, 4]))
        want_loss, want_d = getattr(layers, name)(scores.astype(np.float64), np.array([0, 4]))
        assert loss == want_loss and dscores.dtype == np.float64
        with pytest.raises(TypeError, match="scores must have dtype"):
            getattr(layers, name)(scores, np.array([0, 4]))  # the core stays strict


# ------------------------------------------------------------------ CS231n's running statistics
def _cs231n_batchnorm(x, gamma, beta, bn_param):
    """CS231n's batchnorm forward as the assignment writes it (running statistics start at 0)."""
    mode, eps, momentum = bn_param["mode"], bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)
    D = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))
    if mode == "train":
        mu, var = x.mean(axis=0), x.var(axis=0)
        out = gamma * (x - mu) / np.sqrt(var + eps) + beta
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
    else:
        out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
    bn_param["running_mean"], bn_param["running_var"] = running_mean, running_var
    return out


@pytest.mark.parametrize("steps", [0, 1, 20])
@pytest.mark.parametrize("spatial", [False, True], ids=["batchnorm", "spatial"])
def test_test_mode_after_training_steps_equals_cs231n(rng, steps, spatial):
    D = 4
    gamma, beta = randn(rng, (D,)), randn(rng, (D,))
    mine, theirs = {"mode": "train"}, {"mode": "train"}
    forward = cs231n.spatial_batchnorm_forward if spatial else cs231n.batchnorm_forward

    def as_rows(a):  # CS231n's spatial batchnorm: channels last, then the vanilla layer
        return a.transpose(0, 2, 3, 1).reshape(-1, D) if spatial else a

    def from_rows(a, shape):
        return a.reshape(shape[0], shape[2], shape[3], D).transpose(0, 3, 1, 2) if spatial else a

    shape = (8, D, 3, 3) if spatial else (8, D)
    batches = [randn(rng, shape) * 2 + 3 for _ in range(steps)]
    for x in batches:
        out, _ = forward(x, gamma, beta, mine)
        ref = from_rows(_cs231n_batchnorm(as_rows(x), gamma, beta, theirs), shape)
        np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    mine["mode"] = theirs["mode"] = "test"
    x = randn(rng, shape) * 2 + 3
    out, _ = forward(x, gamma, beta, mine)
    ref = from_rows(_cs231n_batchnorm(as_rows(x), gamma, beta, theirs), shape)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mine["running_var"], theirs["running_var"], rtol=1e-12, atol=1e-300)
    # the core layer starts the variance at 1: after the same batches it is momentum**steps higher
    core = {"mode": "train"}
    core_forward = layers.spatial_batchnorm_forward if spatial else layers.batchnorm_forward
    for x in batches:
        core_forward(x, gamma, beta, core)
    if steps:
        np.testing.assert_allclose(core["running_var"] - mine["running_var"], 0.9**steps, rtol=1e-9)


# ------------------------------------------------------------------ compat.sichkar: the other layers
SICHKAR_NAMES = [
    "cnn_forward_naive",
    "cnn_backward_naive",
    "max_pooling_forward_naive",
    "max_pooling_backward_naive",
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "softmax_loss",
    "average_pooling_forward_naive",
    "average_pooling_backward_naive",
    "sigmoid_forward",
    "sigmoid_backward",
    "svm_loss",
    "dropout_forward",
    "dropout_backward",
    "cnn_forward_strides",
    "cnn_backward_strides",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "ConvNet1",
]


def test_every_sichkar_name_is_there():
    for name in SICHKAR_NAMES:
        assert name in sichkar.__all__ and callable(getattr(sichkar, name)), name


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_sichkar_average_pooling_equals_naive(rng, dtype):
    x = randn(rng, (2, 3, 7, 6), dtype)
    out, cache = sichkar.average_pooling_forward_naive(x, {"pooling_height": 3, "pooling_width": 2, "stride": 2})
    ref, ref_cache = naive.avg_pool_forward(x, (3, 2), 2)
    assert_close(out, ref, dtype, "pooled_output")
    dout = randn(rng, ref.shape, dtype)
    assert_close(
        sichkar.average_pooling_backward_naive(dout, cache), naive.avg_pool_backward(dout, ref_cache), dtype, "dx"
    )
    with pytest.raises(ValueError, match=r"pooling_params\['pooling_width'\] is missing"):
        sichkar.average_pooling_forward_naive(x, {"pooling_height": 2, "stride": 2})


def test_sichkar_sigmoid_svm_and_dropout(rng):
    x = randn(rng, (4, 5)) * 3
    out, cache = sichkar.sigmoid_forward(x)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-x)), rtol=1e-14)
    dout = randn(rng, x.shape)
    np.testing.assert_array_equal(sichkar.sigmoid_backward(dout, cache), layers.sigmoid_backward(dout, cache))
    assert sichkar.sigmoid_forward(np.array([0, 1]))[0].dtype == np.float64  # integers converted
    y = np.array([0, 4, 2, 2])
    assert sichkar.svm_loss(x, y)[0] == layers.svm_loss(x, y)[0]
    out, cache = sichkar.dropout_forward(x, {"mode": "train", "p": 0.75, "seed": 3})
    np.testing.assert_array_equal(out, layers.dropout_forward(x, 0.25, rng=3)[0])  # p keeps, as in CS231n
    np.testing.assert_allclose(sichkar.dropout_backward(dout, cache), dout * (out != 0) / 0.75, rtol=1e-15)
    with pytest.raises(ValueError, match=r"^dropout_params\['p'\] \(the keep probability\)"):
        sichkar.dropout_forward(x, {"mode": "train", "p": 0})
    with pytest.raises(ValueError, match=r"^dropout_params\['mode'\] is missing"):
        sichkar.dropout_forward(x, {"p": 0.5})


def test_the_mnist_tutorials_fast_names(rng):
    """Its ConvNet1 calls cnn_forward_strides and max_pool_forward_fast with its own dictionaries."""
    x, w, b = randn(rng, (2, 1, 8, 8)), randn(rng, (3, 1, 3, 3)), randn(rng, (3,))
    out, cache = sichkar.cnn_forward_strides(x, w, b, {"stride": 1, "pad": 1})
    np.testing.assert_array_equal(out, sichkar.cnn_forward_naive(x, w, b, {"stride": 1, "pad": 1})[0])
    pooled, pcache = sichkar.max_pool_forward_fast(out, {"pooling_height": 2, "pooling_width": 2, "stride": 2})
    assert_close(pooled, naive.max_pool_forward(out, 2)[0], np.float64, "pooled")
    assert sichkar.cnn_backward_strides(out, cache)[1].shape == w.shape
    assert sichkar.max_pool_backward_fast(pooled, pcache).shape == out.shape


# ------------------------------------------------------------------ compat.sichkar.ConvNet1
def _tutorial_loss_naive(model, x, y):
    """The tutorial's loss_for_training written out on fastconv.naive (the loop layers), in float64."""
    p = {k: v.astype(np.float64) for k, v in model.params.items()}
    pad = model.cnn_params["pad"]
    a, c1 = naive.conv_forward(x, p["w1"], p["b1"], 1, pad)
    r1, cr1 = naive.relu_forward(a)
    pooled, cp = naive.max_pool_forward(r1, 2, 2)
    h, ch = naive.affine_forward(pooled, p["w2"], p["b2"])
    r2, cr2 = naive.relu_forward(h)
    scores, cs = naive.affine_forward(r2, p["w3"], p["b3"])
    loss, d_scores = naive.softmax_loss(scores, y)
    reg = model.regularization
    loss += 0.5 * reg * sum(np.sum(np.square(p[k])) for k in ("w1", "w2", "w3"))
    dx3, dw3, db3 = naive.affine_backward(d_scores, cs)
    dx2, dw2, db2 = naive.affine_backward(naive.relu_backward(dx3, cr2), ch)
    _, dw1, db1 = naive.conv_backward(naive.relu_backward(naive.max_pool_backward(dx2, cp), cr1), c1)
    grads = {
        "w1": dw1 + reg * p["w1"],
        "b1": db1,
        "w2": dw2 + reg * p["w2"],
        "b2": db2,
        "w3": dw3 + reg * p["w3"],
        "b3": db3,
    }
    return loss, grads, scores


def _small_convnet1(dtype=np.float64, reg=0.1, seed=1):
    return sichkar.ConvNet1(
        input_dimension=(2, 9, 8),
        number_of_filters=3,
        size_of_filter=3,
        hidden_dimension=6,
        number_of_classes=4,
        weight_scale=1e-1,
        regularization=reg,
        dtype=dtype,
        seed=seed,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_convnet1_equals_the_tutorials_loss_on_the_loop_layers(rng, dtype):
    model = _small_convnet1(dtype)
    assert model.cnn_params == {"stride": 1, "pad": 1}
    assert model.pooling_params == {"pooling_height": 2, "pooling_width": 2, "stride": 2}
    assert model.params["w2"].shape == (3 * 4 * 4, 6) and model.params["b1"].shape == (3,)
    x = randn(rng, (5, 2, 9, 8))  # float64 data, as the tutorials have it
    y = rng.integers(0, 4, 5)
    loss, grads = model.loss_for_training(x, y)
    want_loss, want_grads, want_scores = _tutorial_loss_naive(model, x.astype(dtype).astype(np.float64), y)
    assert isinstance(loss, float) and abs(loss - want_loss) < (1e-5 if dtype == np.float32 else 1e-12)
    for k, g in grads.items():
        assert_close(g, want_grads[k], dtype, k, tolerance=1e-3 if dtype == np.float32 else None)
    scores = model.scores_for_predicting(x)
    assert_close(scores, want_scores, dtype, "scores", tolerance=1e-4 if dtype == np.float32 else None)
    np.testing.assert_array_equal(model.loss_for_predicting(x), scores)  # the CIFAR-10 tutorial's name


def test_convnet1_gradients_are_numerical_gradients(rng):
    model = _small_convnet1()
    x, y = randn(rng, (3, 2, 9, 8)), np.array([0, 3, 1])
    _, grads = model.loss_for_training(x, y)
    for k in ("w1", "b1", "w2", "b3"):
        numeric = numerical_gradient(lambda _: model.loss_for_training(x, y)[0], model.params[k])
        assert rel_error(grads[k], numeric) < GRAD_TOL, k


def test_convnet1_takes_raw_images_and_one_hot_labels(rng):
    model = sichkar.ConvNet1(
        input_dimension=(1, 6, 6),
        number_of_filters=2,
        size_of_filter=3,
        hidden_dimension=4,
        number_of_classes=3,
        seed=0,
    )
    images = rng.integers(0, 256, (4, 1, 6, 6), dtype=np.uint8)
    y = np.array([2, 0, 1, 1])
    loss, grads = model.loss_for_training(images, np.eye(3)[y])
    want, _ = model.loss_for_training(images.astype(np.float32), y)
    assert loss == want and grads["w1"].dtype == np.float32


CONVNET1_ERRORS = [
    (dict(input_dimension=(28, 28)), ValueError, r"^input_dimension must be \(C, H, W\)"),
    (dict(number_of_filters=0), ValueError, r"^number_of_filters must be >= 1"),
    (dict(size_of_filter=7.0), TypeError, r"^size_of_filter must be an int"),
    (dict(hidden_dimension=-1), ValueError, r"^hidden_dimension"),
    (dict(number_of_classes="10"), TypeError, r"^number_of_classes"),
    (dict(weight_scale=0), ValueError, r"^weight_scale must be a finite number > 0"),
    (dict(regularization=-1e-3), ValueError, r"^regularization must be a finite number >= 0"),
    (dict(regularization=None), TypeError, r"^regularization must be a number"),
    (dict(dtype=np.float16), TypeError, r"^dtype must be float32 or float64"),
    (dict(input_dimension=(1, 1, 1), size_of_filter=1), ValueError, r"too small for 1x1 filters and 2x2 pooling"),
]


@pytest.mark.parametrize(
    "kwargs, exc, match", CONVNET1_ERRORS, ids=[next(iter(e[0])) + f"-{i}" for i, e in enumerate(CONVNET1_ERRORS)]
)
def test_convnet1_arguments_are_checked(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sichkar.ConvNet1(**kwargs)
