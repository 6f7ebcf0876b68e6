"""The layer names of the "CIFAR-10 / MNIST classification with numpy only" tutorials, on ``fastconv.fast``.

Valentyn Sichkar's tutorials (repository "Neural_Networks_for_Computer_Vision",
``Helper_Functions/layers.py``) and the many courses built on them use
``cnn_forward_naive``, ``max_pooling_forward_naive`` and friends with their
own dictionaries. This module has the same names, signatures, dictionaries
and return values, running the fast im2col + GEMM path (the ``*_naive``
names included), so that code written against them speeds up by changing
one import::

    # from Helper_Functions.layers import *
    from fastconv.compat.sichkar import *

Functions and dictionaries (a missing key or a bad value raises
ValueError/TypeError naming it, e.g. ``cnn_params['pad']``; extra keys are
ignored):

* ``cnn_forward_naive(x, w, b, cnn_params) -> (feature_maps, cache)`` with
  ``cnn_params = {'stride', 'pad'}`` (ints, or ``(h, w)`` pairs);
  ``cnn_backward_naive(dout, cache) -> (dx, dw, db)``.
* ``max_pooling_forward_naive(x, pooling_params) -> (pooled_output, cache)``
  with ``pooling_params = {'pooling_height', 'pooling_width', 'stride'}``;
  ``max_pooling_backward_naive(dout, cache) -> dx``.
* ``affine_forward(x, w, b)``, ``affine_backward(dout, cache) -> (dx, dw, db)``,
  ``relu_forward(x)``, ``relu_backward(dout, cache) -> dx``,
  ``softmax_loss(x, y) -> (loss, dx)``.

Where this differs from the original code (fastconv keeps its own, correct
semantics):

* The original convolution is right only for stride 1 with "same" padding
  (its loops walk the input with ``range(0, H, stride)`` and its backward
  indexes the upstream gradient by input position), and its ``dx`` only for
  pad 1 (it crops the padded gradient with ``[1:-1]``; with the tutorial's
  own 7x7 kernels and pad 3, ``dx`` comes out 4 pixels too large). Here
  every stride and padding is right, with output size
  ``1 + (H + 2 * pad - HH) // stride``.
* The original silently turns everything into float64 (``np.zeros`` outputs).
  Here float32 stays float32 and float64 stays float64. Layers with weights
  (convolution, affine) compute in the dtype of their weights ``w``: an
  ``x``, ``b`` or ``dout`` in the other float dtype is cast to it and each
  gradient comes back in its own variable's dtype, so the tutorial's
  ``ConvNet1`` (float32 parameters, float64 CIFAR-10 data) runs unchanged,
  in float32. Integer or float16 inputs raise TypeError.
* The original max-pooling backward gives the gradient to every tied maximum
  of a window; here it goes to the first maximum in row-major order (as in
  PyTorch), so gradients are identical unless a window holds exact ties.
* Caches are opaque: pass them to the matching backward, do not unpack them
  (the original conv cache was ``(x, w, b, cnn_params)``).
"""
from .cs231n import (
    _conv_backward,
    _conv_forward,
    affine_backward,
    affine_forward,
    conv_settings,
    pool_settings,
    relu_backward,
    relu_forward,
    softmax_loss,
)
from .. import fast

__all__ = [
    "cnn_forward_naive", "cnn_backward_naive", "max_pooling_forward_naive", "max_pooling_backward_naive",
    "affine_forward", "affine_backward", "relu_forward", "relu_backward", "softmax_loss",
]


def cnn_forward_naive(x, w, b, cnn_params):
    """Convolution: x (N, C, H, W), w (F, C, HH, WW), b (F,), cnn_params {'stride', 'pad'}.

    Runs the fast im2col path despite the name. Returns (feature_maps, cache),
    feature_maps (N, F, H', W') with H' = 1 + (H + 2 * pad - HH) // stride.
    """
    stride, pad = conv_settings(cnn_params, "cnn_params")
    return _conv_forward(x, w, b, stride, pad)


def cnn_backward_naive(dout, cache):
    """Returns (dx, dw, db) for cnn_forward_naive."""
    return _conv_backward(dout, cache)


def max_pooling_forward_naive(x, pooling_params):
    """Max pooling: x (N, C, H, W), pooling_params {'pooling_height', 'pooling_width', 'stride'}.

    Runs the fast single-pass kernel despite the name. Returns (pooled_output,
    cache), pooled_output (N, C, H', W') with H' = 1 + (H - pooling_height) // stride.
    """
    kernel, stride = pool_settings(pooling_params, "pooling_params", "pooling_height", "pooling_width")
    return fast.max_pool_forward(x, kernel, stride)


def max_pooling_backward_naive(dout, cache):
    """Returns dx for max_pooling_forward_naive; each output's gradient goes to
    the first maximum of its window (row-major)."""
    return fast.max_pool_backward(dout, cache)
