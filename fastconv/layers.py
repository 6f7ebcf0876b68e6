"""Layers with no loop to remove, shared by ``fastconv.naive`` and ``fastconv.fast``.

Every layer is a pair of pure functions: ``*_forward(...) -> (out, cache)`` and,
right under it, ``*_backward(dout, cache)``. A cache holds exactly what the
backward pass needs. float32 and float64 are kept end to end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .engine import batchnorm
from .engine.checks import check_dout, check_float_array, check_int, check_number, check_same_dtype, check_scale_shift
from .engine.threads import matmul
from .engine.types import Cache, FloatArray, NormGrads

Axes = int | tuple[int, ...]

#: The layers fastconv.naive and fastconv.fast both take from here (``from .layers import *``).
__all__ = [
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "dropout_forward",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "groupnorm_forward",
    "groupnorm_backward",
    "softmax_loss",
    "svm_loss",
]


# ------------------------------------------------------------------ affine
def affine_forward(x: FloatArray, w: FloatArray, b: FloatArray) -> tuple[FloatArray, Cache]:
    """Fully connected layer: x (N, d1, ..., dk) is flattened to (N, D); w (D, M); b (M,).

    Returns (out, cache) with out (N, M).
    """
    check_float_array(x, "x")
    check_float_array(w, "w", 2)
    check_float_array(b, "b", 1)
    check_same_dtype(x=x, w=w, b=b)
    if x.ndim < 1:
        raise ValueError("x must have at least one dimension (N, ...)")
    N = x.shape[0]
    D = int(np.prod(x.shape[1:], dtype=np.int64))
    if w.shape[0] != D:
        raise ValueError(f"w must have shape (D, M) with D = prod(x.shape[1:]) = {D}, got {w.shape}")
    if b.shape != (w.shape[1],):
        raise ValueError(f"b must have shape (M,) = ({w.shape[1]},), got {b.shape}")
    x2 = x.reshape(N, D)
    out = matmul(x2, w)
    out += b
    return out, (x, w)


def affine_backward(dout: FloatArray, cache: Cache) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Returns (dx, dw, db) for affine_forward."""
    x, w = cache
    N = x.shape[0]
    check_dout(dout, (N, w.shape[1]), x.dtype)
    dx = matmul(dout, w.T).reshape(x.shape)
    dw = matmul(x.reshape(N, -1).T, dout)
    db = dout.sum(axis=0)
    return dx, dw, db


