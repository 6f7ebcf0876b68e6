"""Layer and group normalization (fastconv.layers, re-exported by naive and fast), and the
label forms the losses take (integer arrays, lists, one-hot rows).

Forward values against loops written here; gradients against centred numerical
gradients in float64; float32 kept; bad arguments raise errors naming them.
"""

import warnings

import numpy as np
import pytest

import fastconv.fast as fast
import fastconv.layers as layers
import fastconv.naive as naive
from fastconv.testing import GRAD_TOL, numerical_gradient, rel_error

NAMES = ["layernorm_forward", "layernorm_backward", "groupnorm_forward", "groupnorm_backward"]


@pytest.mark.parametrize("name", NAMES)
def test_shared_by_naive_and_fast(name):
    assert getattr(naive, name) is getattr(layers, name)
    assert getattr(fast, name) is getattr(layers, name)


# ---------------------------------------------------------------------------- layer normalization
def test_layernorm_forward_normalizes_each_row(rng):
    x = rng.standard_normal((5, 7)) * 3 + 2
    gamma, beta = rng.standard_normal(7), rng.standard_normal(7)
    out, _ = layers.layernorm_forward(x, gamma, beta, eps=1e-5)
    want = np.empty_like(x)
    for n in range(5):
        row = x[n]
        want[n] = gamma * (row - row.mean()) / np.sqrt(row.var() + 1e-5) + beta
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_layernorm_backward_numerical(rng):
    x = rng.standard_normal((4, 6)) * 2 + 1
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    out, cache = layers.layernorm_forward(x, gamma, beta)
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = layers.layernorm_backward(dout, cache)

    def forward(_):
        return layers.layernorm_forward(x, gamma, beta)[0]

    assert rel_error(dx, numerical_gradient(forward, x, dout)) < GRAD_TOL
    assert rel_error(dgamma, numerical_gradient(forward, gamma, dout)) < GRAD_TOL
    assert rel_error(dbeta, numerical_gradient(forward, beta, dout)) < GRAD_TOL


# ---------------------------------------------------------------------------- group normalization
def _groupnorm_loops(x, gamma, beta, G, eps):
    N, C = x.shape[:2]
    out = np.empty_like(x)
    size = C // G
    for n in range(N):
        for g in range(G):
            block = x[n, g * size : (g + 1) * size]
            xhat = (block - block.mean()) / np.sqrt(block.var() + eps)
            for c in range(size):
                ch = g * size + c
                out[n, ch] = gamma[ch] * xhat[c] + beta[ch]
    return out


@pytest.mark.parametrize("G", [1, 2, 3, 6], ids=lambda g: f"groups{g}")
def test_groupnorm_forward_equals_loops(rng, G):
    x = rng.standard_normal((3, 6, 4, 5)) * 4 + 10
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    out, _ = layers.groupnorm_forward(x, gamma, beta, G, eps=1e-4)
    np.testing.assert_allclose(out, _groupnorm_loops(x, gamma, beta, G, 1e-4), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("G", [1, 2, 4], ids=lambda g: f"groups{g}")
def test_groupnorm_backward_numerical(rng, G):
    x = rng.standard_normal((2, 4, 3, 2)) * 2 - 1
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    out, cache = layers.groupnorm_forward(x, gamma, beta, G)
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = layers.groupnorm_backward(dout, cache)
    assert dgamma.shape == dbeta.shape == (4,)

    def forward(_):
        return layers.groupnorm_forward(x, gamma, beta, G)[0]

    assert rel_error(dx, numerical_gradient(forward, x, dout)) < GRAD_TOL
    assert rel_error(dgamma, numerical_gradient(forward, gamma, dout)) < GRAD_TOL
    assert rel_error(dbeta, numerical_gradient(forward, beta, dout)) < GRAD_TOL


def test_float32_is_kept(rng):
    x = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)
    g, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    out, cache = layers.groupnorm_forward(x, g, b, 2)
    grads = layers.groupnorm_backward(np.ones_like(out), cache)
    x2 = x.reshape(3, 16)
    out2, cache2 = layers.layernorm_forward(x2, np.ones(16, np.float32), np.zeros(16, np.float32))
    grads2 = layers.layernorm_backward(np.ones_like(out2), cache2)
    assert {a.dtype for a in (out, out2, *grads, *grads2)} == {np.dtype(np.float32)}
    # groups=1 normalizes each image over (C, H, W), as layer normalization of the flattened image does
    out1, _ = layers.groupnorm_forward(x, g, b, 1)
    np.testing.assert_allclose(out1.reshape(3, 16), out2, rtol=1e-5, atol=1e-6)


