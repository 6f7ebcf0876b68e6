"""The direct convolution (``fast.conv_forward(..., algorithm="direct")``) equals naive.

What this file establishes:

* forward, dx, dw and db equal ``fastconv.naive`` on a grid of awkward convolutions
  (non-square kernels and images, stride 1-3, padding larger than the kernel, dilation,
  groups, batch 1, one channel, output rows longer and shorter than a vector), both
  dtypes, with and without bias; ``need_dx=False`` skips dx only; backward equals
  centred numerical gradients in float64;
* NaN and infinity reach exactly the outputs and gradients they reach in naive;
* results do not depend on the thread count (dW is summed per fixed block of images);
* the fused conv-relu-pool layer on direct is the three layers run one after the other;
  its 2x2 / 2 pool runs inside the kernel (the full-size output is never stored) and
  gives bitwise the pooled values and argmax of the stored-output path, on a grid with
  odd output sizes, strides, groups, batch 1, bands of any height, NaN and infinity;
* "auto" runs direct exactly where ``algorithms.direct_wins`` says so; a request direct cannot
  serve raises ValueError naming ``algorithm``; the kernels refuse offsets and buffers
  that would read or write outside what they were given.
"""

import re

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastconv.fast as fast
import fastconv.naive as naive
from fastconv.engine import algorithms
from fastconv.engine import direct as _direct
from fastconv.engine import threads as engine_threads
from fastconv.engine.geometry import conv_geometry
from fastconv.kernels import picker
from fastconv.testing import DTYPES, GRAD_TOL, assert_close, numerical_gradient

from _helpers import dtype_id, pair_id

#: (x shape, w shape, stride, pad, dilation, groups)
CASES = [
    ((2, 3, 9, 11), (5, 3, 3, 2), 1, 1, 1, 1),
    ((1, 1, 7, 40), (3, 1, 2, 2), 1, 0, 1, 1),  # rows longer than a float32 vector
    ((2, 3, 32, 32), (8, 3, 7, 7), 1, 3, 1, 1),  # a first layer, "same" padding
    ((2, 3, 12, 13), (6, 3, 5, 5), 1, 0, 1, 1),  # LeNet-like, no padding
    ((2, 4, 13, 20), (6, 2, 3, 5), (2, 3), (1, 2), (2, 1), 2),
    ((1, 2, 10, 17), (4, 2, 3, 3), 3, 1, 1, 1),  # stride 3
    ((3, 2, 8, 9), (7, 2, 2, 3), 2, 0, 1, 1),
    ((2, 6, 9, 9), (6, 2, 3, 3), 1, 2, 2, 3),  # dilation 2, three groups
    ((1, 3, 4, 5), (9, 3, 3, 3), 1, 4, 1, 1),  # padding larger than the kernel
    ((2, 2, 5, 6), (3, 2, 5, 6), 2, (3, 1), 1, 1),  # kernel larger than the image
    ((1, 8, 6, 7), (17, 8, 1, 1), 1, 0, 1, 1),  # 1x1, filters past a whole tile
    ((2, 1, 20, 3), (2, 1, 4, 1), (1, 2), (0, 1), (3, 1), 1),
]


def _case_id(case):
    xs, ws, s, p, d, g = case
    return f"x{xs[2]}x{xs[3]}-c{xs[1]}-f{ws[0]}-k{ws[2]}x{ws[3]}-s{pair_id(s)}-p{pair_id(p)}-d{pair_id(d)}-g{g}"


def _data(case, dtype, seed=0, bias=True):
    xs, ws, s, p, d, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
    return x, w, b, dict(stride=s, pad=p, dilation=d, groups=g)


