"""Learning-rate schedules: the rate of each update, from the update's number.

A schedule gives ``rate(base_lr, iteration, iterations_per_epoch, total_iterations)``, the
learning rate of update number ``iteration`` (0 for the first), from the optimizer's
learning rate ``base_lr``. The Solver sets it before every update
(``fastconv.callbacks.LearningRate``); being a function of the iteration, it continues
exactly after a resume.

The spec language (``fastconv train --lr-schedule SPEC``, ``Solver(lr_schedule=SPEC)``):

    constant            the learning rate throughout
    exp:G               times G after each epoch (G > 0): the Solver's lr_decay, ``--lr-decay G``
    step:E:G            times G after every E epochs (E >= 1, G > 0)
    cosine[:FLOOR]      per update, half a cosine from the rate down to FLOOR * rate at the last
                        update (0 <= FLOOR < 1, default 0)
    onecycle[:DIV]      per update, linear from rate / DIV up to the rate over the first 30 % of the
                        updates, then half a cosine down to rate / (DIV * 1e4) (DIV > 1, default 25;
                        Smith's one-cycle policy as PyTorch's OneCycleLR shapes it)

and ``warmup`` (``--warmup EPOCHS``, a number >= 0 of epochs, may be fractional) multiplies
any of them by (i + 1) / W over the first W = EPOCHS * iterations_per_epoch updates: a linear
ramp from nearly 0 to the schedule's rate.

``exp:G`` multiplies the rate by G once per epoch, in the same order of float operations as
the per-epoch decay it replaces (bit for bit the rates of earlier versions).
"""

from __future__ import annotations

import math

from ..engine.checks import check_int, check_number

__all__ = ["Schedule", "Constant", "Exponential", "Step", "Cosine", "OneCycle", "parse_schedule", "ONECYCLE_RISE"]

ONECYCLE_RISE = 0.3
_ONECYCLE_FINAL = 1e4


class Schedule:
    """The base of the schedules: ``rate`` and the spec it is written as. ``needs_total``
    says whether the rates depend on the length of the run (then a resume must keep it)."""

    needs_total = False
    warmup = 0.0

    def factor(self, iteration, iterations_per_epoch, total_iterations):
        raise NotImplementedError

    def rate(self, base_lr, iteration, iterations_per_epoch, total_iterations):
        lr = self.scaled(base_lr, iteration, iterations_per_epoch, total_iterations)
        if self.warmup:
            ramp = self.warmup * iterations_per_epoch
            if iteration + 1 < ramp:
                lr = lr * ((iteration + 1) / ramp)
        return lr

    def scaled(self, base_lr, iteration, iterations_per_epoch, total_iterations):
        return base_lr * self.factor(iteration, iterations_per_epoch, total_iterations)

    def with_warmup(self, epochs):
        self.warmup = check_number(epochs, "warmup", lambda v: 0 <= v <= 1e6 and math.isfinite(v), "a number >= 0")
        return self

    def spec(self):
        raise NotImplementedError

    def describe(self):
        """The spec, with the warmup (what a checkpoint records and resume compares)."""
        return self.spec() + (f" warmup {self.warmup:g}" if self.warmup else "")

    def curve(self, base_lr, iterations_per_epoch, total_iterations):
        """The rates of the ``total_iterations`` updates of a run (for the loss picture)."""
        return [self.rate(base_lr, i, iterations_per_epoch, total_iterations) for i in range(total_iterations)]

    def __repr__(self):
        return f"<schedule {self.describe()}>"


class Constant(Schedule):
    def scaled(self, base_lr, iteration, iterations_per_epoch, total_iterations):
        return base_lr

    def spec(self):
        return "constant"


