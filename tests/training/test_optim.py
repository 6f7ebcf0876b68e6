"""Update rules against steps computed by hand."""

import numpy as np
import pytest

from fastconv import optim

W0 = np.array([1.0, 2.0])
DW = np.array([0.5, -1.0])


def test_sgd_one_step():
    w, config = optim.sgd(W0, DW, {"learning_rate": 0.1})
    np.testing.assert_allclose(w, [0.95, 2.1], rtol=0, atol=1e-15)
    assert config == {"learning_rate": 0.1}


def test_sgd_momentum_two_steps():
    config = {"learning_rate": 0.1, "momentum": 0.9}
    w, config = optim.sgd_momentum(W0, DW, config)
    # v = -0.1 * dw = [-0.05, 0.1]
    np.testing.assert_allclose(config["velocity"], [-0.05, 0.1], atol=1e-15)
    np.testing.assert_allclose(w, [0.95, 2.1], atol=1e-15)
    w, config = optim.sgd_momentum(w, DW, config)
    # v = 0.9 * [-0.05, 0.1] - 0.1 * [0.5, -1] = [-0.095, 0.19]
    np.testing.assert_allclose(config["velocity"], [-0.095, 0.19], atol=1e-15)
    np.testing.assert_allclose(w, [0.855, 2.29], atol=1e-15)


def test_rmsprop_two_steps():
    config = {"learning_rate": 0.1, "decay_rate": 0.9, "epsilon": 0.0}
    w, config = optim.rmsprop(W0, DW, config)
    # cache = 0.1 * dw**2 = [0.025, 0.1]; step = 0.1 * dw / sqrt(cache) = 0.1 * sign(dw) / sqrt(0.1)
    np.testing.assert_allclose(config["cache"], [0.025, 0.1], atol=1e-15)
    np.testing.assert_allclose(w, [1 - 0.31622776601683794, 2 + 0.31622776601683794], rtol=1e-14)
    dw2 = np.array([1.0, 1.0])
    w2, config = optim.rmsprop(w, dw2, config)
    # cache = 0.9 * [0.025, 0.1] + 0.1 * 1 = [0.1225, 0.19]
    np.testing.assert_allclose(config["cache"], [0.1225, 0.19], rtol=1e-14)
    np.testing.assert_allclose(w2, w - 0.1 / np.sqrt([0.1225, 0.19]), rtol=1e-14)


def test_adam_two_steps():
    config = {"learning_rate": 0.1, "epsilon": 0.0}
    w, config = optim.adam(W0, DW, config)
    # t = 1: m_hat = dw, v_hat = dw**2, so the step is lr * sign(dw)
    assert config["t"] == 1
    np.testing.assert_allclose(config["m"], [0.05, -0.1], atol=1e-15)
    np.testing.assert_allclose(config["v"], [0.00025, 0.001], atol=1e-15)
    np.testing.assert_allclose(w, [0.9, 2.1], atol=1e-15)
    w2, config = optim.adam(w, np.array([1.0, 1.0]), config)
    # m = 0.9 * [0.05, -0.1] + 0.1 = [0.145, 0.01]; v = 0.999 * [0.00025, 0.001] + 0.001
    m = np.array([0.145, 0.01])
    v = np.array([0.00124975, 0.001999])
    np.testing.assert_allclose(config["m"], m, rtol=1e-13)
    np.testing.assert_allclose(config["v"], v, rtol=1e-13)
    m_hat = m / (1 - 0.9**2)
    v_hat = v / (1 - 0.999**2)
    np.testing.assert_allclose(w2, w - 0.1 * m_hat / np.sqrt(v_hat), rtol=1e-13)
    # the second component: v_hat = 0.001999 / 0.001999 = 1 and m_hat = 0.01 / 0.19
    assert w2[1] == pytest.approx(2.1 - 0.1 * 0.01 / 0.19, rel=1e-12)


@pytest.mark.parametrize("rule", ["sgd", "momentum", "rmsprop", "adam"])
def test_float32_kept_and_inputs_untouched(rule):
    update = optim.get_update_rule(rule)
    w = np.array([[1.0, -2.0], [0.5, 3.0]], dtype=np.float32)
    dw = np.array([[0.1, 0.2], [-0.3, 0.4]], dtype=np.float32)
    w_copy, dw_copy = w.copy(), dw.copy()
    config = None
    for _ in range(3):
        nw, config = update(w, dw, config)
        assert nw.dtype == np.float32 and nw.shape == w.shape
        for value in config.values():
            if isinstance(value, np.ndarray):
                assert value.dtype == np.float32
    np.testing.assert_array_equal(w, w_copy)
    np.testing.assert_array_equal(dw, dw_copy)
    assert not np.array_equal(nw, w)


def test_defaults_filled_in():
    _, config = optim.adam(W0, DW)
    assert config["learning_rate"] == 1e-3 and config["beta1"] == 0.9 and config["beta2"] == 0.999
    _, config = optim.sgd(W0, DW)
    assert config["learning_rate"] == 1e-2


def test_bad_arguments():
    with pytest.raises(ValueError, match="update_rule"):
        optim.get_update_rule("lbfgs")
    with pytest.raises(ValueError, match="dw"):
        optim.sgd(W0, np.zeros(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        optim.sgd(np.array([1, 2]), np.array([1, 2]))
    with pytest.raises(ValueError, match="learning_rate"):
        optim.sgd(W0, DW, {"learning_rate": float("nan")})
    with pytest.raises(ValueError, match="velocity"):
        optim.sgd_momentum(W0, DW, {"velocity": np.zeros(5)})
    with pytest.raises(ValueError, match="'t'"):
        optim.adam(W0, DW, {"t": -1})
    with pytest.raises(TypeError, match="config"):
        optim.sgd(W0, DW, [0.1])


def _reference_step(rule, w, dw, state, t):
    """The docstring's formulas with fresh arrays (the rules update their state in place)."""
    if rule == "momentum":
        v = 0.9 * state["velocity"] - 1e-2 * dw
        return w + v, {"velocity": v}
    if rule == "rmsprop":
        c = 0.99 * state["cache"] + (1 - 0.99) * (dw * dw)
        return w - 1e-2 * dw / (np.sqrt(c) + 1e-8), {"cache": c}
    m = 0.9 * state["m"] + (1 - 0.9) * dw
    v = 0.999 * state["v"] + (1 - 0.999) * (dw * dw)
    return w - 1e-3 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8), {"m": m, "v": v}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("rule", ["momentum", "rmsprop", "adam"])
def test_in_place_state_gives_the_formulas_bit_for_bit(rule, dtype):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((7, 5)).astype(dtype)
    keys = {"momentum": ["velocity"], "rmsprop": ["cache"], "adam": ["m", "v"]}[rule]
    ref_w, ref_state, config = w, {k: np.zeros_like(w) for k in keys}, None
    for t in range(1, 5):
        dw = rng.standard_normal(w.shape).astype(dtype)
        w, config = optim.get_update_rule(rule)(w, dw, config)
        ref_w, ref_state = _reference_step(rule, ref_w, dw, ref_state, t)
        assert w.dtype == dtype
        np.testing.assert_array_equal(w, ref_w)
        for k in keys:
            np.testing.assert_array_equal(config[k], ref_state[k])


def test_a_read_only_state_array_is_copied_not_written():
    m = np.zeros_like(W0)
    m.flags.writeable = False
    _, config = optim.adam(W0, DW, {"m": m})
    assert config["m"] is not m and np.all(m == 0) and np.any(config["m"] != 0)
