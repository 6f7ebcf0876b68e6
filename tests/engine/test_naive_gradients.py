"""The reference layers' backward passes against centred numerical gradients (float64).

This is the independent check the whole suite rests on: fastconv.fast is
compared with fastconv.naive, and fastconv.naive is compared here with
finite differences. Max-pool inputs are distinct values spaced far apart
(0.1 apart against a step of 1e-5), so no perturbation changes a window's
argmax (no kinks).
"""

import numpy as np
import pytest

import fastconv.naive as naive
from fastconv.testing import GRAD_TOL, numerical_gradient, rel_error

from _helpers import pair_id

# (N, C, H, W, F, (kh, kw), stride, pad, dilation, groups, bias)
CONV_CASES = [
    (2, 3, 5, 6, 2, (3, 3), 1, 1, 1, 1, True),
    (1, 2, 6, 5, 3, (3, 2), (2, 1), (1, 0), 1, 1, True),  # non-square kernel/image, per-axis stride
    (2, 4, 7, 6, 2, (2, 3), 2, 2, 1, 2, True),  # groups, pad 2
    (1, 2, 7, 7, 2, (3, 3), 1, 2, 2, 2, False),  # dilation 2, depthwise-like (C // groups = 1)
    (2, 1, 8, 7, 2, (2, 2), 3, 3, (2, 1), 1, True),  # stride 3, pad 3
    (1, 2, 2, 3, 2, (4, 5), 1, 2, 1, 1, True),  # kernel larger than the unpadded input
]


def _conv_id(case):
    N, C, H, W, F, k, s, p, d, g, bias = case
    return (
        f"conv-n{N}c{C}f{F}-x{H}x{W}-k{k[0]}x{k[1]}-s{pair_id(s)}-p{pair_id(p)}-d{pair_id(d)}-g{g}"
        f"-{'bias' if bias else 'nobias'}"
    )


@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv_backward_numerical(rng, case):
    N, C, H, W, F, (kh, kw), stride, pad, dilation, groups, bias = case
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((F, C // groups, kh, kw))
    b = rng.standard_normal(F) if bias else None
    kwargs = dict(stride=stride, pad=pad, dilation=dilation, groups=groups)
    out, cache = naive.conv_forward(x, w, b, **kwargs)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = naive.conv_backward(dout, cache)

    def forward(_):
        return naive.conv_forward(x, w, b, **kwargs)[0]

    assert rel_error(dx, numerical_gradient(forward, x, dout)) < GRAD_TOL
    assert rel_error(dw, numerical_gradient(forward, w, dout)) < GRAD_TOL
    if bias:
        assert rel_error(db, numerical_gradient(forward, b, dout)) < GRAD_TOL
    else:
        assert db is None


# (N, C, H, W, kernel, stride, pad)
POOL_CASES = [
    (2, 2, 4, 4, 2, None, 0),
    (1, 2, 5, 7, 3, 2, 1),  # overlapping, padded, odd
    (2, 1, 6, 5, (3, 2), 1, (1, 1)),  # heavy overlap, non-square
    (1, 3, 7, 6, (4, 4), 3, 2),  # pad = kernel // 2
    (1, 1, 1, 4, (2, 3), (1, 2), 1),  # kernel taller than the image
    (2, 2, 5, 5, 5, None, 0),  # global
]


def _pool_id(case):
    N, C, H, W, k, s, p = case
    return f"n{N}c{C}-x{H}x{W}-k{pair_id(k)}-s{'None' if s is None else pair_id(s)}-p{pair_id(p)}"


def _distinct(rng, shape, gap=0.1):
    """Distinct values at least ``gap`` apart, in random order: a max pool without ties or kinks."""
    return (rng.permutation(int(np.prod(shape))) * gap - 1.0).reshape(shape)


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_max_pool_backward_numerical(rng, case):
    N, C, H, W, kernel, stride, pad = case
    x = _distinct(rng, (N, C, H, W))
    out, cache = naive.max_pool_forward(x, kernel, stride, pad)
    dout = rng.standard_normal(out.shape)
    dx = naive.max_pool_backward(dout, cache)
    numeric = numerical_gradient(lambda _: naive.max_pool_forward(x, kernel, stride, pad)[0], x, dout)
    assert rel_error(dx, numeric) < GRAD_TOL


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_avg_pool_backward_numerical(rng, case):
    N, C, H, W, kernel, stride, pad = case
    x = rng.standard_normal((N, C, H, W))
    out, cache = naive.avg_pool_forward(x, kernel, stride, pad)
    dout = rng.standard_normal(out.shape)
    dx = naive.avg_pool_backward(dout, cache)
    numeric = numerical_gradient(lambda _: naive.avg_pool_forward(x, kernel, stride, pad)[0], x, dout)
    assert rel_error(dx, numeric) < GRAD_TOL


# ---------------------------------------------------------------------------- forward values
# The gradients above only prove each backward matches its own forward; these
# pin the forwards to values worked out by hand.
def test_conv_forward_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])  # x[i, j] - x[i+1, j+1] = -5 everywhere
    out, _ = naive.conv_forward(x, w, np.array([0.5]))
    np.testing.assert_array_equal(out, np.full((1, 1, 3, 3), -4.5))
    # stride 2, pad 1, dilation 2 on the 4x4 ramp: taps at (-1,-1),(-1,1),(1,-1),(1,1) for output (0,0)
    w = np.ones((1, 1, 2, 2))
    out, _ = naive.conv_forward(x, w, stride=2, pad=1, dilation=2)
    # output (oh, ow) sums x at rows {2oh-1, 2oh+1} and cols {2ow-1, 2ow+1} that exist
    expected = np.array([[5.0, 5.0 + 7.0], [5.0 + 13.0, 5.0 + 7.0 + 13.0 + 15.0]])
    np.testing.assert_array_equal(out[0, 0], expected)


def test_grouped_conv_forward_by_hand():
    """groups=2: filter 0 sees channel 0 only, filter 1 channel 1 only."""
    x = np.stack([np.ones((3, 3)), 2 * np.ones((3, 3))])[None]
    w = np.ones((2, 1, 3, 3))
    out, _ = naive.conv_forward(x, w, groups=2)
    np.testing.assert_array_equal(out.ravel(), [9.0, 18.0])


def test_pool_forward_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out, _ = naive.max_pool_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(out[0, 0], [[5.0, 7.0], [13.0, 15.0]])
    out, _ = naive.avg_pool_forward(x, 3, 2, 1)
    # window (0, 0) holds x[0:2, 0:2] = 0 + 1 + 4 + 5; padding counts in the divisor 9
    np.testing.assert_allclose(out[0, 0, 0, 0], 10.0 / 9)
    np.testing.assert_allclose(out[0, 0, 1, 1], (5 + 6 + 7 + 9 + 10 + 11 + 13 + 14 + 15) / 9)