# ------------------------------------------------------------------ relu
def relu_forward(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """max(x, 0). Returns (out, cache); the cache is x (out > 0 exactly where x > 0), so
    changing ``out`` in place does not change the gradient."""
    check_float_array(x, "x")
    out = np.maximum(x, 0)
    return out, x


def relu_backward(dout: FloatArray, cache: FloatArray) -> FloatArray:
    """The gradient flows where the input (the cache) was positive."""
    out = cache
    check_dout(dout, out.shape, out.dtype)
    # Same result as np.where(out > 0, dout, 0) (a NaN or Inf in dout where out <= 0
    # gives 0, as in PyTorch), computed on the bits: the mask becomes an integer of all
    # ones (keep) or zeros (drop) and is ANDed with dout's bits. np.where with a random
    # mask branches on every element, several times slower (docs/performance.md).
    bits = np.dtype(f"i{out.itemsize}")
    mask = (out > 0).view(np.uint8).astype(bits)
    np.negative(mask, out=mask)
    np.bitwise_and(mask, np.ascontiguousarray(dout).view(bits), out=mask)
    return mask.view(out.dtype)


# ------------------------------------------------------------------ sigmoid
def sigmoid_forward(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """1 / (1 + exp(-x)), computed without overflow. Returns (out, cache)."""
    check_float_array(x, "x")
    out = np.exp(-np.logaddexp(0, -x)).astype(x.dtype, copy=False)
    return out, out.copy()  # a copy: changing ``out`` in place must not change the gradient


def sigmoid_backward(dout: FloatArray, cache: FloatArray) -> FloatArray:
    out = cache
    check_dout(dout, out.shape, out.dtype)
    return dout * out * (1 - out)


# ------------------------------------------------------------------ dropout
def dropout_forward(
    x: FloatArray, p: float, train: bool = True, rng: np.random.Generator | int | None = None
) -> tuple[FloatArray, FloatArray | None]:
    """Inverted dropout: in training, zero each unit with probability ``p`` and
    scale the survivors by 1 / (1 - p); at test time, the identity.

    ``rng`` is a numpy Generator (or a seed, or None for a fresh one).
    Returns (out, cache); the cache is the scaled mask (None at test time).
    """
    check_float_array(x, "x")
    check_number(p, "p (the drop probability)", lambda q: 0 <= q < 1, "a number in [0, 1)", wrong_type=ValueError)
    if not train or p == 0:
        return x.copy(), None
    rng = np.random.default_rng(rng)
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1 - p)
    return x * mask, mask


def dropout_backward(dout: FloatArray, cache: FloatArray | None) -> FloatArray:
    mask = cache
    if mask is None:
        return dout.copy()
    check_dout(dout, mask.shape, mask.dtype)
    return dout * mask


# ------------------------------------------------------------------ batchnorm
# bn_param's rules and running statistics live in fastconv/engine/batchnorm.py, with the fast passes.
def _normalized_backward(dxhat, xhat, inv_std, axis):
    """dx of xhat = (x - mean) * inv_std, the mean and variance taken over ``axis``, from dxhat:
    ``inv_std / M * (M * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))`` (M values per mean)."""
    M = int(np.prod([xhat.shape[a] for a in np.atleast_1d(axis)]))
    return (inv_std / M) * (
        M * dxhat - dxhat.sum(axis=axis, keepdims=True) - xhat * (dxhat * xhat).sum(axis=axis, keepdims=True)
    )


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, D) over the batch.

    bn_param: dict with 'mode' ('train' | 'test'), optional 'eps' (1e-5),
    'momentum' (0.9); 'running_mean' / 'running_var' are created and updated
    in place in training (``running = momentum * running + (1 - momentum) * batch``,
    batch variance unbiased-free, as in CS231n) and used in test mode.
    """
    check_float_array(x, "x", 2)
    s = batchnorm.settings(x, gamma, beta, bn_param, x.shape[1], "x (N, D)")
    if s.mode == "train":
        mu = x.mean(axis=0)
        var = x.var(axis=0)
        inv_std = 1.0 / np.sqrt(var + s.eps)
        xhat = (x - mu) * inv_std
        out = gamma * xhat + beta
        batchnorm.store_running(bn_param, s, x.dtype, mu, var)
        cache = (xhat, gamma, inv_std.astype(x.dtype))
    else:
        xhat = (x - s.running_mean) / np.sqrt(s.running_var + s.eps)
        out = gamma * xhat + beta
        batchnorm.store_running(bn_param, s, x.dtype)
        cache = None
    return out.astype(x.dtype, copy=False), cache


def batchnorm_backward(dout: FloatArray, cache: Cache | None) -> NormGrads:
    """Returns (dx, dgamma, dbeta) for batchnorm_forward in training mode."""
    xhat, gamma, inv_std = batchnorm.train_cache(cache, "batchnorm_backward")
    check_dout(dout, xhat.shape, xhat.dtype)
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dx = _normalized_backward(dout * gamma, xhat, inv_std, 0)
    return dx.astype(xhat.dtype, copy=False), dgamma, dbeta


def spatial_batchnorm_forward(
    x: FloatArray, gamma: FloatArray, beta: FloatArray, bn_param: dict[str, Any]
) -> tuple[FloatArray, Cache | None]:
    """Batch normalization of x (N, C, H, W) per channel, over N, H and W.

    Same bn_param as batchnorm_forward; gamma, beta (C,).
    """
    check_float_array(x, "x", 4)
    s = batchnorm.settings(x, gamma, beta, bn_param, x.shape[1], "x (N, C, H, W)")
    shape = (1, x.shape[1], 1, 1)
    if s.mode == "train":
        mu = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
        inv_std = (1.0 / np.sqrt(var + s.eps)).astype(x.dtype)
        xhat = (x - mu.reshape(shape)) * inv_std.reshape(shape)
        out = gamma.reshape(shape) * xhat + beta.reshape(shape)
        batchnorm.store_running(bn_param, s, x.dtype, mu, var)
        cache = (xhat, gamma, inv_std)
    else:
        scale = gamma / np.sqrt(s.running_var + s.eps)
        out = x * scale.reshape(shape) + (beta - s.running_mean * scale).reshape(shape)
        batchnorm.store_running(bn_param, s, x.dtype)
        cache = None
    return out.astype(x.dtype, copy=False), cache


def spatial_batchnorm_backward(dout: FloatArray, cache: Cache | None) -> NormGrads:
    """Returns (dx, dgamma, dbeta) for spatial_batchnorm_forward in training mode."""
    xhat, gamma, inv_std = batchnorm.train_cache(cache, "spatial_batchnorm_backward")
    check_dout(dout, xhat.shape, xhat.dtype)
    N, C, H, W = dout.shape
    M = N * H * W
    shape = (1, C, 1, 1)
    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * xhat).sum(axis=(0, 2, 3))
    # dx = gamma * inv_std / M * (M * dout - dbeta - xhat * dgamma)
    k = (gamma * inv_std / M).reshape(shape)
    dx = k * (M * dout - dbeta.reshape(shape) - xhat * dgamma.reshape(shape))
    return dx.astype(xhat.dtype, copy=False), dgamma, dbeta


# ------------------------------------------------------------------ layer and group normalization
def _check_eps(eps):
    return check_number(eps, "eps", lambda e: e > 0, "a positive number")


def _normalize(x: FloatArray, eps: float, axis: Axes) -> tuple[FloatArray, FloatArray]:
    """(xhat, inv_std): x minus its mean over ``axis``, times 1 / sqrt(variance + eps), in x's dtype."""
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    return (x - mu) * inv_std, inv_std


