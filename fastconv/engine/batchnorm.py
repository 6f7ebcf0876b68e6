"""Batch normalization's one home: what ``bn_param`` may hold and how its running statistics
move (``settings``, ``store_running``, ``train_cache``: what every batchnorm in fastconv calls,
the numpy layers of ``fastconv.layers``, the synchronized ones of ``fastconv.training.distributed``
and the CS231n names of ``fastconv.compat``), and spatial batchnorm in training mode as four
parallel kernel passes with sums in double (the mean, the squared deviations, the
normalization; backward: two sums, then dx), instead of numpy's ten full-size temporaries.
``fastconv.training.distributed`` runs the same passes around its collectives. Test mode is
``fastconv.layers``' numpy version.
"""

from __future__ import annotations

from typing import Any, NamedTuple, overload

import numpy as np

from ..kernels import picker
from .checks import check_dout, check_float_array, check_number, check_scale_shift
from .threads import over_planes
from .types import Cache, Float64Array, FloatArray, NormGrads


# ------------------------------------------------------------------ bn_param
class Settings(NamedTuple):
    """``bn_param`` checked, with its defaults filled in."""

    mode: str
    eps: float
    momentum: float
    running_mean: FloatArray
    running_var: FloatArray


def settings(x: FloatArray, gamma: object, beta: object, bn_param: object, D: int, name: str) -> Settings:
    """Check gamma, beta (D,) and bn_param for the input ``name``; return bn_param's
    settings with their defaults (mode 'train', eps 1e-5, momentum 0.9, running mean 0 and
    variance 1): eps a finite number > 0, momentum one in [0, 1], the running statistics float
    arrays (D,) (a TypeError or ValueError naming the entry otherwise)."""
    check_scale_shift(x, gamma, beta, D, name)
    if not isinstance(bn_param, dict):
        raise TypeError(f"bn_param must be a dict with 'mode' ('train' or 'test'), got {type(bn_param).__name__}")
    mode = bn_param.get("mode", "train")
    if mode not in ("train", "test"):
        raise ValueError(f"bn_param['mode'] must be 'train' or 'test', got {mode!r}")
    eps = check_number(bn_param.get("eps", 1e-5), "bn_param['eps']", lambda e: e > 0, "a positive number")
    momentum = check_number(
        bn_param.get("momentum", 0.9), "bn_param['momentum']", lambda m: 0 <= m <= 1, "a number in [0, 1]"
    )
    running: list[FloatArray] = []
    for key, default in (("running_mean", np.zeros), ("running_var", np.ones)):
        if key not in bn_param:
            running.append(default(D, dtype=x.dtype))
            continue
        value = check_float_array(bn_param[key], f"bn_param[{key!r}]", 1)
        if value.shape != (D,):
            raise ValueError(f"bn_param[{key!r}] must have shape ({D},) for {name}, got {value.shape}")
        running.append(value)
    return Settings(mode, eps, momentum, *running)


@overload
def store_running(bn_param: dict[str, Any], s: Settings, dtype: np.dtype[np.floating[Any]]) -> None: ...
@overload
def store_running(
    bn_param: dict[str, Any], s: Settings, dtype: np.dtype[np.floating[Any]], mean: FloatArray, var: FloatArray
) -> None: ...
def store_running(
    bn_param: dict[str, Any],
    s: Settings,
    dtype: np.dtype[np.floating[Any]],
    mean: FloatArray | None = None,
    var: FloatArray | None = None,
) -> None:
    """Put the running statistics in bn_param: in training, ``momentum * running +
    (1 - momentum) * batch`` of the batch's mean and var; in test mode, as they were."""
    if mean is None or var is None:  # test mode (the overloads above: both or neither)
        bn_param["running_mean"], bn_param["running_var"] = s.running_mean, s.running_var
        return
    bn_param["running_mean"] = (s.momentum * s.running_mean + (1 - s.momentum) * mean).astype(dtype)
    bn_param["running_var"] = (s.momentum * s.running_var + (1 - s.momentum) * var).astype(dtype)


def train_cache(cache: Cache | None, layer: str) -> Cache:
    """A batchnorm cache for ``layer``'s backward; ValueError for test mode's None."""
    if cache is None:
        raise ValueError(f"{layer} needs the cache of a forward pass in 'train' mode")
    return cache