def _fwdbwd(module, x, w, b, kwargs, need_dx=True, algorithm="direct"):
    extra = {"algorithm": algorithm} if module is fast else {}
    out, cache = module.conv_forward(x, w, b, **kwargs, **extra)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
    return (out,) + module.conv_backward(dout, cache, need_dx=need_dx)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_direct_equals_naive(case, dtype, bias):
    x, w, b, kwargs = _data(case, dtype, bias=bias)
    assert fast.conv_algorithm(x, w, b, **kwargs, algorithm="direct") == "direct"
    got, want = _fwdbwd(fast, x, w, b, kwargs), _fwdbwd(naive, x, w, b, kwargs)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, want):
        if r is None:
            assert a is None, name
        else:
            assert_close(a, r, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_need_dx_false_skips_dx_only(dtype):
    x, w, b, kwargs = _data(CASES[4], dtype)
    full = _fwdbwd(fast, x, w, b, kwargs)
    part = _fwdbwd(fast, x, w, b, kwargs, need_dx=False)
    assert part[1] is None
    for a, r in zip(part[2:], full[2:]):
        assert a.tobytes() == r.tobytes()


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[7]], ids=_case_id)
def test_backward_equals_numerical_gradients(case):
    x, w, b, kwargs = _data(case, np.float64)
    x, w = x[:1, :, :7, :8].copy(), w.copy()
    out, cache = fast.conv_forward(x, w, b, **kwargs, algorithm="direct")
    dout = np.random.default_rng(2).standard_normal(out.shape)
    dx, dw, db = fast.conv_backward(dout, cache)

    def f(_):
        return fast.conv_forward(x, w, b, **kwargs, algorithm="direct")[0]

    for name, got, arg in (("dx", dx, x), ("dw", dw, w), ("db", db, b)):
        assert_close(got, numerical_gradient(f, arg, dout), np.float64, name, GRAD_TOL)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["x", "w", "dout"])
def test_non_finite_values_reach_what_they_reach_in_naive(bad, where):
    """A NaN or an infinity in x, w or dout reaches the same outputs and gradients as in
    the naive loops (0 * inf = NaN included), also from the lanes past a row's end, which
    the kernels compute but never store or sum."""
    case = ((2, 2, 6, 19), (3, 2, 3, 2), 1, (1, 0), 1, 1)  # out_w 18: 3 float64 vectors, the last 2 lanes used
    x, w, b, kwargs = _data(case, np.float64)
    rng = np.random.default_rng(5)
    if where == "x":
        # the last column: tap j=0 reads it only in lane 18, past out_w, so naive's dw[:, 0, :, 0]
        # stays finite (asserted below) and the dW kernel must mask that lane
        x[1, 0, 3, 18] = bad
        x[0, 1, 2, 4] = bad
    elif where == "w":
        w[1, 1, 2, 0] = bad
    results = []
    for module in (fast, naive):
        extra = {"algorithm": "direct"} if module is fast else {}
        out, cache = module.conv_forward(x, w, b, **kwargs, **extra)
        dout = rng.standard_normal(out.shape) if not results else results[0][-1]
        if where == "dout" and not results:
            dout[0, 2, 5, 7] = bad
        results.append((out,) + module.conv_backward(dout, cache) + (dout,))
    for name, a, r in zip(("out", "dx", "dw", "db"), results[0], results[1]):
        assert np.array_equal(np.isnan(a), np.isnan(r)), name
        assert np.array_equal(np.isinf(a), np.isinf(r)), name
        finite = np.isfinite(r)
        assert np.allclose(a[finite], r[finite], rtol=1e-9, atol=1e-9), name
    assert not np.isfinite(results[0][0]).all() or where == "dout"
    if where == "x":
        assert np.isfinite(results[1][2][:, 0, :, 0]).all() and not np.isfinite(results[1][2][:, 0, :, 1]).all()


