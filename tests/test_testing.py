"""fastconv.testing, the public checking module: each check passes on right code, fails on
a planted bug (the test that shows it can fail), refuses bad input in one line naming the
argument, and leaves the caller's arrays byte for byte as they were."""

import io
import re
import subprocess
import sys
import textwrap
from contextlib import redirect_stdout

import numpy as np
import pytest

import fastconv.fast as fast
import fastconv.naive as naive
from fastconv import layers
from fastconv import testing as T
from fastconv.compat import cs231n
from fastconv.compat import cs231n_gradient_check as gc


def _snapshot(*arrays):
    return [None if a is None else (a.shape, a.dtype, a.tobytes()) for a in arrays]


# ------------------------------------------------------------------ tolerances, rel_error, assert_close
def test_tolerance_table_and_dtype_errors():
    assert T.tol(np.float32) == T.TOL[np.float32] == 1e-4 and T.tol("float64") == 1e-9
    with pytest.raises(TypeError, match="dtype"):
        T.tol(np.float16)
    with pytest.raises(ValueError, match=r"shape \(2,\).*\(3,\)"):
        T.rel_error(np.zeros(2), np.zeros(3))
    assert np.isnan(T.rel_error(np.array([np.nan]), np.array([1.0])))
    assert T.rel_error(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == pytest.approx(0.25)
    assert T.rel_error(np.array([1e-3]), np.zeros(1)) == pytest.approx(1e-3)  # absolute on a zero reference


def test_assert_close_names_the_array_and_the_worst_element():
    ref = np.zeros((2, 3, 4))
    ref[...] = 1.0
    T.assert_close(ref + 1e-12, ref, np.float64, "dx")
    bad = ref.copy()
    bad[1, 2, 3] = 1.5
    with pytest.raises(AssertionError, match=r"dx: relative error 0.5 >= 1e-09, worst element \[1, 2, 3\]: 1.5 vs 1"):
        T.assert_close(bad, ref, np.float64, "dx")
    with pytest.raises(AssertionError, match=r"out: dtype float32 != float64"):
        T.assert_close(ref.astype(np.float32), ref, np.float64, "out")
    with pytest.raises(AssertionError, match=r"dw: shape \(2, 3\) != \(2, 3, 4\)"):
        T.assert_close(ref[..., 0], ref, None, "dw")
    with pytest.raises(AssertionError, match="expected an ndarray, got list"):
        T.assert_close([1.0], np.ones(1))
    nan = ref.copy()
    nan[0, 1, 0] = np.nan
    with pytest.raises(AssertionError, match=r"worst element \[0, 1, 0\]: nan"):
        T.assert_close(nan, ref)


# ------------------------------------------------------------------ numerical gradients
def test_numerical_gradient_of_one_array_in_place_and_restored(rng):
    x = rng.standard_normal((3, 4))
    dout = rng.standard_normal((3, 4))
    before = _snapshot(x)
    grad = T.numerical_gradient(lambda _: np.sin(x) * x, x, dout)  # reads x through the closure
    assert T.rel_error(grad, (np.cos(x) * x + np.sin(x)) * dout) < T.GRAD_TOL
    assert _snapshot(x) == before

    def scribbles(a):  # a function that writes into its argument: x still comes back byte for byte
        a *= 1.0000001
        return float(np.sum(a))

    T.numerical_gradient(scribbles, x)
    assert _snapshot(x) == before


def test_numerical_gradient_refuses_float32_in_place_and_bad_arguments():
    with pytest.raises(TypeError, match="float32.*float64"):
        T.numerical_gradient(np.sum, np.ones(3, np.float32))
    read_only = np.ones(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        T.numerical_gradient(np.sum, read_only)
    with pytest.raises(TypeError, match="f must be callable"):
        T.numerical_gradient(None, np.ones(3))
    with pytest.raises(ValueError, match="h must be"):
        T.numerical_gradient(np.sum, np.ones(3), h=0)
    with pytest.raises(ValueError, match="kinks must be"):
        T.numerical_gradient(np.sum, np.ones(3), kinks="maybe")
    with pytest.raises(ValueError, match=r"f returned an array of shape \(3,\): give dout"):
        T.numerical_gradient(lambda a: a * 2, np.ones(3))
    with pytest.raises(ValueError, match=r"dout has shape \(2,\)"):
        T.numerical_gradient(lambda a: a * 2, np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="wrt: 'z'"):
        T.numerical_gradient(lambda a, b: a * b, (np.ones(3), np.ones(3)), np.ones(3), wrt="z")


def test_numerical_gradient_of_several_arrays_works_on_float64_copies(rng):
    a32 = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4, 2))
    dout = rng.standard_normal((3, 2))
    before = _snapshot(a32, b)
    da, db = T.numerical_gradient(lambda a, b: a @ b, (a32, b), dout)
    assert da.dtype == db.dtype == np.float64
    assert T.rel_error(da, dout @ b.T) < T.GRAD_TOL
    assert T.rel_error(db, a32.astype(np.float64).T @ dout) < T.GRAD_TOL
    assert _snapshot(a32, b) == before
    grads = T.numerical_gradient(lambda a, b: a @ b, {"a": a32, "b": b}, dout, wrt="b")
    assert grads["a"] is None and T.rel_error(grads["b"], db) < 1e-12


