"""Spatial batch normalization in training mode as four parallel kernel passes with sums in
double (the mean, the squared deviations, the normalization; backward: two sums, then dx),
instead of numpy's ten full-size temporaries. ``fastconv.distributed`` runs the same
passes around its collectives. Test mode, and the argument rules, are
``fastconv.layers``'.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import layers as _layers
from ..kernels import picker
from .checks import check_dout, check_float_array
from .threads import over_planes
from .types import Cache, Float64Array, FloatArray, NormGrads


def spatial_batchnorm_forward(x: FloatArray, gamma: FloatArray, beta: FloatArray,
                              bn_param: dict[str, Any]) -> tuple[FloatArray, Cache | None]:
    """Batch normalization of x (N, C, H, W) per channel, over N, H and W: the same
    arguments, bn_param updates and results as fastconv.naive's (numpy) version.

    Training mode runs three passes over x, each parallel over channels, with sums
    in double: the mean, the squared deviations from it, and (x - mean) * gamma /
    std + beta, where numpy's version makes about ten full-size temporaries. The
    cache refers to x (as conv's does) instead of holding a normalized copy.
    """
    check_float_array(x, "x", 4)
    N, C, H, W = x.shape
    s = _layers._bn_settings(x, gamma, beta, bn_param, C, "x (N, C, H, W)")
    if s.mode != "train" or N * H * W == 0:  # one numpy pass (test mode), or nothing to normalize over
        out, cache = _layers.spatial_batchnorm_forward(x, gamma, beta, bn_param)
        return out, (None if cache is None else ("reference", cache))
    x = np.ascontiguousarray(x)
    x3 = x.reshape(N, C, H * W)
    mean, var = channel_stats(x3)
    inv_std = 1.0 / np.sqrt(var + s.eps)
    out = normalize(x3, mean, gamma.astype(np.float64) * inv_std, beta.astype(np.float64)).reshape(x.shape)
    _layers._store_running(bn_param, s, x.dtype, mean, var)
    return out, ("fast", x, np.ascontiguousarray(gamma), mean, inv_std)


def spatial_batchnorm_backward(dout: FloatArray, cache: Cache | None) -> NormGrads:
    """Returns (dx, dgamma, dbeta) for spatial_batchnorm_forward in training mode:
    two passes, the per-channel sums of dout and dout * (x - mean), then dx."""
    cache = _layers._train_cache(cache, "spatial_batchnorm_backward")
    if cache[0] == "reference":
        return _layers.spatial_batchnorm_backward(dout, cache[1])
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
# threaded as this module's kernels are (fastconv.distributed runs them around its collectives).
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
    over_planes(N, x3.size, lambda lo, hi, threads: picker.kernels.bn_affine(
        x3[lo:hi], shift, scale, offset, out3[lo:hi], 0, C, threads))
    return out3


def backward_sums(dout3: FloatArray, x3: FloatArray, mean: Float64Array) -> tuple[Float64Array, Float64Array]:
    """(sum(dout), sum(dout * (x - mean))) per channel, float64 (C,)."""
    C = x3.shape[1]
    sum_dout, sum_dout_xc = np.empty(C), np.empty(C)
    over_planes(C, x3.size, lambda lo, hi, threads: picker.kernels.bn_backward_sums(
        dout3, x3, mean, sum_dout, sum_dout_xc, lo, hi, threads))
    return sum_dout, sum_dout_xc


def backward_dx(dout3: FloatArray, x3: FloatArray, mean: Float64Array, dout_scale: Float64Array,
                xc_scale: Float64Array, offset: Float64Array) -> FloatArray:
    """dout_scale * dout + xc_scale * (x - mean) + offset per channel, a new array like x3."""
    N, C = x3.shape[:2]
    dx3 = np.empty_like(x3)
    over_planes(N, x3.size, lambda lo, hi, threads: picker.kernels.bn_backward_dx(
        dout3[lo:hi], x3[lo:hi], mean, dout_scale, xc_scale, offset, dx3[lo:hi], 0, C, threads))
    return dx3
