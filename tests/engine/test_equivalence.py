"""fastconv.fast equals fastconv.naive: forward and every gradient.

The grid is ``fastconv.testing``'s (``conv_configs``, ``pool_configs``): generated
deterministically from a fixed seed, plus the hand-picked awkward cases, so every run
checks the same configurations and a failure's id
(``conv-k3x5-s2-p1-d1-g2-n2-c4f2-x7x9-float32``) says how to rebuild it
(``fastconv.testing.ConvConfig``). ``test_grid_covers_the_awkward_cases`` fails if the grid
ever stops covering what the design promises. Shapes are small so that the naive loops
stay fast.

CI also runs this file against a build with bounds checks on
(``FASTCONV_CYTHON_DEBUG=1``, see ``test_build_mode``).
"""

import os
import zlib

import numpy as np
import pytest

import fastconv.fast as fast
import fastconv.naive as naive
from fastconv.engine.conv import ConvPlan, chunk_images
from fastconv.engine.geometry import conv_geometry
from fastconv.kernels.picker import kernels as _kernels  # the kernel build fastconv.fast runs
from fastconv.testing import DTYPES, ConvConfig, assert_close, check_equivalent, conv_configs, pool_configs

from _helpers import dtype_id, out_size, pair_id

# ---------------------------------------------------------------------------- the grid
# fastconv.testing's grids (its awkward cases, then geometries drawn from the seed): the
# same ones a user's tests get, at a larger size.
N_CONV_GEOMETRIES = 112
N_POOL_GEOMETRIES = 40
GRID_SEED = 20260423

CONV_CASES = conv_configs(N_CONV_GEOMETRIES, GRID_SEED)
POOL_CASES = pool_configs(N_POOL_GEOMETRIES, GRID_SEED)


def _seed(case):
    return zlib.crc32(str(case).encode())


def _out_hw(case):
    """The output size by the tests' own formula (_helpers.out_size), not the library's."""
    dilation = getattr(case, "dilation", (1, 1))
    stride = case.stride if case.stride is not None else case.kernel
    return tuple(
        out_size(s, k, st, p, d) for s, k, st, p, d in zip((case.H, case.W), case.kernel, stride, case.pad, dilation)
    )


def test_grid_covers_the_awkward_cases():
    """The grid holds every awkward case listed here (this fails if a generator change drops one)."""
    convs, pools = CONV_CASES, POOL_CASES
    assert len(convs) + len(pools) >= 200
    assert len({str(c) for c in convs + pools}) == len(convs) + len(pools), "ids must be unique"
    assert {s for c in convs for s in c.stride} == {1, 2, 3}
    assert {p for c in convs for p in c.pad} == {0, 1, 2, 3}
    assert {d for c in convs for d in c.dilation} == {1, 2}
    assert {c.groups for c in convs} == {1, 2}
    assert {c.bias for c in convs} == {True, False}
    assert {c.dtype for c in convs} == {c.dtype for c in pools} == set(DTYPES)
    assert any(c.kernel[0] != c.kernel[1] for c in convs)
    assert any(c.H != c.W for c in convs)
    assert any(c.N == 1 for c in convs) and any(c.C == 1 for c in convs)
    assert any(c.H % 2 and c.W % 2 for c in convs)
    assert any(c.kernel[0] > c.H or c.kernel[1] > c.W for c in convs)
    assert any(c.stride[0] != c.stride[1] or c.pad[0] != c.pad[1] or c.dilation[0] != c.dilation[1] for c in convs)
    for kind in ("max", "avg"):
        kp = [c for c in pools if c.kind_name == kind]
        assert any(s < k for c in kp for s, k in zip(c.effective_stride, c.kernel)), "overlapping windows"
        assert any(max(c.pad) > 0 for c in kp)
        assert any(c.stride is None for c in kp)
        assert any(c.kernel[0] != c.kernel[1] for c in kp)
        assert any(c.N == 1 for c in kp) and any(c.C == 1 for c in kp)


# ---------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv_fast_equals_naive(case):
    """out, dx, dw, db: shape, dtype and error (check_equivalent holds both paths to the config's shape)."""
    assert case.out_shape == (case.N, case.F, *_out_hw(case))
    check_equivalent(fast, naive, [case])


