"""The two builds of the Cython kernels (fastconv/_kernels.py) give the same bits.

fastconv._im2col is compiled for the compiler's default target and, on x86-64,
fastconv._im2col_avx2 from the same source with -mavx2 (and nothing that changes
arithmetic: no FMA, no fast-math). fastconv.fast runs the AVX2 build on a CPU with
AVX2. Every fast layer is run here once on each build, on inputs with ties, NaN,
-inf and signed zeros, and the results must be equal byte for byte.
"""
import importlib
import os
import subprocess

import numpy as np
import pytest

from fastconv import _kernels, fast
from fastconv._child import python_code

baseline = importlib.import_module("fastconv._im2col")


def _avx2_build():
    if not baseline.cpu_has_avx2():
        pytest.skip("this CPU has no AVX2: only the baseline build can run here")
    try:
        return importlib.import_module("fastconv._im2col_avx2")
    except ImportError as exc:
        pytest.skip(f"the AVX2 build is not installed ({exc})")


def test_fast_runs_the_build_the_cpu_can_run():
    name = fast._kernels.__name__
    assert fast._kernels is _kernels.kernels
    env = os.environ.get(_kernels.KERNELS_ENV, "auto").strip().lower() or "auto"
    if env == "baseline" or not baseline.cpu_has_avx2() or baseline.build_info()["isa"] == "native":
        assert name == "fastconv._im2col", _kernels.reason
    else:
        avx2 = _avx2_build()
        assert name == avx2.__name__, _kernels.reason
        assert avx2.build_info()["isa"] == "avx2"
    assert baseline.build_info()["isa"] in ("baseline", "native")


def _kernels_in_fresh_process(value):
    env = dict(os.environ, **{_kernels.KERNELS_ENV: value})
    code = "import fastconv.fast as f, fastconv._kernels as k; print(f._kernels.__name__, '|', k.reason)"
    return subprocess.run(python_code(code), env=env, capture_output=True, text=True)


def test_environment_variable_forces_the_baseline_build():
    run = _kernels_in_fresh_process("baseline")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("|")[0].strip() == "fastconv._im2col"
    assert "FASTCONV_KERNELS=baseline" in run.stdout


def test_environment_variable_with_a_bad_value_is_a_clear_error():
    run = _kernels_in_fresh_process("sse9")
    assert run.returncode != 0
    assert "ValueError" in run.stderr and "FASTCONV_KERNELS" in run.stderr and "'sse9'" in run.stderr


def test_a_stale_avx2_build_is_never_mixed_in(monkeypatch):
    """An AVX2 module from other source (its optional rebuild failed) is refused."""
    avx2 = _avx2_build()
    info = avx2.build_info()
    monkeypatch.setattr(avx2, "build_info", lambda: dict(info, source_id=info["source_id"] + 1))
    monkeypatch.delenv(_kernels.KERNELS_ENV, raising=False)
    module, reason = _kernels._load()
    assert module is baseline and "stale" in reason
    monkeypatch.setenv(_kernels.KERNELS_ENV, "avx2")
    with pytest.raises(ValueError, match="another build"):
        _kernels._load()


def test_both_builds_come_from_the_same_source():
    avx2 = _avx2_build()
    assert avx2.build_info()["source_id"] == baseline.build_info()["source_id"] != 0


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


def _conv_relu_pool(rng, dtype, algorithm="auto"):
    x = rng.standard_normal((3, 4, 10, 12)).astype(dtype)
    w = rng.integers(-2, 3, size=(5, 4, 3, 3)).astype(dtype)  # integer sums: ties in the pool
    b = np.zeros(5, dtype)
    out, cache = fast.conv_relu_pool_forward(x, w, b, 1, 1, 3, 2, 1, algorithm=algorithm)
    dout = rng.standard_normal(out.shape).astype(dtype)
    return (out,) + fast.conv_relu_pool_backward(dout, cache)


def _max_pool(rng, dtype, k, s, p, shape=(4, 3, 13, 16)):
    x = _tricky(rng, shape, dtype)
    out, cache = fast.max_pool_forward(x, k, s, p)
    dout = rng.standard_normal(out.shape).astype(dtype)
    return out, cache[0], fast.max_pool_backward(dout, cache)


def _avg_pool(rng, dtype, k, s, p):
    x = _tricky(rng, (4, 3, 13, 16), dtype)
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
    "conv_relu_pool-winograd4": lambda rng, dt: _conv_relu_pool(rng, dt, "winograd4"),
    "maxpool-k2-s2": lambda rng, dt: _max_pool(rng, dt, 2, 2, 0),
    "maxpool-k3-s2-p1": lambda rng, dt: _max_pool(rng, dt, 3, 2, 1),
    "maxpool-k3x5-s1x2-p1x2": lambda rng, dt: _max_pool(rng, dt, (3, 5), (1, 2), (1, 2)),
    "maxpool-k3-s2-wide": lambda rng, dt: _max_pool(rng, dt, 3, 2, 0, (2, 2, 9, 70)),
    "avgpool-k2-s2": lambda rng, dt: _avg_pool(rng, dt, 2, 2, 0),
    "avgpool-k3-s2-p1": lambda rng, dt: _avg_pool(rng, dt, 3, 2, 1),
    "spatial_batchnorm": _batchnorm,
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_builds_agree_bit_for_bit(monkeypatch, layer, dtype):
    avx2 = _avx2_build()
    results = []
    for build in (baseline, avx2):
        monkeypatch.setattr(fast, "_kernels", build)
        results.append(LAYERS[layer](np.random.default_rng(7), dtype))
    for i, (a, b) in enumerate(zip(*results)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, f"result {i}"
        assert a.tobytes() == b.tobytes(), (
            f"result {i} of {layer} differs between the builds: "
            f"{np.count_nonzero(a.view(np.uint8) != b.view(np.uint8))} bytes"
        )
