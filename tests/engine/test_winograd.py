"""The Winograd paths (``fast.conv_forward(..., algorithm="winograd2")``, F(2x2, 3x3), which
"winograd" names too, and ``algorithm="winograd4"``, F(4x4, 3x3)) equal naive.

What this file establishes, for both tile sizes:

* forward, dx, dw and db equal ``fastconv.naive`` on a seeded grid of 3x3 stride-1
  convolutions (padding 0-3 and non-square, odd and even sizes, every remainder of the
  output size modulo the tile, images smaller than a tile, groups, batch 1, with and
  without bias, both dtypes, one and several chunks and workers), within the tolerance
  table of conftest.py; and backward equals centred numerical gradients in float64;
* the transforms are exact adjoints of each other in float64 (``<T(x), c> == <x, T*(c)>``),
  so backward is the true gradient of forward, and every kernel writes every element
  of its output (outputs start as NaN);
* results do not depend on the OpenMP thread count, and are bitwise reproducible;
* "auto" picks a rule-based algorithm, backward follows its forward, and a request that
  cannot be met (stride 2, 5x5, dilation 2) raises ValueError naming ``algorithm``;
  the kernels refuse a tile size, tile counts or workspaces that do not match;
* the float32 error against float64 naive on the canonical 3x3 workload stays far inside
  the float32 tolerance.
"""

import zlib

import numpy as np
import pytest

import fastconv.fast as fast
import fastconv.naive as naive
from fastconv.engine import algorithms, winograd
from fastconv.kernels.picker import kernels
from fastconv.testing import DTYPES, GRAD_TOL, assert_close, numerical_gradient, rel_error

from _helpers import dtype_id, pair_id

#: The Winograd algorithms and their output tile sizes ("winograd" is "winograd2").
TILES = {"winograd": 2, "winograd4": 4}


def _cases():
    """(N, C, H, W, F, pad, groups, bias): hand-picked awkward ones, then a seeded random grid."""
    cases = [
        (1, 1, 3, 3, 1, 0, 1, True),  # one output pixel: a tile cropped to 1x1
        (1, 2, 4, 4, 3, 0, 1, True),  # exactly one tile
        (2, 3, 5, 7, 4, 1, 1, True),  # odd output sizes: cropped tiles on two edges
        (1, 2, 2, 2, 2, 1, 1, False),  # image smaller than a tile
        (2, 4, 6, 8, 6, (2, 1), 2, True),  # groups, non-square padding
        (1, 3, 4, 9, 2, (0, 3), 1, True),  # padding larger than half the kernel
        (3, 2, 10, 3, 5, (3, 0), 1, False),
        (1, 2, 6, 6, 3, 0, 1, True),  # exactly one 4x4 tile
        (2, 3, 9, 10, 4, 1, 1, True),  # 9x10 output: 4x4 tiles cut to 1 row and 2 columns
        (1, 2, 13, 9, 2, 0, 1, False),  # 11x7 output: cut to 3 rows and 3 columns
        (2, 2, 4, 5, 4, 2, 2, True),  # 6x7 output from a 4x5 image: tiles mostly padding
        # F(4x4)'s C transforms run on vectors of 8 tiles of a tile row (kernels/winograd4.h):
        (1, 2, 7, 32, 3, 1, 1, True),  # 32 wide: one whole vector of tiles
        (2, 1, 5, 36, 2, 0, 1, True),  # 34 wide: a whole vector, then a ninth tile cut to 2 columns
        (1, 2, 6, 66, 2, (1, 2), 2, False),  # 68 wide: two whole vectors and one more tile
    ]
    rng = np.random.default_rng(12)
    for _ in range(18):
        groups = int(rng.choice([1, 1, 2]))
        C = groups * int(rng.integers(1, 4))
        F = groups * int(rng.integers(1, 4))
        pad = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        H = int(rng.integers(max(1, 3 - 2 * pad[0]), 12))
        W = int(rng.integers(max(1, 3 - 2 * pad[1]), 12))
        cases.append((int(rng.integers(1, 4)), C, H, W, F, pad, groups, bool(rng.integers(0, 2))))
    return cases


CASES = _cases()


def _id(case, dtype, algorithm="winograd"):
    N, C, H, W, F, pad, groups, bias = case
    name = "wino" if algorithm == "winograd" else "wino4"
    return f"{name}-n{N}c{C}f{F}-x{H}x{W}-p{pair_id(pad)}-g{groups}-{'bias' if bias else 'nobias'}-{dtype_id(dtype)}"


PARAMS = [pytest.param(c, d, a, id=_id(c, d, a)) for a in TILES for c in CASES for d in DTYPES]
ALGORITHMS = pytest.mark.parametrize("algorithm", list(TILES), ids=["F2", "F4"])


def _data(case, dtype):
    N, C, H, W, F, pad, groups, bias = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype) if bias else None
    return x, w, b, dict(pad=pad, groups=groups)


