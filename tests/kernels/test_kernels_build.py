"""The builds of the Cython kernels (fastconv/kernels/picker.py) give the same bits.

fastconv.kernels._im2col is compiled for the compiler's default target and, on x86-64, once
more per optional build of fastconv/kernels/isa.py (fastconv.kernels._im2col_avx512 with AVX-512,
fastconv.kernels._im2col_avx2 with AVX2) from the same source, with nothing that changes
arithmetic (no FMA contraction, no fast-math). fastconv.fast runs the widest build the
CPU can run. Every fast layer is run here once on the baseline and once on each optional
build this CPU and install can run, on inputs with ties, NaN, -inf and signed zeros, and
the results must be equal byte for byte.
"""

import importlib
import os
import platform
import re
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from fastconv import fast
from fastconv.engine import direct
from fastconv.engine.geometry import conv_geometry
from fastconv.io.child import python_code
from fastconv.kernels import isa as _isa
from fastconv.kernels import picker as _kernels
from fastconv.testing import assert_close

baseline = importlib.import_module("fastconv.kernels._im2col")
OPTIONAL = [b.isa for b in _isa.OPTIONAL]


def _build(isa):
    """The optional build ``isa``, or a skip saying why this CPU or install cannot run it."""
    module, why_not = _kernels.builds()[isa]
    if module is None:
        pytest.skip(f"the {isa} build cannot run here: {why_not}")
    return module


def _at_least_as_wide(isa):
    """The optional builds that auto tries before ``isa``, and ``isa``."""
    names = [b.isa for b in _isa.OPTIONAL]
    return names[: names.index(isa) + 1]


def test_fast_runs_the_widest_build_the_cpu_can_run():
    name = _kernels.kernels.__name__
    assert _kernels.kernels is _kernels.kernels
    env = os.environ.get(_kernels.KERNELS_ENV, "auto").strip().lower() or "auto"
    if env == "baseline" or baseline.build_info()["isa"] == "native":
        assert name == "fastconv.kernels._im2col", _kernels.reason
    elif env == "auto":
        found = _kernels.builds()
        runnable = [found[b.isa][0] for b in _isa.OPTIONAL if found[b.isa][0] is not None]
        assert _kernels.kernels is (runnable[0] if runnable else baseline), _kernels.reason
    else:
        assert name == _isa.module_name(env), _kernels.reason
    assert _kernels.kernels.build_info()["isa"] in ("baseline", "native", *OPTIONAL)
    assert baseline.build_info()["isa"] in ("baseline", "native")


@pytest.mark.parametrize("isa", OPTIONAL)
def test_each_build_is_named_after_itself(isa):
    module = _build(isa)
    assert module.__name__ == _isa.module_name(isa) and module.build_info()["isa"] == isa


@pytest.mark.parametrize("isa", OPTIONAL)
def test_a_build_uses_no_cpu_feature_its_check_does_not_ask_for(isa):
    """The features the compiler enabled for a build (its predefined macros) beyond the
    baseline's are all in the list that fastconv/kernels/picker.py asks the CPU for."""
    module = _build(isa)
    build = next(b for b in _isa.OPTIONAL if b.isa == isa)
    enabled = set(module.build_info()["features"]) - set(baseline.build_info()["features"])
    assert build.features[0] in enabled, enabled  # the compiler did target it
    assert enabled <= set(build.features), f"{isa} is compiled for {sorted(enabled - set(build.features))} too"


