"""The shared layers (fastconv.layers, re-exported by naive and fast).

Gradients against centred numerical gradients in float64; values of
forwards, running statistics and test modes against formulas written out
here; and float32 kept end to end.
"""

import numpy as np
import pytest

import fastconv.fast as fast
import fastconv.layers as layers
import fastconv.naive as naive
from fastconv.testing import GRAD_TOL, numerical_gradient, rel_error

SHARED = [
    "affine_forward",
    "affine_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "dropout_forward",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "softmax_loss",
    "svm_loss",
]
# spatial_batchnorm_* are shared by naive (the numpy reference, here) but fast has its own
# Cython passes: tests/engine/test_equivalence.py compares the two. relu_* likewise: fast's
# run one kernel pass on threads (fastconv.engine.activations), compared below.


@pytest.mark.parametrize("name", SHARED)
def test_shared_layers_are_the_same_in_both_modules(name):
    assert getattr(naive, name) is getattr(layers, name)
    assert getattr(fast, name) is getattr(layers, name)


def test_spatial_batchnorm_reference_in_naive_own_kernels_in_fast():
    assert naive.spatial_batchnorm_forward is layers.spatial_batchnorm_forward
    assert fast.spatial_batchnorm_forward is not layers.spatial_batchnorm_forward


# ---------------------------------------------------------------------------- affine
def test_affine_forward_value(rng):
    x = rng.standard_normal((3, 2, 2, 2))
    w = rng.standard_normal((8, 5))
    b = rng.standard_normal(5)
    out, _ = layers.affine_forward(x, w, b)
    expected = np.array([[sum(x[n].ravel()[d] * w[d, m] for d in range(8)) + b[m] for m in range(5)] for n in range(3)])
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_affine_backward_numerical(rng):
    x = rng.standard_normal((4, 3, 2))
    w = rng.standard_normal((6, 5))
    b = rng.standard_normal(5)
    out, cache = layers.affine_forward(x, w, b)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = layers.affine_backward(dout, cache)

    def forward(_):
        return layers.affine_forward(x, w, b)[0]

    assert dx.shape == x.shape
    assert rel_error(dx, numerical_gradient(forward, x, dout)) < GRAD_TOL
    assert rel_error(dw, numerical_gradient(forward, w, dout)) < GRAD_TOL
    assert rel_error(db, numerical_gradient(forward, b, dout)) < GRAD_TOL


# ---------------------------------------------------------------------------- relu, sigmoid
def _away_from_zero(rng, shape, margin=0.05):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-300) * margin, x)


def test_relu(rng):
    x = _away_from_zero(rng, (3, 4, 5))
    out, cache = layers.relu_forward(x)
    np.testing.assert_array_equal(out, np.where(x > 0, x, 0))
    dout = rng.standard_normal(x.shape)
    numeric = numerical_gradient(lambda _: layers.relu_forward(x)[0], x, dout)
    assert rel_error(layers.relu_backward(dout, cache), numeric) < GRAD_TOL


def _relu_values(dtype, size, rng):
    """Random values and every special one: +-0.0, NaN of both signs, +-inf, subnormals."""
    x = rng.standard_normal(size).astype(dtype)
    special = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-310, -1e-310, 1e-40, -1e-40])
    x[: 3 * special.size] = np.tile(special.astype(dtype), 3)
    return x


