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

The checking names of ``cs231n/gradient_check.py`` (``eval_numerical_gradient``,
``eval_numerical_gradient_array``, ``grad_check_sparse``) and the notebooks' ``rel_error``
come along (``fastconv/compat/cs231n_gradient_check.py``), so the checking cells run too.

**Every name runs the fast path, the ``*_naive`` ones included**: that is the
point, code that calls ``conv_forward_naive`` gets the im2col + GEMM
convolution. ``conv_forward_naive``, ``conv_forward_fast``,
``conv_forward_im2col`` and ``conv_forward_strides`` are one function (and so
are their backwards, and the pooling variants), so a cache from any of them
goes to any matching backward. The loop reference lives in ``fastconv.naive``;
the notebooks' "fast vs naive" cells, after the swap, compare fastconv with
itself (a difference of 0, a speedup of about 1x).

The star import also brings the names of CS231n's ``im2col.py`` and
``im2col_cython.pyx`` (``im2col_indices``, ``col2im_indices``,
``get_im2col_indices``, ``im2col_cython``, ``col2im_cython``,
``col2im_6d_cython``: the originals' signatures and column layout, on
fastconv's kernels). ``Solver`` (not in ``__all__``, so that a star import
never replaces a notebook's own) is ``fastconv.solver.Solver`` stopping a run
at a non-finite loss as a search needs: ``from fastconv.compat.cs231n import
Solver`` replaces ``from cs231n.solver import Solver``.

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
* Layers without weights follow numpy's promotion on mixed float32/float64:
  batchnorm, spatial batchnorm, layernorm and spatial groupnorm with float32
  ``x`` and float64 gamma/beta (or the reverse) compute in float64; a
  backward given a ``dout`` of the other float dtype returns what the
  original does (ReLU: dout's dtype; pooling: x's; normalizations, dropout:
  float64). ``fastconv.fast`` and ``fastconv.layers`` stay strict.
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
from ..engine import batchnorm
from ..engine.checks import (
    FLOAT_DTYPES,
    HYPERPARAMETER_MAX,
    check_array_size,
    check_float_array,
    check_int,
    check_number,
    pair,
)
from ..engine.conv import run_col2im, run_im2col
from ..engine.geometry import conv_output_size

# the notebooks' checking names (cs231n/gradient_check.py and rel_error), so that `import *` brings them
from .cs231n_gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, grad_check_sparse, rel_error

__all__ = [
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "softmax_loss",
    "svm_loss",
    "conv_forward_naive",
    "conv_backward_naive",
    "conv_forward_fast",
    "conv_backward_fast",
    "conv_forward_im2col",
    "conv_backward_im2col",
    "conv_forward_strides",
    "conv_backward_strides",
    "max_pool_forward_naive",
    "max_pool_backward_naive",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "max_pool_forward_reshape",
    "max_pool_backward_reshape",
    "max_pool_forward_im2col",
    "max_pool_backward_im2col",
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "spatial_groupnorm_forward",
    "spatial_groupnorm_backward",
    "dropout_forward",
    "dropout_backward",
    "affine_relu_forward",
    "affine_relu_backward",
    "conv_relu_forward",
    "conv_relu_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
    "conv_bn_relu_forward",
    "conv_bn_relu_backward",
    "affine_bn_relu_forward",
    "affine_bn_relu_backward",
    "affine_ln_relu_forward",
    "affine_ln_relu_backward",
    "eval_numerical_gradient",
    "eval_numerical_gradient_array",
    "grad_check_sparse",
    "rel_error",
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
# These helpers and the *_layer_* functions below have public names outside __all__:
# fastconv.compat.sichkar builds its layers on them.
def _is_integer_array(a):
    return isinstance(a, np.ndarray) and a.dtype.kind in "biu"


def computing_dtype(*arrays):
    """The dtype a layer computes in: the first float32/float64 array's among ``arrays`` (the
    weights first), or float64 when none is one (integer inputs, as numpy promotes them)."""
    for a in arrays:
        if isinstance(a, np.ndarray) and a.dtype in FLOAT_DTYPES:
            return a.dtype
    return np.dtype(np.float64)


def as_float(a, dtype):
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
    return as_float(_cast(a, dtype), dtype)


def _dtype_of(a):
    """The dtype a gradient of ``a`` comes back in: its own for a float array, None (the
    computing dtype) for an integer one, or anything else."""
    return a.dtype if isinstance(a, np.ndarray) and a.dtype in FLOAT_DTYPES else None


def _in_dtype(g, dtype):
    """Gradient ``g`` in ``dtype``; as computed when ``dtype`` is None."""
    return g if dtype is None else g.astype(dtype, copy=False)


# ------------------------------------------------------------------ mixed float32/float64 (numpy's promotion)
# Layers without weights compute as numpy would on mixed float32/float64 operands, so
# that the originals' results keep their dtype here; fastconv.fast and fastconv.layers
# stay strict (one dtype per call).
def _promoted_dtype(*arrays):
    """numpy's result dtype of the float32/float64 arrays among ``arrays`` (float64 when none is one)."""
    floats = [a.dtype for a in arrays if isinstance(a, np.ndarray) and a.dtype in FLOAT_DTYPES]
    return np.result_type(*floats) if floats else np.dtype(np.float64)


def _cache_dtype(cache):
    """The float dtype a (nested tuple) cache was computed in: its first float array's, or a
    float dtype it records; None if it holds neither (a test-mode cache)."""
    if isinstance(cache, np.ndarray):
        return cache.dtype if cache.dtype in FLOAT_DTYPES else None
    if isinstance(cache, np.dtype):
        return cache if cache in FLOAT_DTYPES else None
    if isinstance(cache, tuple):
        for item in cache:
            found = _cache_dtype(item)
            if found is not None:
                return found
    return None


def _promote_cache(cache, dtype):
    """``cache`` with its float arrays in ``dtype`` (float32 to float64 is exact)."""
    if isinstance(cache, np.ndarray) and cache.dtype in FLOAT_DTYPES:
        return cache.astype(dtype)
    if isinstance(cache, tuple):
        return tuple(_promote_cache(item, dtype) for item in cache)
    return cache


def mixed_backward(backward, dout, cache):
    """``backward(dout, cache)``; a dout of the other float dtype than the cache's computes with
    both in numpy's promoted dtype (float64), as the originals' ``dout * mask`` does."""
    computed = _cache_dtype(cache)
    if computed is None or not isinstance(dout, np.ndarray) or dout.dtype not in FLOAT_DTYPES or dout.dtype == computed:
        return backward(dout, cache)
    dtype = np.result_type(dout.dtype, computed)
    return backward(dout.astype(dtype), _promote_cache(cache, dtype))


def _require_bias(b):
    if b is None:
        raise TypeError(
            "b must be a numpy.ndarray of shape (F,): CS231n layers always take a bias "
            "(for none, use fastconv.fast.conv_forward(x, w, None, stride, pad))"
        )


def _weights_dtype(w):
    return computing_dtype(w)


def _compute_dtype(cache):
    """The dtype a conv or affine layer computed in: the second item of its (compat) cache."""
    return cache[1]


# ------------------------------------------------------------------ affine
def affine_forward(x, w, b):
    """Fully connected layer: x (N, d1, ..., dk) flattened to (N, D), w (D, M), b (M,).

    Returns (out, cache), out (N, M) in w's dtype.
    """
    dtype = _weights_dtype(w)
    out, cache = _shared.affine_forward(_convert(x, dtype), as_float(w, dtype), _convert(b, dtype))
    return out, (cache, out.dtype, _dtype_of(x), _dtype_of(b))


def affine_backward(dout, cache):
    """Returns (dx, dw, db) for affine_forward."""
    inner, dtype, x_dtype, b_dtype = cache
    dx, dw, db = _shared.affine_backward(_cast(dout, dtype), inner)
    return _in_dtype(dx, x_dtype), dw, _in_dtype(db, b_dtype)


# ------------------------------------------------------------------ relu, losses
def relu_forward(x):
    """max(x, 0) of x (any shape). Returns (out, cache)."""
    return _shared.relu_forward(as_float(x, computing_dtype(x)))


def relu_backward(dout, cache):
    """Returns dx for relu_forward: dout where x > 0, else 0, in dout's dtype (as the
    originals' ``dx = dout.copy(); dx[x <= 0] = 0``)."""
    dx = mixed_backward(_shared.relu_backward, dout, cache)
    return _in_dtype(dx, _dtype_of(dout))


def softmax_loss(x, y):
    """Mean softmax cross-entropy of scores x (N, C); y (N,) labels (or one-hot rows). Returns (loss, dx)."""
    return _shared.softmax_loss(as_float(x, computing_dtype(x)), y)


def svm_loss(x, y):
    """Mean multiclass hinge loss (margin 1) of scores x (N, C); y as softmax_loss. Returns (loss, dx)."""
    return _shared.svm_loss(as_float(x, computing_dtype(x)), y)


# ------------------------------------------------------------------ convolution
def conv_layer_forward(x, w, b, stride, pad):
    _require_bias(b)
    dtype = _weights_dtype(w)
    out, cache = fast.conv_forward(_convert(x, dtype), as_float(w, dtype), _convert(b, dtype), stride, pad)
    return out, (cache, out.dtype, _dtype_of(x), _dtype_of(b))


def conv_layer_backward(dout, cache):
    inner, dtype, x_dtype, b_dtype = cache
    dx, dw, db = fast.conv_backward(_cast(dout, dtype), inner)
    return _in_dtype(dx, x_dtype), dw, _in_dtype(db, b_dtype)


def conv_forward_naive(x, w, b, conv_param):
    """Convolution: x (N, C, H, W), w (F, C, HH, WW), b (F,), conv_param {'stride', 'pad'}.

    Runs the fast im2col path despite the name. Returns (out, cache), out
    (N, F, H', W') with H' = 1 + (H + 2 * pad - HH) // stride.
    """
    stride, pad = conv_settings(conv_param)
    return conv_layer_forward(x, w, b, stride, pad)


def conv_backward_naive(dout, cache):
    """Returns (dx, dw, db) for any of the conv_forward_* functions."""
    return conv_layer_backward(dout, cache)


conv_forward_fast = conv_forward_im2col = conv_forward_strides = conv_forward_naive
conv_backward_fast = conv_backward_im2col = conv_backward_strides = conv_backward_naive


# ------------------------------------------------------------------ max pooling
def pool_layer_forward(kind, x, kernel, stride):
    """fastconv.fast's ``kind`` ('max' or 'avg') pooling of x, an integer or bool x as float64."""
    return getattr(fast, f"{kind}_pool_forward")(as_float(x, computing_dtype(x)), kernel, stride)


def max_pool_forward_naive(x, pool_param):
    """Max pooling: x (N, C, H, W), pool_param {'pool_height', 'pool_width', 'stride'}.

    Runs the fast single-pass kernel despite the name. Returns (out, cache),
    out (N, C, H', W') with H' = 1 + (H - pool_height) // stride.
    """
    kernel, stride = pool_settings(pool_param)
    return pool_layer_forward("max", x, kernel, stride)


def max_pool_backward_naive(dout, cache):
    """Returns dx for any of the max_pool_forward_* functions; each output's
    gradient goes to the first maximum of its window (row-major). dx has x's dtype,
    as the originals' ``np.zeros_like(x)`` (a dout of the other float dtype is cast)."""
    return pool_layer_backward("max", dout, cache)


def pool_layer_backward(kind, dout, cache):
    """fastconv.fast's ``kind`` pooling backward, a dout of the other float dtype cast to x's."""
    return getattr(fast, f"{kind}_pool_backward")(_cast(dout, _cache_dtype(cache)), cache)


max_pool_forward_fast = max_pool_forward_reshape = max_pool_forward_im2col = max_pool_forward_naive
max_pool_backward_fast = max_pool_backward_reshape = max_pool_backward_im2col = max_pool_backward_naive


# ------------------------------------------------------------------ normalization
def _eps_entry(params, name):
    # finite: an infinite eps normalizes everything to beta
    return check_number(params.get("eps", 1e-5), f"{name}['eps']", lambda e: e > 0, "a positive number")


def _normalization_inputs(x, gamma, beta):
    """(x, gamma, beta, dtype) in one dtype: numpy's promotion of the float ones (float32 x with
    float64 gamma computes in float64, as the originals' ``gamma * xhat + beta`` does), integer
    and bool arrays converted to it (float64 when no array is float)."""
    dtype = _promoted_dtype(x, gamma, beta)
    return _convert(x, dtype), _convert(gamma, dtype), _convert(beta, dtype), dtype


def _batchnorm(forward, x, gamma, beta, bn_param, ndim):
    """``forward`` (batchnorm or spatial batchnorm) with bn_param checked and its running
    variance started at 0, as CS231n does (fastconv.layers starts it at 1)."""
    x, gamma, beta, dtype = _normalization_inputs(x, gamma, beta)
    if isinstance(x, np.ndarray) and x.ndim == ndim and x.dtype in FLOAT_DTYPES:
        keys = "'mode' and optionally 'eps', 'momentum', 'running_mean', 'running_var'"
        _check_dict(bn_param, "bn_param", keys)
        _mode_entry(bn_param, "bn_param", keys)  # CS231n requires it (fastconv's layers default to 'train')
        batchnorm.settings(x, gamma, beta, bn_param, x.shape[1], "x (N, D)" if ndim == 2 else "x (N, C, H, W)")
        bn_param.setdefault("running_var", np.zeros(x.shape[1], dtype=dtype))
    return forward(x, gamma, beta, bn_param)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, D) over the batch; gamma, beta (D,).

    Returns (out, cache); the cache is None in 'test' mode. bn_param's
    running statistics are updated in training (see the module docstring).
    """
    return _batchnorm(_shared.batchnorm_forward, x, gamma, beta, bn_param, 2)


def batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for batchnorm_forward in 'train' mode."""
    return mixed_backward(_shared.batchnorm_backward, dout, cache)


batchnorm_backward_alt = batchnorm_backward


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, C, H, W) per channel; gamma, beta (C,); bn_param as batchnorm_forward."""
    return _batchnorm(fast.spatial_batchnorm_forward, x, gamma, beta, bn_param, 4)


def spatial_batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for spatial_batchnorm_forward in 'train' mode."""
    return mixed_backward(fast.spatial_batchnorm_backward, dout, cache)


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
    return mixed_backward(_shared.layernorm_backward, dout, cache)


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
    dx, dgamma, dbeta = mixed_backward(_shared.groupnorm_backward, dout, inner)
    return dx, dgamma.reshape(gamma_shape), dbeta.reshape(beta_shape)


