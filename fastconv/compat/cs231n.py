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
  with divisor N as CS231n's ``np.var``). Both start at 0, as in CS231n (the
  core ``fastconv.layers`` starts the variance at 1): test mode before or early
  in training gives CS231n's outputs.
* ``ln_param`` (layernorm), ``gn_param`` (spatial groupnorm): optional
  ``'eps'`` (1e-5); other keys (a ``'mode'`` passed along) are ignored.
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
  by default, float64 CIFAR-10 data) run unchanged, in float32.
* Integer and bool arrays given to a forward function (``b = np.array([0,
  128])``, ``gamma = np.asarray([3, 4, 5])``, raw uint8 images) are converted,
  as numpy arithmetic converts them in the original code: to the weights'
  dtype (``w``, or the float one of ``x`` and ``gamma`` for the
  normalizations), or to float64 when there is no float array; their
  gradients come back in that dtype. float16 and other dtypes raise
  TypeError, and the core API (``fastconv.fast``, ``fastconv.layers``) keeps
  refusing integers. ``b`` is required, as in CS231n.
* ``spatial_groupnorm_*`` take gamma and beta of shape (C,) or CS231n's
  (1, C, 1, 1), and return dgamma, dbeta in the shape given.
* ``affine_bn_relu_*`` and ``affine_ln_relu_*`` are not in CS231n's
  ``layer_utils.py`` but in most solutions' ``fc_net.py`` (affine -> norm ->
  ReLU, returning ``dx, dw, db, dgamma, dbeta``).
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
import numbers
from collections.abc import Mapping

import numpy as np

from .. import fast
from .. import layers as _shared
from ..engine.checks import FLOAT_DTYPES, HYPERPARAMETER_MAX, check_int, pair

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
    "layernorm_forward", "layernorm_backward", "spatial_groupnorm_forward", "spatial_groupnorm_backward",
    "dropout_forward", "dropout_backward",
    "affine_relu_forward", "affine_relu_backward", "conv_relu_forward", "conv_relu_backward",
    "conv_relu_pool_forward", "conv_relu_pool_backward", "conv_bn_relu_forward", "conv_bn_relu_backward",
    "affine_bn_relu_forward", "affine_bn_relu_backward", "affine_ln_relu_forward", "affine_ln_relu_backward",
]


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
def _is_integer_array(a):
    return isinstance(a, np.ndarray) and a.dtype.kind in "biu"


def _computing_dtype(*arrays):
    """The dtype a layer computes in: the first float32/float64 array's among ``arrays`` (the
    weights first), or float64 when none is one (integer inputs, as numpy promotes them)."""
    for a in arrays:
        if isinstance(a, np.ndarray) and a.dtype in FLOAT_DTYPES:
            return a.dtype
    return np.dtype(np.float64)


def _as_float(a, dtype):
    """An integer or bool array as ``dtype`` (the tutorials' numpy code converts them
    implicitly); anything else unchanged."""
    return a.astype(dtype) if _is_integer_array(a) else a


def _cast(a, dtype):
    """``a`` in ``dtype`` if it is a float32/float64 array of the other float dtype; else unchanged
    (fastconv's own checks then report anything that is not a float array: an upstream gradient
    must be one)."""
    if isinstance(a, np.ndarray) and a.dtype in FLOAT_DTYPES and dtype in FLOAT_DTYPES and a.dtype != dtype:
        return a.astype(dtype)
    return a


def _convert(a, dtype):
    """A forward input in ``dtype``: ``_cast``, and integer and bool arrays converted."""
    return _as_float(_cast(a, dtype), dtype)


def _dtype_of(a):
    """The dtype a gradient of ``a`` comes back in: its own for a float array, None (the
    computing dtype) for an integer one, or anything else."""
    return a.dtype if isinstance(a, np.ndarray) and a.dtype in FLOAT_DTYPES else None


def _in_dtype(g, dtype):
    """Gradient ``g`` in ``dtype``; as computed when ``dtype`` is None."""
    return g if dtype is None else g.astype(dtype, copy=False)


def _require_bias(b):
    if b is None:
        raise TypeError(
            "b must be a numpy.ndarray of shape (F,): CS231n layers always take a bias "
            "(for none, use fastconv.fast.conv_forward(x, w, None, stride, pad))"
        )