def layernorm_forward(
    x: FloatArray, gamma: FloatArray, beta: FloatArray, eps: float = 1e-5
) -> tuple[FloatArray, Cache]:
    """Layer normalization: each row of x (N, D) normalized over its D features, then
    ``gamma * xhat + beta`` with gamma, beta (D,). The same in training and at test time
    (no running statistics). Returns (out, cache)."""
    check_float_array(x, "x", 2)
    check_scale_shift(x, gamma, beta, x.shape[1], "x (N, D)")
    eps = _check_eps(eps)
    if x.shape[1] == 0:
        raise ValueError("x must have at least one feature to normalize over, got shape (N, 0)")
    xhat, inv_std = _normalize(x, eps, 1)
    out = gamma * xhat + beta
    return out.astype(x.dtype, copy=False), (xhat, gamma, inv_std)


def layernorm_backward(dout: FloatArray, cache: Cache) -> NormGrads:
    """Returns (dx, dgamma, dbeta) for layernorm_forward."""
    xhat, gamma, inv_std = cache
    check_dout(dout, xhat.shape, xhat.dtype)
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dx = _normalized_backward(dout * gamma, xhat, inv_std, 1)
    return dx.astype(xhat.dtype, copy=False), dgamma, dbeta


def groupnorm_forward(
    x: FloatArray, gamma: FloatArray, beta: FloatArray, groups: int, eps: float = 1e-5
) -> tuple[FloatArray, Cache]:
    """Group normalization of x (N, C, H, W): the channels of each image are split into
    ``groups`` consecutive groups of C // groups, each normalized over its channels and
    H, W; then ``gamma * xhat + beta`` per channel, gamma, beta (C,). groups=1 is layer
    normalization over (C, H, W), groups=C instance normalization. Returns (out, cache)."""
    check_float_array(x, "x", 4)
    N, C, H, W = x.shape
    G = check_int(groups, "groups", 1)
    if C % G:
        raise ValueError(f"groups must divide the channel count C = {C}, got groups={G}")
    check_scale_shift(x, gamma, beta, C, "x (N, C, H, W)")
    eps = _check_eps(eps)
    if C * H * W == 0:
        raise ValueError(f"x must have values to normalize over in each image, got shape {x.shape}")
    xhat, inv_std = _normalize(x.reshape(N, G, -1), eps, 2)
    xhat = xhat.reshape(x.shape)
    shape = (1, C, 1, 1)
    out = gamma.reshape(shape) * xhat + beta.reshape(shape)
    return out.astype(x.dtype, copy=False), (xhat, gamma, inv_std)


def groupnorm_backward(dout: FloatArray, cache: Cache) -> NormGrads:
    """Returns (dx, dgamma, dbeta) for groupnorm_forward; dgamma, dbeta (C,)."""
    xhat, gamma, inv_std = cache
    check_dout(dout, xhat.shape, xhat.dtype)
    N, C = xhat.shape[:2]
    G = inv_std.shape[1]
    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * xhat).sum(axis=(0, 2, 3))
    dxhat = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)
    dx = _normalized_backward(dxhat, xhat.reshape(N, G, -1), inv_std, 2).reshape(xhat.shape)
    return dx.astype(xhat.dtype, copy=False), dgamma, dbeta


