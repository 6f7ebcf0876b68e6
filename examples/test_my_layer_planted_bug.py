"""examples/test_my_layer.py with two classic bugs planted: these tests FAIL, on purpose.

    pytest -q examples/test_my_layer_planted_bug.py      # fails; tests/test_examples.py asserts how

Both bugs pass CS231n's notebook checks, which use square inputs and 2x2/2 pooling:

* the max pool backward assigns each window's gradient instead of adding it, right only
  when windows do not overlap (a pixel that is the maximum of two windows keeps one);
* the conv backward crops dx with the height for both axes, right only for square images
  (a wide image loses its right-hand columns, and dx has the wrong shape).

The lines that differ from examples/test_my_layer.py end in "# PLANTED BUG".

The layers below are written as in the CS231n assignment (``conv_param`` and ``pool_param``
dicts, explicit loops). The tests hold them to ``fastconv.naive``, the reference, over a
grid of awkward shapes (non-square kernels and images, stride > 1, kernels as large as the
image, batch 1, one channel, float32 and float64), and to numerical gradients. A notebook
checks one shape; the bugs students make most often pass on that one shape
(``examples/test_my_layer_planted_bug.py`` is this file with two of them, and fails).
"""

import numpy as np
import pytest

import fastconv.naive as naive
from fastconv.testing import check_equivalent, check_gradients, conv_configs, pool_configs


# ---------------------------------------------------------------- the student's layers
def conv_forward_naive(x, w, b, conv_param):
    """x (N, C, H, W), w (F, C, HH, WW), b (F,); conv_param {'stride', 'pad'}."""
    stride, pad = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, H_out, W_out), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    window = x_pad[n, :, i * stride : i * stride + HH, j * stride : j * stride + WW]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    rows, cols = slice(i * stride, i * stride + HH), slice(j * stride, j * stride + WW)
                    dw[f] += x_pad[n, :, rows, cols] * dout[n, f, i, j]
                    dx_pad[n, :, rows, cols] += w[f] * dout[n, f, i, j]
    dx = dx_pad[:, :, pad : pad + H, pad : pad + H]  # PLANTED BUG
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    """x (N, C, H, W); pool_param {'pool_height', 'pool_width', 'stride'}."""
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H, W = x.shape
    H_out, W_out = 1 + (H - ph) // stride, 1 + (W - pw) // stride
    out = np.zeros((N, C, H_out, W_out), dtype=x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            out[:, :, i, j] = x[:, :, i * stride : i * stride + ph, j * stride : j * stride + pw].max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H_out, W_out = dout.shape
    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    window = x[n, c, i * stride : i * stride + ph, j * stride : j * stride + pw]
                    mask = window == window.max()  # PLANTED BUG
                    rows, cols = slice(i * stride, i * stride + ph), slice(j * stride, j * stride + pw)  # PLANTED BUG
                    dx[n, c, rows, cols] = mask * dout[n, c, i, j]  # PLANTED BUG
    return dx


# ---------------------------------------------------------------- fastconv's calling convention
# check_equivalent calls forward(x, w, b, stride=..., pad=...) and forward(x, kernel_size=...,
# stride=..., pad=...), as fastconv.naive's layers are called; these adapt the dicts.
def my_conv_forward(x, w, b, stride, pad):
    return conv_forward_naive(x, w, b, {"stride": stride, "pad": pad})


def my_max_pool_forward(x, kernel_size, stride, pad):
    kh, kw = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
    return max_pool_forward_naive(x, {"pool_height": kh, "pool_width": kw, "stride": stride})


MY_CONV = (my_conv_forward, conv_backward_naive)
MY_MAX_POOL = (my_max_pool_forward, max_pool_backward_naive)

# The grids hold what these layers support: one stride and pad for both axes, a bias,
# no dilation or groups; pooling without padding, with an explicit stride.
CONV_GRID = conv_configs(16, seed=1, dilation=False, groups=False, per_axis=False, optional_bias=False)
POOL_GRID = pool_configs(14, seed=1, kinds=("max",), per_axis=False, padding=False, default_stride=False)


# ---------------------------------------------------------------- the tests
@pytest.mark.parametrize("config", CONV_GRID, ids=str)
def test_conv_matches_the_reference(config):
    check_equivalent(MY_CONV, naive, [config])


@pytest.mark.parametrize("config", POOL_GRID, ids=str)
def test_max_pool_matches_the_reference(config):
    check_equivalent(MY_MAX_POOL, naive, [config])


def _small(grid, limit):
    return [c for c in grid if c.dtype == np.float64 and c.N * c.C * c.H * c.W <= limit]


@pytest.mark.parametrize("config", _small(CONV_GRID, 150)[:6], ids=str)
def test_conv_gradients_are_numerical_gradients(config):
    x, w, b, _ = config.arrays()
    conv_param = {"stride": config.stride[0], "pad": config.pad[0]}
    # 8 random directions per argument instead of every element: the loops are slow
    check_gradients(conv_forward_naive, conv_backward_naive, (x, w, b, conv_param), directions=8)


@pytest.mark.parametrize("config", _small(POOL_GRID, 150)[:6], ids=str)
def test_max_pool_gradients_are_numerical_gradients(config):
    x, _ = config.arrays()
    pool_param = {"pool_height": config.kernel[0], "pool_width": config.kernel[1], "stride": config.stride[0]}
    check_gradients(max_pool_forward_naive, max_pool_backward_naive, (x, pool_param))