@pytest.mark.parametrize("case", CONV_CASES[::8], ids=str)
def test_conv_backward_without_dx(case):
    """need_dx=False (a first layer) returns dx None and the same dw, db as a full backward."""
    x, w, b, dout = case.arrays()
    for module in (naive, fast):
        _, cache = module.conv_forward(x, w, b, **case.kwargs)
        dx_full, dw_full, db_full = module.conv_backward(dout, cache)
        dx, dw, db = module.conv_backward(dout, cache, need_dx=False)
        assert dx is None and dx_full is not None
        np.testing.assert_array_equal(dw, dw_full)
        if case.bias:
            np.testing.assert_array_equal(db, db_full)


def _pool_funcs(module, kind):
    return getattr(module, f"{kind}_pool_forward"), getattr(module, f"{kind}_pool_backward")


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool_fast_equals_naive(case):
    assert case.out_shape == (case.N, case.C, *_out_hw(case))
    check_equivalent(fast, naive, [case])


# ---------------------------------------------------------------------------- max-pool ties and NaN
def test_max_pool_ties_route_to_first_maximum_all_equal():
    """All-equal input: each window's gradient goes to its first (top-left valid) pixel."""
    x = np.full((1, 1, 4, 4), 2.5)
    dout = np.arange(1.0, 1.0 + 2 * 2).reshape(1, 1, 2, 2)
    # kernel 3, stride 2, pad 1: the windows' first valid pixels are (0,0), (0,1), (1,0), (1,1).
    expected = np.zeros_like(x)
    expected[0, 0, 0, 0] = 1
    expected[0, 0, 0, 1] = 2
    expected[0, 0, 1, 0] = 3
    expected[0, 0, 1, 1] = 4
    for module in (naive, fast):
        out, cache = module.max_pool_forward(x, 3, 2, 1)
        np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), 2.5))
        np.testing.assert_array_equal(module.max_pool_backward(dout, cache), expected, err_msg=module.__name__)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(
    "kernel, stride, pad",
    [(2, None, 0), (2, 2, 1), (3, 1, 1), (3, 2, 1), (3, 2, 0), ((2, 3), (1, 2), (1, 0))],
    ids=["k2-sNone-p0", "k2-s2-p1", "k3-s1-p1", "k3-s2-p1", "k3-s2-p0", "k2x3-s1x2-p1x0"],
)
def test_max_pool_ties_identical_in_both_paths(rng, kernel, stride, pad, dtype):
    """Small integers: almost every window has tied maxima; the two paths route identically."""
    x = rng.integers(0, 3, size=(2, 3, 7, 6)).astype(dtype)
    results = []
    for module in (naive, fast):
        out, cache = module.max_pool_forward(x, kernel, stride, pad)
        dout = np.arange(1, out.size + 1, dtype=dtype).reshape(out.shape)  # distinct, so a misroute shows
        results.append((out, module.max_pool_backward(dout, cache)))
    (out_n, dx_n), (out_f, dx_f) = results
    np.testing.assert_array_equal(out_f, out_n)
    np.testing.assert_array_equal(dx_f, dx_n)
    # the first maximum is the rule, not any maximum: with ties present, "last maximum" would differ
    last = _max_pool_backward_last_max(x, kernel, stride, pad, dout)
    assert not np.array_equal(last, dx_n), "the data has no ties that tell first from last maximum"