def _weights_dtype(w):
    return _computing_dtype(w)


def _compute_dtype(cache):
    """The dtype a conv or affine layer computed in: the second item of its (compat) cache."""
    return cache[1]


# ------------------------------------------------------------------ affine
def affine_forward(x, w, b):
    """Fully connected layer: x (N, d1, ..., dk) flattened to (N, D), w (D, M), b (M,).

    Returns (out, cache), out (N, M) in w's dtype.
    """
    dtype = _weights_dtype(w)
    out, cache = _shared.affine_forward(_convert(x, dtype), _as_float(w, dtype), _convert(b, dtype))
    return out, (cache, out.dtype, _dtype_of(x), _dtype_of(b))


def affine_backward(dout, cache):
    """Returns (dx, dw, db) for affine_forward."""
    inner, dtype, x_dtype, b_dtype = cache
    dx, dw, db = _shared.affine_backward(_cast(dout, dtype), inner)
    return _in_dtype(dx, x_dtype), dw, _in_dtype(db, b_dtype)


# ------------------------------------------------------------------ relu, losses
def relu_forward(x):
    """max(x, 0) of x (any shape). Returns (out, cache)."""
    return _shared.relu_forward(_as_float(x, _computing_dtype(x)))


relu_backward = _shared.relu_backward


def softmax_loss(x, y):
    """Mean softmax cross-entropy of scores x (N, C); y (N,) labels (or one-hot rows). Returns (loss, dx)."""
    return _shared.softmax_loss(_as_float(x, _computing_dtype(x)), y)


def svm_loss(x, y):
    """Mean multiclass hinge loss (margin 1) of scores x (N, C); y as softmax_loss. Returns (loss, dx)."""
    return _shared.svm_loss(_as_float(x, _computing_dtype(x)), y)


# ------------------------------------------------------------------ convolution
def _conv_forward(x, w, b, stride, pad):
    _require_bias(b)
    dtype = _weights_dtype(w)
    out, cache = fast.conv_forward(_convert(x, dtype), _as_float(w, dtype), _convert(b, dtype), stride, pad)
    return out, (cache, out.dtype, _dtype_of(x), _dtype_of(b))


def _conv_backward(dout, cache):
    inner, dtype, x_dtype, b_dtype = cache
    dx, dw, db = fast.conv_backward(_cast(dout, dtype), inner)
    return _in_dtype(dx, x_dtype), dw, _in_dtype(db, b_dtype)


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
def _pool_forward(kind, x, kernel, stride):
    """fastconv.fast's ``kind`` ('max' or 'avg') pooling of x, an integer or bool x as float64."""
    return getattr(fast, f"{kind}_pool_forward")(_as_float(x, _computing_dtype(x)), kernel, stride)


def max_pool_forward_naive(x, pool_param):
    """Max pooling: x (N, C, H, W), pool_param {'pool_height', 'pool_width', 'stride'}.

    Runs the fast single-pass kernel despite the name. Returns (out, cache),
    out (N, C, H', W') with H' = 1 + (H - pool_height) // stride.
    """
    kernel, stride = pool_settings(pool_param)
    return _pool_forward("max", x, kernel, stride)


def max_pool_backward_naive(dout, cache):
    """Returns dx for any of the max_pool_forward_* functions; each output's
    gradient goes to the first maximum of its window (row-major)."""
    return fast.max_pool_backward(dout, cache)


max_pool_forward_fast = max_pool_forward_reshape = max_pool_forward_im2col = max_pool_forward_naive
max_pool_backward_fast = max_pool_backward_reshape = max_pool_backward_im2col = max_pool_backward_naive


# ------------------------------------------------------------------ normalization
def _eps_entry(params, name):
    eps = params.get("eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{name}['eps'] must be a positive number, got {eps!r}")
    if not eps > 0:
        raise ValueError(f"{name}['eps'] must be a positive number, got {eps!r}")
    return eps


def _bn_settings(bn_param, D):
    keys = "'mode' and optionally 'eps', 'momentum', 'running_mean', 'running_var'"
    _check_dict(bn_param, "bn_param", keys)
    _mode_entry(bn_param, "bn_param", keys)
    _eps_entry(bn_param, "bn_param")
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