def _fwdbwd(module, x, w, b, kwargs, **extra):
    out, cache = module.conv_forward(x, w, b, **kwargs, **extra)
    dout = np.cos(3.0 * np.arange(out.size)).reshape(out.shape).astype(out.dtype)
    return (out,) + module.conv_backward(dout, cache)


@pytest.mark.parametrize("case, dtype, algorithm", PARAMS)
def test_winograd_equals_naive(case, dtype, algorithm):
    x, w, b, kwargs = _data(case, dtype)
    got = _fwdbwd(fast, x, w, b, kwargs, algorithm=algorithm)
    ref = _fwdbwd(naive, x, w, b, kwargs)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        if r is None:
            assert a is None, name
        else:
            assert_close(a, r, dtype, name)


@ALGORITHMS
@pytest.mark.parametrize("workspace", [1, 1 << 30], ids=["one-image-chunks", "one-chunk"])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_chunks_and_workers(monkeypatch, workspace, workers, algorithm):
    from fastconv.engine import threads as _parallel

    monkeypatch.setattr(fast, "WORKSPACE_BYTES", workspace)
    monkeypatch.setattr(_parallel, "blas_threads", lambda: workers)
    case = (5, 4, 7, 6, 6, 1, 2, True)
    x, w, b, kwargs = _data(case, np.float64)
    got = _fwdbwd(fast, x, w, b, kwargs, algorithm=algorithm)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, _fwdbwd(naive, x, w, b, kwargs)):
        assert_close(a, r, np.float64, name)


@ALGORITHMS
@pytest.mark.parametrize(
    "case", [(2, 3, 5, 6, 2, 1, 1, True), (1, 4, 7, 4, 2, (0, 2), 2, True)], ids=["x5x6-p1", "x7x4-p0x2-g2"]
)
def test_backward_equals_numerical_gradients(case, algorithm):
    """dx, dw and db of the Winograd path against centred differences of its own forward (float64)."""
    x, w, b, kwargs = _data(case, np.float64)
    out, cache = fast.conv_forward(x, w, b, **kwargs, algorithm=algorithm)
    dout = np.cos(3.0 * np.arange(out.size)).reshape(out.shape)
    dx, dw, db = fast.conv_backward(dout, cache)

    def forward(_):
        return fast.conv_forward(x, w, b, **kwargs, algorithm=algorithm)[0]

    for name, grad, param in (("dx", dx, x), ("dw", dw, w), ("db", db, b)):
        assert rel_error(grad, numerical_gradient(forward, param, dout)) < GRAD_TOL, name


@ALGORITHMS
def test_need_dx_false_skips_dx_only(algorithm):
    x, w, b, kwargs = _data(CASES[4], np.float64)
    out, cache = fast.conv_forward(x, w, b, **kwargs, algorithm=algorithm)
    dout = np.ones_like(out)
    full = fast.conv_backward(dout, cache)
    dx, dw, db = fast.conv_backward(dout, cache, need_dx=False)
    assert dx is None
    assert dw.tobytes() == full[1].tobytes() and db.tobytes() == full[2].tobytes()


# ---------------------------------------------------------------------------- the kernels
KERNEL_TILES = pytest.mark.parametrize("tile", [2, 4], ids=["F2", "F4"])


def _scratch(tile, tiles_h, tiles_w, threads, dtype):
    """(scratch, num_threads) as the engine passes them to the Winograd kernels."""
    return np.empty((threads, kernels.winograd_scratch(tile, tiles_h, tiles_w)), dtype), threads


def _geometry(tile, H, W, pad):
    """(points, tiles_h, tiles_w, out_h, out_w) of a 3x3 stride-1 convolution in tile x tile tiles."""
    ph, pw = pad
    out_h, out_w = H + 2 * ph - 2, W + 2 * pw - 2
    return (tile + 2) ** 2, -(-out_h // tile), -(-out_w // tile), out_h, out_w


INPUT_SHAPES = pytest.mark.parametrize(
    "shape",
    [(2, 3, 5, 7, (1, 1)), (1, 2, 4, 4, (0, 0)), (2, 1, 3, 8, (2, 3)), (1, 2, 11, 9, (1, 0))],
    ids=["x5x7-p1", "x4x4-p0", "x3x8-p2x3", "x11x9-p1x0"],
)


@KERNEL_TILES
@INPUT_SHAPES
def test_input_transform_and_its_adjoint(shape, tile):
    """<input_transform(x), c> == <x, input_adjoint(c)>, and both write every element."""
    n, C, H, W, pad = shape
    points, th, tw, _, _ = _geometry(tile, H, W, pad)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, C, H, W))
    c = rng.standard_normal((points, C, n * th * tw))
    V = np.full(c.shape, np.nan)
    kernels.winograd_input(x, V, pad[0], pad[1], tile, th, tw, *_scratch(tile, th, tw, 1, x.dtype))
    dx = np.full(x.shape, np.nan)
    kernels.winograd_input_adjoint(c, dx, pad[0], pad[1], tile, th, tw, *_scratch(tile, th, tw, 1, c.dtype))
    assert not np.isnan(V).any() and not np.isnan(dx).any()
    assert np.isclose(np.vdot(V, c), np.vdot(x, dx), rtol=1e-12, atol=0)