class Exponential(Schedule):
    """Times ``gamma`` after each epoch."""

    def __init__(self, gamma):
        self.gamma = check_number(gamma, "exp: the factor G", lambda v: 0 < v < math.inf, "a number > 0")

    def scaled(self, base_lr, iteration, iterations_per_epoch, total_iterations):
        lr = base_lr
        for _ in range(iteration // iterations_per_epoch):  # as the per-epoch `lr *= decay` did, bit for bit
            lr *= self.gamma
        return lr

    def spec(self):
        return f"exp:{self.gamma!r}"


class Step(Schedule):
    """Times ``gamma`` after every ``every`` epochs."""

    def __init__(self, every, gamma):
        self.every = check_int(every, "step: the epochs E", 1)
        self.gamma = check_number(gamma, "step: the factor G", lambda v: 0 < v < math.inf, "a number > 0")

    def scaled(self, base_lr, iteration, iterations_per_epoch, total_iterations):
        lr = base_lr
        for _ in range(iteration // iterations_per_epoch // self.every):
            lr *= self.gamma
        return lr

    def spec(self):
        return f"step:{self.every}:{self.gamma!r}"


class Cosine(Schedule):
    """Half a cosine from the rate to ``floor`` times it, over the run's updates."""

    needs_total = True

    def __init__(self, floor=0.0):
        self.floor = check_number(floor, "cosine: FLOOR", lambda v: 0 <= v < 1, "a number in [0, 1)")

    def factor(self, iteration, iterations_per_epoch, total_iterations):
        progress = min(iteration / max(total_iterations - 1, 1), 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def spec(self):
        return f"cosine:{self.floor!r}"


class OneCycle(Schedule):
    """Up from rate / ``div`` to the rate, then down to rate / (``div`` * 1e4)."""

    needs_total = True

    def __init__(self, div=25.0):
        self.div = check_number(div, "onecycle: DIV", lambda v: 1 < v <= 1e6, "a number in (1, 1e6]")

    def factor(self, iteration, iterations_per_epoch, total_iterations):
        start, end = 1 / self.div, 1 / (self.div * _ONECYCLE_FINAL)
        rise = max(int(ONECYCLE_RISE * total_iterations), 1)
        if iteration < rise:
            return start + (1 - start) * iteration / rise
        progress = min((iteration - rise) / max(total_iterations - 1 - rise, 1), 1.0)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))

    def spec(self):
        return f"onecycle:{self.div!r}"


_KINDS = {
    "constant": (Constant, ()),
    "exp": (Exponential, (float,)),
    "step": (Step, (int, float)),
    "cosine": (Cosine, (float,)),
    "onecycle": (OneCycle, (float,)),
}
_REQUIRED = {"constant": 0, "exp": 1, "step": 2, "cosine": 0, "onecycle": 0}


def parse_schedule(spec, warmup=0.0):
    """A Schedule from its spec (see the module docstring), or ``spec`` itself when it is one
    (with ``warmup`` set when given); ValueError naming what is wrong otherwise."""
    if isinstance(spec, Schedule):
        return spec.with_warmup(warmup) if warmup else spec
    if not isinstance(spec, str):
        raise TypeError(f"lr_schedule must be a spec string or a fastconv.training.schedules.Schedule, got {spec!r}")
    name, *args = spec.strip().split(":")
    if name not in _KINDS:
        raise ValueError(
            f"unknown learning-rate schedule {name!r} in {spec!r} "
            f"(one of {', '.join(_KINDS)}; e.g. cosine, exp:0.9, step:5:0.5, onecycle)"
        )
    kind, types = _KINDS[name]
    if not _REQUIRED[name] <= len(args) <= len(types):
        raise ValueError(
            f"learning-rate schedule {spec!r}: {name} takes "
            f"{_REQUIRED[name]}{'' if _REQUIRED[name] == len(types) else f' to {len(types)}'} "
            f"argument(s) after ':'"
        )
    values = []
    for text, convert in zip(args, types):
        try:
            values.append(convert(text))
        except ValueError:
            raise ValueError(
                f"learning-rate schedule {spec!r}: {text!r} is not a{'n integer' if convert is int else ' number'}"
            ) from None
    try:
        schedule = kind(*values)
    except ValueError as exc:
        raise ValueError(f"learning-rate schedule {spec!r}: {exc}") from None
    return schedule.with_warmup(warmup)