def test_the_feature_check_agrees_with_linux():
    """cpu_supports against Linux's own view of the CPU (/proc/cpuinfo, which leaves out
    what the OS does not enable), for every feature a build asks for."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the CPU check answers only on x86-64")
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo with CPU flags here")
    linux = {"sse3": "pni", "sse4.1": "sse4_1", "sse4.2": "sse4_2"}  # Linux's names where they differ
    for feature in sorted({f for b in _isa.OPTIONAL for f in b.features} | {"fma"}):
        assert baseline.cpu_supports((feature,)) == (linux.get(feature, feature) in flags), feature


def test_an_unknown_cpu_feature_is_an_error():
    with pytest.raises(ValueError, match="unknown CPU feature 'avx9000'"):
        baseline.cpu_supports(("avx2", "avx9000"))
    assert baseline.cpu_supports(()) is True


def _kernels_in_fresh_process(value):
    env = dict(os.environ, **{_kernels.KERNELS_ENV: value})
    code = "import fastconv.fast, fastconv.kernels.picker as k; print(k.kernels.__name__, '|', k.reason)"
    return subprocess.run(python_code(code), env=env, capture_output=True, text=True)


def test_environment_variable_forces_the_baseline_build():
    run = _kernels_in_fresh_process("baseline")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("|")[0].strip() == "fastconv.kernels._im2col"
    assert "FASTCONV_KERNELS=baseline" in run.stdout


@pytest.mark.parametrize("isa", OPTIONAL)
def test_environment_variable_asks_for_an_optional_build(isa):
    """Where the build can run, the variable gets it; where not, a ValueError naming the variable."""
    run = _kernels_in_fresh_process(isa)
    module, why_not = _kernels.builds()[isa]
    if baseline.build_info()["isa"] == "native":
        assert run.returncode == 0 and run.stdout.split("|")[0].strip() == "fastconv.kernels._im2col", run.stderr
    elif module is None:
        assert run.returncode != 0
        assert "ValueError" in run.stderr and f"FASTCONV_KERNELS={isa}, but" in run.stderr, run.stderr
    else:
        assert run.returncode == 0, run.stderr
        assert run.stdout.split("|")[0].strip() == module.__name__


def test_environment_variable_with_a_bad_value_is_a_clear_error():
    run = _kernels_in_fresh_process("sse9")
    assert run.returncode != 0
    assert "ValueError" in run.stderr and "FASTCONV_KERNELS" in run.stderr and "'sse9'" in run.stderr
    assert "auto, baseline, avx512, avx2" in run.stderr


def _without_features(monkeypatch, prefix):
    """This process's baseline build answers that the CPU has no feature starting with ``prefix``."""
    real = baseline.cpu_supports
    monkeypatch.setattr(
        baseline, "cpu_supports", lambda features: real(features) and not any(f.startswith(prefix) for f in features)
    )


def _with_features(monkeypatch, features):
    """The baseline build answers that the CPU has ``features`` too, so that the picker
    gets as far as importing a build on a CPU that lacks them (only where that import
    is made to fail: running such a build would be an illegal instruction)."""
    real = baseline.cpu_supports
    monkeypatch.setattr(baseline, "cpu_supports", lambda asked: all(f in features or real((f,)) for f in asked))


@pytest.mark.parametrize("isa", OPTIONAL)
def test_a_cpu_without_the_features_falls_back_or_refuses(monkeypatch, isa):
    """A CPU that lacks a build's features: auto passes it over and says why;
    FASTCONV_KERNELS=<isa> is a ValueError naming the variable and the feature."""
    if baseline.build_info()["isa"] == "native":
        pytest.skip("a -march=native build runs no optional build")
    build = next(b for b in _isa.OPTIONAL if b.isa == isa)
    _without_features(monkeypatch, build.features[0])
    monkeypatch.delenv(_kernels.KERNELS_ENV, raising=False)
    module, reason = _kernels._load()
    assert module.build_info()["isa"] != isa
    assert f"not {isa}: this CPU (or OS) lacks {build.features[0]}" in reason
    monkeypatch.setenv(_kernels.KERNELS_ENV, isa)
    with pytest.raises(ValueError, match=f"FASTCONV_KERNELS={isa}, but this CPU \\(or OS\\) lacks {build.features[0]}"):
        _kernels._load()


def test_without_any_optional_build_it_is_the_baseline_with_each_reason(monkeypatch):
    if baseline.build_info()["isa"] == "native":
        pytest.skip("a -march=native build runs no optional build")
    _without_features(monkeypatch, "avx")
    monkeypatch.delenv(_kernels.KERNELS_ENV, raising=False)
    module, reason = _kernels._load()
    assert module is baseline
    lacking = [", ".join(f for f in b.features if f.startswith("avx")) for b in _isa.OPTIONAL]
    assert reason == "; ".join(
        f"not {b.isa}: this CPU (or OS) lacks {missing}" for b, missing in zip(_isa.OPTIONAL, lacking)
    ), reason