@pytest.mark.parametrize("workers", [None, 2], ids=["openmp", "workers"])
@pytest.mark.parametrize("size", [37, 3 * 40_000 + 5], ids=["small", "threads"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_relu_fast_kernel_gives_the_reference_bits(monkeypatch, rng, dtype, size, workers):
    """fast.relu_* (one kernel pass, on OpenMP threads or fastconv's workers) give
    fastconv.layers' numpy results bit for bit: -0.0 to +0.0, NaN kept as it is, and a NaN
    or infinity in dout where x <= 0 dropped; on C-contiguous and transposed arrays."""
    from fastconv.engine import threads as _threads

    assert fast.relu_forward is not layers.relu_forward and naive.relu_forward is layers.relu_forward
    if workers:
        monkeypatch.setattr(_threads, "SINGLE_THREADED_KERNELS", True)
        monkeypatch.setattr(_threads, "blas_threads", lambda: workers)
    x = _relu_values(dtype, size, rng).reshape(1, -1)
    dout = _relu_values(dtype, size, rng)[::-1].reshape(1, -1)
    for a, d in ((x, dout), (np.asfortranarray(x.reshape(-1, 1) @ np.ones((1, 3), dtype)), np.ones((size, 3), dtype))):
        out, cache = fast.relu_forward(a)
        want, want_cache = layers.relu_forward(a)
        assert out.dtype == dtype and out.tobytes() == want.tobytes()
        d = np.where(np.arange(d.size).reshape(d.shape) % 7 == 0, np.nan, d).astype(dtype)  # NaN where x <= 0 too
        assert fast.relu_backward(d, cache).tobytes() == layers.relu_backward(d, want_cache).tobytes()


def test_relu_fast_kernel_check_can_fail():
    """The comparison above sees one flipped bit: -0.0 for +0.0 in the forward."""
    x = np.array([-0.0, 1.0, np.nan], np.float32)
    out, _ = fast.relu_forward(x)
    assert out.tobytes() == layers.relu_forward(x)[0].tobytes()
    assert np.array([-0.0, 1.0, np.nan], np.float32).tobytes() != out.tobytes()


def test_relu_fast_rejects_what_the_reference_rejects():
    with pytest.raises(TypeError, match="x"):
        fast.relu_forward(np.arange(4))  # integers
    _, cache = fast.relu_forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="dout"):
        fast.relu_backward(np.ones((3, 2)), cache)
    with pytest.raises(TypeError, match="dout"):
        fast.relu_backward(np.ones((2, 3), np.float32), cache)


def test_sigmoid(rng):
    x = rng.standard_normal((3, 4)) * 3
    out, cache = layers.sigmoid_forward(x)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-x)), rtol=1e-14)
    dout = rng.standard_normal(x.shape)
    numeric = numerical_gradient(lambda _: layers.sigmoid_forward(x)[0], x, dout)
    assert rel_error(layers.sigmoid_backward(dout, cache), numeric) < GRAD_TOL


def test_sigmoid_does_not_overflow():
    with np.errstate(over="raise", invalid="raise"):  # underflow to 0 is the right answer
        out, _ = layers.sigmoid_forward(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0])


# ---------------------------------------------------------------------------- dropout
def test_dropout_train_mode(rng):
    x = rng.standard_normal((200, 50)) + 3
    p = 0.3
    out, mask = layers.dropout_forward(x, p, train=True, rng=np.random.default_rng(7))
    kept = out != 0
    assert abs(kept.mean() - (1 - p)) < 0.02  # 10,000 units: the fraction kept is 0.7 +- 0.005
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-12)  # inverted dropout
    again, _ = layers.dropout_forward(x, p, train=True, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(again, out)  # same rng seed, same mask
    other, _ = layers.dropout_forward(x, p, train=True, rng=np.random.default_rng(8))
    assert not np.array_equal(other, out)


def test_dropout_backward_numerical(rng):
    x = rng.standard_normal((4, 6))
    out, cache = layers.dropout_forward(x, 0.5, train=True, rng=np.random.default_rng(3))
    dout = rng.standard_normal(x.shape)
    # a fixed seed gives the same mask at every call, so dropout is a fixed linear map
    numeric = numerical_gradient(
        lambda _: layers.dropout_forward(x, 0.5, train=True, rng=np.random.default_rng(3))[0], x, dout
    )
    assert rel_error(layers.dropout_backward(dout, cache), numeric) < GRAD_TOL


@pytest.mark.parametrize("train, p", [(False, 0.5), (True, 0.0)], ids=["test-mode", "p0"])
def test_dropout_identity(rng, train, p):
    x = rng.standard_normal((3, 4))
    out, cache = layers.dropout_forward(x, p, train=train, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out, x)
    assert out is not x
    dout = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(layers.dropout_backward(dout, cache), dout)


# ---------------------------------------------------------------------------- batchnorm
def test_batchnorm_train_forward(rng):
    x = rng.standard_normal((50, 4)) * 3 + 2
    gamma, beta = np.array([1.0, 2.0, 0.5, -1.0]), np.array([0.0, 1.0, -2.0, 3.0])
    bn_param = {"mode": "train"}
    out, _ = layers.batchnorm_forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), np.abs(gamma), rtol=1e-5)  # eps 1e-5 against variance ~9