def _every_tap(monkeypatch):
    monkeypatch.setattr(_direct, "_kernel_rows", lambda g, w: np.empty(0, dtype=np.intp))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_skipping_the_padding_rows_gives_the_same_bits(monkeypatch, case, dtype):
    """Forward, dx and the fused 2x2 / 2 pool skip the kernel rows that read only padding
    rows (``_kernel_rows``): the same bits as every tap run (their products are +-0)."""
    x, w, b, kwargs = _data(case, dtype)
    pooled = case[3] != 4 and case[2] == 1  # a pool needs >= 2 output rows and columns

    def run():
        got = [a.tobytes() for a in _fwdbwd(fast, x, w, b, kwargs)]
        for band_bytes in (_direct.POOL_BAND_BYTES, 1) if pooled else ():  # one band; bands of 2 rows
            with monkeypatch.context() as m:
                m.setattr(_direct, "POOL_BAND_BYTES", band_bytes)
                out = fast.conv_relu_pool_forward(x, w, b, **kwargs, pool_size=2, algorithm="direct")[0]
            got.append(out.tobytes())
        return got

    skipped = run()
    _every_tap(monkeypatch)
    assert skipped == run()


def test_skipping_real_rows_would_be_seen(monkeypatch):
    """The check above can fail: kernel rows that claim a dilation twice the layer's skip
    taps that read pixels, and the outputs change."""
    x, w, b, kwargs = _data(CASES[2], np.float64)
    want = _fwdbwd(fast, x, w, b, kwargs)[0]
    monkeypatch.setattr(_direct, "_kernel_rows", lambda g, w: np.array([g.kh, g.kw, 2 * g.dil_h], dtype=np.intp))
    assert _fwdbwd(fast, x, w, b, kwargs)[0].tobytes() != want.tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_thread_count_does_not_change_a_bit(monkeypatch, dtype):
    monkeypatch.setattr(engine_threads, "PARALLEL_MIN", 0)  # small layers run on every thread too
    x, w, b, kwargs = _data(((7, 3, 14, 23), (5, 3, 3, 4), 1, 1, 1, 1), dtype)
    results = []
    for threads in (1, 2, 3):
        with threadpool_limits(threads):
            results.append([a.tobytes() for a in _fwdbwd(fast, x, w, b, kwargs)])
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_every_tile_of_the_build_gives_the_same_bits(monkeypatch, dtype):
    """Each tile of direct_tiles() forced in turn, forward and dx (13 filters, 5 channels:
    every tile has a partial last block): an output's sum runs over the taps in the same
    order whatever the tile."""
    x, w, b, kwargs = _data(((2, 5, 11, 37), (13, 5, 3, 5), 1, 1, 1, 1), dtype)
    tiles = picker.kernels.direct_tiles()["forward"]
    assert set(tiles) <= set(picker.kernels.DIRECT_FILTER_TILES) and 4 in tiles
    results = {}
    for ft in tiles:
        monkeypatch.setattr(_direct, "_tile", lambda filters, ft=ft: ft)
        results[ft] = [a.tobytes() for a in _fwdbwd(fast, x, w, b, kwargs)]
    assert len(set(map(tuple, results.values()))) == 1, f"tiles {list(tiles)} disagree"


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("pool", [(2, None, 0), (3, 2, 1)], ids=["pool2", "pool3s2p1"])
def test_fused_conv_relu_pool_on_direct(dtype, pool):
    """The fused layer on direct: bitwise the direct convolution, ReLU and max pooling run
    one after the other, and close to naive's fused layer."""
    x, w, b, kwargs = _data(((3, 3, 12, 14), (6, 3, 5, 5), 1, 2, 1, 1), dtype)
    w = np.round(w * 2)  # integer weights: ties inside the pooling windows
    size, stride, ppad = pool
    fused = {"pool_size": size, "pool_stride": stride, "pool_pad": ppad}
    out, cache = fast.conv_relu_pool_forward(x, w, b, **kwargs, **fused, algorithm="direct")
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(dtype)
    grads = fast.conv_relu_pool_backward(dout, cache)

    y, c1 = fast.conv_forward(x, w, b, **kwargs, algorithm="direct")
    r, c2 = fast.relu_forward(y)
    p, c3 = fast.max_pool_forward(r, size, stride, ppad)
    dr = fast.relu_backward(fast.max_pool_backward(dout, c3), c2)
    separate = (p,) + fast.conv_backward(dr, c1)
    for name, a, s in zip(("out", "dx", "dw", "db"), (out,) + grads, separate):
        assert a.tobytes() == s.tobytes(), name

    nout, ncache = naive.conv_relu_pool_forward(x, w, b, **kwargs, **fused)
    reference = (nout,) + naive.conv_relu_pool_backward(dout, ncache)
    for name, a, r in zip(("out", "dx", "dw", "db"), (out,) + grads, reference):
        assert_close(a, r, dtype, name)