def test_kink_guard_reports_and_skips_a_relu_kink(rng):
    x = rng.standard_normal(6)
    x[2] = 0.0  # exactly on the kink
    x[4] = 4e-6  # within 2h of it
    with pytest.raises(ValueError, match=r"2 element\(s\).*inputs\[2\], inputs\[4\]"):
        T.numerical_gradient(lambda a: np.maximum(a, 0), x, np.ones(6), kinks="raise")
    grad = T.numerical_gradient(lambda a: np.maximum(a, 0), x, np.ones(6), kinks="skip")
    assert np.isnan(grad[[2, 4]]).all()
    np.testing.assert_allclose(np.delete(grad, [2, 4]), (np.delete(x, [2, 4]) > 0).astype(float), atol=1e-9)
    # without the guard the elements at the kink give half slopes: what the guard is for
    unguarded = T.numerical_gradient(lambda a: np.maximum(a, 0), x, np.ones(6))
    assert unguarded[2] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "f",
    [np.exp, np.tanh, lambda a: np.sin(30 * a), lambda a: 1e6 * a**3, np.log1p],
    ids=["exp", "tanh", "sin30", "cube-1e6", "log1p"],
)
def test_kink_guard_does_not_flag_smooth_functions(rng, f):
    x = rng.uniform(0.1, 2.0, size=50)
    T.numerical_gradient(f, x, rng.standard_normal(50), kinks="raise")