@KERNEL_TILES
@pytest.mark.parametrize(
    "out_hw", [(5, 7), (4, 4), (1, 3), (8, 6), (11, 9)], ids=["o5x7", "o4x4", "o1x3", "o8x6", "o11x9"]
)
def test_output_transform_and_its_adjoint(out_hw, tile):
    """<output_transform(M), d> == <M, output_adjoint(d)> (no bias), db sums dout, every element written."""
    out_h, out_w = out_hw
    n, F = 2, 3
    points, th, tw = (tile + 2) ** 2, -(-out_h // tile), -(-out_w // tile)
    rng = np.random.default_rng(4)
    M = rng.standard_normal((points, F, n * th * tw))
    d = rng.standard_normal((n, F, out_h, out_w))
    out = np.full(d.shape, np.nan)
    kernels.winograd_output(M, out, np.empty(0), False, tile, th, tw, *_scratch(tile, th, tw, 1, M.dtype))
    dM = np.full(M.shape, np.nan)
    db = np.zeros(F)
    kernels.winograd_output_adjoint(d, dM, db, True, tile, th, tw, *_scratch(tile, th, tw, 1, d.dtype))
    assert not np.isnan(out).any() and not np.isnan(dM).any()
    assert np.isclose(np.vdot(out, d), np.vdot(M, dM), rtol=1e-12, atol=0)
    np.testing.assert_allclose(db, d.sum(axis=(0, 2, 3)), rtol=1e-12)


@KERNEL_TILES
def test_the_transforms_are_lavin_and_grays(tile):
    """The kernels against the matrices themselves on one tile: V = B^T d B per point, and
    out = A^T m A, so the adjoint tests above do not only prove two kernels consistent."""
    BT, AT = _MATRICES[tile]
    k = tile + 2
    rng = np.random.default_rng(8)
    d = rng.standard_normal((1, 1, k, k))
    V = np.empty((k * k, 1, 1))
    kernels.winograd_input(d, V, 0, 0, tile, 1, 1, *_scratch(tile, 1, 1, 1, d.dtype))
    np.testing.assert_allclose(V.reshape(k, k), BT @ d[0, 0] @ BT.T, rtol=1e-13, atol=1e-13)
    m = rng.standard_normal((k * k, 1, 1))
    out = np.empty((1, 1, tile, tile))
    kernels.winograd_output(m, out, np.empty(0), False, tile, 1, 1, *_scratch(tile, 1, 1, 1, m.dtype))
    np.testing.assert_allclose(out[0, 0], AT @ m.reshape(k, k) @ AT.T, rtol=1e-13, atol=1e-13)


#: (B^T, A^T) of F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray 2016), written here independently of the kernels.
_MATRICES = {
    2: (
        np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float),
    ),
    4: (
        np.array(
            [
                [4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1],
            ],
            float,
        ),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], float),
    ),
}


@KERNEL_TILES
def test_the_filter_transform_completes_the_convolution(tile):
    """fast's G with the matrices above: A^T [(G g G^T) * (B^T d B)] A is the 3x3 correlation
    of one (tile + 2)-square patch."""
    BT, AT = _MATRICES[tile]
    G = winograd.G_OF_TILE[tile]
    rng = np.random.default_rng(10)
    d, g = rng.standard_normal((tile + 2, tile + 2)), rng.standard_normal((3, 3))
    direct = np.array([[np.sum(d[i : i + 3, j : j + 3] * g) for j in range(tile)] for i in range(tile)])
    np.testing.assert_allclose(AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T, direct, rtol=1e-12, atol=1e-12)


@KERNEL_TILES
def test_the_adjoint_check_can_fail(tile):
    """A deliberately wrong adjoint (one tile's dV dropped) breaks the identity above."""
    n, C, H, W, pad = 1, 2, 9, 10, (1, 1)
    points, th, tw, _, _ = _geometry(tile, H, W, pad)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, C, H, W))
    c = rng.standard_normal((points, C, n * th * tw))
    V = np.empty_like(c)
    kernels.winograd_input(x, V, pad[0], pad[1], tile, th, tw, *_scratch(tile, th, tw, 1, x.dtype))
    wrong = c.copy()
    wrong[:, :, 0] = 0
    dx = np.empty_like(x)
    kernels.winograd_input_adjoint(wrong, dx, pad[0], pad[1], tile, th, tw, *_scratch(tile, th, tw, 1, wrong.dtype))
    assert not np.isclose(np.vdot(V, c), np.vdot(x, dx), rtol=1e-12, atol=0)