# ------------------------------------------------------------------ dropout
def dropout_forward(x, dropout_param):
    """Inverted dropout; dropout_param {'mode', 'p', optional 'seed'}, p = keep probability.

    In 'train' mode each unit is kept with probability p and scaled by 1 / p;
    in 'test' mode out equals x. Returns (out, cache).
    """
    return dropout_layer_forward(x, dropout_param, "dropout_param")


def dropout_layer_forward(x, dropout_param, name):
    keys = "'mode', 'p' and optionally 'seed'"
    _check_dict(dropout_param, name, keys)
    mode = _mode_entry(dropout_param, name, keys)
    p = _lookup(dropout_param, name, "p", keys)
    p = check_number(p, f"{name}['p'] (the keep probability)", lambda q: 0 < q <= 1, "a number in (0, 1]")
    seed = dropout_param.get("seed")
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise TypeError(f"{name}['seed'] must be a non-negative int or None, got {seed!r}")
    if seed is None and mode == "train":
        seed = np.random.randint(0, 2**63 - 1, dtype=np.int64)  # follows np.random.seed(...)
    out, mask_cache = _shared.dropout_forward(
        as_float(x, computing_dtype(x)), 1 - float(p), train=mode == "train", rng=seed
    )
    return out, mask_cache


def dropout_backward(dout, cache):
    """Returns dx for dropout_forward (dout itself, copied, in 'test' mode)."""
    return mixed_backward(_shared.dropout_backward, dout, cache)


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
    return conv_relu_pool_layer_forward(x, w, b, stride, pad, kernel, pool_stride)


