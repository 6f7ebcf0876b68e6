"""CS231n's gradient-checking names (``cs231n/gradient_check.py`` and the notebooks' ``rel_error``).

A notebook's checking cells run unchanged after swapping the import::

    # from cs231n.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array
    from fastconv.compat.cs231n import *      # or: from fastconv.compat.cs231n_gradient_check import ...

    dx_num = eval_numerical_gradient_array(lambda x: conv_forward_naive(x, w, b, conv_param)[0], x, dout)
    print('dx error: ', rel_error(dx, dx_num))                  # ~1e-8 or less

Same signatures, same printing, same in-place perturbation (``f`` may read ``x`` through a
closure, as ``lambda _: model.loss(X, y)[0]`` does with ``model.params[name]``), built on
``fastconv.testing.numerical_gradient``. Differences: ``x`` must be a float64 array (a
float32 one raises TypeError instead of returning digits lost to rounding: build the model
with ``dtype=np.float64``, as the notebooks do for their checks); ``x`` is restored byte for
byte even if ``f`` raises. ``rel_error`` here is CS231n's elementwise one, ``max |x - y| /
max(1e-8, |x| + |y|)``, which ``fastconv.testing.rel_error`` (error over the largest
reference value, the one its tolerance tables use) is not. The Caffe-style
``eval_numerical_gradient_blobs`` / ``_net`` are not provided.
"""

import random

import numpy as np

from ..testing import Probe, numerical_gradient

__all__ = ["eval_numerical_gradient", "eval_numerical_gradient_array", "grad_check_sparse", "rel_error"]


def rel_error(x, y):
    """CS231n's relative error: the largest ``|x - y| / max(1e-8, |x| + |y|)``."""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def _check_x(x, name="x"):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(
            f"{name} is {x.dtype}: numerical gradients need float64 (a step of 1e-5 is lost "
            "to float32 rounding); use float64 arrays, or a model built with dtype=np.float64"
        )


def eval_numerical_gradient(f, x, verbose=True, h=0.00001):
    """Centred-difference gradient of the scalar ``f`` at ``x`` (perturbed in place and
    restored); prints each element's index and value when ``verbose``."""
    _check_x(x)
    grad = numerical_gradient(f, x, h=h)
    if verbose:
        for ix in np.ndindex(x.shape):
            print(ix, grad[ix])
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Centred-difference gradient of ``sum(f(x) * df)``: the gradient a backward pass given
    the upstream gradient ``df`` should return for ``x``."""
    _check_x(x)
    if not isinstance(df, np.ndarray):
        raise TypeError(f"df must be a numpy array, got {type(df).__name__}")
    return numerical_gradient(f, x, df, h=h)


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5):
    """Compare ``analytic_grad`` with centred differences of the scalar ``f`` at
    ``num_checks`` random elements (Python's ``random``, as CS231n's), printing each."""
    _check_x(x)
    if not isinstance(analytic_grad, np.ndarray) or analytic_grad.shape != x.shape:
        raise ValueError(f"analytic_grad must be an array of x's shape {x.shape}")
    if x.size == 0:
        raise ValueError("x is empty")
    saved = x.copy()
    probe = Probe(lambda: f(x), None, False, h)
    try:
        for _ in range(num_checks):
            ix = tuple(random.randrange(m) for m in x.shape)
            numerical, _kink = probe.at(x, ix)
            analytic = analytic_grad[ix]
            total = abs(numerical) + abs(analytic)
            error = abs(numerical - analytic) / total if total > 0 else 0.0
            print(f"numerical: {numerical:f} analytic: {analytic:f}, relative error: {error:e}")
    finally:
        np.copyto(x, saved)