@KERNEL_TILES
def test_kernels_do_not_depend_on_the_thread_count(tile):
    n, C, F, H, W, pad = 3, 5, 4, 9, 11, (1, 2)
    points, th, tw, out_h, out_w = _geometry(tile, H, W, pad)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((n, C, H, W)).astype(np.float32)
    M = rng.standard_normal((points, F, n * th * tw)).astype(np.float32)
    d = rng.standard_normal((n, F, out_h, out_w)).astype(np.float32)
    bias = rng.standard_normal(F).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        V = np.empty((points, C, n * th * tw), np.float32)
        kernels.winograd_input(x, V, pad[0], pad[1], tile, th, tw, *_scratch(tile, th, tw, threads, x.dtype))
        out = np.empty((n, F, out_h, out_w), np.float32)
        kernels.winograd_output(M, out, bias, True, tile, th, tw, *_scratch(tile, th, tw, threads, M.dtype))
        dM, db = np.empty_like(M), np.zeros(F)
        kernels.winograd_output_adjoint(d, dM, db, True, tile, th, tw, *_scratch(tile, th, tw, threads, d.dtype))
        dx = np.empty_like(x)
        kernels.winograd_input_adjoint(V, dx, pad[0], pad[1], tile, th, tw, *_scratch(tile, th, tw, threads, V.dtype))
        results.append([a.tobytes() for a in (V, out, dM, db, dx)])
    assert results[0] == results[1] == results[2]


def _padded_points(a, pad):
    """``a`` (points, planes, T) copied into point blocks ``pad`` items further apart than
    their size, the gaps NaN: (the view, the whole (points, planes * T + pad) array)."""
    points, planes, T = a.shape
    whole = np.full((points, planes * T + pad), np.nan, a.dtype)
    view = whole[:, : planes * T].reshape(a.shape)
    view[...] = a
    return view, whole


@KERNEL_TILES
@pytest.mark.parametrize("pad", [1, 16, 1027])
def test_kernels_take_point_blocks_further_apart(tile, pad):
    """The engine pads V and M's point blocks (engine.winograd.point_blocks): every kernel
    reads and writes them as it does contiguous ones, to the bit, and nothing between them."""
    n, C, F, H, W, pad_hw = 2, 3, 4, 9, 11, (1, 2)
    points, th, tw, out_h, out_w = _geometry(tile, H, W, pad_hw)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, C, H, W))
    M = rng.standard_normal((points, F, n * th * tw))
    d = rng.standard_normal((n, F, out_h, out_w))
    scratch = _scratch(tile, th, tw, 2, x.dtype)
    results = []
    for padded in (False, True):
        V, Mx, dM = np.zeros((points, C, n * th * tw)), M.copy(), np.zeros_like(M)
        if padded:
            (V, V_whole), (Mx, _), (dM, dM_whole) = (_padded_points(a, pad) for a in (V, Mx, dM))
        out, dx, db = np.empty((n, F, out_h, out_w)), np.empty_like(x), np.zeros(F)
        kernels.winograd_input(x, V, *pad_hw, tile, th, tw, *scratch)
        kernels.winograd_output(Mx, out, np.empty(0), False, tile, th, tw, *scratch)
        kernels.winograd_output_adjoint(d, dM, db, True, tile, th, tw, *scratch)
        kernels.winograd_input_adjoint(V, dx, *pad_hw, tile, th, tw, *scratch)
        if padded:  # the gaps between the blocks are untouched
            assert np.isnan(V_whole[:, V[0].size :]).all() and np.isnan(dM_whole[:, dM[0].size :]).all()
        results.append([np.ascontiguousarray(a).tobytes() for a in (V, out, dM, db, dx)])
    assert results[0] == results[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("planes, T", [(1, 1), (3, 5), (64, 448), (64, 4096)])
def test_point_blocks_lie_a_cache_line_past_whole_pages_apart(dtype, planes, T):
    """Blocks a power of two apart would share one L1 set across the 36 points: the
    workspace puts them one 64-byte line more than whole 4 KiB pages apart."""
    from fastconv.engine.winograd import point_blocks

    V = point_blocks("test_blocks", 36, planes, T, dtype)
    assert V.shape == (36, planes, T) and V.dtype == dtype
    assert V.strides[0] % 4096 == 64 and V.strides[0] >= planes * T * V.itemsize
    assert all(V[p].flags.c_contiguous for p in (0, 35))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda V: np.lib.stride_tricks.as_strided(V, V.shape, (V.strides[1], V.strides[1], 8)), "the points of"),
        (lambda V: np.zeros(V.shape[:2] + (2 * V.shape[2],))[..., ::2], r"each point's \(planes, tiles\) block of"),
        (lambda V: np.zeros(V.shape[:2] + (V.shape[2] + 1,))[..., :-1], r"each point's \(planes, tiles\) block of"),
    ],
    ids=["points-overlap", "tiles-apart", "planes-apart"],
)
def test_kernels_refuse_point_blocks_they_cannot_walk(make, message):
    """The kernels step from point to point by one stride and through each block contiguously:
    blocks that overlap or are not C-contiguous are refused, naming the argument."""
    tile, th, tw = 4, 3, 3
    calls = _kernel_calls(tile, th, tw, make(np.zeros((36, 2, 9))), _scratch(tile, th, tw, 1, np.float64)[0])
    for call in calls.values():
        with pytest.raises(ValueError, match=rf"^{message} (V|M|dM|dV)\b"):
            call()


