"""CS231n's layer names and parameter dictionaries, running on ``fastconv.fast``.

The Stanford CS231n assignments put their layers in ``cs231n/layers.py``
(``*_naive`` loops), ``cs231n/fast_layers.py`` (``*_fast``) and
``cs231n/layer_utils.py`` (the "sandwich" layers). This module has the same
names, signatures, dictionaries and return values, so code written against
them speeds up by changing one import::

    # from cs231n.layers import *
    # from cs231n.fast_layers import *
    # from cs231n.layer_utils import *
    from fastconv.compat.cs231n import *

**Every name runs the fast path, the ``*_naive`` ones included**: that is the
point, code that calls ``conv_forward_naive`` gets the im2col + GEMM
convolution. ``conv_forward_naive``, ``conv_forward_fast``,
``conv_forward_im2col`` and ``conv_forward_strides`` are one function (and so
are their backwards, and the pooling variants), so a cache from any of them
goes to any matching backward. The loop reference lives in ``fastconv.naive``.

Dictionaries (extra keys are ignored; a missing key or a bad value raises
ValueError/TypeError naming it, e.g. ``conv_param['stride']``):

* ``conv_param``: ``{'stride', 'pad'}``, each an int (or an ``(h, w)`` pair).
* ``pool_param``: ``{'pool_height', 'pool_width', 'stride'}``, ints; no padding.
* ``bn_param``: ``{'mode'}`` (``'train'`` | ``'test'``, required as in CS231n),
  optional ``'eps'`` (1e-5), ``'momentum'`` (0.9), ``'running_mean'``,
  ``'running_var'`` (created, and updated in place of the dict, in training:
  ``running = momentum * running + (1 - momentum) * batch``, batch variance
  with divisor N as CS231n's ``np.var``).
* ``dropout_param``: ``{'mode', 'p'}`` and optional ``'seed'``. **p is the
  probability of keeping a unit** (the 2017 and later assignments; the 2016
  one used p as the drop probability). Inverted dropout: kept units are
  scaled by 1 / p in training; ``'test'`` mode is the identity; p = 1 keeps
  everything (CS231n's "dropout = 1 means no dropout").

Where this differs from the original code:

* Any stride and padding work; nothing asserts that the windows tile the
  input exactly (CS231n's im2col path does), non-square kernels are right.
* dtype: float32 stays float32, float64 stays float64, no silent float64.
  Layers with weights (conv, affine and the sandwich layers) compute in the
  dtype of their weights ``w``: an ``x``, ``b`` or ``dout`` in the other float
  dtype is cast to it, and each gradient comes back in its own variable's
  dtype. That is what lets CS231n's ``ThreeLayerConvNet`` (float32 parameters
  by default, float64 CIFAR-10 data) run unchanged, in float32. Other dtypes
  (integers, float16) raise TypeError. ``b`` is required, as in CS231n.
* Max pooling sends each output's gradient to the first maximum of its
  window in row-major order (CS231n's reshape fast path splits it among tied
  maxima; with real-valued data ties do not happen).
* Dropout masks come from a numpy Generator seeded with
  ``dropout_param['seed']`` when given, else with a seed drawn from numpy's
  global legacy random state, so ``np.random.seed(231)`` at the top of a
  notebook still makes a run reproducible. The masks differ from the
  original's for the same seed (which called ``np.random.seed``); their
  statistics do not.
* Caches are opaque: pass them to the matching backward, do not unpack them
  (the original conv cache was ``(x, w, b, conv_param)``).
"""
from collections.abc import Mapping
import numbers

import numpy as np

from .. import fast, layers as _shared
from .._params import FLOAT_DTYPES, HYPERPARAMETER_MAX, check_int, pair

__all__ = [
    "affine_forward", "affine_backward", "relu_forward", "relu_backward",
    "softmax_loss", "svm_loss",
    "conv_forward_naive", "conv_backward_naive", "conv_forward_fast", "conv_backward_fast",
    "conv_forward_im2col", "conv_backward_im2col", "conv_forward_strides", "conv_backward_strides",
    "max_pool_forward_naive", "max_pool_backward_naive", "max_pool_forward_fast", "max_pool_backward_fast",
    "max_pool_forward_reshape", "max_pool_backward_reshape", "max_pool_forward_im2col",
    "max_pool_backward_im2col",
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt",
    "spatial_batchnorm_forward", "spatial_batchnorm_backward",
    "dropout_forward", "dropout_backward",
    "affine_relu_forward", "affine_relu_backward", "conv_relu_forward", "conv_relu_backward",
    "conv_relu_pool_forward", "conv_relu_pool_backward", "conv_bn_relu_forward", "conv_bn_relu_backward",
]

