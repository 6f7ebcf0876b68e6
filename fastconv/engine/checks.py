"""Argument checks shared by every layer, model, optimizer and loader: one place that says
what a bad argument is, and one wording for the errors (TypeError or ValueError naming it).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any, SupportsInt

import numpy as np

from .types import FloatArray, Shape

FLOAT_DTYPES: tuple[np.dtype[Any], ...] = (np.dtype(np.float32), np.dtype(np.float64))

INT32_MAX = 2**31 - 1

#: Largest stride, pad, dilation or kernel size accepted (PyTorch's pooling bound). It keeps
#: every index the Cython kernels compute from them (``oh * stride - pad + i * dilation``,
#: ``-start + stride - 1``...) far from Py_ssize_t overflow, which would read and write out of
#: bounds with bounds checks off.
HYPERPARAMETER_MAX = INT32_MAX

#: numpy's limit on the bytes of one array.
_ARRAY_BYTES_MAX = np.iinfo(np.intp).max


def shape_size(shape: Iterable[SupportsInt]) -> int:
    """The number of items in an array of ``shape``, as a Python int: exact for any shape
    (``np.prod`` works in int64, where (2**31, 2**31, 4) wraps to 0)."""
    return math.prod(int(n) for n in shape)


def check_int(value: object, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int: TypeError unless it is an integer (bool is not), ValueError
    naming ``name`` unless ``minimum <= value <= maximum`` (either bound may be None)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and number > maximum:
        bound = "2**31 - 1" if maximum == INT32_MAX else maximum
        raise ValueError(f"{name} must be <= {bound}, got {value!r}")
    return number


def check_number(
    value: object,
    name: str,
    ok: Callable[[float], bool],
    rule: str,
    *,
    wrong_type: type[Exception] = TypeError,
) -> float:
    """``value`` as a float: TypeError naming ``name`` unless it is a real number (bool and
    np.bool_ are not), ValueError unless it is finite and ``ok(value)`` holds. ``rule`` is what
    the message says ``name`` must be, in words ("a number in [0, 1]", "a positive number").
    ``wrong_type=ValueError`` keeps the older error for a non-number where callers promise it
    (a layer dict's fields, ``dropout_forward``'s p: their tests pin it)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise wrong_type(f"{name} must be {rule}, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        raise ValueError(f"{name} must be {rule}, got {value!r}") from None
    if not (math.isfinite(number) and ok(number)):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return number


def pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """Normalize an int or an (h, w) pair of ints to a tuple, checking its range
    (``minimum`` to ``HYPERPARAMETER_MAX``)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w) of ints, got {value!r}")
        items = tuple(value)
    else:
        items = (value, value)
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int or a pair (h, w) of ints, got {value!r}")
        check_int(v, name, minimum, HYPERPARAMETER_MAX)
    return int(items[0]), int(items[1])


def check_array_size(shape: Sequence[SupportsInt], itemsize: int, what: str, culprits: str) -> None:
    """ValueError naming ``culprits`` if an array of ``shape`` could not exist (more bytes than
    numpy allows: it would raise its own error, naming no argument). A zero-size axis does not
    count, as numpy checks the other axes all the same."""
    count = itemsize
    for n in shape:
        count *= max(int(n), 1)
    if count > _ARRAY_BYTES_MAX:
        raise ValueError(f"{culprits} give {what} of shape {tuple(shape)}, larger than any array can be")


def check_float_array(a: object, name: str, ndim: int | None = None) -> FloatArray:
    """Check that ``a`` is a float32/float64 ndarray (of rank ``ndim``)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {a.shape}")
    return a


def check_same_dtype(**arrays: FloatArray | None) -> None:
    """TypeError unless all given (non-None) arrays share one dtype."""
    given = {k: v for k, v in arrays.items() if v is not None}
    dtypes = {v.dtype for v in given.values()}
    if len(dtypes) > 1:
        desc = ", ".join(f"{k}: {v.dtype}" for k, v in given.items())
        raise TypeError(f"{', '.join(given)} must share one dtype (float32 or float64), got {desc}")


def check_dout(dout: object, expected_shape: Shape, dtype: np.dtype[np.floating[Any]]) -> FloatArray:
    """Check an upstream gradient against the shape and dtype of the forward output."""
    dout = check_float_array(dout, "dout")
    if dout.shape != tuple(expected_shape):
        raise ValueError(f"dout must have the forward output's shape {tuple(expected_shape)}, got {dout.shape}")
    if dout.dtype != dtype:
        raise TypeError(f"dout must have the forward pass's dtype {dtype}, got {dout.dtype}")
    return dout


def check_scale_shift(x: FloatArray, gamma: object, beta: object, D: int, name: str) -> None:
    """gamma and beta: float arrays (D,) of x's dtype (the per-feature scale and shift of a
    normalization over ``name``)."""
    gamma = check_float_array(gamma, "gamma", 1)
    beta = check_float_array(beta, "beta", 1)
    check_same_dtype(x=x, gamma=gamma, beta=beta)
    if gamma.shape != (D,) or beta.shape != (D,):
        raise ValueError(f"gamma and beta must have shape ({D},) for {name}, got {gamma.shape} and {beta.shape}")


def finite(a: FloatArray) -> bool:
    """False when ``a`` may hold a NaN or an infinity: its sum is not finite (a sum of
    finite values that overflows says False too, which costs only speed)."""
    return bool(np.isfinite(np.add.reduce(a, axis=None)))