BAD = [
    (
        "groups-not-dividing",
        lambda: layers.groupnorm_forward(np.ones((1, 6, 2, 2)), np.ones(6), np.zeros(6), 4),
        ValueError,
        r"^groups must divide the channel count C = 6",
    ),
    (
        "groups-zero",
        lambda: layers.groupnorm_forward(np.ones((1, 6, 2, 2)), np.ones(6), np.zeros(6), 0),
        ValueError,
        r"^groups must be >= 1",
    ),
    (
        "groups-float",
        lambda: layers.groupnorm_forward(np.ones((1, 6, 2, 2)), np.ones(6), np.zeros(6), 2.0),
        TypeError,
        r"^groups must be an int",
    ),
    (
        "groupnorm-gamma-shape",
        lambda: layers.groupnorm_forward(np.ones((1, 6, 2, 2)), np.ones(3), np.zeros(3), 3),
        ValueError,
        r"^gamma and beta must have shape \(6,\)",
    ),
    (
        "groupnorm-x-2d",
        lambda: layers.groupnorm_forward(np.ones((2, 6)), np.ones(6), np.zeros(6), 3),
        ValueError,
        r"^x must be a 4-D",
    ),
    (
        "groupnorm-empty",
        lambda: layers.groupnorm_forward(np.ones((1, 2, 0, 3)), np.ones(2), np.zeros(2), 1),
        ValueError,
        r"^x must have values to normalize over",
    ),
    (
        "layernorm-eps-zero",
        lambda: layers.layernorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), 0.0),
        ValueError,
        r"^eps must be a positive number",
    ),
    (
        "layernorm-eps-str",
        lambda: layers.layernorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), "1e-5"),
        TypeError,
        r"^eps must be a positive number",
    ),
    (
        "layernorm-int",
        lambda: layers.layernorm_forward(np.ones((2, 3), int), np.ones(3), np.zeros(3)),
        TypeError,
        r"^x must have dtype float32 or float64",
    ),
    (
        "layernorm-mixed",
        lambda: layers.layernorm_forward(np.ones((2, 3)), np.ones(3, np.float32), np.zeros(3)),
        TypeError,
        r"x, gamma, beta must share one dtype",
    ),
    (
        "layernorm-no-features",
        lambda: layers.layernorm_forward(np.ones((2, 0)), np.ones(0), np.zeros(0)),
        ValueError,
        r"^x must have at least one feature",
    ),
    (
        "layernorm-dout-shape",
        lambda: layers.layernorm_backward(
            np.ones((2, 4)), layers.layernorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3))[1]
        ),
        ValueError,
        r"^dout must have the forward output's shape",
    ),
]


@pytest.mark.parametrize("call, exc, match", [pytest.param(*b[1:], id=b[0]) for b in BAD])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------- labels of the losses
@pytest.mark.parametrize("loss", ["softmax_loss", "svm_loss"])
def test_losses_take_one_hot_rows_and_lists(rng, loss):
    fn = getattr(layers, loss)
    scores = rng.standard_normal((5, 4))
    y = np.array([0, 3, 1, 1, 2])
    want_loss, want_d = fn(scores, y)
    for form, labels in [
        ("list", y.tolist()),
        ("tuple", tuple(y.tolist())),
        ("one-hot float", np.eye(4)[y]),
        ("one-hot int", np.eye(4, dtype=np.int64)[y]),
        ("one-hot bool", np.eye(4, dtype=bool)[y]),
        ("one-hot list", np.eye(4)[y].tolist()),
    ]:
        got_loss, got_d = fn(scores, labels)
        assert got_loss == want_loss, form
        np.testing.assert_array_equal(got_d, want_d, err_msg=form)


def test_empty_batch_with_an_empty_list():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of no examples, as with np.zeros(0, int)
        _, d = layers.softmax_loss(np.zeros((0, 3)), [])
    assert d.shape == (0, 3)