def _max_pool_backward_last_max(x, kernel, stride, pad, dout):
    """The wrong tie rule (last maximum in row-major order), to prove the tie test can tell."""
    kh, kw = (kernel, kernel) if np.isscalar(kernel) else kernel
    sh, sw = (kh, kw) if stride is None else ((stride, stride) if np.isscalar(stride) else stride)
    ph, pw = (pad, pad) if np.isscalar(pad) else pad
    N, C, H, W = x.shape
    dx = np.zeros_like(x)
    for n, c, oh, ow in np.ndindex(dout.shape):
        h0, w0 = oh * sh - ph, ow * sw - pw
        best = None
        for ih in range(max(h0, 0), min(h0 + kh, H)):
            for iw in range(max(w0, 0), min(w0 + kw, W)):
                if best is None or x[n, c, ih, iw] >= x[n, c][best]:
                    best = (ih, iw)
        dx[n, c][best] += dout[n, c, oh, ow]
    return dx


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_max_pool_nan_propagates_in_both_paths(rng, dtype):
    x = rng.standard_normal((1, 2, 6, 6)).astype(dtype)
    x[0, 0, 3, 3] = np.nan
    x[0, 1, 0, 0] = np.nan
    x[0, 1, 0, 1] = np.nan  # two NaNs in one window: the first one takes the gradient
    results = []
    for module in (naive, fast):
        out, cache = module.max_pool_forward(x, 3, 2, 1)
        dout = np.ones(out.shape, dtype=dtype)
        results.append((out, module.max_pool_backward(dout, cache)))
    (out_n, dx_n), (out_f, dx_f) = results
    # kernel 3, stride 2, pad 1: window oh spans rows 2*oh-1 .. 2*oh+1, so (3, 3) is in oh, ow in {1, 2}
    expected_nan = np.zeros(out_n.shape, dtype=bool)
    expected_nan[0, 0, 1:3, 1:3] = True
    expected_nan[0, 1, 0, 0:2] = True  # (0, 0) sits in window (0, 0); (0, 1) in windows (0, 0) and (0, 1)
    np.testing.assert_array_equal(np.isnan(out_n), expected_nan)
    np.testing.assert_array_equal(np.isnan(out_f), expected_nan)
    np.testing.assert_array_equal(out_f, out_n)  # NaNs compare equal here
    np.testing.assert_array_equal(dx_f, dx_n)
    assert dx_n[0, 0, 3, 3] == 4  # every window holding the NaN sends it its gradient
    assert dx_n[0, 1, 0, 0] == 1 and dx_n[0, 1, 0, 1] == 1


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(
    "kernel, stride, pad",
    [(2, 2, 0), (2, 2, 1), (3, 2, 0), (3, 2, 1)],
    ids=["k2-s2-p0", "k2-s2-p1", "k3-s2-p0", "k3-s2-p1"],
)
def test_max_pool_stride2_kernels_match_naive_on_nan_inf_ties_and_zeros(rng, kernel, stride, pad, dtype):
    """The stride-2 kernels pick among pixel pairs and triples before the running maximum
    (fastconv/kernels/_im2col.pyx, _max_update_pair and _max_update_phases3): on ties, NaNs,
    infinities and signed zeros in every position they must pick what naive picks."""
    x = rng.integers(-2, 3, size=(3, 4, 9, 20)).astype(dtype)
    flat = x.reshape(-1)
    for value, count in ((np.nan, 25), (-np.inf, 25), (np.inf, 8), (-0.0, 40)):
        flat[rng.choice(flat.size, count, replace=False)] = value
    x[0, 0] = -np.inf  # whole windows of -inf: their first valid pixel
    x[0, 1, :4, :6] = np.nan  # whole windows of NaN: their first NaN
    results = []
    for module in (naive, fast):
        out, cache = module.max_pool_forward(x, kernel, stride, pad)
        dout = np.arange(1, out.size + 1, dtype=dtype).reshape(out.shape)
        results.append((out, module.max_pool_backward(dout, cache)))
    (out_n, dx_n), (out_f, dx_f) = results
    np.testing.assert_array_equal(out_f, out_n)
    np.testing.assert_array_equal(np.signbit(out_f), np.signbit(out_n))
    np.testing.assert_array_equal(dx_f, dx_n)