def _kernel_calls(tile, th, tw, V, scratch):
    """Each of the four kernels, called on a (1, 2, 9, 10) image with pad 1 and the given arguments."""
    x, out = np.zeros((1, 2, 9, 10)), np.zeros((1, 2, 9, 10))
    args = (tile, th, tw, scratch, 1)
    return {
        "input": lambda: kernels.winograd_input(x, V, 1, 1, *args),
        "output": lambda: kernels.winograd_output(V, out, np.empty(0), False, *args),
        "output_adjoint": lambda: kernels.winograd_output_adjoint(out, V, np.zeros(2), False, *args),
        "input_adjoint": lambda: kernels.winograd_input_adjoint(V, x, 1, 1, *args),
    }


@pytest.mark.parametrize("kernel", ["input", "output", "output_adjoint", "input_adjoint"])
@pytest.mark.parametrize(
    "bad, message",
    [
        ("tile3", r"^tile must be 2 \(F\(2x2, 3x3\)\) or 4 \(F\(4x4, 3x3\)\), got 3$"),
        ("tiles", r"^\(tiles_h, tiles_w\) must be \(3, 3\) for a \(9, 10\) output in 4x4 tiles, got \(5, 5\)$"),
        ("points", r"^(V|M|dM|dV) must have shape \(36, 2, 9\), got \(16, 2, 9\)$"),
        ("scratch", r"^scratch must be at least \(1, \d+\), got \(1, 3\)$"),
    ],
    ids=["tile3", "tile-count", "points", "scratch"],
)
def test_kernels_refuse_sizes_that_do_not_match(kernel, bad, message):
    """The kernels index by the tile size, tile counts and workspace sizes unchecked: the
    wrappers check them first (a 9x10 output in 4x4 tiles: 3 x 3 tiles, 36 points)."""
    tile, th, tw, points, size = 4, 3, 3, 36, kernels.winograd_scratch(4, 3, 3)
    if bad == "tile3":
        tile = 3
    elif bad == "tiles":
        th = tw = 5
    elif bad == "points":
        points = 16
    else:
        size = 3
    V = np.zeros((points, 2, th * tw))
    with pytest.raises(ValueError, match=message):
        _kernel_calls(tile, th, tw, V, np.empty((1, size)))[kernel]()
    with pytest.raises(ValueError, match=r"^tile must be 2"):
        kernels.winograd_scratch(5, 3, 3)
    with pytest.raises(ValueError, match=r"^tiles_h and tiles_w must be >= 1"):
        kernels.winograd_scratch(4, 0, 3)


# ---------------------------------------------------------------------------- choosing
@pytest.mark.parametrize(
    "kwargs, w_shape",
    [
        (dict(stride=2), (4, 3, 3, 3)),
        (dict(dilation=2), (4, 3, 3, 3)),
        (dict(), (4, 3, 5, 5)),
        (dict(), (4, 3, 3, 1)),
    ],
    ids=["stride2", "dilation2", "k5x5", "k3x1"],
)
@pytest.mark.parametrize("algorithm", ["winograd", "winograd2", "winograd4"])
@pytest.mark.parametrize("module", [fast, naive], ids=["fast", "naive"])
def test_winograd_requests_that_cannot_be_met_raise(module, algorithm, kwargs, w_shape):
    x = np.zeros((1, 3, 9, 9))
    with pytest.raises(ValueError, match=rf"^algorithm='{algorithm}' needs"):
        module.conv_forward(x, np.zeros(w_shape), algorithm=algorithm, **kwargs)
    with pytest.raises(ValueError, match=rf"^algorithm='{algorithm}' needs"):
        module.conv_relu_pool_forward(x, np.zeros(w_shape), algorithm=algorithm, **kwargs)


@pytest.mark.parametrize("module", [fast, naive], ids=["fast", "naive"])
@pytest.mark.parametrize(
    "bad", ["fft", "", None, 3, "winograd3", "Winograd4"], ids=["fft", "empty", "none", "int", "winograd3", "Winograd4"]
)
def test_unknown_algorithm_raises(module, bad):
    with pytest.raises(
        (ValueError, TypeError),
        match=r"^algorithm must be one of 'auto', 'im2col', 'winograd', 'winograd2', 'winograd4', "
        r"'direct', got",
    ):
        module.conv_forward(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), algorithm=bad)


