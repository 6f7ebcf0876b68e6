"""A layer's backward does not depend on what the caller does to the forward's output.

The contract, the same in fastconv.fast and fastconv.naive: a cache refers to the
layer's inputs (x, w, ...) as they are, without a copy when they already have the
layout the layer needs, so the inputs must not change between forward and backward;
the returned output belongs to the caller, who may change it in place (``out -= 1``,
``out *= mask``) without changing any gradient. The fused conv-relu-pool layer used
to keep its returned output as the ReLU mask, and ReLU and sigmoid their outputs as
their caches: each of those changed the gradients.
"""

import numpy as np
import pytest

import fastconv.fast as fast
import fastconv.naive as naive


def _layers(m, rng):
    x = rng.standard_normal((2, 3, 8, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    fc_x, fc_w, fc_b = rng.standard_normal((5, 6)), rng.standard_normal((6, 4)), rng.standard_normal(4)
    return {
        "conv": (lambda: m.conv_forward(x, w, b, pad=1), m.conv_backward),
        "conv-winograd": (lambda: m.conv_forward(x, w, b, pad=1, algorithm="winograd"), m.conv_backward),
        "conv_relu_pool": (lambda: m.conv_relu_pool_forward(x, w, b, pad=1), m.conv_relu_pool_backward),
        "conv_relu_pool-winograd": (
            lambda: m.conv_relu_pool_forward(x, w, b, pad=1, algorithm="winograd"),
            m.conv_relu_pool_backward,
        ),
        "conv-winograd4": (lambda: m.conv_forward(x, w, b, pad=1, algorithm="winograd4"), m.conv_backward),
        "conv_relu_pool-winograd4": (
            lambda: m.conv_relu_pool_forward(x, w, b, pad=1, algorithm="winograd4"),
            m.conv_relu_pool_backward,
        ),
        "conv-direct": (lambda: m.conv_forward(x, w, b, pad=1, algorithm="direct"), m.conv_backward),
        "conv_relu_pool-direct": (
            lambda: m.conv_relu_pool_forward(x, w, b, pad=1, algorithm="direct"),
            m.conv_relu_pool_backward,
        ),
        "max_pool": (lambda: m.max_pool_forward(x, 2), m.max_pool_backward),
        "avg_pool": (lambda: m.avg_pool_forward(x, 3, 2, 1), m.avg_pool_backward),
        "relu": (lambda: m.relu_forward(x), m.relu_backward),
        "sigmoid": (lambda: m.sigmoid_forward(x), m.sigmoid_backward),
        "affine": (lambda: m.affine_forward(fc_x, fc_w, fc_b), m.affine_backward),
        "spatial_batchnorm": (
            lambda: m.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"}),
            m.spatial_batchnorm_backward,
        ),
        "batchnorm": (
            lambda: m.batchnorm_forward(fc_x, fc_b[:1].repeat(6), fc_b[:1].repeat(6), {"mode": "train"}),
            m.batchnorm_backward,
        ),
    }


NAMES = sorted(_layers(fast, np.random.default_rng(0)))


def _grads(backward, out, cache):
    dout = np.cos(np.arange(out.size, dtype=np.float64)).reshape(out.shape)
    got = backward(dout, cache)
    return [g for g in (got if isinstance(got, tuple) else (got,)) if g is not None]


@pytest.mark.parametrize("module", [fast, naive], ids=["fast", "naive"])
@pytest.mark.parametrize("name", NAMES)
def test_changing_the_output_in_place_leaves_the_gradients(module, name):
    forward, backward = _layers(module, np.random.default_rng(1))[name]
    out, cache = forward()
    reference = _grads(backward, out, cache)
    out, cache = forward()
    out -= 1.5  # what a caller may do with its output
    out[..., 0] = 0
    for got, ref in zip(_grads(backward, out, cache), reference):
        assert got.tobytes() == ref.tobytes(), name


def test_the_check_can_fail():
    """A cache that keeps the output (as the fused layer's did) fails the check above."""
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4))
    out = np.maximum(x, 0)
    reference = fast.relu_backward(np.ones_like(out), out)
    out -= 1.5
    assert fast.relu_backward(np.ones_like(out), out).tobytes() != reference.tobytes()