def conv_relu_pool_layer_forward(x, w, b, stride, pad, kernel, pool_stride):
    _require_bias(b)
    dtype = _weights_dtype(w)
    try:
        out, cache = fast.conv_relu_pool_forward(
            _convert(x, dtype),
            as_float(w, dtype),
            _convert(b, dtype),
            stride,
            pad,
            pool_size=kernel,
            pool_stride=pool_stride,
        )
    except ValueError as exc:
        if str(exc).startswith("pool_size"):  # the fused layer's name for what pool_param gives here
            raise ValueError(f"pool_param's window does not fit the convolution's output: {exc}") from None
        raise
    return out, (cache, out.dtype, _dtype_of(x), _dtype_of(b))


def conv_relu_pool_backward(dout, cache):
    """Returns (dx, dw, db) for conv_relu_pool_forward."""
    return conv_relu_pool_layer_backward(dout, cache)


def conv_relu_pool_layer_backward(dout, cache, need_dx=True):
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


# ------------------------------------------------------------------ im2col.py and im2col_cython.pyx
# The star imports of CS231n's fast_layers.py bring these too. Same signatures and the same
# column layout as the originals: rows (c, i, j) of the kernel, c slowest; columns (oh, ow, n)
# of the output, n fastest. The *_cython names and col2im_indices run fastconv's im2col and
# col2im kernels (columns (n, oh, ow)) and reorder; non-square kernels are right (the original
# im2col_cython computes row c*kh*kw + i*kh + j, which is wrong unless kh == kw).
__all__ += [
    "get_im2col_indices",
    "im2col_indices",
    "col2im_indices",
    "im2col_cython",
    "col2im_cython",
    "col2im_6d_cython",
]


