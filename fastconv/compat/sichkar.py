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
* The layers the tutorials list but do not print, named in their style:
  ``average_pooling_forward_naive(x, pooling_params)`` and
  ``average_pooling_backward_naive``, ``sigmoid_forward(x)`` and
  ``sigmoid_backward``, ``svm_loss(x, y)``, ``dropout_forward(x,
  dropout_params)`` with ``{'mode', 'p', optional 'seed'}`` (p is the
  probability of keeping a unit, as in CS231n, whose dropout the tutorials
  follow) and ``dropout_backward``.
* The names the MNIST tutorial's ``ConvNet1`` calls: ``cnn_forward_strides``,
  ``cnn_backward_strides`` (the convolution above) and
  ``max_pool_forward_fast(x, pooling_params)``, ``max_pool_backward_fast``
  (the max pooling above, with the tutorial's ``pooling_params``).
* ``ConvNet1``: the tutorials' model class (conv - ReLU - 2x2 max pool -
  affine - ReLU - affine - softmax), same constructor, ``params`` names
  (``w1, b1, w2, b2, w3, b3``) and methods (``loss_for_training(x, y)``,
  ``scores_for_predicting(x)``), on the fused conv-relu-pool layer; it
  trains with ``fastconv.solver.Solver`` as with the tutorial's Solver.
* ``Solver`` (not in ``__all__``: ``from fastconv.compat.sichkar import
  Solver`` replaces ``from Solver import Solver``): fastconv's Solver, which
  takes the tutorial's keywords (``optimization_config``,
  ``learning_rate_decay``, ``number_of_epochs``, ``verbose_mode``) and data
  keys, and stops a run at a non-finite loss instead of raising (see
  ``fastconv.compat.cs231n.Solver``).

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
  in float32. Integer and bool arrays (raw uint8 images) are converted to the
  computing dtype (see ``fastconv.compat.cs231n``); float16 raises TypeError.
  A backward given a ``dout`` of the other float dtype takes it as numpy would
  (pooling returns x's dtype, ReLU dout's, sigmoid and dropout float64).
* The original max-pooling backward gives the gradient to every tied maximum
  of a window; here it goes to the first maximum in row-major order (as in
  PyTorch), so gradients are identical unless a window holds exact ties.
* Caches are opaque: pass them to the matching backward, do not unpack them
  (the original conv cache was ``(x, w, b, cnn_params)``).
"""

import numpy as np

from .. import layers as _shared
from ..engine.checks import FLOAT_DTYPES, check_int, check_number
from ..engine.geometry import conv_output_size

# the tutorial's Solver.py name; not in __all__, so the star import never replaces a script's Solver
from .cs231n import (
    Solver,  # noqa: F401
    affine_backward,
    affine_forward,
    affine_relu_backward,
    affine_relu_forward,
    as_float,
    computing_dtype,
    conv_layer_backward,
    conv_layer_forward,
    conv_relu_pool_layer_backward,
    conv_relu_pool_layer_forward,
    conv_settings,
    dropout_backward,
    dropout_layer_forward,
    mixed_backward,
    pool_layer_backward,
    pool_layer_forward,
    pool_settings,
    relu_backward,
    relu_forward,
    softmax_loss,
    svm_loss,
)

__all__ = [
    "cnn_forward_naive",
    "cnn_backward_naive",
    "max_pooling_forward_naive",
    "max_pooling_backward_naive",
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "softmax_loss",
    "average_pooling_forward_naive",
    "average_pooling_backward_naive",
    "sigmoid_forward",
    "sigmoid_backward",
    "svm_loss",
    "dropout_forward",
    "dropout_backward",
    "cnn_forward_strides",
    "cnn_backward_strides",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "ConvNet1",
]


def cnn_forward_naive(x, w, b, cnn_params):
    """Convolution: x (N, C, H, W), w (F, C, HH, WW), b (F,), cnn_params {'stride', 'pad'}.

    Runs the fast im2col path despite the name. Returns (feature_maps, cache),
    feature_maps (N, F, H', W') with H' = 1 + (H + 2 * pad - HH) // stride.
    """
    stride, pad = conv_settings(cnn_params, "cnn_params")
    return conv_layer_forward(x, w, b, stride, pad)


def cnn_backward_naive(dout, cache):
    """Returns (dx, dw, db) for cnn_forward_naive."""
    return conv_layer_backward(dout, cache)


cnn_forward_strides = cnn_forward_naive
cnn_backward_strides = cnn_backward_naive


def _pooling_settings(pooling_params):
    return pool_settings(pooling_params, "pooling_params", "pooling_height", "pooling_width")


def max_pooling_forward_naive(x, pooling_params):
    """Max pooling: x (N, C, H, W), pooling_params {'pooling_height', 'pooling_width', 'stride'}.

    Runs the fast single-pass kernel despite the name. Returns (pooled_output,
    cache), pooled_output (N, C, H', W') with H' = 1 + (H - pooling_height) // stride.
    """
    kernel, stride = _pooling_settings(pooling_params)
    return pool_layer_forward("max", x, kernel, stride)


def max_pooling_backward_naive(dout, cache):
    """Returns dx for max_pooling_forward_naive; each output's gradient goes to
    the first maximum of its window (row-major)."""
    return pool_layer_backward("max", dout, cache)


max_pool_forward_fast = max_pooling_forward_naive
max_pool_backward_fast = max_pooling_backward_naive


def average_pooling_forward_naive(x, pooling_params):
    """Average pooling: x (N, C, H, W), pooling_params as max_pooling_forward_naive.

    Returns (pooled_output, cache), each output the mean of its window.
    """
    kernel, stride = _pooling_settings(pooling_params)
    return pool_layer_forward("avg", x, kernel, stride)


def average_pooling_backward_naive(dout, cache):
    """Returns dx for average_pooling_forward_naive: each output's gradient shared evenly by its window."""
    return pool_layer_backward("avg", dout, cache)