def test_batchnorm_backward_numerical(rng):
    x = rng.standard_normal((6, 5)) * 2 + 1
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    out, cache = layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = layers.batchnorm_backward(dout, cache)

    def forward(_):
        return layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})[0]

    assert rel_error(dx, numerical_gradient(forward, x, dout)) < GRAD_TOL
    assert rel_error(dgamma, numerical_gradient(forward, gamma, dout)) < GRAD_TOL
    assert rel_error(dbeta, numerical_gradient(forward, beta, dout)) < GRAD_TOL


def test_batchnorm_running_stats_and_test_mode(rng):
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    bn_param = {"mode": "train", "momentum": 0.8, "eps": 1e-5}
    running_mean, running_var = np.zeros(3), np.ones(3)
    for _ in range(3):
        x = rng.standard_normal((20, 3)) * 2 + 5
        layers.batchnorm_forward(x, gamma, beta, bn_param)
        running_mean = 0.8 * running_mean + 0.2 * x.mean(axis=0)
        running_var = 0.8 * running_var + 0.2 * x.var(axis=0)
    np.testing.assert_allclose(bn_param["running_mean"], running_mean, rtol=1e-12)
    np.testing.assert_allclose(bn_param["running_var"], running_var, rtol=1e-12)
    bn_param["mode"] = "test"
    x = rng.standard_normal((7, 3))
    out, cache = layers.batchnorm_forward(x, gamma, beta, bn_param)
    expected = gamma * (x - running_mean) / np.sqrt(running_var + 1e-5) + beta
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    np.testing.assert_allclose(bn_param["running_mean"], running_mean, rtol=1e-12)  # unchanged by test mode
    with pytest.raises(ValueError, match="train"):
        layers.batchnorm_backward(np.ones_like(out), cache)


def test_spatial_batchnorm_equals_batchnorm_over_nhw(rng):
    x = rng.standard_normal((3, 4, 5, 2)) * 2 - 1
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    flat = x.transpose(0, 2, 3, 1).reshape(-1, 4)
    p_spatial, p_flat = {"mode": "train"}, {"mode": "train"}
    out, cache = layers.spatial_batchnorm_forward(x, gamma, beta, p_spatial)
    out_flat, cache_flat = layers.batchnorm_forward(flat, gamma, beta, p_flat)
    np.testing.assert_allclose(out, out_flat.reshape(3, 5, 2, 4).transpose(0, 3, 1, 2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p_spatial["running_mean"], p_flat["running_mean"], rtol=1e-12)
    np.testing.assert_allclose(p_spatial["running_var"], p_flat["running_var"], rtol=1e-12)
    # test mode, with the running statistics of that training step
    p_spatial["mode"] = p_flat["mode"] = "test"
    out_t, _ = layers.spatial_batchnorm_forward(x, gamma, beta, p_spatial)
    out_flat_t, _ = layers.batchnorm_forward(flat, gamma, beta, p_flat)
    np.testing.assert_allclose(out_t, out_flat_t.reshape(3, 5, 2, 4).transpose(0, 3, 1, 2), rtol=1e-12, atol=1e-12)


def test_spatial_batchnorm_backward_numerical(rng):
    x = rng.standard_normal((2, 3, 3, 2)) * 2 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    out, cache = layers.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = layers.spatial_batchnorm_backward(dout, cache)

    def forward(_):
        return layers.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})[0]

    assert rel_error(dx, numerical_gradient(forward, x, dout)) < GRAD_TOL
    assert rel_error(dgamma, numerical_gradient(forward, gamma, dout)) < GRAD_TOL
    assert rel_error(dbeta, numerical_gradient(forward, beta, dout)) < GRAD_TOL


# ---------------------------------------------------------------------------- losses
def test_softmax_loss(rng):
    scores = rng.standard_normal((6, 4)) * 2
    y = rng.integers(0, 4, size=6)
    loss, dscores = layers.softmax_loss(scores, y)
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(6), y])), rel=1e-12)
    numeric = numerical_gradient(lambda s: layers.softmax_loss(s, y)[0], scores)
    assert rel_error(dscores, numeric) < GRAD_TOL
    # uniform scores: loss log(K), whatever their size (no overflow)
    assert layers.softmax_loss(np.full((2, 5), 1000.0), np.array([0, 3]))[0] == pytest.approx(np.log(5))