relu_forward = _shared.relu_forward
relu_backward = _shared.relu_backward
softmax_loss = _shared.softmax_loss
svm_loss = _shared.svm_loss


# ------------------------------------------------------------------ dictionaries
def _check_dict(params, name, keys):
    if not isinstance(params, Mapping):
        raise TypeError(f"{name} must be a dict with keys {keys}, got {type(params).__name__}")


def _lookup(params, name, key, keys):
    if key not in params:
        raise ValueError(f"{name}[{key!r}] is missing: {name} must be a dict with keys {keys}")
    return params[key]


def _pair_entry(params, name, key, keys, minimum):
    """An int or (h, w) pair entry of a parameter dict, checked under the name ``name['key']``."""
    return pair(_lookup(params, name, key, keys), f"{name}[{key!r}]", minimum)


def _int_entry(params, name, key, keys, minimum):
    return check_int(_lookup(params, name, key, keys), f"{name}[{key!r}]", minimum, HYPERPARAMETER_MAX)


def _mode_entry(params, name, keys):
    mode = _lookup(params, name, "mode", keys)
    if mode not in ("train", "test"):
        raise ValueError(f"{name}['mode'] must be 'train' or 'test', got {mode!r}")
    return mode


def conv_settings(conv_param, name="conv_param"):
    """(stride, pad) from a ``{'stride', 'pad'}`` dict, each an (h, w) pair."""
    keys = "'stride' and 'pad'"
    _check_dict(conv_param, name, keys)
    return _pair_entry(conv_param, name, "stride", keys, 1), _pair_entry(conv_param, name, "pad", keys, 0)


def pool_settings(pool_param, name="pool_param", height="pool_height", width="pool_width"):
    """((kh, kw), stride) from a pooling dict with keys ``height``, ``width`` and 'stride'."""
    keys = f"{height!r}, {width!r} and 'stride'"
    _check_dict(pool_param, name, keys)
    kh = _int_entry(pool_param, name, height, keys, 1)
    kw = _int_entry(pool_param, name, width, keys, 1)
    return (kh, kw), _pair_entry(pool_param, name, "stride", keys, 1)


# ------------------------------------------------------------------ dtype policy
def _cast(a, dtype):
    """``a`` in ``dtype`` if it is a float32/float64 array of the other float dtype; else unchanged
    (fastconv's own checks then report anything that is not a float array)."""
    if isinstance(a, np.ndarray) and a.dtype in FLOAT_DTYPES and dtype in FLOAT_DTYPES and a.dtype != dtype:
        return a.astype(dtype)
    return a


def _dtype_of(a):
    return a.dtype if isinstance(a, np.ndarray) else None


def _require_bias(b):
    if b is None:
        raise TypeError(
            "b must be a numpy.ndarray of shape (F,): CS231n layers always take a bias "
            "(for none, use fastconv.fast.conv_forward(x, w, None, stride, pad))"
        )


def _weights_dtype(w):
    return w.dtype if isinstance(w, np.ndarray) else None


def _compute_dtype(cache):
    """The dtype a conv or affine layer computed in: the second item of its (compat) cache."""
    return cache[1]


# ------------------------------------------------------------------ affine
def affine_forward(x, w, b):
    """Fully connected layer: x (N, d1, ..., dk) flattened to (N, D), w (D, M), b (M,).

    Returns (out, cache), out (N, M) in w's dtype.
    """
    dtype = _weights_dtype(w)
    out, cache = _shared.affine_forward(_cast(x, dtype), w, _cast(b, dtype))
    return out, (cache, out.dtype, _dtype_of(x), _dtype_of(b))


def affine_backward(dout, cache):
    """Returns (dx, dw, db) for affine_forward."""
    inner, dtype, x_dtype, b_dtype = cache
    dx, dw, db = _shared.affine_backward(_cast(dout, dtype), inner)
    return dx.astype(x_dtype, copy=False), dw, db.astype(b_dtype, copy=False)