def _im2col_geometry(x_shape, kh, kw, pad, stride, names=("field_height", "field_width", "padding", "stride")):
    """((N, C, H, W), kernel arguments of fastconv's im2col/col2im kernels) for an input of
    ``x_shape``; ValueError/TypeError naming the argument."""
    if not isinstance(x_shape, (tuple, list)) or len(x_shape) != 4:
        raise ValueError(f"x_shape must be (N, C, H, W), got {x_shape!r}")
    N, C, H, W = (check_int(n, "x_shape", 0) for n in x_shape)
    if min(C, H, W) < 1:
        raise ValueError(f"x_shape must be (N, C, H, W) with C, H, W >= 1, got {tuple(x_shape)}")
    kh = check_int(kh, names[0], 1, HYPERPARAMETER_MAX)
    kw = check_int(kw, names[1], 1, HYPERPARAMETER_MAX)
    pad = check_int(pad, names[2], 0, HYPERPARAMETER_MAX)
    stride = check_int(stride, names[3], 1, HYPERPARAMETER_MAX)
    out_h, out_w = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"the {kh}x{kw} field is larger than the padded input ({H + 2 * pad}, {W + 2 * pad}) "
            f"of x_shape {(N, C, H, W)} with {names[2]} {pad}"
        )
    check_array_size((C * kh * kw, N * out_h * out_w), 8, "columns", ", ".join(names))
    return (N, C, H, W), (kh, kw, stride, stride, pad, pad, 1, 1, out_h, out_w)