@pytest.mark.parametrize(
    "asked, runs",
    [("winograd", "winograd2"), ("winograd2", "winograd2"), ("winograd4", "winograd4"), ("im2col", "im2col")],
)
def test_conv_algorithm_names_the_tile_size_and_backward_runs_it(monkeypatch, asked, runs):
    seen = []
    real = winograd.backward_chunks
    monkeypatch.setattr(winograd, "backward_chunks", lambda plan, *a: seen.append(plan.algorithm) or real(plan, *a))
    x, w, b, kwargs = _data(CASES[2], np.float64)
    assert fast.conv_algorithm(x, w, b, **kwargs, algorithm=asked) == runs
    out, cache = fast.conv_forward(x, w, b, **kwargs, algorithm=asked)
    fast.conv_backward(np.ones_like(out), cache)
    assert seen == ([] if runs == "im2col" else [runs])


def test_auto_follows_the_documented_rule_and_backward_follows_forward(monkeypatch):
    calls = []
    real = winograd.backward_chunks

    def recording(*args, **kwargs):
        calls.append("winograd")
        return real(*args, **kwargs)

    monkeypatch.setattr(winograd, "backward_chunks", recording)
    big = np.zeros((2, 32, 24, 24), np.float32), np.zeros((32, 32, 3, 3), np.float32)
    wide = np.zeros((2, 64, 16, 16), np.float32), np.zeros((128, 64, 3, 3), np.float32)
    widening = np.zeros((2, 32, 32, 32), np.float32), np.zeros((64, 32, 3, 3), np.float32)
    few = np.zeros((2, 16, 32, 32), np.float32), np.zeros((16, 16, 3, 3), np.float32)
    assert {fast.conv_algorithm(*xw, pad=1) for xw in (big, wide, widening, few)} == {"winograd4"}
    for x, w in [
        (np.zeros((2, 3, 32, 32)), np.zeros((48, 3, 3, 3))),  # a first layer (direct: < 32 filters)
        (np.zeros((2, 32, 16, 16)), np.zeros((32, 32, 3, 3))),  # a small image
        (np.zeros((2, 16, 24, 24)), np.zeros((16, 16, 3, 3))),  # few channels, mid-sized image
        (np.zeros((2, 64, 8, 8)), np.zeros((64, 64, 3, 3))),
    ]:  # a tiny image
        assert fast.conv_algorithm(x, w, pad=1) == "im2col", (x.shape, w.shape)
    assert fast.conv_algorithm(*big, pad=1, stride=2) == "im2col"
    out, cache = fast.conv_forward(*big, pad=1)
    fast.conv_backward(np.ones_like(out), cache)
    assert calls == ["winograd"]
    out, cache = fast.conv_forward(*big, pad=1, algorithm="im2col")
    fast.conv_backward(np.ones_like(out), cache)
    assert calls == ["winograd"]


def test_auto_runs_the_tile_size_its_rule_names(monkeypatch):
    """Whatever tile _winograd_wins names is what "auto" runs, forward and backward, and
    it equals naive."""
    monkeypatch.setattr(algorithms, "winograd_wins", lambda g: "winograd4")
    x, w, b, kwargs = _data(CASES[2], np.float64)
    assert fast.conv_algorithm(x, w, b, **kwargs) == "winograd4"
    out, cache = fast.conv_forward(x, w, b, **kwargs)
    assert cache[-1] == ("winograd4", True)
    for name, a, r in zip(("out", "dx", "dw", "db"), _fwdbwd(fast, x, w, b, kwargs), _fwdbwd(naive, x, w, b, kwargs)):
        assert_close(a, r, np.float64, name)
    monkeypatch.setattr(algorithms, "winograd_wins", lambda g: None)
    assert fast.conv_algorithm(x, w, b, **kwargs) == "im2col"