#: (x shape, w shape, stride, pad, dilation, groups) of the fused 2x2 / 2 pool in the kernel
POOL2_CASES = [
    ((2, 3, 12, 14), (6, 3, 5, 5), 1, 2, 1, 1),
    ((1, 3, 11, 13), (5, 3, 3, 3), 1, 1, 1, 1),  # output 11x13: the pool drops a row and a column
    ((2, 2, 15, 20), (4, 2, 3, 3), 2, 1, 1, 1),  # stride 2
    ((2, 3, 32, 32), (32, 3, 7, 7), 1, 3, 1, 1),  # W1conv's layer, many bands
    ((2, 4, 13, 20), (6, 2, 3, 5), (2, 3), (1, 2), (2, 1), 2),  # output 6x7
    ((1, 1, 7, 40), (3, 1, 2, 2), 1, 0, 1, 1),  # output rows longer than a float32 vector, odd
    ((2, 3, 9, 9), (17, 3, 1, 1), 1, 0, 1, 1),  # filters past a whole tile
    ((1, 2, 4, 4), (3, 2, 3, 3), 1, 0, 1, 1),  # a 2x2 output: one window
]


def _stored_output_path(x, w, b, kwargs):
    """What the fused layer computed before its pool ran in the kernel: the direct
    convolution stored whole, max pooled, then ReLU; and the three layers' gradients."""
    y, c1 = fast.conv_forward(x, w, b, **kwargs, algorithm="direct")
    pooled, c3 = fast.max_pool_forward(y, 2)
    return np.maximum(pooled, 0), c3[0].reshape(-1), c1