def _float_input(a, name, ndim):
    """``a`` as a C-contiguous float32/float64 array of rank ``ndim`` (integer and bool arrays as float64)."""
    a = as_float(a, np.dtype(np.float64))
    check_float_array(a, name, ndim)
    return np.ascontiguousarray(a)


def _im2col(x, kh, kw, pad, stride):
    """fastconv's columns (C*kh*kw, N*out_h*out_w), columns (n, oh, ow); the kernel arguments; N."""
    x = _float_input(x, "x", 4)
    _, args = _im2col_geometry(x.shape, kh, kw, pad, stride)
    cols = np.empty((x.shape[1] * kh * kw, x.shape[0] * args[-2] * args[-1]), dtype=x.dtype)
    run_im2col(x, cols, args)
    return cols, args, x.shape[0]


def _col2im(cols, x_shape, kh, kw, pad, stride, order):
    """x (N, C, H, W): the sum of the columns' patches, from ``cols`` whose columns are in
    ``order`` ('nhw': col2im_6d_cython's 6-D array, as fastconv's kernels; 'hwn': CS231n's 2-D columns)."""
    cols = _float_input(cols, "cols", 6 if order == "nhw" else 2)
    (N, C, H, W), args = _im2col_geometry(x_shape, kh, kw, pad, stride)
    rows, P = C * kh * kw, args[-2] * args[-1]
    expected = (C, kh, kw, N, args[-2], args[-1]) if order == "nhw" else (rows, P * N)
    if cols.shape != expected:
        what = "(C, HH, WW, N, out_h, out_w)" if order == "nhw" else "(C*field_height*field_width, out_h*out_w*N)"
        raise ValueError(f"cols must have shape {what} = {expected} for x of shape {(N, C, H, W)}, got {cols.shape}")
    if order == "hwn":
        cols = cols.reshape(rows, P, N).transpose(0, 2, 1)
    # a copy in fastconv's layout: col2im may use its input as scratch
    ours = np.array(cols, order="C").reshape(rows, N * P)
    dx = np.empty((N, C, H, W), dtype=ours.dtype)
    run_col2im(ours, dx, args)
    return dx