# ------------------------------------------------------------------ spatial batchnorm, fast
def spatial_batchnorm_forward(
    x: FloatArray, gamma: FloatArray, beta: FloatArray, bn_param: dict[str, Any]
) -> tuple[FloatArray, Cache | None]:
    """Batch normalization of x (N, C, H, W) per channel, over N, H and W: the same
    arguments, bn_param updates and results as fastconv.naive's (numpy) version.

    Training mode runs three passes over x, each parallel over channels, with sums
    in double: the mean, the squared deviations from it, and (x - mean) * gamma /
    std + beta, where numpy's version makes about ten full-size temporaries. The
    cache refers to x (as conv's does) instead of holding a normalized copy.
    """
    check_float_array(x, "x", 4)
    N, C, H, W = x.shape
    s = settings(x, gamma, beta, bn_param, C, "x (N, C, H, W)")
    if s.mode != "train" or N * H * W == 0:  # one numpy pass (test mode), or nothing to normalize over
        from .. import layers  # the numpy version (layers imports this module)

        out, cache = layers.spatial_batchnorm_forward(x, gamma, beta, bn_param)
        return out, (None if cache is None else ("reference", cache))
    x = np.ascontiguousarray(x)
    x3 = x.reshape(N, C, H * W)
    mean, var = channel_stats(x3)
    inv_std = 1.0 / np.sqrt(var + s.eps)
    out = normalize(x3, mean, gamma.astype(np.float64) * inv_std, beta.astype(np.float64)).reshape(x.shape)
    store_running(bn_param, s, x.dtype, mean, var)
    return out, ("fast", x, np.ascontiguousarray(gamma), mean, inv_std)


def spatial_batchnorm_backward(dout: FloatArray, cache: Cache | None) -> NormGrads:
    """Returns (dx, dgamma, dbeta) for spatial_batchnorm_forward in training mode:
    two passes, the per-channel sums of dout and dout * (x - mean), then dx."""
    cache = train_cache(cache, "spatial_batchnorm_backward")
    if cache[0] == "reference":
        from .. import layers

        return layers.spatial_batchnorm_backward(dout, cache[1])
    _, x, gamma, mean, inv_std = cache
    check_dout(dout, x.shape, x.dtype)
    dout = np.ascontiguousarray(dout)
    N, C, H, W = x.shape
    M = N * H * W
    x3, dout3 = x.reshape(N, C, H * W), dout.reshape(N, C, H * W)
    sum_dout, sum_dout_xc = backward_sums(dout3, x3, mean)
    # dx = gamma * inv_std / M * (M * dout - dbeta - xhat * dgamma), with xhat = (x - mean) * inv_std,
    # dgamma = inv_std * sum(dout * (x - mean)) and dbeta = sum(dout), is, per channel,
    # dout_scale * dout + xc_scale * (x - mean) + offset:
    scale = gamma.astype(np.float64) * inv_std  # the forward's gamma / std
    dout_scale = scale
    xc_scale = -scale * inv_std * inv_std * sum_dout_xc / M
    offset = -scale * sum_dout / M
    dx = backward_dx(dout3, x3, mean, dout_scale, xc_scale, offset).reshape(x.shape)
    return dx, (inv_std * sum_dout_xc).astype(x.dtype), sum_dout.astype(x.dtype)


# The four passes of spatial batchnorm in training mode, on C-contiguous (N, C, HW) arrays,
# threaded as this module's kernels are (fastconv.training.distributed runs them around its collectives).
# The sums run in blocks of channels, the elementwise passes in blocks of whole images
# (contiguous memory); either way each element sees the same arithmetic: the same bits.
def channel_stats(x3: FloatArray) -> tuple[Float64Array, Float64Array]:
    """(mean, biased variance) per channel, float64 (C,)."""
    C = x3.shape[1]
    mean, var = np.empty(C), np.empty(C)
    over_planes(C, x3.size, lambda lo, hi, threads: picker.kernels.bn_channel_stats(x3, mean, var, lo, hi, threads))
    return mean, var


def normalize(x3: FloatArray, shift: Float64Array, scale: Float64Array, offset: Float64Array) -> FloatArray:
    """(x3 - shift) * scale + offset per channel, a new array like x3."""
    N, C = x3.shape[:2]
    out3 = np.empty_like(x3)
    over_planes(
        N,
        x3.size,
        lambda lo, hi, threads: picker.kernels.bn_affine(x3[lo:hi], shift, scale, offset, out3[lo:hi], 0, C, threads),
    )
    return out3


def backward_sums(dout3: FloatArray, x3: FloatArray, mean: Float64Array) -> tuple[Float64Array, Float64Array]:
    """(sum(dout), sum(dout * (x - mean))) per channel, float64 (C,)."""
    C = x3.shape[1]
    sum_dout, sum_dout_xc = np.empty(C), np.empty(C)
    over_planes(
        C,
        x3.size,
        lambda lo, hi, threads: picker.kernels.bn_backward_sums(
            dout3, x3, mean, sum_dout, sum_dout_xc, lo, hi, threads
        ),
    )
    return sum_dout, sum_dout_xc


def backward_dx(
    dout3: FloatArray,
    x3: FloatArray,
    mean: Float64Array,
    dout_scale: Float64Array,
    xc_scale: Float64Array,
    offset: Float64Array,
) -> FloatArray:
    """dout_scale * dout + xc_scale * (x - mean) + offset per channel, a new array like x3."""
    N, C = x3.shape[:2]
    dx3 = np.empty_like(x3)
    over_planes(
        N,
        x3.size,
        lambda lo, hi, threads: picker.kernels.bn_backward_dx(
            dout3[lo:hi], x3[lo:hi], mean, dout_scale, xc_scale, offset, dx3[lo:hi], 0, C, threads
        ),
    )
    return dx3
