"""Workloads, seeded data and result checks shared by every benchmark.

The workloads are the canonical ones of docs/workloads.md; their names and
shapes are part of the published results, so this table only ever grows
(append new workloads, never change an existing one).

Data are dyadic: every value is a small integer times a power of two
(``x`` in steps of 1/32 within [-2, 2], weights in steps of 1/64 within
[-1/4, 1/4]). Products and sums of such values are exact in float32 as long
as they stay below 2**24 steps, which the convolutions and the first affine
layer here do. So every implementation computes bit-identical forward values
whatever its summation order, and every routing decision (ReLU masks, the
argmax of a max-pool window, ties included) is the same in all of them: the
checks can be tight without being flaky. Speed does not depend on the values
(no denormals, no NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the one tolerance table (relative, per dtype) and its error measure, shared with the tests
from ..testing import rel_error, tol

DTYPES = ("float32", "float64")
PASSES = ("fwd", "fwdbwd")


class MismatchError(RuntimeError):
    """A contender's result differs from the reference: the benchmark must not go on."""


# ---------------------------------------------------------------- workloads
@dataclass(frozen=True)
class ConvSpec:
    """A convolution: x (N, C, H, W), w (F, C, kh, kw), bias (F,), stride, pad."""

    N: int
    C: int
    H: int
    W: int
    F: int
    k: int
    stride: int
    pad: int

    @property
    def out_hw(self):
        out = lambda size: (size + 2 * self.pad - self.k) // self.stride + 1  # noqa: E731
        return out(self.H), out(self.W)

    def flops(self, pass_):
        """2 * N * F * C * kh * kw * out_h * out_w for the forward; backward twice that."""
        out_h, out_w = self.out_hw
        fwd = 2 * self.N * self.F * self.C * self.k * self.k * out_h * out_w
        return fwd if pass_ == "fwd" else 3 * fwd

    def describe(self):
        return (
            f"x ({self.N}, {self.C}, {self.H}, {self.W}), w ({self.F}, {self.C}, {self.k}, {self.k}), "
            f"stride {self.stride}, pad {self.pad}"
        )

    def quick(self):
        """A tiny version with the same kernel, stride and padding (for smoke tests)."""
        return ConvSpec(min(self.N, 2), min(self.C, 8), 8, 8, min(self.F, 8), self.k, self.stride, self.pad)


@dataclass(frozen=True)
class PoolSpec:
    """A pooling layer ('max' or 'avg') on x (N, C, H, W)."""

    mode: str
    N: int
    C: int
    H: int
    W: int
    k: int
    stride: int

    @property
    def out_hw(self):
        return (self.H - self.k) // self.stride + 1, (self.W - self.k) // self.stride + 1

    def flops(self, pass_):
        return None  # memory-bound: no GFLOP/s

    def describe(self):
        return f"{self.mode} pool x ({self.N}, {self.C}, {self.H}, {self.W}), kernel {self.k}, stride {self.stride}"

    def quick(self):
        return PoolSpec(self.mode, min(self.N, 2), min(self.C, 8), 8, 8, self.k, self.stride)