# ---------------------------------------------------------------------------- accuracy
def test_float32_error_on_the_canonical_3x3_workload_is_small():
    """W2conv3x3's shape (batch cut to 4): the float32 error of F(2x2, 3x3) against float64
    naive stays within a few times direct convolution's (Lavin & Gray's table: 2x2 tiles
    lose about a bit), F(4x4, 3x3)'s within about 30 times (its transforms hold 4, 5 and
    8, and G 1/6, 1/12, 1/24: a few bits more), both far below the float32 tolerance 1e-4
    (docs/performance.md, "Winograd accuracy")."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 64, 32, 32))
    w = rng.standard_normal((64, 64, 3, 3)) * np.sqrt(2.0 / (64 * 9))
    ref, _ = fast.conv_forward(x, w, pad=1, algorithm="im2col")  # float64: equals naive to 1e-15
    errs = {}
    for algorithm in ("im2col", "winograd", "winograd4"):
        out, _ = fast.conv_forward(x.astype(np.float32), w.astype(np.float32), pad=1, algorithm=algorithm)
        errs[algorithm] = np.abs(out - ref).max() / np.abs(ref).max()
    assert errs["winograd"] < 1e-5
    assert errs["winograd"] < 8 * errs["im2col"]
    assert errs["winograd4"] < 2e-5
    assert errs["winograd4"] < 60 * errs["im2col"]


@ALGORITHMS
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("pool", [(2, None, 0), (3, 2, 1)], ids=["pool2", "pool3s2p1"])
@pytest.mark.parametrize("workspace", [1, 1 << 30], ids=["one-image-chunks", "one-chunk"])
def test_fused_conv_relu_pool_on_winograd_equals_naive(monkeypatch, dtype, pool, workspace, algorithm):
    """fast.conv_relu_pool_forward(..., algorithm="winograd"): Winograd's output in the GEMM
    layout (image planes interleaved per filter: not one contiguous block), pooled and
    rectified as im2col's is; gradients through the same route."""
    monkeypatch.setattr(fast, "WORKSPACE_BYTES", workspace)
    x, w, b, kwargs = _data((3, 4, 9, 10, 6, 1, 2, True), dtype)
    k, s, p = pool
    args = dict(kwargs, pool_size=k, pool_stride=s, pool_pad=p)
    out, cache = fast.conv_relu_pool_forward(x, w, b, **args, algorithm=algorithm)
    ref, ref_cache = naive.conv_relu_pool_forward(x, w, b, **args)
    dout = np.cos(np.arange(out.size)).reshape(out.shape).astype(dtype)
    assert_close(out, ref, dtype, "out")
    for name, a, r in zip(
        ("dx", "dw", "db"), fast.conv_relu_pool_backward(dout, cache), naive.conv_relu_pool_backward(dout, ref_cache)
    ):
        assert_close(a, r, dtype, name)


@KERNEL_TILES
def test_output_kernels_refuse_planes_that_are_not_contiguous(tile):
    n, F, out_h, out_w = 2, 3, 4, 6
    th, tw = -(-out_h // tile), -(-out_w // tile)
    M = np.zeros(((tile + 2) ** 2, F, n * th * tw))
    wide = np.zeros((n, F, out_h, 2 * out_w))[..., ::2]  # rows of every other element
    with pytest.raises(ValueError, match="each plane of out must be contiguous"):
        kernels.winograd_output(M, wide, np.empty(0), False, tile, th, tw, *_scratch(tile, th, tw, 1, M.dtype))
    with pytest.raises(ValueError, match="each plane of dout must be contiguous"):
        kernels.winograd_output_adjoint(wide, M, np.zeros(F), False, tile, th, tw, *_scratch(tile, th, tw, 1, M.dtype))
    tall = np.zeros((n, F, out_h + 1, out_w))[:, :, :out_h]  # planes with a gap after them: fine
    kernels.winograd_output(M, tall, np.empty(0), False, tile, th, tw, *_scratch(tile, th, tw, 1, M.dtype))
    with pytest.raises(ValueError, match=r"scratch must be at least"):
        kernels.winograd_output(M, tall, np.empty(0), False, tile, th, tw, np.empty((1, 3)), 1)


# ---------------------------------------------------------------------------- NaN and infinity
def _eligible(dtype=np.float64):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 16, 32, 33)).astype(dtype)
    w = rng.standard_normal((16, 16, 3, 3)).astype(dtype)
    return x, w