def sigmoid_forward(x):
    """1 / (1 + exp(-x)) of x (any shape), without overflow. Returns (sigmoid_output, cache)."""
    return _shared.sigmoid_forward(as_float(x, computing_dtype(x)))


def sigmoid_backward(dout, cache):
    """Returns dx for sigmoid_forward (a dout of the other float dtype: numpy's promotion)."""
    return mixed_backward(_shared.sigmoid_backward, dout, cache)


def dropout_forward(x, dropout_params):
    """Inverted dropout; dropout_params {'mode', 'p', optional 'seed'}, p = keep probability.

    In 'train' mode each unit is kept with probability p and scaled by 1 / p;
    in 'test' mode the output equals x. Returns (dropout_output, cache).
    """
    return dropout_layer_forward(x, dropout_params, "dropout_params")


def _positive_number(value, name, minimum_ok=False):
    ok = (lambda v: v >= 0) if minimum_ok else (lambda v: v > 0)
    try:
        return check_number(value, name, ok, f"a finite number {'>= 0' if minimum_ok else '> 0'}")
    except TypeError:  # the wording tests/compat/test_compat_tutorials.py pins for a non-number
        raise TypeError(f"{name} must be a number, got {value!r}") from None


class ConvNet1:
    """The tutorials' ConvNet1: conv - ReLU - 2x2 max pool - affine - ReLU - affine - softmax.

    The tutorials' constructor, attributes and methods, on fastconv's fused
    conv-relu-pool layer and affine layers:

    * ``params``: ``w1`` (F, C, size, size), ``b1`` (F,), ``w2`` (F * Hp * Wp,
      hidden), ``b2``, ``w3`` (hidden, classes), ``b3``, in ``dtype``; the
      weights drawn as in the tutorial, ``weight_scale * np.random.rand(...)``
      from numpy's global random state (``np.random.seed`` makes them
      repeatable; ``seed``, fastconv's addition, draws them from
      ``np.random.RandomState(seed)`` instead), the biases 0;
    * ``cnn_params`` (stride 1, pad (size - 1) // 2: "same" for odd sizes) and
      ``pooling_params`` (2x2, stride 2), as in the tutorial;
    * ``loss_for_training(x, y) -> (loss, gradients)``: softmax loss plus
      ``0.5 * regularization * sum(w**2)`` for w1, w2, w3, and the gradients
      by parameter name;
    * ``scores_for_predicting(x) -> scores`` (N, classes); ``loss_for_predicting``
      is the same method under the CIFAR-10 tutorial's name.

    x is (N, C, H, W), of any float dtype or integer (raw images); it is computed
    in ``dtype``. The Solvers of fastconv (``fastconv.solver.Solver``) and of the
    tutorials train it.
    """

    def __init__(
        self,
        input_dimension=(1, 28, 28),
        number_of_filters=32,
        size_of_filter=7,
        hidden_dimension=100,
        number_of_classes=10,
        weight_scale=1e-3,
        regularization=0.0,
        dtype=np.float32,
        *,
        seed=None,
    ):
        if not isinstance(input_dimension, (tuple, list)) or len(input_dimension) != 3:
            raise ValueError(f"input_dimension must be (C, H, W), got {input_dimension!r}")
        C, H, W = (check_int(v, "input_dimension", 1) for v in input_dimension)
        F = check_int(number_of_filters, "number_of_filters", 1)
        size = check_int(size_of_filter, "size_of_filter", 1)
        hidden = check_int(hidden_dimension, "hidden_dimension", 1)
        classes = check_int(number_of_classes, "number_of_classes", 1)
        weight_scale = _positive_number(weight_scale, "weight_scale")
        self.regularization = _positive_number(regularization, "regularization", minimum_ok=True)
        self.dtype = np.dtype(dtype)
        if self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.cnn_params = {"stride": 1, "pad": (size - 1) // 2}
        self.pooling_params = {"pooling_height": 2, "pooling_width": 2, "stride": 2}
        Hp, Wp = (conv_output_size(conv_output_size(n, size, 1, self.cnn_params["pad"]), 2, 2) for n in (H, W))
        if min(Hp, Wp) < 1:
            raise ValueError(f"input_dimension {(C, H, W)} is too small for {size}x{size} filters and 2x2 pooling")
        draw = np.random.rand if seed is None else np.random.RandomState(seed).rand
        shapes = {
            "w1": (F, C, size, size),
            "b1": (F,),
            "w2": (F * Hp * Wp, hidden),
            "b2": (hidden,),
            "w3": (hidden, classes),
            "b3": (classes,),
        }
        self.params = {
            name: (weight_scale * draw(*shape) if name[0] == "w" else np.zeros(shape)).astype(self.dtype)
            for name, shape in shapes.items()
        }

    def _forward(self, x):
        stride, pad = conv_settings(self.cnn_params, "cnn_params")
        kernel, pool_stride = _pooling_settings(self.pooling_params)
        p = self.params
        pooled, cache_cnn = conv_relu_pool_layer_forward(x, p["w1"], p["b1"], stride, pad, kernel, pool_stride)
        hidden, cache_hidden = affine_relu_forward(pooled, p["w2"], p["b2"])
        scores, cache_output = affine_forward(hidden, p["w3"], p["b3"])
        return scores, (cache_cnn, cache_hidden, cache_output)

    def loss_for_training(self, x, y):
        """(loss, gradients) of a batch x (N, C, H, W) with labels y (N,) (or one-hot rows)."""
        scores, (cache_cnn, cache_hidden, cache_output) = self._forward(x)
        loss, d_scores = softmax_loss(scores, y)
        reg = self.regularization
        weights = ("w1", "w2", "w3")
        if reg:
            loss += 0.5 * reg * sum(float(np.vdot(self.params[k], self.params[k])) for k in weights)
        dx3, dw3, db3 = affine_backward(d_scores, cache_output)
        dx2, dw2, db2 = affine_relu_backward(dx3, cache_hidden)
        # the data's gradient is never used: need_dx=False skips its col2im
        _, dw1, db1 = conv_relu_pool_layer_backward(dx2, cache_cnn, need_dx=False)
        gradients = {"w1": dw1, "b1": db1, "w2": dw2, "b2": db2, "w3": dw3, "b3": db3}
        if reg:
            for k in weights:
                gradients[k] = gradients[k] + self.dtype.type(reg) * self.params[k]
        return float(loss), gradients

    def scores_for_predicting(self, x):
        """Class scores (N, classes) of x (N, C, H, W)."""
        return self._forward(x)[0]

    loss_for_predicting = scores_for_predicting
