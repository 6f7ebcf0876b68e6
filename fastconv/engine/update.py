"""The update rules' fast steps: one pass of a kernel per step instead of numpy's
temporaries (``fastconv.optim`` owns the rules, their checks and their state)."""

from __future__ import annotations

import numpy as np

from .threads import over_planes
from .types import FloatArray


def adam_step(
    w: FloatArray,
    dw: FloatArray,
    m: FloatArray,
    v: FloatArray,
    t: int,
    learning_rate: float,
    beta1: float,
    beta2: float,
    epsilon: float,
) -> FloatArray:
    """One Adam step (``fastconv.optim.adam``'s formula, bit for bit): updates the moments
    ``m`` and ``v`` in place (C-contiguous, w's shape and dtype) and returns the next w, a
    new array; step ``t`` counts from 1."""
    from ..kernels.picker import kernels  # here: optim's other rules need no extension

    out = np.empty(w.shape, w.dtype)
    w1, dw1, m1, v1, out1 = (np.ascontiguousarray(a).reshape(-1) for a in (w, dw, m, v, out))
    # elementwise: blocks of elements on fastconv's workers when the kernel cannot use OpenMP, the same bits
    over_planes(
        w.size,
        w.size,
        lambda lo, hi, threads: kernels.adam_update(
            w1[lo:hi],
            dw1[lo:hi],
            m1[lo:hi],
            v1[lo:hi],
            out1[lo:hi],
            1 - beta1,
            1 - beta2,
            beta1,
            beta2,
            1 - beta1**t,
            1 - beta2**t,
            learning_rate,
            epsilon,
            threads,
        ),
    )
    return out