@pytest.mark.parametrize("rule", ["winograd2", "winograd4"], ids=["auto-F2", "auto-F4"])
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_auto_keeps_direct_convolutions_nan_positions(monkeypatch, bad, rule):
    """ "auto" runs Winograd on finite inputs only: a NaN or an infinity in x, w or dout
    reaches exactly the elements it reaches in naive (and PyTorch), whichever tile size
    the rule names."""
    real = algorithms.winograd_wins
    monkeypatch.setattr(algorithms, "winograd_wins", lambda g: real(g) and rule)
    x, w = _eligible()
    assert fast.conv_algorithm(x, w, pad=1) == rule
    x[1, 3, 4, 5] = bad
    assert fast.conv_algorithm(x, w, pad=1) == "im2col"
    out, cache = fast.conv_forward(x, w, pad=1)
    ref, ref_cache = naive.conv_forward(x, w, pad=1)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
    x, w = _eligible()
    out, cache = fast.conv_forward(x, w, pad=1)  # Winograd forward, then a NaN in dout
    ref, ref_cache = naive.conv_forward(x, w, pad=1)
    dout = np.ones_like(out)
    dout[0, 2, 3, 3] = bad
    for a, r in zip(fast.conv_backward(dout, cache), naive.conv_backward(dout, ref_cache)):
        if a is not None:
            np.testing.assert_array_equal(np.isnan(a), np.isnan(r))
            np.testing.assert_array_equal(np.isinf(a), np.isinf(r))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_explicit_winograd_keeps_non_finite_positions(bad):
    """With algorithm="winograd", a non-finite input reaches exactly the outputs whose window
    holds it (the transforms only add and subtract, along paths that follow the windows:
    B^T's zeros meet A^T's), but an infinity may come out as NaN where direct convolution
    gives +-inf (two paths of opposite sign meet): the documented difference."""
    x, w = _eligible()
    for pixel in [(0, 0, 4, 5), (1, 7, 0, 0), (0, 15, 7, 8), (1, 2, 3, 2)]:
        x[pixel] = bad
    out, _ = fast.conv_forward(x, w, pad=1, algorithm="winograd")
    ref, _ = naive.conv_forward(x, w, pad=1)
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(ref))
    np.testing.assert_array_equal(np.isnan(out) | np.isnan(ref), np.isnan(out))  # NaN stays NaN


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_explicit_winograd4_spreads_non_finite_values_over_their_tiles_only(bad):
    """With algorithm="winograd4", a non-finite input reaches every output that direct
    convolution's does, and may reach the rest of the 4x4 tiles whose 6x6 patch holds it
    (F(4x4, 3x3)'s A^T and B^T have no zeros that stop it), but no other tile: the
    documented difference, which "auto" avoids by running Winograd on finite data only."""
    x, w = _eligible()
    pixels = [(0, 0, 4, 5), (1, 7, 0, 0), (0, 15, 7, 8), (1, 2, 3, 2)]
    for pixel in pixels:
        x[pixel] = bad
    with np.errstate(invalid="ignore"):
        out, _ = fast.conv_forward(x, w, pad=1, algorithm="winograd4")
    ref, _ = naive.conv_forward(x, w, pad=1)
    reached = np.zeros(out.shape, bool)  # (image, any filter, pixel) in a tile whose patch holds a bad pixel
    for n, _, i, j in pixels:
        for oh in range(out.shape[2]):
            for ow in range(out.shape[3]):
                th, tw = 4 * (oh // 4) - 1, 4 * (ow // 4) - 1  # the tile's patch starts here (pad 1)
                reached[n, :, oh, ow] |= th <= i < th + 6 and tw <= j < tw + 6
    assert (~np.isfinite(ref) <= ~np.isfinite(out)).all()
    assert (~np.isfinite(out) <= reached).all()
    assert (~np.isfinite(out)).sum() > (~np.isfinite(ref)).sum()  # it does spread: the check above can fail


@pytest.mark.slow
def test_the_accuracy_script_runs(capsys):
    """benchmarks/winograd_accuracy.py (docs/performance.md, "Winograd accuracy") on one image
    per workload: a row per workload and algorithm, errors inside the tolerance table."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "winograd_accuracy.py")
    spec = importlib.util.spec_from_file_location("winograd_accuracy", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    err32, err64 = script.errors(*script._data(np.random.default_rng(0), 2, 3, 9, 7, 4, 1), dict(pad=1))
    assert sorted(err32) == sorted(err64) == ["im2col", "winograd2", "winograd4"]
    assert all(e < 1e-4 for errs in err32.values() for e in errs.values())
    assert all(e < 1e-9 for e in err64.values())
    script.main(["--images", "1", "--no-grid"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| W2conv3x3")]
    assert [r.split(" | ")[:2] for r in rows] == [
        [f"| {w} (N=1)", a] for w in ("W2conv3x3", "W2conv3x3_N128") for a in ("im2col", "winograd2", "winograd4")
    ]


@pytest.mark.parametrize(
    "scale", [1e-41, 1e-38, 1e-30, 1.0], ids=["subnormal-1e-41", "edge-1e-38", "tiny-1e-30", "unit"]
)
def test_auto_keeps_winograd_within_its_error_bound_on_tiny_inputs(scale):
    """A 16-channel 32x32 3x3 layer, where "auto" picks F(4x4): on float32 inputs so small that
    their products with the filters are subnormal, F(4x4)'s transforms lose about 30 times
    im2col's precision (1.5e-3 against 4.8e-5 at 1e-41), so "auto" runs im2col there (a scale
    check as cheap as the finiteness check); on larger inputs it still picks F(4x4). Either way,
    auto's float32 error against a float64 reference stays within ten times im2col's (or 1e-5),
    forward and backward."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 16, 32, 32)) * scale).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((2, 16, 32, 32)).astype(np.float32)
    assert fast.conv_algorithm(x, w, None, pad=1) == ("im2col" if scale <= 1e-38 else "winograd4")
    ref_out, ref_cache = fast.conv_forward(x.astype(np.float64), w.astype(np.float64), None, pad=1, algorithm="im2col")
    ref = (ref_out, *fast.conv_backward(dout.astype(np.float64), ref_cache)[:2])
    direct_out, direct_cache = fast.conv_forward(x, w, None, pad=1, algorithm="im2col")
    direct = (direct_out, *fast.conv_backward(dout, direct_cache)[:2])
    out, cache = fast.conv_forward(x, w, None, pad=1)
    auto = (out, *fast.conv_backward(dout, cache)[:2])
    for name, a, d, r in zip(("out", "dx", "dw"), auto, direct, ref):
        assert rel_error(a, r) <= max(10 * rel_error(d, r), 1e-5), (name, rel_error(a, r), rel_error(d, r))