@pytest.mark.parametrize("isa", OPTIONAL)
def test_a_missing_build_is_passed_over_or_refused(monkeypatch, isa):
    if baseline.build_info()["isa"] == "native":
        pytest.skip("a -march=native build runs no optional build")
    for name in _at_least_as_wide(isa):  # so that auto gets as far as isa
        monkeypatch.setitem(sys.modules, _isa.module_name(name), None)  # its import fails
    _with_features(monkeypatch, next(b for b in _isa.OPTIONAL if b.isa == isa).features)
    monkeypatch.delenv(_kernels.KERNELS_ENV, raising=False)
    module, reason = _kernels._load()
    assert module.build_info()["isa"] != isa and f"{_isa.module_name(isa)} is not installed" in reason
    monkeypatch.setenv(_kernels.KERNELS_ENV, isa)
    with pytest.raises(ValueError, match=f"FASTCONV_KERNELS={isa}, but .* is not installed"):
        _kernels._load()


@pytest.mark.parametrize("isa", OPTIONAL)
def test_a_stale_build_is_never_mixed_in(monkeypatch, isa):
    """An optional module from other source (its optional rebuild failed) is refused."""
    module = _build(isa)
    for name in _at_least_as_wide(isa):  # so that auto gets as far as isa
        other = _kernels.builds()[name][0]
        if other is not None:
            info = other.build_info()
            monkeypatch.setattr(other, "build_info", lambda info=info: dict(info, source_id=info["source_id"] + 1))
    monkeypatch.delenv(_kernels.KERNELS_ENV, raising=False)
    chosen, reason = _kernels._load()
    assert chosen is not module and f"not {isa}: {module.__name__} is stale" in reason
    monkeypatch.setenv(_kernels.KERNELS_ENV, isa)
    with pytest.raises(ValueError, match="another build"):
        _kernels._load()


@pytest.mark.parametrize("isa", OPTIONAL)
def test_every_build_comes_from_the_same_source(isa):
    module = _build(isa)
    assert module.build_info()["source_id"] == baseline.build_info()["source_id"] != 0


def _tricky(rng, shape, dtype):
    """Small integers (ties in most windows), a NaN, -inf, +inf and a -0.0."""
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    flat = x.reshape(-1)
    flat[rng.integers(flat.size)] = np.nan
    flat[rng.integers(flat.size)] = -np.inf
    flat[rng.integers(flat.size)] = np.inf
    flat[rng.integers(flat.size)] = -0.0
    return x