# ---------------------------------------------------------------------------- chunking and N = 0
def _chunk_workspace(case, images_per_chunk):
    oh, ow = case.out_hw
    per_image = case.C * case.kernel[0] * case.kernel[1] * oh * ow * np.dtype(case.dtype).itemsize
    return images_per_chunk * per_image + per_image // 2


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("images_per_chunk", [1, 2, 3])
@pytest.mark.parametrize("groups, bias", [(1, True), (2, False)], ids=["g1-bias", "g2-nobias"])
def test_conv_chunked_batch_equals_naive(monkeypatch, images_per_chunk, groups, bias, dtype):
    """N = 7 in chunks of 1, 2 or 3 images (with a remainder chunk) equals naive."""
    case = ConvConfig(7, 4, 6, 5, 4, (3, 2), (2, 1), (1, 1), (1, 2), groups, bias, dtype)
    workspace = _chunk_workspace(case, images_per_chunk)
    monkeypatch.setattr(fast, "WORKSPACE_BYTES", workspace)
    g = conv_geometry(
        np.empty((7, 4, 6, 5), dtype),
        np.empty((4, 4 // groups, 3, 2), dtype),
        stride=(2, 1),
        pad=1,
        dilation=(1, 2),
        groups=groups,
    )
    assert chunk_images(g, np.dtype(dtype).itemsize) == images_per_chunk
    chunks = []
    real_im2col = _kernels.im2col

    def recording_im2col(x, *args):
        chunks.append(x.shape[0])
        return real_im2col(x, *args)

    monkeypatch.setattr(_kernels, "im2col", recording_im2col)
    x, w, b, dout = case.arrays()
    kwargs = case.kwargs
    out_n, cache_n = naive.conv_forward(x, w, b, **kwargs)
    out_f, cache_f = fast.conv_forward(x, w, b, **kwargs)
    assert_close(out_f, out_n, dtype, "out")
    got_want = zip(fast.conv_backward(dout, cache_f), naive.conv_backward(dout, cache_n))
    for name, (got, want) in zip(("dx", "dw", "db"), got_want):
        if want is None:
            assert got is None
        else:
            assert_close(got, want, dtype, name)
    plan = ConvPlan(g, dtype)
    expected_chunks = [n for k in range(plan.workers) for _, n in plan.chunks(k)]
    # 7 images in chunks of at most images_per_chunk, of sizes within one of each other
    assert sum(expected_chunks) == 7 and images_per_chunk >= max(expected_chunks) >= min(expected_chunks) >= 1
    assert max(expected_chunks) - min(expected_chunks) <= 1
    # forward, then backward; with several workers the chunks run side by side, in any order
    assert sorted(chunks) == sorted(expected_chunks * 2)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_empty_batch_is_consistent(dtype):
    x = np.zeros((0, 2, 5, 4), dtype=dtype)
    w = np.ones((4, 1, 3, 2), dtype=dtype)
    b = np.ones(4, dtype=dtype)
    for module in (naive, fast):
        out, cache = module.conv_forward(x, w, b, stride=2, pad=1, groups=2)
        assert out.shape == (0, 4, 3, 3) and out.dtype == dtype
        dx, dw, db = module.conv_backward(np.zeros(out.shape, dtype), cache)
        assert dx.shape == x.shape and dx.dtype == dtype
        np.testing.assert_array_equal(dw, np.zeros_like(w))
        np.testing.assert_array_equal(db, np.zeros_like(b))
        assert dw.dtype == db.dtype == dtype
        for kind in ("max", "avg"):
            forward, backward = _pool_funcs(module, kind)
            out, cache = forward(x, 3, 2, 1)
            assert out.shape == (0, 2, 3, 2) and out.dtype == dtype
            dx = backward(np.zeros(out.shape, dtype), cache)
            assert dx.shape == x.shape and dx.dtype == dtype


# ---------------------------------------------------------------------------- conv -> ReLU -> max pool
# fast.conv_relu_pool_* fuse the three layers (bias and max pooling on each chunk's GEMM
# output, ReLU on the pooled values); naive.conv_relu_pool_* run them one after the other.
FUSED_POOLS = [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0)), (1, None, 0)]


def _fused_cases():
    cases = []
    for i, case in enumerate(CONV_CASES[::3]):
        k, s, p = FUSED_POOLS[i % len(FUSED_POOLS)]
        kh, kw = (k, k) if isinstance(k, int) else k
        ph, pw = (p, p) if isinstance(p, int) else p
        oh, ow = case.out_hw
        if kh > oh + 2 * ph or kw > ow + 2 * pw:  # the window does not fit this conv output
            k, s, p = FUSED_POOLS[-1]
        cases.append((case, (k, s, p)))
    return cases


FUSED_CASES = _fused_cases()


def _fused_id(item):
    case, (k, s, p) = item

    def as_pair(v):
        return v if isinstance(v, tuple) else (v, v)

    return f"{case}-pool{pair_id(as_pair(k))}-s{s if s is None else pair_id(as_pair(s))}-p{pair_id(as_pair(p))}"


def _fused_run(module, x, w, b, kwargs, pool, dout_fn, need_dx=True):
    k, s, p = pool
    out, cache = module.conv_relu_pool_forward(x, w, b, pool_size=k, pool_stride=s, pool_pad=p, **kwargs)
    return (out,) + module.conv_relu_pool_backward(dout_fn(out), cache, need_dx=need_dx)


