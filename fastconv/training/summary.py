"""A model summary, as Keras' ``model.summary()`` and torchinfo show it: one row per layer
with its output shape, parameters, FLOPs and activation memory, and the totals.

FLOPs are per image (a multiply and an add count two):

* conv: ``2 * C * kh * kw * F * out_h * out_w`` forward (the benchmark's formula,
  ``fastconv.bench.common.ConvSpec.flops``, per image, bias left out); the backward computes
  dw (as much again) and dx (as much again), so forward+backward is 3 times the forward, and
  2 times for the network's first layer, whose dx is never computed;
* fc: ``2 * D * M`` forward, and forward+backward 3 (first layer: 2) times that;
* the cheap layers, counted per element they touch: ReLU 1 forward and 1 backward, sigmoid
  4 and 3, dropout 1 and 1, batchnorm 7 and 10 (statistics, normalization, scale and shift),
  max and average pooling k*k per output, forward and backward.

Activation memory is the bytes of each layer's output for one image in the model's dtype,
what training keeps for the backward (the input and a conv's im2col matrix come on top:
the totals list them); the totals are the sums.
"""

from __future__ import annotations

from ..engine.checks import shape_size
from .model_layers import AvgPool, BatchNorm, Conv, Dropout, FullyConnected, MaxPool, ReLU, Sigmoid, format_layers

__all__ = ["layer_rows", "format_summary", "ELEMENTWISE_FLOPS"]

#: (forward, backward) FLOPs per element for the layers that are not a matrix product.
ELEMENTWISE_FLOPS = {ReLU: (1, 1), Sigmoid: (4, 3), Dropout: (1, 1), BatchNorm: (7, 10)}


def _flops(layer, first):
    """(forward, forward + backward) FLOPs of ``layer`` for one image."""
    if isinstance(layer, Conv):
        C, k = layer.in_shape[0], layer.kernel
        forward = 2 * C * k * k * shape_size(layer.out_shape)
    elif isinstance(layer, FullyConnected):
        forward = 2 * shape_size(layer.in_shape) * layer.units
    elif isinstance(layer, (MaxPool, AvgPool)):
        window = layer.kernel * layer.kernel
        forward = window * shape_size(layer.out_shape)
        return forward, forward + window * shape_size(layer.out_shape)
    else:
        fwd, bwd = ELEMENTWISE_FLOPS.get(type(layer), (0, 0))
        n = shape_size(layer.out_shape)
        return fwd * n, (fwd + bwd) * n
    return forward, forward * (2 if first else 3)


def layer_rows(model):
    """[{"layer", "output_shape", "params", "flops_forward", "flops_train", "activation_bytes"}] of
    a ``fastconv.models.Sequential``, one per layer, in order."""
    itemsize = model.dtype.itemsize
    rows = []
    for i, (spec, layer) in enumerate(zip(model.layer_specs, model.layers)):
        forward, train = _flops(layer, first=i == 0)
        rows.append(
            {
                "layer": format_layers([spec]),
                "output_shape": tuple(layer.out_shape),
                "params": sum(shape_size(s) for s in layer.param_shapes().values()),
                "flops_forward": forward,
                "flops_train": train,
                "activation_bytes": shape_size(layer.out_shape) * itemsize,
            }
        )
    return rows


def _size(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n}"


def _bytes(n):
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_summary(model):
    """The summary table of ``model`` as text (see the module docstring)."""
    rows = layer_rows(model)
    header = ("layer", "output shape", "params", "FLOPs fwd", "FLOPs fwd+bwd", "activations")
    table = [
        (
            r["layer"],
            "x".join(map(str, r["output_shape"])),
            f"{r['params']:,}",
            _size(r["flops_forward"]),
            _size(r["flops_train"]),
            _bytes(r["activation_bytes"]),
        )
        for r in rows
    ]
    input_bytes = shape_size(model.input_shape) * model.dtype.itemsize
    workspace = max((layer.workspace_size() for layer in model.layers), default=0) * model.dtype.itemsize
    total = (
        "total",
        "",
        f"{sum(r['params'] for r in rows):,}",
        _size(sum(r["flops_forward"] for r in rows)),
        _size(sum(r["flops_train"] for r in rows)),
        _bytes(sum(r["activation_bytes"] for r in rows)),
    )
    widths = [max(len(line[i]) for line in [header, total, *table]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(header))
    shape = "x".join(map(str, model.input_shape))
    return "\n".join(
        [
            f"{type(model).__name__}: input {shape} ({model.dtype.name}), {model.num_classes} classes, "
            f"{model.loss_type} loss",
            rule,
            line(header),
            rule,
            *map(line, table),
            rule,
            line(total),
            rule,
            f"per image: FLOPs of one forward pass and of a training step's forward and backward; "
            f"activations = layer outputs kept for the backward (+ input {_bytes(input_bytes)}, largest im2col "
            f"matrix {_bytes(workspace)})",
        ]
    )