def test_directional_derivative_is_the_gradient_along_the_direction(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    va, vb = rng.standard_normal(a.shape), rng.standard_normal(b.shape)
    dout = rng.standard_normal((3, 2))
    got = T.directional_derivative(lambda a, b: np.tanh(a @ b), (a, b), (va, vb), dout)
    t = 1 - np.tanh(a @ b) ** 2
    want = np.vdot((dout * t) @ b.T, va) + np.vdot(a.T @ (dout * t), vb)
    assert abs(got - want) / abs(want) < 1e-8
    with pytest.raises(ValueError, match="directions must be a tuple"):
        T.directional_derivative(lambda a, b: a @ b, (a, b), (va,), dout)


# ------------------------------------------------------------------ check_gradients
def _conv_inputs(rng, dtype=np.float64):
    return (
        rng.standard_normal((2, 2, 5, 4)).astype(dtype),
        rng.standard_normal((3, 2, 3, 2)).astype(dtype),
        rng.standard_normal(3).astype(dtype),
    )


def test_check_gradients_passes_on_the_reference_and_names_the_arguments(rng):
    inputs = _conv_inputs(rng)
    before = _snapshot(*inputs)
    report = T.check_gradients(naive.conv_forward, naive.conv_backward, inputs, kwargs=dict(stride=(2, 1), pad=1))
    assert [r.name for r in report.rows] == ["x", "w", "b"] and report.ok
    assert all(r.error < T.GRAD_TOL and r.checked == a.size for r, a in zip(report.rows, inputs))
    assert "x" in str(report) and "< 1e-06" in str(report)
    assert _snapshot(*inputs) == before


def _scaled_dw(dout, cache):
    dx, dw, db = naive.conv_backward(dout, cache)
    return dx, dw * 1.001, db  # a gradient 0.1% off


def _dx_never_written(dout, cache):
    dx, dw, db = naive.conv_backward(dout, cache)
    return np.zeros_like(dx), dw, db


@pytest.mark.parametrize("directions", [None, 3], ids=["elements", "directions"])
def test_check_gradients_fails_with_a_table_naming_the_wrong_argument(rng, directions):
    inputs = _conv_inputs(rng)
    with pytest.raises(T.GradientCheckError) as info:
        T.check_gradients(naive.conv_forward, _scaled_dw, inputs, kwargs=dict(pad=1), directions=directions)
    table = str(info.value)
    assert re.search(r"^w\s+\S+\s+< 1e-06\s+\d+\s+0\s+FAIL$", table, re.M), table
    assert re.search(r"^x\s+\S+\s+< 1e-06\s+\d+\s+0\s+ok$", table, re.M), table
    report = T.check_gradients(
        naive.conv_forward, _dx_never_written, inputs, directions=directions, raise_on_failure=False
    )
    assert not report.ok and not report["x"].ok and report["w"].ok and report["x"].error > 0.1


def test_check_gradients_reports_a_gradient_of_the_wrong_shape_or_missing(rng):
    inputs = _conv_inputs(rng)
    report = T.check_gradients(
        naive.conv_forward,
        lambda d, c: (naive.conv_backward(d, c)[0][:, :, :-1], None, None),
        inputs,
        raise_on_failure=False,
    )
    assert "gradient shape (2, 2, 4, 4) != input shape (2, 2, 5, 4)" in report["x"].problem
    assert report["w"].problem == "backward returned None"


def test_check_gradients_bad_input_errors_name_the_argument(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(TypeError, match="forward must be callable"):
        T.check_gradients("relu", layers.relu_backward, (x,))
    with pytest.raises(TypeError, match=r"forward must return \(out, cache\), got ndarray"):
        T.check_gradients(lambda x: x * 2, layers.relu_backward, (x,))
    with pytest.raises(TypeError, match=r"forward must return \(out, cache\), got tuple of length 3"):
        T.check_gradients(lambda x: (x, x, x), layers.relu_backward, (x,))
    with pytest.raises(TypeError, match="inputs must be a tuple"):
        T.check_gradients(layers.relu_forward, layers.relu_backward, x)
    with pytest.raises(TypeError, match="float16"):
        T.check_gradients(layers.relu_forward, layers.relu_backward, (x.astype(np.float16),))
    with pytest.raises(ValueError, match=r"backward returned 1 gradient\(s\).*none for w"):
        T.check_gradients(naive.conv_forward, lambda d, c: naive.conv_backward(d, c)[0], _conv_inputs(rng)[:2])
    with pytest.raises(ValueError, match="not deterministic"):
        T.check_gradients(lambda x: (x * np.random.rand(), None), lambda d, c: d, (x,))
    with pytest.raises(ValueError, match=r"dout has shape \(3,\)"):
        T.check_gradients(layers.relu_forward, layers.relu_backward, (x,), dout=np.ones(3))
    with pytest.raises(ValueError, match="tolerance"):
        T.check_gradients(layers.relu_forward, layers.relu_backward, (x,), tolerance=0)


def test_check_gradients_upgrades_float32_with_a_note_and_never_touches_inputs(rng):
    inputs = _conv_inputs(rng, np.float32)
    before = _snapshot(*inputs)

    def forward_that_scribbles(x, w, b):  # a layer that writes into its input
        x += 1.0
        x -= 1.0
        return naive.conv_forward(x, w, b)

    report = T.check_gradients(forward_that_scribbles, naive.conv_backward, inputs)
    assert report.ok
    assert any("x, w, b upgraded from float32 to float64" in n for n in report.notes)
    assert _snapshot(*inputs) == before


def test_check_gradients_skips_kinks_and_fails_without_the_guard(rng):
    x = rng.standard_normal((3, 4))
    x[0, 0] = 0.0
    report = T.check_gradients(layers.relu_forward, layers.relu_backward, (x,))
    assert report.ok and report["x"].skipped == 1 and report["x"].checked == 11
    with pytest.raises(T.GradientCheckError):
        T.check_gradients(layers.relu_forward, layers.relu_backward, (x,), kinks="ignore")
    with pytest.raises(ValueError, match=r"x\[0, 0\]"):
        T.check_gradients(layers.relu_forward, layers.relu_backward, (x,), kinks="raise")


def test_check_gradients_max_pool_ties_are_kinks(rng):
    x = rng.standard_normal((1, 1, 4, 4))
    x[0, 0, 0, 1] = x[0, 0, 0, 0] = 5.0  # a tie in the first window
    report = T.check_gradients(naive.max_pool_forward, naive.max_pool_backward, (x,), kwargs=dict(kernel_size=2))
    assert report.ok and report["x"].skipped == 2


# ------------------------------------------------------------------ the loss convention
def _tiny_model(dtype=np.float64):
    from fastconv import models

    return models.ConvNet1(
        input_shape=(1, 5, 5), num_filters=2, filter_size=3, hidden_dim=4, num_classes=3, dtype=dtype, reg=0.1, seed=2
    )


class _WrongGrad:
    """A model whose W2 gradient is 1% off."""

    def __init__(self, model):
        self.model, self.params = model, model.params

    def loss(self, X, y):
        loss, grads = self.model.loss(X, y)
        return loss, {**grads, "W2": grads["W2"] * 1.01}


def test_check_model_gradients_passes_fails_and_restores_the_parameters(rng):
    model = _tiny_model()
    X, y = rng.standard_normal((3, 1, 5, 5)), rng.integers(0, 3, 3)
    before = {k: _snapshot(v) for k, v in model.params.items()}
    report = T.check_gradients(model, X, y)  # the CS231n convention, through check_gradients
    assert report.ok and {r.name for r in report.rows} == set(model.params)
    assert {k: _snapshot(v) for k, v in model.params.items()} == before
    with pytest.raises(T.GradientCheckError, match=r"(?m)^W2 .*FAIL$"):
        T.check_model_gradients(_WrongGrad(model), X, y, params=["W1", "W2"])
    assert T.check_model_gradients(model, X, y, directions=2).ok
    with pytest.raises(T.GradientCheckError, match=r"(?m)^W2 .*FAIL$"):
        T.check_model_gradients(_WrongGrad(model), X, y, params="W2", directions=2)
    assert {k: _snapshot(v) for k, v in model.params.items()} == before


def test_check_model_gradients_refuses_float32_and_bad_models(rng):
    X, y = rng.standard_normal((2, 1, 5, 5)), np.array([0, 1])
    with pytest.raises(TypeError, match=r"model.params\['W1'\] is float32.*dtype=np.float64"):
        T.check_model_gradients(_tiny_model(np.float32), X, y)
    with pytest.raises(TypeError, match="model must have a loss"):
        T.check_model_gradients(object(), X, y)
    with pytest.raises(ValueError, match="params: 'W9'"):
        T.check_model_gradients(_tiny_model(), X, y, params=["W9"])
    with pytest.raises(TypeError, match="takes no kwargs or dout"):
        T.check_gradients(_tiny_model(), X, y, kwargs={"reg": 0})


# ------------------------------------------------------------------ check_equivalent
def _conv_with(bug):
    def backward(dout, cache):
        return bug(*naive.conv_backward(dout, cache))

    return (naive.conv_forward, backward)


def test_check_equivalent_passes_fast_against_naive():
    configs = T.conv_configs(0, dtypes=(np.float32,))[:4] + T.pool_configs(0)[:4]
    report = T.check_equivalent(fast, naive, configs)
    assert report.ok and report.checked == 8 and set(report.worst) == {"out", "dx", "dw", "db"}


def test_check_equivalent_names_every_mismatching_configuration():
    configs = T.conv_configs(0)[:6]
    with pytest.raises(T.EquivalenceError) as info:
        T.check_equivalent(_conv_with(lambda dx, dw, db: (dx, dw * 1.001, db)), naive, configs)
    message = str(info.value)
    assert message.startswith("6 of 6 configurations differ from the reference")
    for config in configs:
        assert re.search(re.escape(str(config)) + r"\s+dw\s+relative error", message), config
    assert "conv-k3x5-s2-p1-d1-g2-n2-c4f2-x7x9-float32" in message


def test_check_equivalent_reports_exceptions_dtypes_none_and_inputs_changed():
    config = T.conv_configs(0)[0]  # float32, with a bias
    nobias = next(c for c in T.conv_configs(0) if not c.bias)

    def raises(*args, **kwargs):
        raise IndexError("index 7 is out of bounds")

    def float64_out(x, w, b, **kw):
        out, cache = naive.conv_forward(x, w, b, **kw)
        return out.astype(np.float64), cache

    def scribbles(x, w, b, **kw):
        x[0, 0, 0, 0] += 1
        return naive.conv_forward(x, w, b, **kw)

    cases = [
        ((raises, naive.conv_backward), config, "forward", "raised IndexError: index 7 is out of bounds"),
        ((float64_out, naive.conv_backward), config, "out", "dtype float64 != float32"),
        ((lambda *a, **k: np.zeros(3), naive.conv_backward), config, "forward", "must return (out, cache)"),
        (
            _conv_with(lambda dx, dw, db: (dx, dw, np.zeros(dw.shape[0], dw.dtype))),
            nobias,
            "db",
            "expected None (no bias)",
        ),
        ((scribbles, naive.conv_backward), config, "x", "modified in place by the candidate"),
    ]
    for candidate, cfg, what, problem in cases:
        report = T.check_equivalent(candidate, naive, [cfg], raise_on_failure=False)
        assert any(m.what == what and problem in m.problem and m.config == str(cfg) for m in report.mismatches), (
            problem,
            report,
        )


def test_check_equivalent_bad_arguments():
    configs = T.conv_configs(0)[:1]
    with pytest.raises(TypeError, match="candidate must be a"):
        T.check_equivalent(np, naive, configs)
    with pytest.raises(TypeError, match="configs must be a list"):
        T.check_equivalent(fast, naive, [(1, 2)])
    with pytest.raises(ValueError, match="configs is empty"):
        T.check_equivalent(fast, naive, [])
    with pytest.raises(ValueError, match="tolerance"):
        T.check_equivalent(fast, naive, configs, tolerance=-1)


def test_check_equivalent_never_touches_the_configs_arrays():
    config = T.conv_configs(0)[0]
    before = _snapshot(*config.arrays())

    def scribbles(x, w, b, **kw):
        x[...] = 0
        return naive.conv_forward(x, w, b, **kw)

    T.check_equivalent((scribbles, naive.conv_backward), naive, [config], raise_on_failure=False)
    assert _snapshot(*config.arrays()) == before  # the data are rebuilt from the id, identical


# ------------------------------------------------------------------ the grids
def test_grids_are_deterministic_hold_the_awkward_cases_and_fit():
    convs, pools = T.conv_configs(30, seed=5), T.pool_configs(20, seed=5)
    assert convs == T.conv_configs(30, seed=5) and convs != T.conv_configs(30, seed=6)
    assert len(convs) == 60 and len(pools) == 80
    assert [str(c) for c in T.conv_configs(0)][::2] == [str(T.ConvConfig(*g, dtype=np.float32)) for g in T.AWKWARD_CONV]
    assert len({str(c) for c in convs + pools}) == len(convs + pools)
    for c in convs:
        assert re.fullmatch(
            r"conv-k\d+x\d+-s[\dx]+-p[\dx]+-d[\dx]+-g\d-n\d-c\d+f\d+-x\d+x\d+(-nobias)?-float(32|64)", str(c)
        ), c
        assert min(c.out_hw) >= 1
    for c in pools:
        assert re.fullmatch(r"(max|avg)pool-k\d+x\d+-s(None|[\dx]+)-p[\dx]+-n\d-c\d-x\d+x\d+-float(32|64)", str(c))
        assert min(c.out_hw) >= 1
    assert any(c.kernel[0] > c.H for c in convs) and any(p > k // 2 for c in convs for p, k in zip(c.pad, c.kernel))


def test_grid_flags_shrink_the_space():
    convs = T.conv_configs(
        40,
        dilation=False,
        groups=False,
        per_axis=False,
        padding=False,
        optional_bias=False,
        algorithm="im2col",
        dtypes=(np.float64,),
    )
    assert all(c.dilation == (1, 1) and c.groups == 1 and c.pad == (0, 0) and c.bias for c in convs)
    assert all(c.stride[0] == c.stride[1] for c in convs) and any(c.kernel[0] != c.kernel[1] for c in convs)
    assert all(set(c.kwargs) == {"stride", "pad", "algorithm"} and str(c).endswith("-im2col-float64") for c in convs)
    pools = T.pool_configs(30, kinds=("max",), padding=False, per_axis=False, default_stride=False)
    assert all(p.pad == (0, 0) and p.stride is not None and p.stride[0] == p.stride[1] for p in pools)
    for bad, match in (({"n": -1}, "n must be"), ({"seed": "x"}, "seed"), ({"n": 2.5}, "n must be")):
        with pytest.raises(ValueError, match=match):
            T.conv_configs(**bad)
    with pytest.raises(TypeError, match="dtype"):
        T.conv_configs(dtypes=(np.int32,))
    with pytest.raises(ValueError, match="kinds"):
        T.pool_configs(kinds="max")


def test_hypothesis_strategies_draw_fitting_configs_and_shrink():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings

    @settings(max_examples=25, deadline=None, database=None)
    @given(T.conv_config_strategy(), T.pool_config_strategy())
    def run(conv, pool):
        assert min(conv.out_hw) >= 1 and min(pool.out_hw) >= 1
        T.check_equivalent(fast, naive, [conv, pool])

    run()
    # a failure shrinks to the smallest configuration that shows it
    smallest = hypothesis.find(
        T.conv_config_strategy(), lambda c: c.stride[0] > 1, settings=settings(database=None, max_examples=500)
    )
    assert smallest.stride[0] == 2 and (smallest.N, smallest.C, smallest.F, smallest.kernel) == (1, 1, 1, (1, 1))
    # the max pool that assigns instead of adding shrinks to one plane with overlapping windows
    smallest = hypothesis.find(
        T.pool_config_strategy(kinds=("max",), padding=False),
        lambda c: not T.check_equivalent(_ASSIGNING_POOL, naive, [c], raise_on_failure=False).ok,
        settings=settings(database=None, max_examples=500),
    )
    assert smallest.N == smallest.C == 1
    assert any(s < k for s, k in zip(smallest.effective_stride, smallest.kernel)), smallest


def _assigning_pool_forward(x, kernel_size, stride=None, pad=0):
    kh, kw = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
    sh, sw = (kh, kw) if stride is None else (stride if isinstance(stride, tuple) else (stride, stride))
    out = np.empty((*x.shape[:2], (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1), x.dtype)
    for i, j in np.ndindex(out.shape[2:]):
        out[:, :, i, j] = x[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw].max(axis=(2, 3))
    return out, (x, kh, kw, sh, sw)


def _assigning_pool_backward(dout, cache):
    x, kh, kw, sh, sw = cache
    dx = np.zeros_like(x)
    for i, j in np.ndindex(dout.shape[2:]):
        window = x[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
        mask = window == window.max(axis=(2, 3), keepdims=True)
        dx[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw] = (
            mask * dout[:, :, i : i + 1, j : j + 1]
        )  # = instead of +=
    return dx


_ASSIGNING_POOL = (_assigning_pool_forward, _assigning_pool_backward)


# ------------------------------------------------------------------ adjoint
def test_check_adjoint_passes_on_a_transpose_and_fails_on_a_wrong_one(rng):
    a = rng.standard_normal((5, 7))
    err = T.check_adjoint(lambda x: a @ x, lambda y: a.T @ y, (7,), (5,))
    assert err < 1e-14
    wrong = a.T.copy()
    wrong[2, 3] = 0  # one entry of the transpose forgotten
    with pytest.raises(T.AdjointError, match="relative error"):
        T.check_adjoint(lambda x: a @ x, lambda y: wrong @ y, (7,), (5,))
    with pytest.raises(ValueError, match=r"forward\(x\) has shape \(5,\), but y has shape \(4,\)"):
        T.check_adjoint(lambda x: a @ x, lambda y: a.T @ y, (7,), (4,))
    with pytest.raises(ValueError, match=r"adjoint\(y\) has shape \(5,\), but x has shape \(7,\)"):
        T.check_adjoint(lambda x: a @ x, lambda y: y, (7,), (5,))
    with pytest.raises(TypeError, match="adjoint must be callable"):
        T.check_adjoint(lambda x: a @ x, None, (7,), (5,))
    x = rng.standard_normal(7)
    before = _snapshot(x)
    T.check_adjoint(lambda v: a @ v, lambda y: a.T @ y, x, (5,))
    assert _snapshot(x) == before


# ------------------------------------------------------------------ the pytest plugin
def test_pytest_plugin_runs_a_test_over_the_grids(tmp_path):
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent("""
        import pytest
        import fastconv.naive as naive
        from fastconv.testing import check_equivalent, conv_configs

        def test_conv(conv_config):
            check_equivalent(naive, naive, [conv_config])

        def test_pool(pool_config):
            check_equivalent(naive, naive, [pool_config])

        @pytest.mark.parametrize("conv_config", conv_configs(0)[:3], ids=str)  # its own grid wins
        def test_own_grid(conv_config):
            check_equivalent(naive, naive, [conv_config])
    """)
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nfastconv_conv_configs = 12\nfastconv_pool_configs = 8\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "fastconv.testing", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{12 * 2 + 8 * 2 * 2 + 3} passed" in proc.stdout, proc.stdout


# ------------------------------------------------------------------ CS231n's checking names
def test_cs231n_names_come_with_the_import_swap():
    ns = {}
    exec("from fastconv.compat.cs231n import *", ns)
    for name in ("eval_numerical_gradient", "eval_numerical_gradient_array", "grad_check_sparse", "rel_error"):
        assert ns[name] is getattr(gc, name)


def test_cs231n_checking_cells_run_unchanged(rng):
    """The conv and max-pool cells of CS231n's ConvolutionalNetworks notebook, as written there."""
    np.random.seed(231)
    x = np.random.randn(4, 3, 5, 5)
    w = np.random.randn(2, 3, 3, 3)
    b = np.random.randn(
        2,
    )
    dout = np.random.randn(4, 2, 5, 5)
    conv_param = {"stride": 1, "pad": 1}
    before = _snapshot(x, w, b)
    dx_num = cs231n.eval_numerical_gradient_array(lambda x: cs231n.conv_forward_naive(x, w, b, conv_param)[0], x, dout)
    dw_num = cs231n.eval_numerical_gradient_array(lambda w: cs231n.conv_forward_naive(x, w, b, conv_param)[0], w, dout)
    db_num = cs231n.eval_numerical_gradient_array(lambda b: cs231n.conv_forward_naive(x, w, b, conv_param)[0], b, dout)
    out, cache = cs231n.conv_forward_naive(x, w, b, conv_param)
    dx, dw, db = cs231n.conv_backward_naive(dout, cache)
    # the notebook's band: "around e-8 or less" (elementwise, so small entries weigh in)
    assert cs231n.rel_error(dx, dx_num) < 1e-7 and cs231n.rel_error(dw, dw_num) < 1e-7
    assert cs231n.rel_error(db, db_num) < 1e-7
    assert _snapshot(x, w, b) == before

    x = np.random.randn(3, 2, 8, 8)
    dout = np.random.randn(3, 2, 4, 4)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    dx_num = cs231n.eval_numerical_gradient_array(lambda x: cs231n.max_pool_forward_naive(x, pool_param)[0], x, dout)
    out, cache = cs231n.max_pool_forward_naive(x, pool_param)
    dx = cs231n.max_pool_backward_naive(dout, cache)
    assert cs231n.rel_error(dx, dx_num) < 1e-11


def test_cs231n_eval_numerical_gradient_perturbs_the_model_in_place_and_prints(rng):
    """The notebook's model check: f ignores its argument and reads model.params[name]."""
    model = _tiny_model()
    X, y = rng.standard_normal((2, 1, 5, 5)), np.array([0, 2])
    loss, grads = model.loss(X, y)
    before = _snapshot(model.params["b2"])
    f = lambda _: model.loss(X, y)[0]  # noqa: E731 (as in the notebook)
    with redirect_stdout(io.StringIO()) as printed:
        param_grad_num = cs231n.eval_numerical_gradient(f, model.params["b2"], verbose=True, h=1e-6)
    assert cs231n.rel_error(param_grad_num, grads["b2"]) < 1e-6
    lines = printed.getvalue().splitlines()
    assert len(lines) == model.params["b2"].size and lines[0].startswith("(0,) ")
    assert float(lines[1].split()[1]) == pytest.approx(param_grad_num[1])
    assert _snapshot(model.params["b2"]) == before
    with redirect_stdout(io.StringIO()) as printed:
        cs231n.eval_numerical_gradient(f, model.params["b2"], verbose=False)
    assert printed.getvalue() == ""


def test_cs231n_checking_cell_catches_a_wrong_backward(rng):
    """The notebook's cell fails (a large rel_error) on a dw that is 1% off."""
    x, w, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)
    conv_param = {"stride": 2, "pad": 1}
    out, cache = cs231n.conv_forward_naive(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape)
    dw = cs231n.conv_backward_naive(dout, cache)[1] * 1.01
    dw_num = cs231n.eval_numerical_gradient_array(lambda w: cs231n.conv_forward_naive(x, w, b, conv_param)[0], w, dout)
    assert cs231n.rel_error(dw, dw_num) > 4e-3


def test_cs231n_grad_check_sparse_prints_each_check(rng):
    W = rng.standard_normal((4, 3))
    before = _snapshot(W)
    f = lambda w: float(np.sum(np.tanh(w) ** 2))  # noqa: E731
    good = 2 * np.tanh(W) * (1 - np.tanh(W) ** 2)
    with redirect_stdout(io.StringIO()) as printed:
        cs231n.grad_check_sparse(f, W, good, num_checks=5)
    lines = printed.getvalue().splitlines()
    assert len(lines) == 5
    pattern = r"numerical: -?\d+\.\d{6} analytic: -?\d+\.\d{6}, relative error: (\d\.\d{6}e[+-]\d\d)"
    assert all(float(re.fullmatch(pattern, line).group(1)) < 1e-7 for line in lines), lines
    with redirect_stdout(io.StringIO()) as printed:
        cs231n.grad_check_sparse(f, W, good * 1.1, num_checks=3)  # a wrong gradient shows
    assert all(float(re.fullmatch(pattern, line).group(1)) > 0.04 for line in printed.getvalue().splitlines())
    assert _snapshot(W) == before


def test_cs231n_rel_error_is_cs231ns_formula_and_float32_is_refused():
    x, y = np.array([1.0, 0.0, 3.0]), np.array([1.1, 0.0, 3.0])
    assert cs231n.rel_error(x, y) == pytest.approx(0.1 / 2.1)
    with pytest.raises(TypeError, match=r"x is float32: numerical gradients need float64"):
        cs231n.eval_numerical_gradient_array(lambda a: a, np.ones(3, np.float32), np.ones(3))
    with pytest.raises(TypeError, match="x must be a numpy array"):
        cs231n.eval_numerical_gradient(lambda a: 0.0, [1.0, 2.0])
    with pytest.raises(ValueError, match="analytic_grad"):
        cs231n.grad_check_sparse(lambda a: 0.0, np.ones(3), np.ones(2))