@pytest.mark.parametrize("band_bytes", [_direct.POOL_BAND_BYTES, 1], ids=["bands", "band2"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", POOL2_CASES, ids=_case_id)
def test_fused_pool2_in_the_kernel_is_the_stored_output_path(monkeypatch, case, dtype, bias, band_bytes):
    """The 2x2 / 2 pool inside the direct kernel: the pooled values, the argmax in the cache
    and every gradient are bitwise those of the stored-output path and of the three
    separate layers; close to naive. Small integers (exact sums) and a negative bias: tied
    maxima and many windows clipped to zero."""
    monkeypatch.setattr(_direct, "POOL_BAND_BYTES", band_bytes)  # 1: bands of two rows
    x, w, b, kwargs = _data(case, dtype, seed=4, bias=bias)
    x, w = np.round(x * 2), np.round(w * 2)
    if bias:
        b = np.round(b * 4) - 2
    out, cache = fast.conv_relu_pool_forward(x, w, b, **kwargs, pool_size=2, algorithm="direct")
    want, argmax, c1 = _stored_output_path(x, w, b, kwargs)
    assert out.tobytes() == want.tobytes()
    assert cache[6].dtype == np.int32 and cache[6].tobytes() == argmax.tobytes()

    dout = np.arange(1, out.size + 1, dtype=dtype).reshape(out.shape)  # distinct: a misroute shows
    grads = fast.conv_relu_pool_backward(dout, cache)
    y, c1 = fast.conv_forward(x, w, b, **kwargs, algorithm="direct")
    r, c2 = fast.relu_forward(y)
    p, c3 = fast.max_pool_forward(r, 2)
    separate = (p,) + fast.conv_backward(fast.relu_backward(fast.max_pool_backward(dout, c3), c2), c1)
    for name, a, s in zip(("out", "dx", "dw", "db"), (out,) + grads, separate):
        assert (a is None) == (s is None) and (a is None or a.tobytes() == s.tobytes()), name

    nout, ncache = naive.conv_relu_pool_forward(x, w, b, **kwargs, pool_size=2)
    for name, a, r in zip(
        ("out", "dx", "dw", "db"), (out,) + grads, (nout,) + naive.conv_relu_pool_backward(dout, ncache)
    ):
        if r is None:
            assert a is None, name
        else:
            assert_close(a, r, dtype, name)


@pytest.mark.parametrize("pool", [(2, None, 0), (3, 2, 1)], ids=["pool2", "pool3s2p1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", POOL2_CASES, ids=_case_id)
def test_fused_dw_alone_routes_in_the_kernel_with_the_same_bits(monkeypatch, case, dtype, pool):
    """The fused layer's backward with need_dx=False routes each image's pooled gradient
    inside the dW kernel (straight into its packed rows when they fill their segments, as
    W1conv's 32-pixel rows do): dw and db bitwise those of the three separate layers,
    whose routed gradient passes through memory whole. Overlapping windows (3x3 / 2) add
    at a pixel twice; -0.0 and a NaN are routed as they are."""
    x, w, b, kwargs = _data(case, dtype, seed=5)
    x, w = np.round(x * 2), np.round(w * 2)
    size, stride, ppad = pool
    fused = {"pool_size": size, "pool_stride": stride, "pool_pad": ppad}
    out, cache = fast.conv_relu_pool_forward(x, w, b, **kwargs, **fused, algorithm="direct")
    dout = np.random.default_rng(6).standard_normal(out.shape).astype(dtype)
    dout.flat[::5] = -0.0
    dout.flat[-1] = np.nan
    routed = []
    real = picker.kernels.direct_dw

    def spy(*args):
        routed.append(len(args) > 18)  # argmax, out_h, out_w after the 18 plain arguments
        return real(*args)

    monkeypatch.setattr(picker.kernels, "direct_dw", spy)
    dx, dw, db = fast.conv_relu_pool_backward(dout, cache, need_dx=False)
    assert dx is None and routed and all(routed)

    y, c1 = fast.conv_forward(x, w, b, **kwargs, algorithm="direct")
    r, c2 = fast.relu_forward(y)
    p, c3 = fast.max_pool_forward(r, size, stride, ppad)
    del routed[:]
    _, sdw, sdb = fast.conv_backward(fast.relu_backward(fast.max_pool_backward(dout, c3), c2), c1, need_dx=False)
    assert routed and not any(routed)
    assert dw.tobytes() == sdw.tobytes() and db.tobytes() == sdb.tobytes()


def test_direct_dw_checks_its_routing(monkeypatch):
    """direct_dw's routed form refuses an argmax of another shape, a missing output size,
    and an index outside the convolution's plane (after its loop, as max_pool_backward)."""
    g = conv_geometry(np.empty((2, 3, 8, 8)), np.empty((4, 3, 3, 3)), None, 1, 1, 1, 1)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    dz = np.ones((2, 4, 4, 4))
    good = np.tile((np.arange(16, dtype=np.int32) * 4).reshape(1, 1, 4, 4), (2, 4, 1, 1))
    dw, db = _direct._dw(g, x, dz, good)  # a working call first: every pooled 1 at a pixel of its own
    assert np.array_equal(db, np.full(4, 32.0))
    with pytest.raises(ValueError, match=r"index\(es\) outside its plane of 64 pixels"):
        _direct._dw(g, x, dz, np.where(good == 60, 64, good).astype(np.int32))
    with pytest.raises(ValueError, match="argmax must have dout's shape"):
        _direct._dw(g, x, dz, good[:, :, :3].copy())
    real = picker.kernels.direct_dw
    monkeypatch.setattr(picker.kernels, "direct_dw", lambda *args: real(*args[:-2], 0, 8))
    with pytest.raises(ValueError, match="must be positive with argmax"):
        _direct._dw(g, x, dz, good)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("where", ["x", "w"])
def test_fused_pool2_in_the_kernel_keeps_nan_and_infinity(where, dtype):
    """NaN and +-inf in x or w: the pooled values (NaN's bits included: the first NaN of a
    window wins, ReLU keeps it) and the argmax are those of the stored-output path, bit for
    bit, so the gradients are too."""
    case = ((2, 2, 9, 19), (5, 2, 3, 3), 1, 1, 1, 1)
    x, w, b, kwargs = _data(case, dtype, seed=6)
    if where == "x":
        x[0, 1, 2, 5], x[1, 0, 4, 4], x[1, 1, 7, 18], x[0, 0, 0, 0] = np.nan, np.inf, -np.inf, np.nan
    else:
        w[1, 0, 1, 1], w[3, 1, 0, 2], w[4, 0, 2, 2] = np.nan, np.inf, -np.inf
    with np.errstate(invalid="ignore"):
        out, cache = fast.conv_relu_pool_forward(x, w, b, **kwargs, pool_size=2, algorithm="direct")
        want, argmax, _ = _stored_output_path(x, w, b, kwargs)
        assert np.isnan(out).any() and np.isinf(out).any()
        assert out.tobytes() == want.tobytes() and cache[6].tobytes() == argmax.tobytes()
        dout = np.random.default_rng(2).standard_normal(out.shape).astype(dtype)
        grads = fast.conv_relu_pool_backward(dout, cache)
        nout, ncache = naive.conv_relu_pool_forward(x, w, b, **kwargs, pool_size=2)
        reference = (nout,) + naive.conv_relu_pool_backward(dout, ncache)
    for name, a, r in zip(("out", "dx", "dw", "db"), (out,) + grads, reference):
        assert np.array_equal(np.isnan(a), np.isnan(r)), name
        assert np.array_equal(np.isinf(a), np.isinf(r)), name


def test_the_fused_2x2_pool_never_stores_the_full_output(monkeypatch):
    """A 2x2 / 2 pool runs in the kernel: the stored-output path (conv_forward into a
    full-size buffer) is not called; any other pool still takes it."""
    x, w, b, kwargs = _data(CASES[3], np.float32)

    def stored(*args, **kwargs):
        raise AssertionError("the full-size convolution output was computed")

    monkeypatch.setattr(_direct, "conv_forward", stored)
    fast.conv_relu_pool_forward(x, w, b, **kwargs, pool_size=2, algorithm="direct")
    with pytest.raises(AssertionError, match="full-size"):
        fast.conv_relu_pool_forward(x, w, b, **kwargs, pool_size=3, pool_stride=2, algorithm="direct")


def test_direct_conv_relu_pool2_kernel_checks_its_buffers():
    args = _kernel_args()
    x, wpk, off, b, pk_args = args[0], args[2], args[3], args[4], args[9:17]
    z, am = np.empty((1, 4, 2, 3)), np.empty((1, 4, 2, 3), np.int32)
    scratch = np.empty((1, args[-2].shape[1] + 4 * 2 * 6 + 8))

    def call(z=z, am=am, band=2, scratch=scratch, out_hw=(5, 6)):
        picker.kernels.direct_conv_relu_pool2(
            x, z, am, *out_hw, wpk, off, b, False, 1, 18, 4, *pk_args, args[17], band, scratch, 1
        )

    call()
    assert np.all(z == 18) and am[0, 0, 0, 0] == 7 and am[0, 0, 1, 2] == 2 * 6 + 4  # a working call first
    with pytest.raises(ValueError, match=r"^z must have shape \(1, F, 2, 3\)"):
        call(z=np.empty((1, 4, 3, 3)))
    with pytest.raises(ValueError, match=r"^argmax must have z's shape"):
        call(am=np.empty((1, 4, 2, 2), np.int32))
    with pytest.raises(ValueError, match=r"^band must be even and >= 2, got 3"):
        call(band=3)
    with pytest.raises(ValueError, match=r"^scratch must be at least"):
        call(band=4)  # two rows more than the scratch holds
    tall = np.empty((1, 4, 3, 3))
    with pytest.raises(ValueError, match="reads outside the packed buffer"):
        call(z=tall, am=tall.astype(np.int32), out_hw=(7, 6))  # an output taller than the packed image


def test_auto_runs_direct_where_the_rule_says():
    """conv_algorithm and the cache follow algorithms.direct_wins; backward runs what forward ran."""
    first = np.zeros((4, 3, 32, 32), np.float32), np.zeros((32, 3, 7, 7), np.float32)
    hidden = np.zeros((4, 64, 16, 16), np.float32), np.zeros((64, 64, 3, 3), np.float32)
    for x, w in (first, hidden):
        g = conv_geometry(x, w, None, 1, 1)
        expected = "direct" if algorithms.direct_wins(g) else algorithms.choose(g, "auto", x, w)[0]
        assert fast.conv_algorithm(x, w, pad=1) == expected
    assert fast.conv_algorithm(*first, pad=3) == "direct"
    assert fast.conv_algorithm(*hidden, pad=1) != "direct"
    out, cache = fast.conv_forward(*first, pad=3)
    assert cache[-1] == ("direct", True)


def test_the_rule_of_auto(monkeypatch):
    """The documented rule (docs/performance.md, "Direct convolution and the rule of auto"):
    stride 1, no dilation or groups, at most 8 channels and 32 filters, a 3x3 to 7x7 kernel,
    output rows of at least 24 pixels; every other layer keeps its old algorithm."""

    def geometry(C=3, k=(7, 7), F=32, HW=(32, 32), groups=1, stride=1, dilation=1, pad=None):
        x = np.zeros((2, C, *HW), np.float32)
        w = np.zeros((F, C // groups, *k), np.float32)
        pad = (k[0] // 2, k[1] // 2) if pad is None else pad
        return conv_geometry(x, w, None, stride, pad, dilation, groups)

    wins = [
        geometry(),
        geometry(k=(5, 5), F=16, pad=0),
        geometry(C=1, k=(5, 5), F=16, HW=(28, 28)),
        geometry(C=1, k=(3, 3), F=32),
        geometry(C=1, k=(7, 7), F=32, HW=(28, 28)),  # ConvNet1 on MNIST-sized images
        geometry(C=1, k=(5, 5)),
        geometry(C=8, k=(3, 3)),
        geometry(k=(3, 7)),
        geometry(HW=(24, 200)),
    ]
    loses = [
        geometry(F=33),
        geometry(C=1, F=33),
        geometry(C=9),
        geometry(k=(1, 1)),
        geometry(k=(9, 9)),
        geometry(k=(3, 8)),
        geometry(HW=(32, 23)),
        geometry(HW=(28, 28), pad=0),
        geometry(stride=(1, 2)),
        geometry(dilation=2),
        geometry(C=4, groups=2),
        geometry(C=64, k=(3, 3), F=64),
    ]
    assert all(algorithms.direct_wins(g) for g in wins)
    assert not any(algorithms.direct_wins(g) for g in loses)
    x, w = np.zeros((2, 3, 32, 32)), np.zeros((32, 3, 7, 7))
    assert fast.conv_algorithm(x, w, pad=3) == "direct"
    monkeypatch.setattr(algorithms, "AUTO_MAX_FILTERS", 31)  # the rule reads its bounds
    assert not algorithms.direct_wins(geometry())
    monkeypatch.setattr(algorithms, "direct_wins", lambda g: False)  # what auto ran before direct existed
    assert fast.conv_algorithm(x, w, pad=3) == "im2col"


@pytest.mark.parametrize("module", [fast, naive], ids=["fast", "naive"])
def test_a_layer_too_big_for_direct_raises_naming_algorithm(module, monkeypatch):
    x, w = np.zeros((1, 256, 8, 8), np.float32), np.zeros((256, 256, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"^algorithm='direct' needs a layer whose per-thread buffers fit in 16 MiB"):
        module.conv_forward(x, w, algorithm="direct")
    monkeypatch.setattr(_direct, "SCRATCH_BYTES_MAX", 1 << 10)  # the check reads the bound
    with pytest.raises(ValueError, match=r"^algorithm='direct' needs .* fit in 0.000976562 MiB"):
        module.conv_forward(np.zeros((1, 3, 8, 8)), np.zeros((2, 3, 3, 3)), algorithm="direct")


def _kernel_args(dtype=np.float64):
    """Arguments of direct_conv for a (1, 2, 5, 6) image and a 3x3 kernel with pad 1."""
    x, w = np.ones((1, 2, 5, 6), dtype), np.ones((4, 2, 3, 3), dtype)
    g = conv_geometry(x, w, None, 1, 1)
    pk = _direct._forward_packing(g, _direct._lanes(x.itemsize))
    off = _direct._tap_offsets(pk, 1, 2, 3, 3, 1, 1)
    wpk = _direct._pack_weights(w.reshape(1, 4, 18), 1, 4)
    out = np.empty(g.out_shape, dtype)
    scratch = np.empty((1, 2 * pk.plane), dtype)
    return [x, out, wpk, off, np.empty(0, dtype), False, 1, 18, 4, *pk.args(), np.empty(0, np.intp), scratch, 1]


def test_direct_conv_kernel_reads_inside_its_buffers_only():
    args = _kernel_args()
    picker.kernels.direct_conv(*args)
    assert np.all(args[1][:, :, 1:-1, 1:-1] == 18)  # the check below runs on a working call
    bad = list(args)
    bad[3] = args[3].copy()
    bad[3][-1] += args[-2].shape[1]  # one tap past the packed image
    with pytest.raises(ValueError, match="reads outside the packed buffer"):
        picker.kernels.direct_conv(*bad)
    bad = list(args)
    bad[-2] = args[-2][:, :-1]
    with pytest.raises(ValueError, match=r"^scratch must be at least"):
        picker.kernels.direct_conv(*bad)
    bad = list(args)
    bad[2] = args[2][:-1]
    with pytest.raises(ValueError, match=r"^wpk must hold"):
        picker.kernels.direct_conv(*bad)
    for rows in ([3, 3], [3, 4, 1], [0, 3, 1], [3, 3, 0]):  # not (kh, kw, dil_h), or kh * kw not dividing taps
        bad = list(args)
        bad[17] = np.array(rows, dtype=np.intp)
        with pytest.raises(ValueError, match=r"^kernel_rows must be"):
            picker.kernels.direct_conv(*bad)
    tiles = tuple(picker.kernels.direct_tiles()["forward"])
    for missing in [5] + [ft for ft in picker.kernels.DIRECT_FILTER_TILES if ft not in tiles]:
        bad = list(args)
        bad[8] = missing  # a tile no build has, or one this build has not
        with pytest.raises(ValueError, match=rf"^FT must be one of {re.escape(str(tiles))}, got {missing}"):
            picker.kernels.direct_conv(*bad)


def test_tap_offsets_are_made_once_and_cannot_be_changed():
    """The offsets are cached per packing and kernel: the same array comes back, and it is
    read-only, so no caller can change what the next call gets."""
    x, w = np.ones((1, 2, 5, 6)), np.ones((4, 2, 3, 3))
    pk = _direct._forward_packing(conv_geometry(x, w, None, 1, 1), 8)
    off = _direct._tap_offsets(pk, 1, 2, 3, 3, 1, 1)
    assert _direct._tap_offsets(pk, 1, 2, 3, 3, 1, 1) is off
    assert _direct._tap_offsets(pk, 1, 2, 3, 3, 1, 1, padded_to=20).shape == (20,)
    with pytest.raises(ValueError, match="read-only"):
        off[0] = 1
    assert off[1] - off[0] == 1 and off[3] - off[0] == pk.S * pk.Wq and off[9] - off[0] == pk.plane


def test_float32_error_on_the_first_layer_workload_is_small():
    """W1conv's shapes at batch 2: direct in float32 against naive in float64."""
    x, w, b, kwargs = _data(((2, 3, 32, 32), (32, 3, 7, 7), 1, 3, 1, 1), np.float64)
    want = _fwdbwd(naive, x, w, b, kwargs)
    got = _fwdbwd(fast, *(a.astype(np.float32) for a in (x, w, b)), kwargs)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, want):
        assert_close(a, r.astype(np.float32), np.float32, name, tolerance=1e-5)