# ------------------------------------------------------------------ convolution
def _conv_forward(x, w, b, stride, pad):
    _require_bias(b)
    dtype = _weights_dtype(w)
    out, cache = fast.conv_forward(_cast(x, dtype), w, _cast(b, dtype), stride, pad)
    return out, (cache, out.dtype, _dtype_of(x), _dtype_of(b))


def _conv_backward(dout, cache):
    inner, dtype, x_dtype, b_dtype = cache
    dx, dw, db = fast.conv_backward(_cast(dout, dtype), inner)
    return dx.astype(x_dtype, copy=False), dw, db.astype(b_dtype, copy=False)


def conv_forward_naive(x, w, b, conv_param):
    """Convolution: x (N, C, H, W), w (F, C, HH, WW), b (F,), conv_param {'stride', 'pad'}.

    Runs the fast im2col path despite the name. Returns (out, cache), out
    (N, F, H', W') with H' = 1 + (H + 2 * pad - HH) // stride.
    """
    stride, pad = conv_settings(conv_param)
    return _conv_forward(x, w, b, stride, pad)


def conv_backward_naive(dout, cache):
    """Returns (dx, dw, db) for any of the conv_forward_* functions."""
    return _conv_backward(dout, cache)


conv_forward_fast = conv_forward_im2col = conv_forward_strides = conv_forward_naive
conv_backward_fast = conv_backward_im2col = conv_backward_strides = conv_backward_naive


# ------------------------------------------------------------------ max pooling
def max_pool_forward_naive(x, pool_param):
    """Max pooling: x (N, C, H, W), pool_param {'pool_height', 'pool_width', 'stride'}.

    Runs the fast single-pass kernel despite the name. Returns (out, cache),
    out (N, C, H', W') with H' = 1 + (H - pool_height) // stride.
    """
    kernel, stride = pool_settings(pool_param)
    return fast.max_pool_forward(x, kernel, stride)


def max_pool_backward_naive(dout, cache):
    """Returns dx for any of the max_pool_forward_* functions; each output's
    gradient goes to the first maximum of its window (row-major)."""
    return fast.max_pool_backward(dout, cache)


max_pool_forward_fast = max_pool_forward_reshape = max_pool_forward_im2col = max_pool_forward_naive
max_pool_backward_fast = max_pool_backward_reshape = max_pool_backward_im2col = max_pool_backward_naive


# ------------------------------------------------------------------ batch normalization
def _bn_settings(bn_param, D):
    keys = "'mode' and optionally 'eps', 'momentum', 'running_mean', 'running_var'"
    _check_dict(bn_param, "bn_param", keys)
    _mode_entry(bn_param, "bn_param", keys)
    eps = bn_param.get("eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"bn_param['eps'] must be a positive number, got {eps!r}")
    if not eps > 0:
        raise ValueError(f"bn_param['eps'] must be a positive number, got {eps!r}")
    momentum = bn_param.get("momentum", 0.9)
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"bn_param['momentum'] must be a number in [0, 1], got {momentum!r}")
    if not 0 <= momentum <= 1:
        raise ValueError(f"bn_param['momentum'] must be a number in [0, 1], got {momentum!r}")
    for key in ("running_mean", "running_var"):
        if key in bn_param:
            value = bn_param[key]
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                raise TypeError(f"bn_param[{key!r}] must be a float numpy array of shape ({D},), "
                                f"got {type(value).__name__}")
            if value.shape != (D,):
                raise ValueError(f"bn_param[{key!r}] must have shape ({D},), got {value.shape}")


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, D) over the batch; gamma, beta (D,).

    Returns (out, cache); the cache is None in 'test' mode. bn_param's
    running statistics are updated in training (see the module docstring).
    """
    if isinstance(x, np.ndarray) and x.ndim == 2:
        _bn_settings(bn_param, x.shape[1])
    return _shared.batchnorm_forward(x, gamma, beta, bn_param)


def batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for batchnorm_forward in 'train' mode."""
    return _shared.batchnorm_backward(dout, cache)