@dataclass(frozen=True)
class StepSpec:
    """ConvNet1: conv (pad k//2) - ReLU - max pool 2x2 s2 - affine - ReLU - affine - softmax loss.

    ``layer_by_layer``: run as tutorial code writes it, conv, ReLU and pool as three layer
    calls each way (the conv's backward with need_dx=False); else as fastconv.models.ConvNet1
    runs it (one fused layer). Neither computes a gradient for the images."""

    conv: ConvSpec
    hidden: int
    classes: int
    layer_by_layer: bool = False

    @property
    def features(self):
        out_h, out_w = self.conv.out_hw
        return self.conv.F * (out_h // 2) * (out_w // 2)

    def flops(self, pass_):
        return None  # GFLOP/s is shown for single convolutions only

    def describe(self):
        how = ", layer by layer" if self.layer_by_layer else ""
        return (
            f"ConvNet1 step{how}: conv {self.conv.describe()}, ReLU, max pool 2x2 s2, "
            f"affine {self.features}->{self.hidden}, ReLU, affine {self.hidden}->{self.classes}, softmax loss"
        )

    def quick(self):
        return StepSpec(self.conv.quick(), self.hidden, self.classes, self.layer_by_layer)


_W1 = ConvSpec(N=64, C=3, H=32, W=32, F=32, k=7, stride=1, pad=3)
_W2 = ConvSpec(N=64, C=64, H=32, W=32, F=64, k=3, stride=1, pad=1)

#: The canonical workloads (docs/workloads.md). Append only.
WORKLOADS = {
    "W1conv": _W1,
    "W1step": StepSpec(_W1, hidden=100, classes=10),
    "W2conv3x3": _W2,
    "W2conv3x3_N128": ConvSpec(N=128, C=64, H=32, W=32, F=64, k=3, stride=1, pad=1),
    "W3conv5x5": ConvSpec(N=64, C=3, H=32, W=32, F=16, k=5, stride=1, pad=0),
    "W4max2x2s2": PoolSpec("max", N=64, C=64, H=32, W=32, k=2, stride=2),
    "W4max3x3s2": PoolSpec("max", N=64, C=64, H=32, W=32, k=3, stride=2),
    "W4avg2x2s2": PoolSpec("avg", N=64, C=64, H=32, W=32, k=2, stride=2),
    "W1step_layers": StepSpec(_W1, hidden=100, classes=10, layer_by_layer=True),
}


# ---------------------------------------------------------------- data
def dyadic(rng, shape, dtype, steps, step_exp):
    """Integers in [-steps, steps] times 2**-step_exp, in ``dtype`` (see the module docstring)."""
    return (rng.integers(-steps, steps + 1, size=shape) * 2.0**-step_exp).astype(dtype)


def conv_data(spec, dtype, seed=0):
    """x, w, b and an upstream gradient dout for a ConvSpec."""
    rng = np.random.default_rng(seed)
    out_h, out_w = spec.out_hw
    return {
        "x": dyadic(rng, (spec.N, spec.C, spec.H, spec.W), dtype, 64, 5),
        "w": dyadic(rng, (spec.F, spec.C, spec.k, spec.k), dtype, 16, 6),
        "b": dyadic(rng, (spec.F,), dtype, 16, 6),
        "dout": dyadic(rng, (spec.N, spec.F, out_h, out_w), dtype, 64, 5),
    }


def pool_data(spec, dtype, seed=0):
    rng = np.random.default_rng(seed)
    out_h, out_w = spec.out_hw
    return {
        "x": dyadic(rng, (spec.N, spec.C, spec.H, spec.W), dtype, 64, 5),
        "dout": dyadic(rng, (spec.N, spec.C, out_h, out_w), dtype, 64, 5),
    }


def step_data(spec, dtype, seed=0):
    """Images, labels and the six ConvNet1 parameters, named as fastconv.models.ConvNet1
    names them: W1, b1 (conv), W2, b2 and W3, b3 (affine).

    The first affine layer has weights in {-1/64, 0, 1/64}, so that its
    outputs (and hence the second ReLU's mask) are exact in float32 too.
    """
    rng = np.random.default_rng(seed)
    c = spec.conv
    return {
        "x": dyadic(rng, (c.N, c.C, c.H, c.W), dtype, 64, 5),
        "y": rng.integers(0, spec.classes, size=c.N),
        "W1": dyadic(rng, (c.F, c.C, c.k, c.k), dtype, 16, 6),
        "b1": dyadic(rng, (c.F,), dtype, 16, 6),
        "W2": dyadic(rng, (spec.features, spec.hidden), dtype, 1, 6),
        "b2": dyadic(rng, (spec.hidden,), dtype, 16, 6),
        "W3": dyadic(rng, (spec.hidden, spec.classes), dtype, 8, 6),
        "b3": dyadic(rng, (spec.classes,), dtype, 16, 6),
    }


# ---------------------------------------------------------------- checks
def check_same(what, names, actual, reference, dtype):
    """Raise MismatchError unless each actual array matches its reference.

    Returns the largest relative error, for the record.
    """
    tolerance = tol(dtype)
    worst = 0.0
    for name, a, r in zip(names, actual, reference):
        a_dtype = getattr(a, "dtype", None)
        if a_dtype is not None and np.dtype(a_dtype) != np.dtype(dtype) and np.ndim(a) > 0:
            raise MismatchError(f"{what}: {name} has dtype {a_dtype}, expected {np.dtype(dtype)}")
        err = rel_error(a, r) if np.shape(a) == np.shape(r) else float("inf")
        if not err <= tolerance:
            raise MismatchError(
                f"{what}: {name} differs from the reference: relative error {err:.3g} "
                f"(tolerance {tolerance:g}, shapes {np.shape(a)} vs {np.shape(r)})"
            )
        worst = max(worst, err)
    return worst


# ---------------------------------------------------------------- specs by kind
DATA = {"conv": conv_data, "pool": pool_data, "step": step_data}


def kind_of(spec):
    """'conv', 'pool' or 'step'."""
    for kind, cls in (("conv", ConvSpec), ("pool", PoolSpec), ("step", StepSpec)):
        if isinstance(spec, cls):
            return kind
    raise TypeError(f"unknown workload spec {spec!r}")


def spec_to_dict(spec):
    """A JSON-able description of a spec, read back by spec_from_dict (for the torch peer)."""
    from dataclasses import asdict

    return {"kind": kind_of(spec), **asdict(spec)}


def spec_from_dict(d):
    d = dict(d)
    kind = d.pop("kind")
    if kind == "conv":
        return ConvSpec(**d)
    if kind == "pool":
        return PoolSpec(**d)
    return StepSpec(ConvSpec(**d.pop("conv")), **d)
