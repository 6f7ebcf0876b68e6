"""The layer types of ``fastconv.models``: one class per type, the one place a type is described.

A class knows, for its type of layer:

* its layer dict: ``type`` (the dict's "type"), ``fields`` (the other keys, each with
  its default and its check) and ``normalize`` (a checked dict with every default filled in);
* its string token: ``pattern`` (fully matching a token), ``from_token`` (token -> dict),
  ``token`` (dict -> token) and ``syntax`` (its part of LAYER_SYNTAX);
* as an object, one layer of a built network: the constructor checks that the layer fits its
  input shape (sizes from ``fastconv.engine.geometry``), names its arrays and sets ``out_shape``, all
  without allocating; ``param_shapes``/``buffer_shapes`` give its arrays' shapes and
  ``workspace_size`` its temporary memory per image (so a model's size is known, and checked,
  before anything is allocated); ``params``/``buffers`` make their initial values;
  ``forward(net, x, train) -> (out, cache)`` and ``backward(net, dout, cache, need_dx) ->
  (dx, grads)`` call the layer functions of ``net.layer_module`` (``fastconv.fast`` or
  ``fastconv.naive``): layers are never reimplemented here. ``net`` is the ``Sequential``
  that holds the layer (its ``params``, ``buffers``, ``rng`` and ``layer_module``; while a step of
  MPI training runs, ``layer_module`` is ``fastconv.training.distributed.SyncedLayers``: batchnorm and
  dropout over the global batch).

A new layer type is one class here, listed in ``LAYER_TYPES``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine.checks import HYPERPARAMETER_MAX, check_int, check_number, shape_size
from ..engine.geometry import conv_output_size, pool_geometry_of_shape, same_pad

#: A field without a default: the layer dict must give it.
REQUIRED = object()


def _count(value, name):
    return check_int(value, name, 1)


def _count_or_none(value, name):
    return None if value is None else check_int(value, name, 1)


def _hyperparameter(value, name):  # a kernel size or stride: the layer functions' bound
    return check_int(value, name, 1, HYPERPARAMETER_MAX)


def _pad(value, name):
    return value if value == "same" else check_int(value, name, 0, HYPERPARAMETER_MAX)


def _number_field(value, name, ok, rule):
    # a layer dict is a description (a model file, a layer string): any bad value is a ValueError
    return check_number(value, name, ok, rule, wrong_type=ValueError)


def _drop_probability(value, name):
    return _number_field(value, name, lambda p: 0 <= p < 1, "a number in [0, 1)")


def _momentum(value, name):
    return _number_field(value, name, lambda m: 0 <= m <= 1, "a number in [0, 1]")


def _positive(value, name):
    return _number_field(value, name, lambda v: v > 0, "a number > 0")


class Layer:
    """What every layer type has; a subclass fills in the class attributes and methods."""

    type: str | None = None
    pattern: re.Pattern[str] | None = None
    syntax: str | None = None
    # key -> (default or REQUIRED, check(value, name) -> normalized value)
    fields: dict[str, tuple[Any, Callable[[Any, str], Any]]] = {}
    # whose count numbers its arrays: "weights" (conv and fc: W1, b1, W2...) or "batchnorm"
    numbering: str | None = None

    # ------------------------------------------------------------ the layer dict and its token
    @classmethod
    def normalize(cls, layer, what):
        """The layer dict ``layer`` checked, with its defaults; errors start with ``what``."""
        unknown = set(layer) - set(cls.fields) - {"type"}
        if unknown:
            raise ValueError(f"{what} has unknown keys {sorted(unknown)}")
        out = {"type": cls.type}
        for key, (default, check) in cls.fields.items():
            value = layer.get(key, default)
            if value is REQUIRED:
                raise ValueError(f"{what} needs a {key!r}")
            out[key] = check(value, f"{what} {key}")
        return out

    @classmethod
    def from_token(cls, match):
        return {"type": cls.type}

    @classmethod
    def token(cls, spec):
        return cls.type

    # ------------------------------------------------------------ one layer of a network
    def __init__(self, spec, in_shape, number, num_classes, where):
        """``spec``: the normalized dict; ``in_shape``: (C, H, W) or (D,); ``number``: the layer's
        count in its ``numbering``; ``num_classes``: the units of a bare fc; ``where`` starts errors."""
        self.in_shape = in_shape
        self.out_shape = in_shape

    def param_shapes(self):
        """{name: shape} of the trained parameters, in the order ``params`` makes them."""
        return {}

    def buffer_shapes(self):
        """{name: shape} of the state that is not trained (batchnorm's running statistics)."""
        return {}

    def workspace_size(self):
        """Items of the temporary buffer one image needs besides the output (a conv's im2col matrix)."""
        return 0

    def params(self, init, dtype):
        """{name: initial array} of the trained parameters; ``init(shape, fan_in)`` draws weights."""
        return {}

    def buffers(self, dtype):
        """{name: initial array} of the buffers (``buffer_shapes``)."""
        return {}

    def forward(self, net, x, train):
        """(out, cache) for the input x; ``train``: batch statistics, dropout on."""
        raise NotImplementedError

    def backward(self, net, dout, cache, need_dx):
        """(dx, {parameter name: gradient}); dx may be None without ``need_dx`` (the first layer)."""
        raise NotImplementedError


def _image_shape(in_shape, where, what):
    if len(in_shape) != 3:
        raise ValueError(f"{where}: {what} needs an image input (C, H, W)")
    return in_shape


# ============================================================================ layers with weights
class Conv(Layer):
    """``conv<F>x<k>[s<S>][p<P>]``: F filters of k x k, stride S, padding P ("same" by default)."""

    type = "conv"
    pattern = re.compile(r"conv(\d+)x(\d+)(?:s(\d+))?(?:p(\d+))?")
    syntax = "conv<F>x<k>[s<stride>][p<pad>]"
    fields = {
        "filters": (REQUIRED, _count),
        "kernel": (REQUIRED, _hyperparameter),
        "stride": (1, _hyperparameter),
        "pad": ("same", _pad),
    }
    numbering = "weights"

    @classmethod
    def from_token(cls, m):
        return {
            "type": "conv",
            "filters": int(m[1]),
            "kernel": int(m[2]),
            "stride": int(m[3] or 1),
            "pad": int(m[4]) if m[4] is not None else "same",
        }

    @classmethod
    def token(cls, spec):
        text = f"conv{spec['filters']}x{spec['kernel']}"
        if spec["stride"] != 1:
            text += f"s{spec['stride']}"
        if spec["pad"] != "same":
            text += f"p{spec['pad']}"
        return text

    def __init__(self, spec, in_shape, number, num_classes, where):
        _, H, W = _image_shape(in_shape, where, "a conv layer")
        self.in_shape = in_shape
        self.filters, self.kernel, self.stride = spec["filters"], spec["kernel"], spec["stride"]
        self.pad = same_pad(self.kernel) if spec["pad"] == "same" else spec["pad"]
        out_h, out_w = (conv_output_size(n, self.kernel, self.stride, self.pad) for n in (H, W))
        if out_h < 1 or out_w < 1:
            raise ValueError(f"{where}: the {self.kernel}x{self.kernel} kernel does not fit")
        self.weight_name, self.bias_name = f"W{number}", f"b{number}"
        self.out_shape = (self.filters, out_h, out_w)

    def param_shapes(self):
        C, k = self.in_shape[0], self.kernel
        return {self.weight_name: (self.filters, C, k, k), self.bias_name: (self.filters,)}

    def workspace_size(self):
        C, k = self.in_shape[0], self.kernel
        return shape_size((C, k, k) + self.out_shape[1:])

    def params(self, init, dtype):
        w_shape, b_shape = self.param_shapes().values()
        return {
            self.weight_name: init(w_shape, shape_size(w_shape[1:])),
            self.bias_name: np.zeros(b_shape, dtype=dtype),
        }

    def forward(self, net, x, train):
        return net.layer_module.conv_forward(
            x, net.params[self.weight_name], net.params[self.bias_name], stride=self.stride, pad=self.pad
        )

    def backward(self, net, dout, cache, need_dx):
        dx, dw, db = net.layer_module.conv_backward(dout, cache, need_dx=need_dx)
        return dx, {self.weight_name: dw, self.bias_name: db}


class FullyConnected(Layer):
    """``fc[<M>]``: affine layer with M outputs; a bare ``fc`` has ``num_classes`` (the output layer)."""

    type = "fc"
    pattern = re.compile(r"fc(\d+)?")
    syntax = "fc[<units>]"
    fields = {"units": (None, _count_or_none)}
    numbering = "weights"

    @classmethod
    def from_token(cls, m):
        return {"type": "fc", "units": int(m[1]) if m[1] else None}

    @classmethod
    def token(cls, spec):
        return "fc" if spec["units"] is None else f"fc{spec['units']}"

    def __init__(self, spec, in_shape, number, num_classes, where):
        self.in_shape = in_shape
        self.units = num_classes if spec["units"] is None else spec["units"]
        self.weight_name, self.bias_name = f"W{number}", f"b{number}"
        self.out_shape = (self.units,)

    def param_shapes(self):
        return {self.weight_name: (shape_size(self.in_shape), self.units), self.bias_name: (self.units,)}

    def params(self, init, dtype):
        w_shape, b_shape = self.param_shapes().values()
        return {self.weight_name: init(w_shape, w_shape[0]), self.bias_name: np.zeros(b_shape, dtype=dtype)}

    def forward(self, net, x, train):
        return net.layer_module.affine_forward(x, net.params[self.weight_name], net.params[self.bias_name])

    def backward(self, net, dout, cache, need_dx):
        dx, dw, db = net.layer_module.affine_backward(dout, cache)
        return dx, {self.weight_name: dw, self.bias_name: db}


class BatchNorm(Layer):
    """``bn``: batch normalization, per channel (spatial) on an image, per unit after an fc layer."""

    type = "batchnorm"
    pattern = re.compile(r"bn|batchnorm")
    syntax = "bn"
    fields = {"momentum": (0.9, _momentum), "eps": (1e-5, _positive)}
    numbering = "batchnorm"

    @classmethod
    def token(cls, spec):
        return "bn"

    def __init__(self, spec, in_shape, number, num_classes, where):
        self.in_shape = self.out_shape = in_shape
        self.momentum, self.eps = spec["momentum"], spec["eps"]
        self.spatial = len(in_shape) == 3
        self.gamma_name, self.beta_name = f"gamma{number}", f"beta{number}"
        self.mean_name, self.var_name = f"running_mean{number}", f"running_var{number}"

    def param_shapes(self):
        return {self.gamma_name: self.in_shape[:1], self.beta_name: self.in_shape[:1]}

    def buffer_shapes(self):
        return {self.mean_name: self.in_shape[:1], self.var_name: self.in_shape[:1]}

    def params(self, init, dtype):
        D = self.in_shape[0]
        return {self.gamma_name: np.ones(D, dtype=dtype), self.beta_name: np.zeros(D, dtype=dtype)}

    def buffers(self, dtype):
        D = self.in_shape[0]
        return {self.mean_name: np.zeros(D, dtype=dtype), self.var_name: np.ones(D, dtype=dtype)}

    def forward(self, net, x, train):
        ops = net.layer_module
        bn_param = {
            "mode": "train" if train else "test",
            "momentum": self.momentum,
            "eps": self.eps,
            "running_mean": net.buffers[self.mean_name],
            "running_var": net.buffers[self.var_name],
        }
        forward = ops.spatial_batchnorm_forward if self.spatial else ops.batchnorm_forward
        out, cache = forward(x, net.params[self.gamma_name], net.params[self.beta_name], bn_param)
        if train:
            net.buffers[self.mean_name] = bn_param["running_mean"]
            net.buffers[self.var_name] = bn_param["running_var"]
        return out, cache

    def backward(self, net, dout, cache, need_dx):
        ops = net.layer_module
        backward = ops.spatial_batchnorm_backward if self.spatial else ops.batchnorm_backward
        dx, dgamma, dbeta = backward(dout, cache)
        return dx, {self.gamma_name: dgamma, self.beta_name: dbeta}


# ============================================================================ layers without weights
class ReLU(Layer):
    """``relu``."""

    type = "relu"
    pattern = re.compile(r"relu")
    syntax = "relu"

    def forward(self, net, x, train):
        return net.layer_module.relu_forward(x)

    def backward(self, net, dout, cache, need_dx):
        return net.layer_module.relu_backward(dout, cache), {}


class Sigmoid(Layer):
    """``sigmoid``."""

    type = "sigmoid"
    pattern = re.compile(r"sigmoid")
    syntax = "sigmoid"

    def forward(self, net, x, train):
        return net.layer_module.sigmoid_forward(x)

    def backward(self, net, dout, cache, need_dx):
        return net.layer_module.sigmoid_backward(dout, cache), {}


class _Pool(Layer):
    """k x k pooling with stride S (default k); the subclasses name the layer functions."""

    fields = {"kernel": (REQUIRED, _count), "stride": (None, _count_or_none)}

    @classmethod
    def from_token(cls, m):
        return {"type": cls.type, "kernel": int(m[1]), "stride": int(m[2]) if m[2] else None}

    @classmethod
    def token(cls, spec):
        return f"{cls.type}{spec['kernel']}" + (f"s{spec['stride']}" if spec["stride"] is not None else "")

    def __init__(self, spec, in_shape, number, num_classes, where):
        C, H, W = _image_shape(in_shape, where, "pooling")
        self.in_shape = in_shape
        self.kernel = spec["kernel"]
        try:  # the pooling layers' own rules, so that a network that builds also runs
            geometry = pool_geometry_of_shape((1, C, H, W), self.kernel, spec["stride"], what="its input")
        except ValueError as exc:
            raise ValueError(f"{where}: the {self.kernel}x{self.kernel} window does not fit ({exc})") from None
        self.stride = geometry.stride_h
        self.out_shape = (C, geometry.out_h, geometry.out_w)


class MaxPool(_Pool):
    """``maxpool<k>[s<S>]``."""

    type = "maxpool"
    pattern = re.compile(r"maxpool(\d+)(?:s(\d+))?")
    syntax = "maxpool<k>[s<stride>]"

    def forward(self, net, x, train):
        return net.layer_module.max_pool_forward(x, self.kernel, self.stride)

    def backward(self, net, dout, cache, need_dx):
        return net.layer_module.max_pool_backward(dout, cache), {}


class AvgPool(_Pool):
    """``avgpool<k>[s<S>]``."""

    type = "avgpool"
    pattern = re.compile(r"avgpool(\d+)(?:s(\d+))?")
    syntax = "avgpool<k>[s<stride>]"

    def forward(self, net, x, train):
        return net.layer_module.avg_pool_forward(x, self.kernel, self.stride)

    def backward(self, net, dout, cache, need_dx):
        return net.layer_module.avg_pool_backward(dout, cache), {}


class Dropout(Layer):
    """``dropout[<p>]``: inverted dropout with drop probability p (0.5); masks from ``net.rng``."""

    type = "dropout"
    pattern = re.compile(r"dropout(\d*\.?\d+)?")
    syntax = "dropout[<p>]"
    fields = {"p": (0.5, _drop_probability)}

    @classmethod
    def from_token(cls, m):
        return {"type": "dropout", "p": float(m[1]) if m[1] else 0.5}

    @classmethod
    def token(cls, spec):
        return f"dropout{spec['p']:g}"

    def __init__(self, spec, in_shape, number, num_classes, where):
        self.in_shape = self.out_shape = in_shape
        self.p = spec["p"]

    def forward(self, net, x, train):
        return net.layer_module.dropout_forward(x, self.p, train=train, rng=net.rng)

    def backward(self, net, dout, cache, need_dx):
        return net.layer_module.dropout_backward(dout, cache), {}


#: Every layer type by its dict "type", in LAYER_SYNTAX order.
LAYER_TYPES = {cls.type: cls for cls in (Conv, BatchNorm, ReLU, Sigmoid, MaxPool, AvgPool, Dropout, FullyConnected)}

LAYER_SYNTAX = " | ".join(cls.syntax for cls in LAYER_TYPES.values()) + ", joined by '-'"


def parse_layers(spec):
    """A layer string (see ``fastconv.models``) -> a list of layer dicts."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a layer spec must be a non-empty string, got {spec!r}")
    layers = []
    for token in spec.strip().lower().split("-"):
        for layer_type in LAYER_TYPES.values():
            match = layer_type.pattern.fullmatch(token)
            if match:
                layers.append(layer_type.from_token(match))
                break
        else:
            raise ValueError(f"unknown layer {token!r} in {spec!r}; the syntax is {LAYER_SYNTAX}")
    return layers


def _layer_type(layer, i):
    if not isinstance(layer, dict) or layer.get("type") not in LAYER_TYPES:
        raise ValueError(f"layer {i} must be a dict with 'type' one of {', '.join(LAYER_TYPES)}, got {layer!r}")
    return LAYER_TYPES[layer["type"]]


def format_layers(layers):
    """The string form of a list of normalized layer dicts (inverse of parse_layers)."""
    return "-".join(_layer_type(layer, i).token(layer) for i, layer in enumerate(layers))


def normalize_layer(layer, i):
    """Check layer dict number ``i`` and fill in its defaults."""
    layer_type = _layer_type(layer, i)
    return layer_type.normalize(layer, f"layer {i} ({layer_type.type})")


# ============================================================================ fusion
class ConvReluPool(Layer):
    """A conv -> relu -> maxpool run (or conv -> maxpool -> relu) as one step of the layers'
    fused conv_relu_pool_forward/backward: the same values and gradients without the
    full-size intermediate arrays. Only made by ``fuse_conv_relu_pool``, never parsed."""

    type = "conv_relu_pool"

    def __init__(self, conv, pool):
        self.conv, self.pool = conv, pool
        self.in_shape, self.out_shape = conv.in_shape, pool.out_shape

    def forward(self, net, x, train):
        conv, pool = self.conv, self.pool
        return net.layer_module.conv_relu_pool_forward(
            x,
            net.params[conv.weight_name],
            net.params[conv.bias_name],
            stride=conv.stride,
            pad=conv.pad,
            pool_size=pool.kernel,
            pool_stride=pool.stride,
        )

    def backward(self, net, dout, cache, need_dx):
        dx, dw, db = net.layer_module.conv_relu_pool_backward(dout, cache, need_dx=need_dx)
        return dx, {self.conv.weight_name: dw, self.conv.bias_name: db}


def fuse_conv_relu_pool(layers):
    """``layers`` with each conv -> relu -> maxpool run (or conv -> maxpool -> relu: ReLU and max
    commute, gradients included, because both route through the same first maximum and are cut
    where it is <= 0) replaced by one ConvReluPool step (tests/training/test_models.py checks them equal)."""
    fused, i = [], 0
    while i < len(layers):
        types = [type(layer) for layer in layers[i : i + 3]]
        if types in ([Conv, ReLU, MaxPool], [Conv, MaxPool, ReLU]):
            pool = layers[i + 2] if types[2] is MaxPool else layers[i + 1]
            fused.append(ConvReluPool(layers[i], pool))
            i += 3
        else:
            fused.append(layers[i])
            i += 1
    return fused