def _normalization_inputs(x, gamma, beta):
    """(x, gamma, beta, dtype), integer and bool arrays converted to the float dtype of x or gamma
    (mixed float dtypes stay an error of the core), or to float64."""
    dtype = _computing_dtype(x, gamma, beta)
    return _as_float(x, dtype), _as_float(gamma, dtype), _as_float(beta, dtype), dtype


def _batchnorm(forward, x, gamma, beta, bn_param, ndim):
    """``forward`` (batchnorm or spatial batchnorm) with bn_param checked and its running
    variance started at 0, as CS231n does (fastconv.layers starts it at 1)."""
    x, gamma, beta, dtype = _normalization_inputs(x, gamma, beta)
    if isinstance(x, np.ndarray) and x.ndim == ndim:
        _bn_settings(bn_param, x.shape[1])
        if isinstance(bn_param, dict) and "running_var" not in bn_param:
            bn_param["running_var"] = np.zeros(x.shape[1], dtype=dtype)
    return forward(x, gamma, beta, bn_param)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, D) over the batch; gamma, beta (D,).

    Returns (out, cache); the cache is None in 'test' mode. bn_param's
    running statistics are updated in training (see the module docstring).
    """
    return _batchnorm(_shared.batchnorm_forward, x, gamma, beta, bn_param, 2)


def batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for batchnorm_forward in 'train' mode."""
    return _shared.batchnorm_backward(dout, cache)


batchnorm_backward_alt = batchnorm_backward


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, C, H, W) per channel; gamma, beta (C,); bn_param as batchnorm_forward."""
    return _batchnorm(fast.spatial_batchnorm_forward, x, gamma, beta, bn_param, 4)


def spatial_batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for spatial_batchnorm_forward in 'train' mode."""
    return fast.spatial_batchnorm_backward(dout, cache)


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization of each row of x (N, D); gamma, beta (D,); ln_param {optional 'eps'}.

    The same in training and at test time. Returns (out, cache).
    """
    _check_dict(ln_param, "ln_param", "optionally 'eps'")
    eps = _eps_entry(ln_param, "ln_param")
    x, gamma, beta, _ = _normalization_inputs(x, gamma, beta)
    return _shared.layernorm_forward(x, gamma, beta, eps)


def layernorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for layernorm_forward."""
    return _shared.layernorm_backward(dout, cache)


def _per_channel(a, name):
    """CS231n's (1, C, 1, 1) gamma or beta as (C,); a non-array or an array (C,) unchanged (the core
    checks them)."""
    if not isinstance(a, np.ndarray) or a.ndim == 1:
        return a
    if a.ndim == 4 and a.shape[0] == a.shape[2] == a.shape[3] == 1:
        return a.reshape(a.shape[1])
    raise ValueError(f"{name} must have shape (C,) or (1, C, 1, 1), got {a.shape}")


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalization of x (N, C, H, W): each image's C channels in G groups of C // G,
    each normalized over its channels and H, W; gamma, beta (C,) or (1, C, 1, 1);
    gn_param {optional 'eps'}. Returns (out, cache).
    """
    _check_dict(gn_param, "gn_param", "optionally 'eps'")
    eps = _eps_entry(gn_param, "gn_param")
    G = check_int(G, "G", 1)
    x, gamma, beta, _ = _normalization_inputs(x, gamma, beta)
    out, cache = _shared.groupnorm_forward(x, _per_channel(gamma, "gamma"), _per_channel(beta, "beta"), G, eps)
    return out, (cache, gamma.shape, beta.shape)


def spatial_groupnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for spatial_groupnorm_forward, dgamma and dbeta in the shape
    gamma and beta had."""
    inner, gamma_shape, beta_shape = cache
    dx, dgamma, dbeta = _shared.groupnorm_backward(dout, inner)
    return dx, dgamma.reshape(gamma_shape), dbeta.reshape(beta_shape)


# ------------------------------------------------------------------ dropout
def dropout_forward(x, dropout_param):
    """Inverted dropout; dropout_param {'mode', 'p', optional 'seed'}, p = keep probability.

    In 'train' mode each unit is kept with probability p and scaled by 1 / p;
    in 'test' mode out equals x. Returns (out, cache).
    """
    return _dropout_forward(x, dropout_param, "dropout_param")