# ------------------------------------------------------------------ losses
def _check_scores(scores: FloatArray, y: npt.ArrayLike) -> tuple[int, npt.NDArray[np.integer[Any]]]:
    """(N, y as integer labels (N,)) for the losses; y may be integer labels (an array or
    a list) or one-hot rows (N, K), which become the index of each row's 1."""
    check_float_array(scores, "scores", 2)
    N, K = scores.shape
    if isinstance(y, (list, tuple)):
        try:
            y = np.asarray(y) if len(y) else np.zeros(0, dtype=np.int64)
        except ValueError:  # ragged nested lists
            raise ValueError("y must be a list of class labels, or of one-hot rows of equal length") from None
    if not isinstance(y, np.ndarray):
        raise TypeError(
            f"y must be an integer array or list of class labels (N,), or one-hot rows (N, K), got {type(y).__name__}"
        )
    if y.ndim == 2:
        return N, _one_hot_labels(y, N, K)
    if y.dtype.kind not in "iu":
        hint = ": labels stored as floats convert with y.astype(int)" if y.dtype.kind == "f" else ""
        raise TypeError(
            f"y must be an integer array or list of class labels (N,), or one-hot rows (N, K), "
            f"got dtype {y.dtype}{hint}"
        )
    if y.shape != (N,):
        raise ValueError(f"y must have shape (N,) = ({N},), got {y.shape}")
    if N and (y.min() < 0 or y.max() >= K):
        raise ValueError(f"y must hold class labels in [0, {K}), got values in [{y.min()}, {y.max()}]")
    return N, y


def _one_hot_labels(y: npt.NDArray[Any], N: int, K: int) -> npt.NDArray[np.intp]:
    """The label of each one-hot row of y (N, K); ValueError naming the first row that is not one-hot."""
    if y.shape != (N, K):
        raise ValueError(f"y of two dimensions must be one-hot rows of shape (N, K) = ({N}, {K}), got {y.shape}")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"one-hot y must be a numeric array, got dtype {y.dtype}")
    ones = y == 1
    good = ((ones | (y == 0)).all(axis=1)) & (ones.sum(axis=1) == 1)
    if not good.all():
        row = int(np.argmin(good))
        raise ValueError(
            f"y of shape (N, K) must be one-hot (one 1 and K - 1 zeros per row), but row {row} "
            f"is not; give integer labels (N,) instead (for one-hot rows: y.argmax(axis=1))"
        )
    return ones.argmax(axis=1)


def softmax_loss(scores: FloatArray, y: npt.ArrayLike, label_smoothing: float = 0.0) -> tuple[float, FloatArray]:
    """Mean softmax cross-entropy. scores (N, K); y (N,) integer labels (an array or a list),
    or one-hot rows (N, K). Returns (loss, dscores).

    ``label_smoothing`` e in [0, 1): the target of each row is (1 - e) on its label plus e / K
    on every class (Szegedy et al. 2016), so loss = -sum(target * log_softmax) / N and
    dscores = (softmax - target) / N. 0 (the default) is the plain loss, computed as before."""
    N, y = _check_scores(scores, y)
    e = check_number(label_smoothing, "label_smoothing", lambda v: 0 <= v < 1, "a number in [0, 1)")
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(N)
    dscores = np.exp(log_probs)
    if e:
        K = scores.shape[1]
        loss = -(1 - e) * log_probs[rows, y].mean() - e / K * log_probs.sum(axis=1).mean()
        dscores -= scores.dtype.type(e / K)
        dscores[rows, y] -= scores.dtype.type(1 - e)
    else:
        loss = -log_probs[rows, y].mean()
        dscores[rows, y] -= 1
    dscores /= N
    return float(loss), dscores


def svm_loss(scores: FloatArray, y: npt.ArrayLike) -> tuple[float, FloatArray]:
    """Mean multiclass hinge loss with margin 1; y as for softmax_loss. Returns (loss, dscores)."""
    N, y = _check_scores(scores, y)
    rows = np.arange(N)
    correct = scores[rows, y][:, None]
    margins = np.maximum(0, scores - correct + 1)
    margins[rows, y] = 0
    loss = margins.sum() / N
    positive = (margins > 0).astype(scores.dtype)
    positive[rows, y] = -positive.sum(axis=1)
    return float(loss), positive / N