batchnorm_backward_alt = batchnorm_backward


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, C, H, W) per channel; gamma, beta (C,); bn_param as batchnorm_forward."""
    if isinstance(x, np.ndarray) and x.ndim == 4:
        _bn_settings(bn_param, x.shape[1])
    return fast.spatial_batchnorm_forward(x, gamma, beta, bn_param)


def spatial_batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for spatial_batchnorm_forward in 'train' mode."""
    return fast.spatial_batchnorm_backward(dout, cache)


# ------------------------------------------------------------------ dropout
def dropout_forward(x, dropout_param):
    """Inverted dropout; dropout_param {'mode', 'p', optional 'seed'}, p = keep probability.

    In 'train' mode each unit is kept with probability p and scaled by 1 / p;
    in 'test' mode out equals x. Returns (out, cache).
    """
    keys = "'mode', 'p' and optionally 'seed'"
    _check_dict(dropout_param, "dropout_param", keys)
    mode = _mode_entry(dropout_param, "dropout_param", keys)
    p = _lookup(dropout_param, "dropout_param", "p", keys)
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"dropout_param['p'] (the keep probability) must be a number in (0, 1], got {p!r}")
    if not 0 < p <= 1:
        raise ValueError(f"dropout_param['p'] (the keep probability) must be in (0, 1], got {p!r}")
    seed = dropout_param.get("seed")
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise TypeError(f"dropout_param['seed'] must be a non-negative int or None, got {seed!r}")
    if seed is None and mode == "train":
        seed = np.random.randint(0, 2**63 - 1, dtype=np.int64)  # follows np.random.seed(...)
    out, mask_cache = _shared.dropout_forward(x, 1 - float(p), train=mode == "train", rng=seed)
    return out, mask_cache


def dropout_backward(dout, cache):
    """Returns dx for dropout_forward (dout itself, copied, in 'test' mode)."""
    return _shared.dropout_backward(dout, cache)


# ------------------------------------------------------------------ sandwich layers (layer_utils.py)
def affine_relu_forward(x, w, b):
    """affine -> ReLU. Returns (out, cache)."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Returns (dx, dw, db) for affine_relu_forward."""
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(_cast(dout, _compute_dtype(fc_cache)), relu_cache), fc_cache)


def conv_relu_forward(x, w, b, conv_param):
    """conv -> ReLU. Returns (out, cache)."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """Returns (dx, dw, db) for conv_relu_forward."""
    conv_cache, relu_cache = cache
    return conv_backward_fast(relu_backward(_cast(dout, _compute_dtype(conv_cache)), relu_cache), conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """conv -> ReLU -> max pool, fused (fastconv.fast.conv_relu_pool_forward): the
    same values as the three layers, without the full-size intermediates. Returns (out, cache)."""
    kernel, pool_stride = pool_settings(pool_param)  # report a bad pool_param before the convolution runs
    stride, pad = conv_settings(conv_param)
    _require_bias(b)
    dtype = _weights_dtype(w)
    out, cache = fast.conv_relu_pool_forward(_cast(x, dtype), w, _cast(b, dtype), stride, pad,
                                             pool_size=kernel, pool_stride=pool_stride)
    return out, (cache, out.dtype, _dtype_of(x), _dtype_of(b))


def conv_relu_pool_backward(dout, cache):
    """Returns (dx, dw, db) for conv_relu_pool_forward."""
    inner, dtype, x_dtype, b_dtype = cache
    dx, dw, db = fast.conv_relu_pool_backward(_cast(dout, dtype), inner)
    return dx.astype(x_dtype, copy=False), dw, db.astype(b_dtype, copy=False)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    """conv -> spatial batchnorm -> ReLU. Returns (out, cache)."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    an, bn_cache = spatial_batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(an)
    return out, (conv_cache, bn_cache, relu_cache)


def conv_bn_relu_backward(dout, cache):
    """Returns (dx, dw, db, dgamma, dbeta) for conv_bn_relu_forward."""
    conv_cache, bn_cache, relu_cache = cache
    dan = relu_backward(_cast(dout, _compute_dtype(conv_cache)), relu_cache)
    da, dgamma, dbeta = spatial_batchnorm_backward(dan, bn_cache)
    dx, dw, db = conv_backward_fast(da, conv_cache)
    return dx, dw, db, dgamma, dbeta