def _conv(rng, dtype, stride, pad, dilation, groups, shape=(3, 4, 9, 11), kernel=(3, 2), algorithm="auto"):
    N, C, H, W = shape
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((6, C // groups) + kernel).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    out, cache = fast.conv_forward(x, w, b, stride, pad, dilation, groups, algorithm)
    dout = rng.standard_normal(out.shape).astype(dtype)
    return (out,) + fast.conv_backward(dout, cache)


def _conv_tricky(rng, dtype, algorithm):
    """A convolution of x with -inf, +inf and -0.0 (also in its last columns, which only the
    lanes past a row's end read). No NaN in x: where two NaNs meet in a sum (a NaN of x and
    the default NaN of inf - inf), which one propagates depends on the operand order the
    compiler picks for a commutative add; the NaN's positions do not (test_direct.py)."""
    x = _tricky(rng, (3, 2, 8, 21), dtype)
    x[np.isnan(x)] = -np.inf
    x[:, :, :, -1] = np.inf
    w = rng.standard_normal((4, 2, 5, 5)).astype(dtype)
    out, cache = fast.conv_forward(x, w, None, 3, 2, algorithm=algorithm)
    dout = rng.standard_normal(out.shape).astype(dtype)
    return (out,) + fast.conv_backward(dout, cache)


def _conv_relu_pool(rng, dtype, algorithm="auto", need_dx=True, width=12):
    x = rng.standard_normal((3, 4, 10, width)).astype(dtype)
    w = rng.integers(-2, 3, size=(5, 4, 3, 3)).astype(dtype)  # integer sums: ties in the pool
    b = np.zeros(5, dtype)
    out, cache = fast.conv_relu_pool_forward(x, w, b, 1, 1, 3, 2, 1, algorithm=algorithm)
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = fast.conv_relu_pool_backward(dout, cache, need_dx=need_dx)
    return (out,) + (grads if need_dx else grads[1:])


def _conv_relu_pool2_direct(rng, dtype, need_dx=True, width=21):
    """The 2x2 / 2 pool inside the direct kernel: tied maxima (small integers), +-inf and
    -0.0 in x (no NaN: see _conv_tricky), an odd output that the pool crops. With
    need_dx=False, dW routes the pooled gradient itself (into its packed rows when the
    width fills them, 32)."""
    x = _tricky(rng, (3, 2, 11, width), dtype)
    x[np.isnan(x)] = -np.inf
    w = rng.integers(-2, 3, size=(5, 2, 3, 3)).astype(dtype)
    b = np.array([-3, -1, 0, 1, 2], dtype)
    out, cache = fast.conv_relu_pool_forward(x, w, b, 1, 1, 2, algorithm="direct")
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = fast.conv_relu_pool_backward(dout, cache, need_dx=need_dx)
    return (out, cache[6]) + (grads if need_dx else grads[1:])


def _max_pool(rng, dtype, k, s, p, shape=(4, 3, 13, 16)):
    x = _tricky(rng, shape, dtype)
    out, cache = fast.max_pool_forward(x, k, s, p)
    dout = rng.standard_normal(out.shape).astype(dtype)
    return out, cache[0], fast.max_pool_backward(dout, cache)


def _avg_pool(rng, dtype, k, s, p, shape=(4, 3, 13, 16)):
    x = _tricky(rng, shape, dtype)
    out, cache = fast.avg_pool_forward(x, k, s, p)
    dout = rng.standard_normal(out.shape).astype(dtype)
    return out, fast.avg_pool_backward(dout, cache)


def _batchnorm(rng, dtype):
    x = (rng.standard_normal((5, 6, 7, 9)) * 3 + 1).astype(dtype)
    gamma, beta = rng.standard_normal(6).astype(dtype), rng.standard_normal(6).astype(dtype)
    bn_param = {"mode": "train"}
    out, cache = fast.spatial_batchnorm_forward(x, gamma, beta, bn_param)
    dout = rng.standard_normal(out.shape).astype(dtype)
    return (out, bn_param["running_mean"], bn_param["running_var"]) + fast.spatial_batchnorm_backward(dout, cache)


def _relu(rng, dtype):
    x = rng.standard_normal((3, 5, 9, 11)).astype(dtype)
    x.reshape(-1)[:6] = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-40], dtype)
    out, cache = fast.relu_forward(x)
    return out, fast.relu_backward(rng.standard_normal(out.shape).astype(dtype), cache)


def _adam(rng, dtype):
    from fastconv import optim

    w = (rng.standard_normal(5000) * 3).astype(dtype)
    config = None
    for _ in range(3):
        dw = (rng.standard_normal(5000) * 10.0 ** rng.integers(-6, 3, 5000)).astype(dtype)
        w, config = optim.adam(w, dw, config)
    return w, config["m"], config["v"]