@pytest.mark.parametrize("item", FUSED_CASES, ids=_fused_id)
def test_conv_relu_pool_fast_equals_naive(item):
    case, pool = item
    x, w, b, _ = case.arrays()
    rng = np.random.default_rng(_seed(case) + 1)
    douts = {}

    def dout_fn(out):  # the same random dout for both paths
        if out.shape not in douts:
            douts[out.shape] = rng.standard_normal(out.shape).astype(case.dtype)
        return douts[out.shape]

    kwargs = case.kwargs
    want = _fused_run(naive, x, w, b, kwargs, pool, dout_fn)
    for need_dx in (True, False):
        got = _fused_run(fast, x, w, b, kwargs, pool, dout_fn, need_dx)
        for name, g, r in zip(("out", "dx", "dw", "db"), got, want):
            if name == "dx" and not need_dx:
                assert g is None
            elif r is None:
                assert g is None
            else:
                assert_close(g, r, case.dtype, name)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("pool", [(2, None, 0), (3, 2, 1), (3, 1, 1)], ids=["k2", "k3-s2-p1", "k3-s1-p1"])
def test_conv_relu_pool_ties_and_zeros_bitwise(monkeypatch, pool, dtype, workers):
    """Small integers: exact sums, so most windows hold tied maxima and many values are
    clipped to zero by ReLU. The fused path must route every gradient exactly as the
    three separate layers do (bitwise), in chunks of one image on one or two workers."""
    from fastconv.engine import threads as _parallel

    monkeypatch.setattr(fast, "WORKSPACE_BYTES", 1)
    monkeypatch.setattr(_parallel, "blas_threads", lambda: workers)
    rng = np.random.default_rng(7)
    x = rng.integers(-2, 3, size=(5, 3, 8, 7)).astype(dtype)
    w = rng.integers(-1, 2, size=(4, 3, 3, 3)).astype(dtype)
    b = np.array([-9, -6, -3, 0], dtype=dtype)  # from mostly clipped to mostly positive

    def dout_fn(out):
        return np.arange(1, out.size + 1, dtype=dtype).reshape(out.shape)  # distinct: a misroute shows

    kwargs = dict(stride=1, pad=1)
    want = _fused_run(naive, x, w, b, kwargs, pool, dout_fn)
    got = _fused_run(fast, x, w, b, kwargs, pool, dout_fn)
    assert 0.2 < (want[0] == 0).mean() < 0.8, "the data should clip many windows to zero, not all"
    for name, g, r in zip(("out", "dx", "dw", "db"), got, want):
        np.testing.assert_array_equal(g, r, err_msg=name)


@pytest.mark.parametrize("pool", [(2, None, 0), (3, 2, 1)], ids=["k2", "k3-s2-p1"])
def test_conv_maxpool_relu_order_is_the_same_layer_bitwise(pool):
    """Max pooling before ReLU gives the same values and gradients as ReLU before it
    (models fuse both orders): checked on tied, clipped integer data."""
    k, s, p = pool
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 3, size=(3, 2, 7, 8)).astype(np.float64)
    w = rng.integers(-1, 2, size=(4, 2, 3, 3)).astype(np.float64)
    b = np.array([-6.0, -3.0, 0.0, 1.0])
    h, conv_cache = naive.conv_forward(x, w, b, 1, 1)
    pooled, pool_cache = naive.max_pool_forward(h, k, s, p)
    out, relu_cache = naive.relu_forward(pooled)
    dout = np.arange(1, out.size + 1, dtype=np.float64).reshape(out.shape)
    want = (out,) + naive.conv_backward(
        naive.max_pool_backward(naive.relu_backward(dout, relu_cache), pool_cache), conv_cache
    )
    got = _fused_run(fast, x, w, b, dict(stride=1, pad=1), pool, lambda o: dout)
    assert 0.1 < (out == 0).mean() < 0.9, "the data should clip some windows to zero, not all"
    for name, g, r in zip(("out", "dx", "dw", "db"), got, want):
        np.testing.assert_array_equal(g, r, err_msg=name)