LABEL_ERRORS = [
    ("two-ones", np.array([[1.0, 0, 1], [0, 1, 0]]), ValueError, r"must be one-hot .* row 0 is not.*argmax"),
    ("no-one", np.array([[0, 1, 0], [0, 0, 0]]), ValueError, r"row 1 is not"),
    ("probabilities", np.array([[0.2, 0.8, 0], [0, 1, 0]]), ValueError, r"row 0 is not"),
    ("wrong-width", np.eye(4)[[0, 1]], ValueError, r"one-hot rows of shape \(N, K\) = \(2, 3\)"),
    ("float-labels", np.array([0.0, 2.0]), TypeError, r"^y must be an integer .*y\.astype\(int\)"),
    ("float-list", [0.0, 2.0], TypeError, r"^y must be an integer .*y\.astype\(int\)"),
    ("bool-labels", np.array([True, False]), TypeError, r"^y must be an integer"),
    ("ragged-list", [[0, 1, 0], [1, 0]], ValueError, r"^y must be a list of class labels"),
    ("list-out-of-range", [0, 3], ValueError, r"^y must hold class labels in \[0, 3\)"),
    ("string", "01", TypeError, r"^y must be an integer array or list"),
    ("one-hot-strings", np.array([["1", "0", "0"], ["0", "1", "0"]]), TypeError, r"^one-hot y must be a numeric"),
]


@pytest.mark.parametrize("y, exc, match", [pytest.param(*e[1:], id=e[0]) for e in LABEL_ERRORS])
def test_labels_that_are_refused(y, exc, match):
    with pytest.raises(exc, match=match):
        layers.softmax_loss(np.zeros((2, 3)), y)


# ---------------------------------------------------------------------------- batchnorm's bn_param
def _compat_bn(spatial):
    from fastconv.compat import cs231n

    return cs231n.spatial_batchnorm_forward if spatial else cs231n.batchnorm_forward


BN_IMPLS = {
    "layers-batchnorm": (lambda: layers.batchnorm_forward, False),
    "naive-spatial": (lambda: naive.spatial_batchnorm_forward, True),
    "fast-spatial": (lambda: fast.spatial_batchnorm_forward, True),
    "compat-batchnorm": (lambda: _compat_bn(False), False),
    "compat-spatial": (lambda: _compat_bn(True), True),
}

BAD_BN_PARAMS = [  # (id, entries, error, words in the message)
    ("eps-negative", {"eps": -1.0}, ValueError, "bn_param['eps']"),
    ("eps-nan", {"eps": float("nan")}, ValueError, "bn_param['eps']"),
    ("eps-inf", {"eps": float("inf")}, ValueError, "bn_param['eps']"),
    ("eps-zero", {"eps": 0}, ValueError, "bn_param['eps']"),
    ("eps-string", {"eps": "1e-5"}, TypeError, "bn_param['eps']"),
    ("momentum-nan", {"momentum": float("nan")}, ValueError, "bn_param['momentum']"),
    ("momentum-above-1", {"momentum": 1.5}, ValueError, "bn_param['momentum']"),
    ("momentum-none", {"momentum": None}, TypeError, "bn_param['momentum']"),
    ("running-mean-shape", {"running_mean": np.zeros(5)}, ValueError, "bn_param['running_mean']"),
    ("running-var-2d", {"running_var": np.ones((3, 1))}, ValueError, "bn_param['running_var']"),
    ("running-mean-list", {"running_mean": [0.0, 0.0, 0.0]}, TypeError, "bn_param['running_mean']"),
    ("running-var-ints", {"running_var": np.ones(3, dtype=np.int64)}, TypeError, "bn_param['running_var']"),
]


@pytest.mark.parametrize("impl", list(BN_IMPLS))
@pytest.mark.parametrize("entries, exc, words", [pytest.param(*b[1:], id=b[0]) for b in BAD_BN_PARAMS])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm_refuses_a_bad_bn_param_naming_the_entry(rng, impl, entries, exc, words, mode):
    """eps and momentum are checked numbers, the running statistics float arrays of shape (C,),
    in every implementation and in both modes: nothing is computed or stored from a bad one
    (an eps of -1 or NaN used to give NaN outputs, a NaN momentum NaN statistics, a wrong-shaped
    running mean was stored)."""
    forward, spatial = BN_IMPLS[impl]
    x = rng.standard_normal((4, 3, 2, 2) if spatial else (4, 3))
    bn_param = dict({"mode": mode}, **entries)
    before = dict(bn_param)
    with pytest.raises(exc, match=words.replace("[", r"\[")):
        forward()(x, np.ones(3), np.zeros(3), bn_param)
    assert bn_param.keys() == before.keys() and all(bn_param[k] is before[k] for k in before)