LAYERS = {
    "conv-k3x2-s1-p1": lambda rng, dt: _conv(rng, dt, 1, 1, 1, 1),
    "conv-k3x2-s2x1-p2x0-d2-g2": lambda rng, dt: _conv(rng, dt, (2, 1), (2, 0), 2, 2),
    "conv-k3x3-s1-p1-flat": lambda rng, dt: _conv(rng, dt, 1, 1, 1, 1, (2, 3, 12, 28), (3, 3)),
    "conv-k1x1-batch1": lambda rng, dt: _conv(rng, dt, 1, 0, 1, 1, (1, 4, 5, 7), (1, 1)),
    "conv_relu_pool-k3-p1-pool3s2p1": _conv_relu_pool,
    "conv-winograd-k3-p1x2-g2": lambda rng, dt: _conv(rng, dt, 1, (1, 2), 1, 2, (3, 4, 9, 11), (3, 3), "winograd"),
    "conv-winograd-k3-p0-odd": lambda rng, dt: _conv(rng, dt, 1, 0, 1, 1, (2, 3, 7, 12), (3, 3), "winograd"),
    "conv_relu_pool-winograd": lambda rng, dt: _conv_relu_pool(rng, dt, "winograd"),
    "conv-winograd4-k3-p1x2-g2": lambda rng, dt: _conv(rng, dt, 1, (1, 2), 1, 2, (3, 4, 9, 11), (3, 3), "winograd4"),
    "conv-winograd4-k3-p0-odd": lambda rng, dt: _conv(rng, dt, 1, 0, 1, 1, (2, 3, 13, 11), (3, 3), "winograd4"),
    "conv-winograd4-k3-p1-wide": lambda rng, dt: _conv(rng, dt, 1, 1, 1, 1, (2, 2, 6, 37), (3, 3), "winograd4"),
    "conv_relu_pool-winograd4": lambda rng, dt: _conv_relu_pool(rng, dt, "winograd4"),
    "conv-direct-k3x2-s1-p1": lambda rng, dt: _conv(rng, dt, 1, 1, 1, 1, algorithm="direct"),
    "conv-direct-k3x2-s2x1-p2x0-d2-g2": lambda rng, dt: _conv(rng, dt, (2, 1), (2, 0), 2, 2, algorithm="direct"),
    "conv-direct-k7-p3-wide": lambda rng, dt: _conv(rng, dt, 1, 3, 1, 1, (2, 3, 9, 37), (7, 7), "direct"),
    # output rows of whole vectors in both dtypes: dW's one loop over the image
    "conv-direct-k3-p1-whole-rows": lambda rng, dt: _conv(rng, dt, 1, 1, 1, 1, (2, 3, 6, 32), (3, 3), "direct"),
    # 28-wide rows: a last segment of 12 (float32) or 4 (float64) lanes, whole in some register
    # vectors of a build and partial in others (dW: one loop or per row, per register vector)
    "conv-direct-k5-p0-tail": lambda rng, dt: _conv(rng, dt, 1, 0, 1, 1, (2, 3, 9, 32), (5, 5), "direct"),
    "conv-direct-k5-s3-tricky": lambda rng, dt: _conv_tricky(rng, dt, "direct"),
    "conv_relu_pool-direct": lambda rng, dt: _conv_relu_pool(rng, dt, "direct"),
    "conv_relu_pool-direct-pool2-in-kernel": _conv_relu_pool2_direct,
    "conv_relu_pool-direct-pool2-dw-routed": lambda rng, dt: _conv_relu_pool2_direct(rng, dt, False),
    "conv_relu_pool-direct-pool2-dw-routed-whole-rows": lambda rng, dt: _conv_relu_pool2_direct(rng, dt, False, 32),
    "conv_relu_pool-direct-pool3s2p1-dw-routed": lambda rng, dt: _conv_relu_pool(rng, dt, "direct", False, 32),
    "maxpool-k2-s2": lambda rng, dt: _max_pool(rng, dt, 2, 2, 0),
    "maxpool-k2-s2-wide": lambda rng, dt: _max_pool(rng, dt, 2, 2, 0, (2, 2, 9, 70)),
    "maxpool-k3-s2-p1": lambda rng, dt: _max_pool(rng, dt, 3, 2, 1),
    "maxpool-k3x5-s1x2-p1x2": lambda rng, dt: _max_pool(rng, dt, (3, 5), (1, 2), (1, 2)),
    "maxpool-k3-s2-wide": lambda rng, dt: _max_pool(rng, dt, 3, 2, 0, (2, 2, 9, 70)),
    "avgpool-k2-s2": lambda rng, dt: _avg_pool(rng, dt, 2, 2, 0),
    "avgpool-k2-s2-wide": lambda rng, dt: _avg_pool(rng, dt, 2, 2, 0, (2, 2, 9, 70)),
    "avgpool-k3-s2-p1": lambda rng, dt: _avg_pool(rng, dt, 3, 2, 1),
    "spatial_batchnorm": _batchnorm,
    "relu": _relu,
    "adam": lambda rng, dt: _adam(rng, dt),
}