def test_svm_loss(rng):
    N, K = 8, 5
    y = rng.integers(0, K, size=N)
    scores = rng.standard_normal((N, K)) * 2
    margins = scores - scores[np.arange(N), y][:, None] + 1
    margins[np.arange(N), y] = 10.0
    assert np.min(np.abs(margins)) > 1e-3, "test data must stay away from the hinge's kink"
    loss, dscores = layers.svm_loss(scores, y)
    expected = sum(max(0.0, scores[n, k] - scores[n, y[n]] + 1) for n in range(N) for k in range(K) if k != y[n]) / N
    assert loss == pytest.approx(expected, rel=1e-12)
    numeric = numerical_gradient(lambda s: layers.svm_loss(s, y)[0], scores)
    assert rel_error(dscores, numeric) < GRAD_TOL


# ---------------------------------------------------------------------------- float32 end to end
def _all_float32(*arrays):
    return all(a.dtype == np.float32 for a in arrays)


def test_float32_is_kept_by_every_shared_layer(rng):
    f32 = np.float32
    x = rng.standard_normal((4, 3, 2, 2)).astype(f32)
    w = rng.standard_normal((12, 5)).astype(f32)
    b = rng.standard_normal(5).astype(f32)
    out, cache = layers.affine_forward(x, w, b)
    assert _all_float32(out, *layers.affine_backward(np.ones_like(out), cache))

    for forward, backward in [
        (layers.relu_forward, layers.relu_backward),
        (layers.sigmoid_forward, layers.sigmoid_backward),
    ]:
        out, cache = forward(x)
        assert _all_float32(out, backward(np.ones_like(out), cache)), forward.__name__

    for train in (True, False):
        out, cache = layers.dropout_forward(x, 0.4, train=train, rng=np.random.default_rng(0))
        assert _all_float32(out, layers.dropout_backward(np.ones_like(out), cache))

    x2 = x.reshape(4, -1)
    g, be = np.ones(12, f32), np.zeros(12, f32)
    bn_param = {"mode": "train"}
    out, cache = layers.batchnorm_forward(x2, g, be, bn_param)
    assert _all_float32(out, *layers.batchnorm_backward(np.ones_like(out), cache))
    assert _all_float32(bn_param["running_mean"], bn_param["running_var"])
    bn_param["mode"] = "test"
    assert _all_float32(layers.batchnorm_forward(x2, g, be, bn_param)[0])

    g, be = np.ones(3, f32), np.zeros(3, f32)
    bn_param = {"mode": "train"}
    out, cache = layers.spatial_batchnorm_forward(x, g, be, bn_param)
    assert _all_float32(out, *layers.spatial_batchnorm_backward(np.ones_like(out), cache))
    assert _all_float32(bn_param["running_mean"], bn_param["running_var"])
    bn_param["mode"] = "test"
    assert _all_float32(layers.spatial_batchnorm_forward(x, g, be, bn_param)[0])

    scores = rng.standard_normal((4, 5)).astype(f32)
    y = np.array([0, 1, 4, 2])
    for loss_fn in (layers.softmax_loss, layers.svm_loss):
        loss, dscores = loss_fn(scores, y)
        assert isinstance(loss, float) and np.isfinite(loss)
        assert _all_float32(dscores), loss_fn.__name__


def test_float32_results_match_float64(rng):
    """float32 keeps its dtype and its accuracy: each layer agrees with its float64 run to ~1e-5."""
    x = rng.standard_normal((6, 8))
    w, b = rng.standard_normal((8, 3)), rng.standard_normal(3)
    gamma, beta = rng.standard_normal(8), rng.standard_normal(8)
    y = np.array([0, 1, 2, 0, 1, 2])

    def run(dtype):
        c = [a.astype(dtype) for a in (x, w, b, gamma, beta)]
        outs = []
        a, cache = layers.affine_forward(c[0], c[1], c[2])
        outs += [a, *layers.affine_backward(np.ones_like(a), cache)]
        s, cache = layers.sigmoid_forward(c[0])
        outs += [s, layers.sigmoid_backward(np.ones_like(s), cache)]
        bn, cache = layers.batchnorm_forward(c[0], c[3], c[4], {"mode": "train"})
        outs += [bn, *layers.batchnorm_backward(np.linspace(-1, 1, bn.size).reshape(bn.shape).astype(dtype), cache)]
        outs += [layers.softmax_loss(a, y)[1], layers.svm_loss(a, y)[1]]
        return outs

    for got, want in zip(run(np.float32), run(np.float64)):
        assert got.dtype == np.float32
        assert rel_error(got, want) < 1e-4