def test_conv_relu_pool_nan_as_the_separate_layers():
    """A NaN in x: the pooled value is NaN in both paths and no gradient flows through it."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 6, 6))
    x[1, 0, 2, 3] = np.nan
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    dout = rng.standard_normal((2, 3, 3, 3))
    with np.errstate(invalid="ignore"):
        want = _fused_run(naive, x, w, b, dict(stride=1, pad=1), (2, None, 0), lambda out: dout)
        got = _fused_run(fast, x, w, b, dict(stride=1, pad=1), (2, None, 0), lambda out: dout)
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(want[0]))
    assert np.isnan(got[0]).any()
    for name, g, r in zip(("out", "dx", "dw", "db"), got, want):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12, err_msg=name)


def test_conv_relu_pool_argument_errors_name_the_pool_arguments():
    x, w = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3))
    for module in (naive, fast):
        with pytest.raises(ValueError, match="pool_size"):
            module.conv_relu_pool_forward(x, w, None, pool_size=3)  # conv output 2x2 < 3
        with pytest.raises(ValueError, match="pool_pad"):
            module.conv_relu_pool_forward(x, w, None, pad=1, pool_size=2, pool_pad=2)
        with pytest.raises(ValueError, match="the convolution's output"):
            module.conv_relu_pool_forward(x, w, None, pool_size=3)


# ---------------------------------------------------------------------------- spatial batchnorm
# (N, C, H, W, mean offset): fast's Cython passes against the numpy reference (naive's).
BN_SHAPES = [
    (4, 3, 5, 6, 0.0),
    (1, 2, 1, 1, 0.0),
    (2, 5, 7, 3, 0.0),
    (3, 4, 8, 8, 1e3),
    (5, 1, 3, 9, -50.0),
    (2, 3, 4, 4, 0.0),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: f"n{s[0]}c{s[1]}-x{s[2]}x{s[3]}-mean{s[4]:g}")
def test_spatial_batchnorm_fast_equals_reference(shape, dtype):
    N, C, H, W, offset = shape
    rng = np.random.default_rng(N * 1000 + C * 100 + H * 10 + W)
    x = (rng.standard_normal((N, C, H, W)) * 2 + offset).astype(dtype)
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    running = {"running_mean": rng.standard_normal(C).astype(dtype), "running_var": rng.random(C).astype(dtype) + 0.5}
    results = []
    for module in (naive, fast):
        param = {"mode": "train", "momentum": 0.8, "eps": 1e-4, **{k: v.copy() for k, v in running.items()}}
        out, cache = module.spatial_batchnorm_forward(x, gamma, beta, param)
        grads = module.spatial_batchnorm_backward(dout, cache)
        test_param = {"mode": "test", **{k: param[k] for k in running}}
        out_test, _ = module.spatial_batchnorm_forward(x, gamma, beta, test_param)
        results.append((out, *grads, param["running_mean"], param["running_var"], out_test))
    names = ("out", "dx", "dgamma", "dbeta", "running_mean", "running_var", "out (test mode)")
    for name, got, want in zip(names, results[1], results[0]):
        if N * H * W == 1 and name in ("dx", "dgamma"):
            # one value per channel: xhat = 0, so the reference's dx is 0 plus float noise
            assert np.abs(got).max() < 1e-3 * max(1.0, np.abs(dout).max()), name
            continue
        assert_close(got, want, dtype, name)


def test_spatial_batchnorm_fast_does_not_touch_its_inputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 4, 5))
    gamma, beta, dout = rng.standard_normal(2), rng.standard_normal(2), rng.standard_normal((3, 2, 4, 5))
    before = [a.copy() for a in (x, gamma, beta, dout)]
    out, cache = fast.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})
    fast.spatial_batchnorm_backward(dout, cache)
    for a, b in zip((x, gamma, beta, dout), before):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- build mode
def test_build_mode():
    """With FASTCONV_EXPECT_DEBUG_BUILD=1 (or 0) set, the extension must be the bounds-checked (or release) build."""
    import importlib

    expected = os.environ.get("FASTCONV_EXPECT_DEBUG_BUILD", "")
    if expected == "":
        pytest.skip("FASTCONV_EXPECT_DEBUG_BUILD is unset (1: expect the bounds-checked build, 0: the release build)")
    assert expected in ("0", "1"), f"FASTCONV_EXPECT_DEBUG_BUILD must be 0 or 1, got {expected!r}"
    from fastconv.kernels.isa import OPTIONAL, module_name

    builds = [_kernels, importlib.import_module("fastconv.kernels._im2col")]  # the one fast runs, and every other
    for build in OPTIONAL:
        if not builds[1].cpu_supports(build.features):
            continue  # importing it could crash this CPU
        try:
            builds.append(importlib.import_module(module_name(build.isa)))
        except ImportError:
            pass
    for build in builds:
        assert build.build_info()["debug_build"] is (expected == "1"), build.__name__