def _assert_same_bytes(results, other, what):
    for i, (a, b) in enumerate(zip(results, other, strict=True)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, f"result {i} of {what}"
        assert a.tobytes() == b.tobytes(), (
            f"result {i} of {what} differs between the builds: "
            f"{np.count_nonzero(a.view(np.uint8) != b.view(np.uint8))} bytes"
        )


def _run_on(monkeypatch, build, layer, dtype):
    monkeypatch.setattr(_kernels, "kernels", build)
    # "auto" passes direct convolution over on a build without FMA instructions (only speed:
    # test_auto_passes_direct_over_without_fma); here every build must run the same algorithm
    monkeypatch.setattr(direct, "hardware_fma", lambda build_info: True)
    return LAYERS[layer](np.random.default_rng(7), dtype)


def test_auto_passes_direct_over_without_fma(monkeypatch):
    """The baseline build computes each lane of the direct kernels with libm's fma (the same
    bits, many times slower): "auto" runs direct on a first layer only on a build with FMA."""
    x, w = np.zeros((2, 3, 32, 32), np.float32), np.zeros((16, 3, 5, 5), np.float32)
    monkeypatch.setattr(_kernels, "kernels", baseline)
    assert not direct.hardware_fma(baseline.build_info())
    assert fast.conv_algorithm(x, w) == "im2col"
    for isa in OPTIONAL:
        module = _kernels.builds()[isa][0]
        if module is not None:
            monkeypatch.setattr(_kernels, "kernels", module)
            assert direct.hardware_fma(module.build_info()) and fast.conv_algorithm(x, w) == "direct", isa


@pytest.mark.parametrize("isa", OPTIONAL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_builds_agree_bit_for_bit(monkeypatch, layer, dtype, isa):
    other = _build(isa)
    _assert_same_bytes(
        _run_on(monkeypatch, baseline, layer, dtype), _run_on(monkeypatch, other, layer, dtype), f"{layer} on {isa}"
    )


def _written_past(buf, size):
    """How many elements of buf past its first ``size`` lost their NaN sentinel."""
    return int(np.count_nonzero(~np.isnan(buf[size:])))


@pytest.mark.parametrize("isa", ["baseline", *OPTIONAL])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("W", [28, 37, 9])
def test_direct_forward_writes_its_output_and_nothing_past_it(monkeypatch, isa, dtype, W):
    """Rows whose last segment is partial (28, 37 and 9 pixels: 12, 5 and 9 of 16 float32
    lanes) are stored with masked stores in the AVX builds: every output is written (the
    im2col result, to rounding) and not one element after the last plane's last row."""
    monkeypatch.setattr(_kernels, "kernels", baseline if isa == "baseline" else _build(isa))
    rng = np.random.default_rng(W)
    x = rng.standard_normal((2, 3, 7, W)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    g = conv_geometry(x, w, b, 1, 1, 1, 1)
    size = int(np.prod(g.out_shape))
    buf = np.full(size + 64, np.nan, dtype=dtype)
    out = direct.conv_forward(g, x, w, b, out=buf[:size].reshape(g.out_shape))
    assert _written_past(buf, size) == 0
    expected = fast.conv_forward(x, w, b, 1, 1, algorithm="im2col")[0]
    assert_close(out, expected, dtype=dtype)


def test_the_overrun_check_catches_one_element():
    buf = np.full(20, np.nan)
    buf[:16] = 0.0
    assert _written_past(buf, 16) == 0
    buf[16] = 1.0
    assert _written_past(buf, 16) == 1


class _OneUlpOff:
    """A stand-in build: the baseline's kernels, except that bn_affine moves the first
    element it writes by one unit in the last place."""

    def __getattr__(self, name):
        return getattr(baseline, name)

    def bn_affine(self, x, shift, scale, offset, out, lo, hi, threads):
        baseline.bn_affine(x, shift, scale, offset, out, lo, hi, threads)
        first = np.asarray(out).reshape(-1)
        first[0] = np.nextafter(first[0], np.inf)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_the_comparison_catches_one_ulp_and_a_signed_zero(monkeypatch, dtype):
    """The check above fails for a build that differs in one bit: the swap of fast's kernels
    takes effect, and bytes are compared, not values (-0.0 == 0.0 as values)."""
    results = _run_on(monkeypatch, baseline, "spatial_batchnorm", dtype)
    off = _run_on(monkeypatch, _OneUlpOff(), "spatial_batchnorm", dtype)
    with pytest.raises(AssertionError, match="result 0 of spatial_batchnorm differs between the builds"):
        _assert_same_bytes(results, off, "spatial_batchnorm")
    zero = np.zeros(3, dtype)
    with pytest.raises(AssertionError, match="1 bytes"):
        _assert_same_bytes([zero], [np.array([0.0, -0.0, 0.0], dtype)], "zeros")


def _prange_indices(source):
    """[(name, declared type or None)] of every ``for NAME in prange(...)`` in ``source``:
    the type from the ``cdef TYPE ... NAME`` declarations of the enclosing function."""
    found = []
    for m in re.finditer(r"for\s+(\w+)\s+in\s+prange\(", source):
        start = max(
            source.rfind("\ndef ", 0, m.start()),
            source.rfind("\ncdef ", 0, m.start()),
            source.rfind("\ncpdef ", 0, m.start()),
        )
        declared = None
        for d in re.finditer(
            r"^\s+cdef\s+([\w ]+?)\s+((?:\w+(?:\s*=\s*[^,\n]+)?\s*,\s*)*\w+(?:\s*=\s*[^,\n]+)?)\s*$",
            source[start : m.start()],
            re.M,
        ):
            names = [part.split("=")[0].strip() for part in d.group(2).split(",")]
            if m.group(1) in names:
                declared = d.group(1).strip()
        found.append((m.group(1), declared))
    return found


def test_every_prange_index_is_signed():
    """MSVC's OpenMP 2.0 takes only signed loop indices: every prange of the kernels runs on
    Py_ssize_t (a Windows build is not tested here; this keeps it possible)."""
    folder = os.path.dirname(baseline.__file__)
    sources = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith((".pyx", ".pxi")))
    if not sources:
        pytest.skip("the kernels' source is not installed beside them")
    found = [(os.path.basename(p), *i) for p in sources for i in _prange_indices(open(p).read())]
    assert len(found) >= 10, found
    assert [f for f in found if f[2] != "Py_ssize_t"] == []


def test_the_prange_check_catches_an_unsigned_index():
    source = (
        "\ncdef void k(Py_ssize_t n) noexcept nogil:\n    cdef size_t t\n    cdef Py_ssize_t i, j = 0\n"
        "    for t in prange(n):\n        pass\n    for j in prange(n):\n        pass\n"
    )
    assert _prange_indices(source) == [("t", "size_t"), ("j", "Py_ssize_t")]


@pytest.mark.parametrize("unavailable", [True, False], ids=["compiler-without-openmp", "openmp-or-asked-off"])
def test_a_build_whose_compiler_had_no_openmp_warns_at_import(unavailable):
    """pip hides setup.py's warning: the build records that the compiler had no OpenMP, and
    loading the kernels says so once (not when FASTCONV_NO_OPENMP=1 asked for it)."""
    build = types.SimpleNamespace(build_info=lambda: {"openmp": not unavailable, "openmp_unavailable": unavailable})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _kernels._warn_if_openmp_was_unavailable(build)
    said = [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]
    assert len(said) == unavailable
    if unavailable:
        assert "without OpenMP" in said[0] and "CONTRIBUTING.md" in said[0]


def test_the_build_records_why_it_has_no_openmp():
    info = baseline.build_info()
    assert isinstance(info["openmp_unavailable"], bool)
    assert not (info["openmp"] and info["openmp_unavailable"])


def test_config_and_bench_say_where_kernels_run_without_openmp(monkeypatch, capsys):
    from fastconv.apps import config as _config
    from fastconv.bench import machine

    info = dict(_config.configuration(), openmp=False, openmp_unavailable=True, omp_max_threads=1)
    monkeypatch.setattr(_config, "configuration", lambda: info)
    _config.show_config()
    out = capsys.readouterr().out
    assert "OpenMP: no (kernels on fastconv's threads)" in out and "no usable OpenMP" in out
    doc = machine.collect()
    assert "OpenMP: no (kernels on fastconv's threads)" in machine.describe(doc)