def _dropout_forward(x, dropout_param, name):
    keys = "'mode', 'p' and optionally 'seed'"
    _check_dict(dropout_param, name, keys)
    mode = _mode_entry(dropout_param, name, keys)
    p = _lookup(dropout_param, name, "p", keys)
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name}['p'] (the keep probability) must be a number in (0, 1], got {p!r}")
    if not 0 < p <= 1:
        raise ValueError(f"{name}['p'] (the keep probability) must be in (0, 1], got {p!r}")
    seed = dropout_param.get("seed")
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise TypeError(f"{name}['seed'] must be a non-negative int or None, got {seed!r}")
    if seed is None and mode == "train":
        seed = np.random.randint(0, 2**63 - 1, dtype=np.int64)  # follows np.random.seed(...)
    out, mask_cache = _shared.dropout_forward(_as_float(x, _computing_dtype(x)), 1 - float(p),
                                              train=mode == "train", rng=seed)
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
    return _conv_relu_pool_forward(x, w, b, stride, pad, kernel, pool_stride)


def _conv_relu_pool_forward(x, w, b, stride, pad, kernel, pool_stride):
    _require_bias(b)
    dtype = _weights_dtype(w)
    try:
        out, cache = fast.conv_relu_pool_forward(_convert(x, dtype), _as_float(w, dtype), _convert(b, dtype), stride,
                                                 pad, pool_size=kernel, pool_stride=pool_stride)
    except ValueError as exc:
        if str(exc).startswith("pool_size"):  # the fused layer's name for what pool_param gives here
            raise ValueError(f"pool_param's window does not fit the convolution's output: {exc}") from None
        raise
    return out, (cache, out.dtype, _dtype_of(x), _dtype_of(b))


def conv_relu_pool_backward(dout, cache):
    """Returns (dx, dw, db) for conv_relu_pool_forward."""
    return _conv_relu_pool_backward(dout, cache)


def _conv_relu_pool_backward(dout, cache, need_dx=True):
    inner, dtype, x_dtype, b_dtype = cache
    dx, dw, db = fast.conv_relu_pool_backward(_cast(dout, dtype), inner, need_dx=need_dx)
    return None if dx is None else _in_dtype(dx, x_dtype), dw, _in_dtype(db, b_dtype)


def _norm_relu(a, first_cache, norm_forward, gamma, beta, norm_param):
    """The normalization and ReLU after a conv or affine layer (whose output is ``a``)."""
    an, norm_cache = norm_forward(a, gamma, beta, norm_param)
    out, relu_cache = relu_forward(an)
    return out, (first_cache, norm_cache, relu_cache)


def _norm_relu_backward(dout, cache, first_backward, norm_backward):
    """(dx, dw, db, dgamma, dbeta) for a layer -> normalization -> ReLU cache."""
    first_cache, norm_cache, relu_cache = cache
    dan = relu_backward(_cast(dout, _compute_dtype(first_cache)), relu_cache)
    da, dgamma, dbeta = norm_backward(dan, norm_cache)
    return (*first_backward(da, first_cache), dgamma, dbeta)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    """conv -> spatial batchnorm -> ReLU. Returns (out, cache)."""
    return _norm_relu(*conv_forward_fast(x, w, b, conv_param), spatial_batchnorm_forward, gamma, beta, bn_param)


def conv_bn_relu_backward(dout, cache):
    """Returns (dx, dw, db, dgamma, dbeta) for conv_bn_relu_forward."""
    return _norm_relu_backward(dout, cache, conv_backward_fast, spatial_batchnorm_backward)


def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    """affine -> batchnorm -> ReLU. Returns (out, cache)."""
    return _norm_relu(*affine_forward(x, w, b), batchnorm_forward, gamma, beta, bn_param)


def affine_bn_relu_backward(dout, cache):
    """Returns (dx, dw, db, dgamma, dbeta) for affine_bn_relu_forward."""
    return _norm_relu_backward(dout, cache, affine_backward, batchnorm_backward)


def affine_ln_relu_forward(x, w, b, gamma, beta, ln_param):
    """affine -> layernorm -> ReLU. Returns (out, cache)."""
    return _norm_relu(*affine_forward(x, w, b), layernorm_forward, gamma, beta, ln_param)


def affine_ln_relu_backward(dout, cache):
    """Returns (dx, dw, db, dgamma, dbeta) for affine_ln_relu_forward."""
    return _norm_relu_backward(dout, cache, affine_backward, layernorm_backward)