def get_im2col_indices(x_shape, field_height, field_width, padding=1, stride=1):
    """(k, i, j): the channel, row and column of the padded input that im2col_indices reads at each
    entry of its columns: k (C*fh*fw, 1), i and j (C*fh*fw, out_h*out_w), int arrays."""
    (_, C, _, _), (kh, kw, stride, _, _, _, _, _, out_h, out_w) = _im2col_geometry(
        x_shape, field_height, field_width, padding, stride
    )
    r = np.arange(C * kh * kw)
    p = np.arange(out_h * out_w)
    k = (r // (kh * kw)).reshape(-1, 1)
    i = ((r // kw) % kh).reshape(-1, 1) + stride * (p // out_w).reshape(1, -1)
    j = (r % kw).reshape(-1, 1) + stride * (p % out_w).reshape(1, -1)
    return k, i, j


def im2col_indices(x, field_height, field_width, padding=1, stride=1):
    """The patches of x (N, C, H, W) as columns (C*fh*fw, out_h*out_w*N), n fastest."""
    cols, args, N = _im2col(x, field_height, field_width, padding, stride)
    rows, P = cols.shape[0], args[-2] * args[-1]
    return cols.reshape(rows, N, P).transpose(0, 2, 1).reshape(rows, P * N)  # columns (n, oh, ow) to (oh, ow, n)


def col2im_indices(cols, x_shape, field_height=3, field_width=3, padding=1, stride=1):
    """The adjoint of im2col_indices: x (N, C, H, W) summing each column's patch."""
    return _col2im(cols, x_shape, field_height, field_width, padding, stride, "hwn")


def im2col_cython(x, field_height, field_width, padding, stride):
    """im2col_indices under the Cython module's name (the same columns, for any kernel shape)."""
    return im2col_indices(x, field_height, field_width, padding, stride)


def col2im_cython(cols, N, C, H, W, field_height, field_width, padding, stride):
    """col2im_indices under the Cython module's name and arguments."""
    return _col2im(cols, (N, C, H, W), field_height, field_width, padding, stride, "hwn")


def col2im_6d_cython(cols, N, C, H, W, HH, WW, pad, stride):
    """x (N, C, H, W) summing the patches of cols (C, HH, WW, N, out_h, out_w) (conv_backward_strides' dx)."""
    return _col2im(cols, (N, C, H, W), HH, WW, pad, stride, "nhw")


# ------------------------------------------------------------------ solver.py
# Not in __all__: the star imports above must not replace a notebook's own Solver.
from ..solver import Solver as _Solver  # noqa: E402 (kept beside the block it serves)


class Solver(_Solver):
    """``fastconv.solver.Solver`` that behaves as CS231n's on a non-finite loss: it records the
    loss, stops that run and returns (``nonfinite_loss="stop"``), so that a hyperparameter
    search scores a diverging trial and goes on. Everything else is fastconv's Solver (CS231n's
    constructor, ``checkpoint_name`` writing fastconv's safe checkpoints, never pickles)::

        # from cs231n.solver import Solver
        from fastconv.compat.cs231n import Solver
    """

    default_nonfinite_loss = "stop"
