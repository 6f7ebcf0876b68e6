"""Shared helpers of the fastconv test suite (``from _helpers import ...``; fixtures live in conftest.py).

* ``TOL``: the one tolerance table (relative error, per dtype) for comparing
  two implementations that compute the same thing in the same dtype
  (fast against naive, fast against PyTorch, kernels against index arithmetic).
* ``GRAD_TOL``: relative error allowed between an analytic gradient and a
  centred numerical gradient, both in float64.
* ``rel_error``: max |actual - reference| / max |reference|.
* ``assert_close``: shape, dtype and relative error in one assertion.
* ``numerical_gradient``: centred differences, the independent reference for
  every backward pass.
* ``out_size``: PyTorch's output-size formula, written here on purpose independently
  of ``fastconv.engine.geometry``, so that the tests do not take the library's word for it.
"""
import numpy as np

TOL = {np.float32: 1e-4, np.float64: 1e-9}
GRAD_TOL = 1e-6
DTYPES = (np.float32, np.float64)


def tol(dtype):
    """The relative tolerance of ``TOL`` for ``dtype``."""
    return TOL[np.dtype(dtype).type]


def rel_error(actual, reference):
    """max |actual - reference| / max |reference| (the absolute error when the reference is all zeros).

    Computed in float64; NaN anywhere gives NaN, which fails every ``<`` check.
    """
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert actual.shape == reference.shape, f"shape {actual.shape} != reference shape {reference.shape}"
    if reference.size == 0:
        return 0.0
    diff = np.max(np.abs(actual - reference))
    scale = np.max(np.abs(reference))
    return float(diff / scale) if scale > 0 else float(diff)


def assert_close(actual, reference, dtype, what="array", tolerance=None):
    """Assert ``actual`` has ``reference``'s shape, the given dtype, and a relative error below tolerance."""
    dtype = np.dtype(dtype)
    tolerance = tol(dtype) if tolerance is None else tolerance
    assert isinstance(actual, np.ndarray), f"{what}: expected an ndarray, got {type(actual).__name__}"
    assert actual.shape == np.shape(reference), f"{what}: shape {actual.shape} != {np.shape(reference)}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype} != {dtype}"
    err = rel_error(actual, reference)
    assert err < tolerance, f"{what}: relative error {err:.3g} >= {tolerance:g}"


def numerical_gradient(f, x, dout=None, h=1e-5):
    """Centred-difference gradient of ``sum(f(x) * dout)`` (or of scalar ``f(x)``) w.r.t. ``x``.

    ``x`` (float64) is perturbed in place one element at a time and restored,
    so ``f`` may read it through a closure as well as through its argument.
    """
    assert x.dtype == np.float64, "numerical gradients are taken in float64"
    grad = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        plus = np.asarray(f(x), dtype=np.float64)
        x[idx] = old - h
        minus = np.asarray(f(x), dtype=np.float64)
        x[idx] = old
        diff = plus - minus
        grad[idx] = (np.sum(diff * dout) if dout is not None else float(diff)) / (2 * h)
    return grad


def pair_id(value):
    """'3' for (3, 3), '3x5' for (3, 5): the compact form used in test ids."""
    h, w = (value, value) if np.isscalar(value) else value
    return f"{h}" if h == w else f"{h}x{w}"


def dtype_id(dtype):
    return np.dtype(dtype).name


def out_size(size, kernel, stride=1, pad=0, dilation=1):
    """Output length of a convolution or pooling along one axis: PyTorch's formula."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
