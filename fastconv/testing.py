"""Checking a layer against fastconv's reference: the tools fastconv's own tests use, public.

Import it in any test suite (it needs numpy only; hypothesis is optional)::

    import fastconv.naive as naive
    from fastconv.testing import check_equivalent, check_gradients, conv_configs

    @pytest.mark.parametrize("config", conv_configs(24), ids=str)
    def test_my_conv(config):
        check_equivalent((my_conv_forward, my_conv_backward), naive, [config])

What is here (docs/testing.md has the bands, the reasons and how to read a report):

* ``TOL`` / ``tol(dtype)``: relative tolerance between two implementations of the same
  computation in the same dtype (float32 1e-4, float64 1e-9); ``GRAD_TOL`` (1e-6): between
  an analytic gradient and a centred numerical one, both in float64.
* ``rel_error(actual, reference)``: ``max |actual - reference| / max |reference|``;
  ``assert_close``: shape, dtype and relative error in one assertion naming the worst element.
* ``numerical_gradient``: centred differences in float64, of one array (perturbed in place
  and restored, so ``f`` may read it through a closure, as in CS231n) or of several arrays
  (``f`` gets float64 copies), with a kink guard; ``directional_derivative``: one
  directional derivative instead of every element (Chainer's way, for large inputs).
* ``check_gradients(forward, backward, inputs)``: a layer in the ``forward(...) -> (out,
  cache)`` / ``backward(dout, cache) -> grads`` convention against numerical gradients;
  ``check_model_gradients(model, X, y)``: the loss convention ``loss, grads = model.loss(X, y)``.
  Both return a per-argument report or raise ``GradientCheckError`` with a table.
* ``check_equivalent(candidate, reference, configs)``: two implementations, forward and
  backward, over a grid of configurations; ``EquivalenceError`` names every mismatching
  configuration by an id such as ``conv-k3x5-s2-p1-d1-g2-n2-c4f2-x7x9-float32``.
* ``conv_configs(n, seed)`` / ``pool_configs(n, seed)``: deterministic grids that always hold
  the awkward cases; ``conv_config_strategy()`` / ``pool_config_strategy()``: the same
  spaces as hypothesis strategies (which shrink a failure to the smallest configuration).
* ``check_adjoint(A, AT, x, y)``: ``<A x, y> == <x, AT y>``, for a pair of linear maps
  (im2col and col2im, a scatter and its gather).
* As a pytest plugin (``pytest -p fastconv.testing``, or ``pytest_plugins =
  ["fastconv.testing"]`` in a top-level conftest.py), every test taking a ``conv_config``
  or ``pool_config`` argument runs over the grid.

The checks never modify the arrays they are given (they work on copies, or restore the
bytes they perturbed), and bad arguments raise a one-line TypeError or ValueError naming
the argument.
"""

from __future__ import annotations

import inspect
import numbers
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import conv_output_size  # the library's one output-size formula
from .engine.checks import check_number

__all__ = [
    "TOL",
    "GRAD_TOL",
    "DTYPES",
    "tol",
    "rel_error",
    "assert_close",
    "numerical_gradient",
    "directional_derivative",
    "check_gradients",
    "check_model_gradients",
    "GradientReport",
    "GradientCheckError",
    "check_equivalent",
    "EquivalenceReport",
    "EquivalenceError",
    "ConvConfig",
    "PoolConfig",
    "conv_configs",
    "pool_configs",
    "conv_config_strategy",
    "pool_config_strategy",
    "check_adjoint",
    "AdjointError",
]

#: Relative tolerance (``rel_error``) between two implementations of the same computation
#: in the same dtype: fast against naive, a kernel against index arithmetic, against PyTorch.
#: float32 needs its own: a sum of K float32 products carries ~sqrt(K) * 6e-8 of rounding.
TOL = {np.float32: 1e-4, np.float64: 1e-9}
#: Relative error allowed between an analytic gradient and a centred numerical gradient,
#: both in float64 (h = 1e-5: truncation ~h**2, rounding ~1e-16 / h).
GRAD_TOL = 1e-6
DTYPES = (np.float32, np.float64)

_KINKS = ("skip", "raise", "ignore")


class GradientCheckError(AssertionError):
    """An analytic gradient differs from the numerical one; the message is the report's table."""


class EquivalenceError(AssertionError):
    """A candidate implementation differs from the reference; the message lists each configuration."""


class AdjointError(AssertionError):
    """``<A x, y> != <x, AT y>``: the two maps are not each other's transpose."""


# ------------------------------------------------------------------ tolerances and errors
def tol(dtype):
    """The relative tolerance of ``TOL`` for ``dtype`` (float32 or float64)."""
    try:
        key = np.dtype(dtype).type
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if key not in TOL:
        raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype).name}")
    return TOL[key]


def rel_error(actual, reference):
    """``max |actual - reference| / max |reference|`` in float64 (the absolute error when
    the reference is all zeros; 0.0 for empty arrays). NaN anywhere gives NaN, which fails
    every ``<`` check. Differing shapes raise ValueError."""
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if actual.shape != reference.shape:
        raise ValueError(f"rel_error: actual has shape {actual.shape}, reference {reference.shape}")
    if reference.size == 0:
        return 0.0
    diff = np.max(np.abs(actual - reference))
    scale = np.max(np.abs(reference))
    return float(diff / scale) if scale > 0 else float(diff)


def _worst(actual, reference):
    """(index, actual value, reference value) of the largest difference (a NaN first)."""
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    diff = np.abs(a - r)
    bad = np.isnan(diff)
    flat = int(np.argmax(bad)) if bad.any() else int(np.argmax(diff))
    idx = np.unravel_index(flat, a.shape)
    return tuple(int(i) for i in idx), a[idx], r[idx]


def _describe_mismatch(actual, reference, dtype, tolerance):
    """None if ``actual`` matches ``reference`` (shape, dtype, error), else why not (and the error)."""
    if not isinstance(actual, np.ndarray):
        return f"expected an ndarray, got {type(actual).__name__}", None
    if actual.shape != np.shape(reference):
        return f"shape {actual.shape} != {np.shape(reference)}", None
    if dtype is not None and actual.dtype != np.dtype(dtype):
        return f"dtype {actual.dtype} != {np.dtype(dtype)}", None
    err = rel_error(actual, reference)
    if err < tolerance:
        return None, err
    if actual.size == 0:
        return f"relative error {err:.3g} >= {tolerance:g}", err
    idx, a, r = _worst(actual, reference)
    where = "[" + ", ".join(map(str, idx)) + "]"
    return f"relative error {err:.3g} >= {tolerance:g}, worst element {where}: {a:.6g} vs {r:.6g}", err


def assert_close(actual, reference, dtype=None, what="array", tolerance=None):
    """Assert that ``actual`` has ``reference``'s shape, the dtype ``dtype`` (default:
    ``reference``'s) and a relative error below ``tolerance`` (default ``tol(dtype)``).

    The AssertionError names ``what`` and the worst element, e.g. ``dx: relative error
    0.0031 >= 0.0001, worst element [0, 2, 4, 1]: 0.51 vs 0.49``.
    """
    dtype = np.asarray(reference).dtype if dtype is None else np.dtype(dtype)
    tolerance = tol(dtype) if tolerance is None else float(tolerance)
    problem, _ = _describe_mismatch(actual, reference, dtype, tolerance)
    if problem is not None:
        raise AssertionError(f"{what}: {problem}")


# ------------------------------------------------------------------ numerical gradients
_EPS = np.finfo(np.float64).eps


def _check_h(h):
    return check_number(h, "h", lambda v: 0 < v < 1, "a number in (0, 1)")


def _check_kinks(kinks):
    if kinks not in _KINKS:
        raise ValueError(f"kinks must be one of {_KINKS}, got {kinks!r}")
    return kinks


def _output(value, dout, who):
    """``value`` as a float64 array of dout's shape (a scalar when there is no dout)."""
    value = np.asarray(value, dtype=np.float64)
    if dout is None:
        if value.size != 1:
            raise ValueError(f"{who} returned an array of shape {value.shape}: give dout, or return a scalar")
        return value.reshape(())
    if value.shape != dout.shape:
        raise ValueError(f"{who} returned shape {value.shape} but dout has shape {dout.shape}")
    return value


class Probe:
    """Centred differences of ``sum(f * dout)`` (or of a scalar f), one float64 element at a time.

    Outputs are subtracted element by element before they are weighted by dout and summed,
    so the cancellation happens in each output entry, not in a sum of them all.
    With the kink guard it also evaluates at +-2h: for a smooth function the slopes of the
    four intervals change linearly, so their second differences agree to ~h**2; a kink
    (ReLU at 0, a max-pool tie) within 2h puts a jump into one of them.

    Public (not in ``__all__``) for ``fastconv.compat``'s ``grad_check_sparse``, which probes
    single elements with it."""

    def __init__(self, evaluate, dout, guard, h, who="f"):
        self.evaluate, self.dout, self.guard, self.h, self.who = evaluate, dout, guard, h, who
        self.largest = 0.0
        self.base = self._value() if guard else None

    def _value(self):
        value = _output(self.evaluate(), self.dout, self.who)
        size = np.abs(value) if self.dout is None else np.abs(value) * np.abs(self.dout)
        self.largest = max(self.largest, float(np.sum(size)))
        return value

    def _combine(self, coefficients, values):
        """sum(dout * sum_k c_k * values_k), the differences taken entry by entry."""
        total = sum(c * v for c, v in zip(coefficients, values))
        return float(total) if self.dout is None else float(np.sum(total * self.dout))

    def at(self, array, idx):
        """(centred difference, kink measure) for the element ``array[idx]``, restored after."""
        old = array[idx]
        h = self.h
        v = {}
        try:
            for step in (-2, -1, 1, 2) if self.guard else (-1, 1):
                array[idx] = old + step * h
                v[step] = self._value()
        finally:
            array[idx] = old
        centred = self._combine((1, -1), (v[1], v[-1])) / (2 * h)
        if not self.guard:
            return centred, 0.0
        # the changes of slope between neighbouring intervals, differenced (third differences)
        left = self._combine((1, -3, 3, -1), (v[1], self.base, v[-1], v[-2])) / h
        right = self._combine((1, -3, 3, -1), (v[2], v[1], self.base, v[-1])) / h
        return centred, max(abs(left), abs(right))

    def noise(self):
        """The rounding error of a centred difference of values as large as those seen."""
        return 8 * _EPS * max(self.largest, 1e-300) / self.h


def _kink_mask(measures, grad, noise, kink_rtol):
    """Elements whose kink measure exceeds what smoothness and rounding allow."""
    scale = float(np.max(np.abs(grad))) if grad.size else 0.0
    return measures > kink_rtol * scale + 16 * noise


def _kink_list(name, mask, limit=5):
    where = [name + "[" + ", ".join(str(int(i)) for i in idx) + "]" for idx in zip(*np.nonzero(mask))]
    more = f" and {len(where) - limit} more" if len(where) > limit else ""
    return ", ".join(where[:limit]) + more


def _gradient_of(probe, array):
    grad = np.zeros(array.shape, dtype=np.float64)
    measures = np.zeros(array.shape, dtype=np.float64)
    for idx in np.ndindex(array.shape):
        grad[idx], measures[idx] = probe.at(array, idx)
    return grad, measures


def _float64_copy(a, name):
    """A float64 copy of the float array ``a`` (TypeError naming ``name`` otherwise)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    return np.array(a, dtype=np.float64, order="C", copy=True)


def _check_dout(dout, name="dout"):
    if dout is None:
        return None
    if not isinstance(dout, np.ndarray) or dout.dtype.kind != "f":
        raise TypeError(f"{name} must be a float numpy array or None, got {type(dout).__name__}")
    return np.array(dout, dtype=np.float64, copy=True)


def numerical_gradient(f, inputs, dout=None, *, wrt=None, h=1e-5, kinks="ignore", kink_rtol=1e-7):
    """Centred-difference gradient of ``sum(f(...) * dout)`` (or of a scalar ``f``), in float64.

    * ``inputs`` one array: it is perturbed in place one element at a time and restored
      byte for byte, and ``f(x)`` is called with it, so ``f`` may read it through a closure
      (CS231n's ``eval_numerical_gradient_array``). It must be float64 (float32 is refused:
      a float32 perturbation of 1e-5 loses most digits) and writeable. Returns one array.
    * ``inputs`` a tuple/list (or dict) of arrays: ``f(*inputs)`` (or ``f(**inputs)``) is
      called with float64 copies (float32 inputs are upgraded; non-float entries and None
      pass through), the caller's arrays are never touched. Returns a tuple (or dict) with
      a gradient for each entry of ``wrt`` (default: every float array) and None elsewhere.

    ``kinks``: "ignore" (two evaluations per element), "raise" (ValueError listing the
    elements within 2h of a kink, such as a ReLU at 0 or a max-pool tie) or "skip"
    (those elements are NaN in the result). The guard costs four evaluations per element;
    ``kink_rtol`` is the jump in slope, relative to the largest gradient, that it flags.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    h = _check_h(h)
    kinks = _check_kinks(kinks)
    dout = _check_dout(dout)
    guard = kinks != "ignore"
    if isinstance(inputs, np.ndarray):
        if inputs.dtype != np.float64:
            raise TypeError(
                f"inputs is {inputs.dtype}: numerical gradients of an array perturbed in place "
                "need float64 (pass a float64 array, or a tuple of arrays, which are copied to float64)"
            )
        if not inputs.flags.writeable:
            raise ValueError("inputs is read-only: it is perturbed in place (pass a tuple to work on a copy)")
        saved = inputs.copy()
        try:
            probe = Probe(lambda: f(inputs), dout, guard, h)
            grad, measures = _gradient_of(probe, inputs)
        finally:
            np.copyto(inputs, saved)  # the exact bytes, even if f wrote into its argument
        return _apply_kinks(grad, measures, probe, "inputs", kinks, kink_rtol)
    names, values, keyword = _split_inputs(inputs, "inputs")
    targets = _wrt_indices(wrt, names, values)
    copies = [_float64_copy(v, n) if i in targets else v for i, (n, v) in enumerate(zip(names, values))]

    probe = Probe(lambda: _call(f, names, copies, keyword), dout, guard, h)
    grads = [None] * len(values)
    for i in targets:
        grad, measures = _gradient_of(probe, copies[i])
        grads[i] = _apply_kinks(grad, measures, probe, names[i], kinks, kink_rtol)
    return dict(zip(names, grads)) if keyword else tuple(grads)


def _apply_kinks(grad, measures, probe, name, kinks, kink_rtol):
    if kinks == "ignore":
        return grad
    mask = _kink_mask(measures, grad, probe.noise(), kink_rtol)
    if mask.any() and kinks == "raise":
        raise ValueError(
            f"{int(mask.sum())} element(s) lie within 2h of a kink, where centred differences "
            f"are not a gradient: {_kink_list(name, mask)}"
        )
    grad[mask] = np.nan
    return grad


def _split_inputs(inputs, what):
    """(names, values, keyword) of a tuple/list or dict of inputs."""
    if isinstance(inputs, Mapping):
        names = list(inputs)
        if not all(isinstance(n, str) for n in names):
            raise TypeError(f"{what} keys must be strings (argument names)")
        return names, list(inputs.values()), True
    if isinstance(inputs, (tuple, list)):
        return [f"{what}[{i}]" for i in range(len(inputs))], list(inputs), False
    raise TypeError(f"{what} must be a tuple, list or dict of arrays, got {type(inputs).__name__}")


def _call(f, names, values, keyword, **kwargs):
    return f(**dict(zip(names, values)), **kwargs) if keyword else f(*values, **kwargs)


def _differentiable(value):
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def _wrt_indices(wrt, names, values):
    """The indices of the inputs to differentiate: ``wrt`` names/indices, or every float array."""
    for name, value in zip(names, values):
        if isinstance(value, np.ndarray) and value.dtype.kind in "fc" and value.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be float32 or float64, got {value.dtype}")
    if wrt is None:
        return [i for i, v in enumerate(values) if _differentiable(v)]
    if isinstance(wrt, (str, int)):
        wrt = [wrt]
    chosen = []
    for item in wrt:
        if isinstance(item, str) and item in names:
            i = names.index(item)
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool) and 0 <= item < len(values):
            i = int(item)
        else:
            raise ValueError(f"wrt: {item!r} is not one of the inputs {names}")
        if not _differentiable(values[i]):
            raise TypeError(f"wrt: {names[i]} is not a float array")
        chosen.append(i)
    return chosen


def directional_derivative(f, inputs, directions, dout=None, *, h=1e-5, kinks="ignore", kink_rtol=1e-7):
    """d/dt sum(f(*(inputs + t * directions)) * dout) at t = 0, by centred differences in float64.

    One number per check instead of one per element (Chainer's ``check_backward``): compare
    it with ``sum(vdot(grad_i, direction_i))``. ``inputs`` and ``directions`` are tuples of
    the same length (a direction None keeps that input fixed); the inputs are copied to
    float64 and never modified. With ``kinks="raise"`` a kink along the line raises
    ValueError; with "skip" the result is NaN.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    h = _check_h(h)
    kinks = _check_kinks(kinks)
    dout = _check_dout(dout)
    names, values, keyword = _split_inputs(inputs, "inputs")
    if not isinstance(directions, (tuple, list)) or len(directions) != len(values):
        raise ValueError(f"directions must be a tuple with one entry (an array or None) per input ({len(values)})")
    base, steps = [], []
    for name, value, v in zip(names, values, directions):
        if v is None:
            base.append(value)
            steps.append(None)
            continue
        x = _float64_copy(value, name)
        v = np.asarray(v, dtype=np.float64)
        if v.shape != x.shape:
            raise ValueError(f"directions: the direction for {name} has shape {v.shape}, the input {x.shape}")
        base.append(x)
        steps.append(v)
    t = np.zeros(1)

    def evaluate():
        moved = [b if s is None else b + t[0] * s for b, s in zip(base, steps)]
        return _call(f, names, moved, keyword)

    probe = Probe(evaluate, dout, kinks != "ignore", h)
    centred, measure = probe.at(t, (0,))
    if kinks != "ignore" and measure > kink_rtol * abs(centred) + 16 * probe.noise():
        if kinks == "raise":
            raise ValueError("the line x + t * direction crosses a kink within 2h of t = 0")
        return float("nan")
    return centred


# ------------------------------------------------------------------ gradient checks
@dataclass(frozen=True)
class GradientRow:
    """One argument of a gradient check."""

    name: str
    error: float  # relative error (NaN: nothing could be checked)
    tolerance: float
    checked: int  # elements (or directions) compared
    skipped: int  # elements (or directions) within 2h of a kink
    problem: str = ""  # why the row fails without an error (a shape, a missing gradient)

    @property
    def ok(self):
        return not self.problem and self.checked > 0 and self.error < self.tolerance


class GradientReport:
    """Per-argument result of ``check_gradients`` / ``check_model_gradients``.

    ``rows`` (GradientRow), ``errors`` ({name: relative error}), ``notes`` (float32 inputs
    upgraded, ...), ``ok``; ``str(report)`` is the table the failure message shows."""

    def __init__(self, rows, notes, mode):
        self.rows, self.notes, self.mode = list(rows), list(notes), mode

    @property
    def ok(self):
        return all(r.ok for r in self.rows)

    @property
    def errors(self):
        return {r.name: r.error for r in self.rows}

    def __getitem__(self, name):
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def __str__(self):
        unit = "directions" if self.mode == "directions" else "elements"
        lines = [
            f"{'argument':<16} {'relative error':>14}  {'expected':<10} {unit + ' checked':>18}  "
            f"{'skipped (kinks)':>15}  result"
        ]
        for r in self.rows:
            err = "-" if np.isnan(r.error) else f"{r.error:.2e}"
            verdict = (
                "ok"
                if r.ok
                else ("FAIL: " + r.problem if r.problem else "FAIL: nothing checked" if not r.checked else "FAIL")
            )
            lines.append(
                f"{r.name:<16} {err:>14}  {'< ' + format(r.tolerance, 'g'):<10} {r.checked:>18}  "
                f"{r.skipped:>15}  {verdict}"
            )
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    __repr__ = __str__


def _gradient_problem(analytic, shape):
    """Why ``analytic`` cannot be a gradient of an input of ``shape`` (None if it can)."""
    if analytic is None:
        return "backward returned None"
    if not isinstance(analytic, np.ndarray):
        return f"backward returned a {type(analytic).__name__}, not an array"
    if analytic.shape != shape:
        return f"gradient shape {analytic.shape} != input shape {shape}"
    return None


def _compare_gradient(name, analytic, numerical, tolerance, noise, skipped_mask=None):
    """A GradientRow for one argument; the scale is floored at what the differences can resolve."""
    problem = _gradient_problem(analytic, numerical.shape)
    if problem:
        return GradientRow(name, float("nan"), tolerance, 0, 0, problem)
    a = analytic.astype(np.float64)
    keep = np.ones(a.shape, bool) if skipped_mask is None else ~skipped_mask
    skipped = int(a.size - keep.sum())
    if not keep.any():
        return GradientRow(name, float("nan"), tolerance, 0, skipped)
    # below noise / (tolerance / 10) a gradient is rounding error of the differences, not signal
    scale = max(float(np.max(np.abs(numerical[keep]))), float(np.max(np.abs(a[keep]))), noise * 10 / tolerance)
    diff = np.abs(a[keep] - numerical[keep])
    err = float(np.max(diff)) / scale if not np.isnan(diff).any() else float("nan")
    return GradientRow(name, err, tolerance, int(keep.sum()), skipped)


def _finish(rows, notes, mode, raise_on_failure, what):
    report = GradientReport(rows, notes, mode)
    if raise_on_failure and not report.ok:
        raise GradientCheckError(f"{what}: analytic gradients differ from numerical ones\n{report}")
    return report


def _argument_names(forward, count):
    try:
        params = [
            p.name
            for p in inspect.signature(forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"inputs[{i}]" for i in range(count)]


def _check_options(tolerance, directions, kinks, h):
    check_number(tolerance, "tolerance", lambda v: v > 0, "a positive number")
    if directions is not None:
        if isinstance(directions, bool) or not isinstance(directions, numbers.Integral) or directions < 1:
            raise ValueError(f"directions must be a positive int or None, got {directions!r}")
    return float(tolerance), _check_kinks(kinks), _check_h(h)


def check_gradients(
    forward,
    backward,
    inputs,
    *,
    kwargs=None,
    dout=None,
    wrt=None,
    seed=0,
    h=1e-5,
    tolerance=GRAD_TOL,
    directions=None,
    kinks="skip",
    raise_on_failure=True,
):
    """Check a layer's backward against centred numerical gradients of its forward.

    ``forward(*inputs, **kwargs) -> (out, cache)`` and ``backward(dout, cache) -> grads``
    (fastconv's and CS231n's convention): ``grads`` is one array, or a tuple whose i-th
    entry is the gradient of the i-th input (``conv_backward`` returns ``(dx, dw, db)`` for
    ``(x, w, b)``; trailing non-array inputs such as ``conv_param`` need none). ``inputs``
    is a tuple of arrays (or a dict, passed as keywords); every float array is checked
    unless ``wrt`` names a subset. A model in the loss convention goes to
    ``check_model_gradients``; ``check_gradients(model, X, y)`` forwards there.

    Everything runs in float64 on copies (float32 inputs are upgraded, with a note in the
    report). ``dout`` defaults to a seeded standard normal. ``directions=k`` compares k
    random directional derivatives per argument instead of every element (for large
    inputs). ``kinks="skip"`` leaves out, and counts, elements within 2h of a kink (ReLU
    at 0, a max-pool tie); "raise" raises ValueError there; "ignore" turns the guard off.

    Returns a GradientReport; if an argument's relative error is not below ``tolerance``
    (or a gradient is missing or has the wrong shape) raises GradientCheckError with the
    report's table, unless ``raise_on_failure=False``.
    """
    if hasattr(forward, "loss") and isinstance(getattr(forward, "params", None), Mapping):
        if kwargs is not None or dout is not None:
            raise TypeError("check_gradients(model, X, y) takes no kwargs or dout: model.loss(X, y) is the function")
        return check_model_gradients(
            forward,
            backward,
            inputs,
            params=wrt,
            h=h,
            tolerance=tolerance,
            directions=directions,
            kinks=kinks,
            seed=seed,
            raise_on_failure=raise_on_failure,
        )
    for name, fn in (("forward", forward), ("backward", backward)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    tolerance, kinks, h = _check_options(tolerance, directions, kinks, h)
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
    names, values, keyword = _split_inputs(inputs, "inputs")
    if not keyword:
        names = _argument_names(forward, len(values))
    targets = _wrt_indices(wrt, names, values)
    if not targets:
        raise ValueError("inputs holds no float array to check")
    notes = []
    upgraded = [names[i] for i in targets if values[i].dtype == np.float32]
    if upgraded:
        notes.append(f"{', '.join(upgraded)} upgraded from float32 to float64: centred differences need float64")
    copies = [_float64_copy(v, n) if _differentiable(v) else v for n, v in zip(names, values)]

    def run(args):
        result = _call(forward, names, args, keyword, **kwargs)
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(
                f"forward must return (out, cache), got {type(result).__name__}"
                + (f" of length {len(result)}" if isinstance(result, tuple) else "")
            )
        if not isinstance(result[0], np.ndarray):
            raise TypeError(f"forward must return (out, cache) with out an array, got {type(result[0]).__name__}")
        return result

    out, cache = run(copies)
    if dout is None:
        dout = np.random.default_rng(seed).standard_normal(out.shape)
    else:
        dout = _check_dout(dout)
        if dout.shape != out.shape:
            raise ValueError(f"dout has shape {dout.shape}, forward's out {out.shape}")
    again = run(copies)[0]
    if again.shape != out.shape or not np.array_equal(again, out, equal_nan=True):
        raise ValueError(
            "forward is not deterministic (two calls on the same inputs differ): "
            "fix its randomness (a dropout seed) before checking gradients"
        )
    grads = backward(dout.copy(), cache)
    if not isinstance(grads, (tuple, list)):
        grads = (grads,)
    # copies: a gradient that is a view of an input would move while the inputs are perturbed
    grads = tuple(g.copy() if isinstance(g, np.ndarray) else g for g in grads)
    if len(grads) > len(values) or max(targets) >= len(grads):
        missing = [names[i] for i in targets if i >= len(grads)]
        raise ValueError(
            f"backward returned {len(grads)} gradient(s) for inputs {names}"
            + (f": none for {', '.join(missing)}" if missing else "")
        )

    def output(args):
        return run(args)[0]

    rows = []
    for i in targets:
        if directions is None:
            probe = Probe(lambda: output(copies), dout, kinks != "ignore", h, "forward")
            rows.append(_element_row(names[i], grads[i], probe, copies[i], kinks, tolerance))
        else:
            rows.append(
                _directional_row(names[i], grads[i], copies, i, output, dout, directions, seed, h, kinks, tolerance)
            )
    return _finish(
        rows,
        notes,
        "directions" if directions else "elements",
        raise_on_failure,
        getattr(forward, "__name__", "forward"),
    )


def _element_row(name, analytic, probe, array, kinks, tolerance):
    """Compare ``analytic`` with the centred difference of every element of ``array``."""
    problem = _gradient_problem(analytic, array.shape)
    if problem:
        return GradientRow(name, float("nan"), tolerance, 0, 0, problem)
    numerical, measures = _gradient_of(probe, array)
    mask = _kink_mask(measures, numerical, probe.noise(), tolerance / 10) if kinks != "ignore" else None
    if mask is not None and mask.any() and kinks == "raise":
        raise ValueError(f"{int(mask.sum())} element(s) lie within 2h of a kink: {_kink_list(name, mask)}")
    return _compare_gradient(name, analytic, numerical, tolerance, probe.noise(), mask)


def _directional_row(name, analytic, copies, i, output, dout, directions, seed, h, kinks, tolerance):
    """Compare ``directions`` random directional derivatives of one argument with vdot(grad, v)."""
    x = copies[i]
    problem = _gradient_problem(analytic, x.shape)
    if problem:
        return GradientRow(name, float("nan"), tolerance, 0, 0, problem)
    a = analytic.astype(np.float64)
    rng = np.random.default_rng([seed, i])
    errors, skipped, noise = [], 0, 0.0
    for _ in range(directions):
        for _attempt in range(3):  # a direction along a kink is redrawn
            v = rng.standard_normal(x.shape)
            v /= max(np.linalg.norm(v), 1e-300)
            t = np.zeros(1)

            def along():
                moved = list(copies)
                moved[i] = x + t[0] * v  # noqa: B023 (called within this iteration only)
                return output(moved)

            probe = Probe(along, dout, kinks != "ignore", h)
            numerical, measure = probe.at(t, (0,))
            noise = max(noise, probe.noise())
            if kinks == "ignore" or not measure > tolerance / 10 * np.linalg.norm(a) + 16 * probe.noise():
                errors.append((float(np.vdot(a, v)), numerical))
                break
            if kinks == "raise":
                raise ValueError(f"{name}: a random direction crosses a kink within 2h")
            skipped += 1
    if not errors:
        return GradientRow(name, float("nan"), tolerance, 0, skipped)
    # |<grad, v>| <= |grad| for a unit v: the error is relative to the largest possible derivative
    scale = max(float(np.linalg.norm(a)), max(abs(n) for _, n in errors), noise * 10 / tolerance)
    err = max(abs(av - n) for av, n in errors) / scale
    return GradientRow(name, float(err), tolerance, len(errors), skipped)


def check_model_gradients(
    model,
    X,
    y=None,
    *,
    params=None,
    h=1e-5,
    tolerance=GRAD_TOL,
    directions=None,
    kinks="skip",
    seed=0,
    raise_on_failure=True,
):
    """Check ``loss, grads = model.loss(X, y)`` against centred numerical gradients of the loss.

    ``model`` has a ``params`` dict of float64 arrays (a float32 parameter is refused: build
    the model with ``dtype=np.float64``, as CS231n's notebooks do for their checks) and a
    ``loss(X, y)`` method returning ``(loss, grads)``. Each parameter in ``params`` (default:
    all) is perturbed in place and restored byte for byte; a ``model.rng`` Generator
    (dropout masks) is reset before every evaluation. X and y are passed as copies.
    Options and the return value as in ``check_gradients``.
    """
    if not callable(getattr(model, "loss", None)) or not isinstance(getattr(model, "params", None), Mapping):
        raise TypeError("model must have a loss(X, y) method and a params dict")
    tolerance, kinks, h = _check_options(tolerance, directions, kinks, h)
    if not isinstance(X, np.ndarray):
        raise TypeError(f"X must be a numpy array, got {type(X).__name__}")
    names = list(model.params) if params is None else ([params] if isinstance(params, str) else list(params))
    for name in names:
        if name not in model.params:
            raise ValueError(f"params: {name!r} is not in model.params ({', '.join(model.params)})")
        p = model.params[name]
        if not isinstance(p, np.ndarray) or p.dtype != np.float64:
            got = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
            raise TypeError(
                f"model.params[{name!r}] is {got}: gradient checks need float64 parameters "
                "(build the model with dtype=np.float64)"
            )
    X, y = X.copy(), (y.copy() if isinstance(y, np.ndarray) else y)
    rng = getattr(model, "rng", None)
    state = rng.bit_generator.state if isinstance(rng, np.random.Generator) else None

    def evaluate():
        if state is not None:
            rng.bit_generator.state = state
        result = model.loss(X, y)
        if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[1], Mapping):
            raise TypeError(
                f"model.loss(X, y) must return (loss, grads) with grads a dict, got {type(result).__name__}"
            )
        return result

    def loss_value():
        return evaluate()[0]

    saved = {name: model.params[name].copy() for name in names}
    rows = []
    try:
        base, grads = evaluate()
        if float(loss_value()) != float(base):
            raise ValueError("model.loss(X, y) is not deterministic (two calls differ): fix its randomness first")
        for name in names:
            if directions is None:
                probe = Probe(loss_value, None, kinks != "ignore", h, "model.loss")
                rows.append(_element_row(name, grads.get(name), probe, model.params[name], kinks, tolerance))
            else:
                rows.append(
                    _model_directional_row(
                        model, name, grads.get(name), loss_value, directions, seed, h, kinks, tolerance, saved[name]
                    )
                )
    finally:
        for name in names:
            np.copyto(model.params[name], saved[name])
    return _finish(
        rows, [], "directions" if directions else "elements", raise_on_failure, type(model).__name__ + ".loss"
    )


def _model_directional_row(model, name, analytic, loss_value, directions, seed, h, kinks, tolerance, original):
    p = model.params[name]

    def output(moved):
        np.copyto(p, moved[0])
        return loss_value()

    try:
        return _directional_row(
            name, analytic, [original.copy()], 0, output, None, directions, seed, h, kinks, tolerance
        )
    finally:
        np.copyto(p, original)


# ------------------------------------------------------------------ configurations
def _pair_id(pair):
    return f"{pair[0]}" if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _arg(pair):
    """Equal pairs as a plain int, unequal ones as a tuple (both forms are fastconv's API)."""
    return pair[0] if pair[0] == pair[1] else tuple(pair)


def _seed_of(text):
    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class ConvConfig:
    """One convolution: x (N, C, H, W), w (F, C // groups, *kernel), b (F,) or None.

    ``kwargs`` holds what the layer is called with: ``stride`` and ``pad`` always,
    ``dilation`` and ``groups`` only when not 1, ``algorithm`` only when set (so a layer
    without those arguments can run a grid built without them). ``str(config)`` is its id.
    """

    N: int
    C: int
    H: int
    W: int
    F: int
    kernel: tuple
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    bias: bool = True
    dtype: type = np.float64
    algorithm: str | None = None

    kind = "conv"

    @property
    def out_hw(self):
        return tuple(
            conv_output_size(s, k, st, p, d)
            for s, k, st, p, d in zip((self.H, self.W), self.kernel, self.stride, self.pad, self.dilation)
        )

    @property
    def out_shape(self):
        return (self.N, self.F, *self.out_hw)

    @property
    def kwargs(self):
        kw = {"stride": _arg(self.stride), "pad": _arg(self.pad)}
        if tuple(self.dilation) != (1, 1):
            kw["dilation"] = _arg(self.dilation)
        if self.groups != 1:
            kw["groups"] = self.groups
        if self.algorithm is not None:
            kw["algorithm"] = self.algorithm
        return kw

    def arrays(self):
        """(x, w, b, dout) in ``dtype``, standard normal, seeded from the id (b None without bias)."""
        rng = np.random.default_rng(_seed_of(str(self)))
        x = rng.standard_normal((self.N, self.C, self.H, self.W)).astype(self.dtype)
        w = rng.standard_normal((self.F, self.C // self.groups, *self.kernel)).astype(self.dtype)
        b = rng.standard_normal(self.F).astype(self.dtype) if self.bias else None
        dout = rng.standard_normal(self.out_shape).astype(self.dtype)
        return x, w, b, dout

    def __str__(self):
        algorithm = f"-{self.algorithm}" if self.algorithm is not None else ""
        return (
            f"conv-k{self.kernel[0]}x{self.kernel[1]}-s{_pair_id(self.stride)}-p{_pair_id(self.pad)}"
            f"-d{_pair_id(self.dilation)}-g{self.groups}-n{self.N}-c{self.C}f{self.F}-x{self.H}x{self.W}"
            f"{'' if self.bias else '-nobias'}{algorithm}-{np.dtype(self.dtype).name}"
        )


@dataclass(frozen=True)
class PoolConfig:
    """One pooling layer: ``kind_name`` "max" or "avg" (``kind`` is "maxpool" or "avgpool"),
    x (N, C, H, W); ``stride`` None means the kernel size (and is then left out of
    ``kwargs``, so the layer's default runs). ``str(config)`` is its id."""

    kind_name: str
    N: int
    C: int
    H: int
    W: int
    kernel: tuple
    stride: tuple | None = None
    pad: tuple = (0, 0)
    dtype: type = np.float64

    @property
    def kind(self):
        return f"{self.kind_name}pool"

    @property
    def effective_stride(self):
        return self.kernel if self.stride is None else self.stride

    @property
    def out_hw(self):
        return tuple(
            conv_output_size(s, k, st, p)
            for s, k, st, p in zip((self.H, self.W), self.kernel, self.effective_stride, self.pad)
        )

    @property
    def out_shape(self):
        return (self.N, self.C, *self.out_hw)

    @property
    def kwargs(self):
        kw = {"kernel_size": _arg(self.kernel)}
        if self.stride is not None:
            kw["stride"] = _arg(self.stride)
        kw["pad"] = _arg(self.pad)
        return kw

    def arrays(self):
        """(x, dout) in ``dtype``, standard normal (no ties), seeded from the id."""
        rng = np.random.default_rng(_seed_of(str(self)))
        x = rng.standard_normal((self.N, self.C, self.H, self.W)).astype(self.dtype)
        return x, rng.standard_normal(self.out_shape).astype(self.dtype)

    def __str__(self):
        stride = "None" if self.stride is None else _pair_id(self.stride)
        return (
            f"{self.kind_name}pool-k{self.kernel[0]}x{self.kernel[1]}-s{stride}-p{_pair_id(self.pad)}"
            f"-n{self.N}-c{self.C}-x{self.H}x{self.W}-{np.dtype(self.dtype).name}"
        )


# (N, C, H, W, F, kernel, stride, pad, dilation, groups, bias): the awkward cases, always in the grid.
AWKWARD_CONV = [
    (2, 4, 7, 9, 2, (3, 5), (2, 2), (1, 1), (1, 1), 2, True),  # non-square kernel and image, groups
    (1, 1, 5, 5, 1, (1, 1), (1, 1), (0, 0), (1, 1), 1, False),  # 1x1, one channel, batch 1
    (1, 1, 1, 1, 1, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),  # a single pixel
    (2, 2, 2, 3, 3, (4, 5), (1, 1), (2, 2), (1, 1), 1, True),  # kernel larger than the unpadded image
    (1, 3, 1, 6, 2, (3, 2), (1, 2), (1, 0), (1, 1), 1, False),  # one image row, padding only in h
    (2, 2, 9, 8, 2, (3, 3), (3, 3), (3, 3), (2, 2), 1, True),  # stride 3, pad 3, dilation 2
    (1, 2, 8, 7, 4, (2, 3), (1, 3), (0, 2), (2, 1), 2, False),  # per-axis stride/pad/dilation, Cg = 1
    (3, 1, 5, 5, 2, (3, 3), (2, 2), (0, 0), (1, 1), 1, True),  # odd size, exact fit with stride 2
    (2, 2, 6, 6, 3, (3, 3), (2, 2), (0, 0), (1, 1), 1, True),  # last row and column left over
    (1, 4, 4, 6, 2, (4, 6), (1, 1), (0, 0), (1, 1), 2, True),  # kernel equals the image: 1x1 output
    (2, 2, 3, 3, 2, (3, 3), (1, 1), (3, 3), (2, 2), 2, False),  # mostly padding, dilated
    (1, 2, 5, 4, 4, (1, 2), (3, 1), (3, 0), (1, 2), 1, True),  # pad larger than the kernel
]

# (N, C, H, W, kernel, stride or None, pad): pooling's awkward cases.
AWKWARD_POOL = [
    (2, 3, 4, 4, (2, 2), None, (0, 0)),  # the classic 2x2/2
    (1, 1, 5, 7, (3, 3), (2, 2), (1, 1)),  # overlapping, padded, odd sizes
    (2, 2, 6, 5, (3, 2), (1, 1), (1, 1)),  # non-square, stride 1: heavy overlap
    (1, 2, 1, 1, (1, 1), None, (0, 0)),  # one pixel
    (1, 1, 1, 4, (2, 3), (1, 2), (1, 1)),  # kernel taller than the image, fits with pad
    (3, 1, 7, 6, (4, 4), (3, 3), (2, 2)),  # pad = kernel // 2, stride 3
    (1, 2, 6, 6, (6, 6), None, (0, 0)),  # global pooling
    (2, 1, 9, 5, (3, 1), (2, 1), (1, 0)),  # per-axis kernel/stride/pad
]


def _check_count(n, name="n"):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= 100_000:
        raise ValueError(f"{name} must be an int in [0, 100000], got {n!r}")
    return int(n)


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_dtypes(dtypes):
    if not isinstance(dtypes, (tuple, list)) or not dtypes:
        raise TypeError(f"dtypes must be a non-empty tuple of float32/float64, got {dtypes!r}")
    for d in dtypes:
        tol(d)  # TypeError unless float32 or float64
    return [np.dtype(d).type for d in dtypes]


def _restrict_conv(geo, dilation, groups, per_axis, optional_bias, padding):
    """An awkward geometry within the space the flags allow, or None if it no longer fits."""
    N, C, H, W, F, kernel, stride, pad, dil, g, bias = geo
    if not per_axis:
        stride, pad, dil = ((stride[0],) * 2, (pad[0],) * 2, (dil[0],) * 2)
    if not dilation:
        dil = (1, 1)
    if not groups:
        g = 1
    if not padding:
        pad = (0, 0)
    if not optional_bias:
        bias = True
    geo = (N, C, H, W, F, kernel, stride, pad, dil, g, bias)
    fits = all(conv_output_size(s, k, st, p, d) >= 1 for s, k, st, p, d in zip((H, W), kernel, stride, pad, dil))
    return geo if fits else None


def conv_configs(
    n=64,
    seed=0,
    *,
    dtypes=DTYPES,
    dilation=True,
    groups=True,
    per_axis=True,
    padding=True,
    optional_bias=True,
    algorithm=None,
    max_outputs=1500,
):
    """A deterministic list of ConvConfig: ``n`` geometries (at least the awkward ones:
    non-square kernels and images, stride > 1, pad larger than half the kernel, dilation,
    groups, batch 1, one channel, a kernel larger than the unpadded input, a single pixel),
    the rest drawn from ``seed``, each in every dtype of ``dtypes``.

    The flags shrink the space for a layer that lacks a feature: ``dilation=False``,
    ``groups=False``, ``padding=False``, ``per_axis=False`` (the same stride, pad and
    dilation on both axes; kernels and images stay non-square), ``optional_bias=False``
    (always a bias). ``algorithm`` is passed through to every call. ``max_outputs`` bounds
    N * F * out_h * out_w of the drawn geometries, so that loop layers stay fast.
    """
    n = _check_count(n)
    seed = _check_seed(seed)
    dtypes = _check_dtypes(dtypes)
    flags = (dilation, groups, per_axis, optional_bias, padding)
    geometries = []
    for geo in AWKWARD_CONV:
        geo = _restrict_conv(geo, *flags)
        if geo is not None and geo not in geometries:
            geometries.append(geo)
    rng = np.random.default_rng(seed)
    attempts = 0
    while len(geometries) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"n={n}: the space these flags allow has fewer distinct geometries")
        geo = _random_conv_geometry(rng, *flags)
        N, F = geo[0], geo[4]
        oh, ow = (conv_output_size(s, k, st, p, d) for s, k, st, p, d in zip(geo[2:4], geo[5], geo[6], geo[7], geo[8]))
        if N * F * oh * ow <= max_outputs and geo not in geometries:
            geometries.append(geo)
    return [ConvConfig(*geo, dtype=dtype, algorithm=algorithm) for geo in geometries for dtype in dtypes]


def _random_conv_geometry(rng, dilation, groups, per_axis, optional_bias, padding):
    def pair(lo, hi, may_differ=True):
        a = int(rng.integers(lo, hi + 1))
        return (a, a) if rng.random() < 0.6 or not may_differ else (a, int(rng.integers(lo, hi + 1)))

    g = int(rng.choice([1, 2])) if groups else 1
    C = g * int(rng.integers(1, 4))
    F = g * int(rng.integers(1, 4))
    kernel = pair(1, 5)
    stride = pair(1, 3, per_axis)
    pad = pair(0, 3, per_axis) if padding else (0, 0)
    dil = pair(1, 2, per_axis) if dilation else (1, 1)
    size = []
    for k, p, d in zip(kernel, pad, dil):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)  # the dilated kernel must fit the padded input
        size.append(int(rng.integers(smallest, smallest + 7)))
    N = int(rng.choice([1, 2, 3]))
    bias = bool(rng.random() < 0.5) if optional_bias else True
    return (N, C, size[0], size[1], F, kernel, stride, pad, dil, g, bias)


def pool_configs(
    n=40, seed=0, *, kinds=("max", "avg"), dtypes=DTYPES, per_axis=True, padding=True, default_stride=True
):
    """A deterministic list of PoolConfig: ``n`` geometries (at least the awkward ones:
    overlapping windows, padding, non-square kernels, a single pixel, global pooling, a
    kernel taller than the image), the rest drawn from ``seed``, for each kind in ``kinds``
    and each dtype. ``padding=False``, ``per_axis=False`` and ``default_stride=False``
    (always pass ``stride``) shrink the space for a layer that lacks those.
    """
    n = _check_count(n)
    dtypes = _check_dtypes(dtypes)
    if isinstance(kinds, str) or not set(kinds) <= {"max", "avg"} or not kinds:
        raise ValueError(f"kinds must be a tuple of 'max' and/or 'avg', got {kinds!r}")
    flags = (per_axis, padding, default_stride)
    geometries = []
    for geo in AWKWARD_POOL:
        geo = _restrict_pool(geo, *flags)
        if geo is not None and geo not in geometries:
            geometries.append(geo)
    rng = np.random.default_rng(_check_seed(seed) + 1)
    attempts = 0
    while len(geometries) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"n={n}: the space these flags allow has fewer distinct geometries")
        geo = _random_pool_geometry(rng, *flags)
        if geo not in geometries:
            geometries.append(geo)
    return [PoolConfig(kind, *geo, dtype=dtype) for kind in kinds for geo in geometries for dtype in dtypes]


def _restrict_pool(geo, per_axis, padding, default_stride):
    N, C, H, W, kernel, stride, pad = geo
    if not padding:
        pad = (0, 0)
    if stride is None and not default_stride:
        stride = kernel
    if not per_axis:
        stride = None if stride is None else (stride[0],) * 2
        pad = (pad[0],) * 2
    if any(p > k // 2 for p, k in zip(pad, kernel)):
        return None
    st = kernel if stride is None else stride
    fits = all(conv_output_size(s, k, t, p) >= 1 for s, k, t, p in zip((H, W), kernel, st, pad))
    return (N, C, H, W, kernel, stride, pad) if fits else None


def _random_pool_geometry(rng, per_axis, padding, default_stride):
    a = int(rng.integers(1, 5))
    kernel = (a, a) if rng.random() < 0.6 else (a, int(rng.integers(1, 5)))
    r = rng.random()
    if r < 0.25 and default_stride:
        stride = None
    elif r < 0.65:  # overlapping windows
        stride = tuple(int(rng.integers(1, k + 1)) for k in kernel)
    else:
        stride = tuple(int(rng.integers(1, 4)) for _ in kernel)
    pad = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel) if padding else (0, 0)
    if not per_axis:
        stride = None if stride is None else (stride[0],) * 2
        pad = (min(pad[0], kernel[0] // 2, kernel[1] // 2),) * 2
    size = [int(rng.integers(max(1, k - 2 * p), max(1, k - 2 * p) + 6)) for k, p in zip(kernel, pad)]
    return (int(rng.choice([1, 2, 3])), int(rng.integers(1, 4)), size[0], size[1], kernel, stride, pad)


def conv_config_strategy(
    *,
    dtypes=DTYPES,
    dilation=True,
    groups=True,
    per_axis=True,
    padding=True,
    optional_bias=True,
    algorithm=None,
    max_size=8,
):
    """A hypothesis strategy of ConvConfig over the space of ``conv_configs`` (same flags);
    every draw fits, and a failure shrinks towards one image, one channel, a 1x1 kernel,
    stride 1, no padding, float32. Needs hypothesis (ImportError otherwise)."""
    st = _hypothesis()
    dtypes = _check_dtypes(dtypes)

    @st.composite
    def configs(draw):
        def pair(lo, hi, may_differ=True):
            a = draw(st.integers(lo, hi))
            return (a, draw(st.integers(lo, hi)) if may_differ else a)

        g = draw(st.integers(1, 2)) if groups else 1
        C, F = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))
        kernel = pair(1, 5)
        stride = pair(1, 3, per_axis)
        pad = pair(0, 3, per_axis) if padding else (0, 0)
        dil = pair(1, 2, per_axis) if dilation else (1, 1)
        size = []
        for k, p, d in zip(kernel, pad, dil):
            smallest = max(1, d * (k - 1) + 1 - 2 * p)
            size.append(draw(st.integers(smallest, smallest + max_size)))
        return ConvConfig(
            draw(st.integers(1, 3)),
            C,
            size[0],
            size[1],
            F,
            kernel,
            stride,
            pad,
            dil,
            g,
            draw(st.booleans()) if optional_bias else True,
            draw(st.sampled_from(dtypes)),
            algorithm,
        )

    return configs()


def pool_config_strategy(
    *, kinds=("max", "avg"), dtypes=DTYPES, per_axis=True, padding=True, default_stride=True, max_size=8
):
    """A hypothesis strategy of PoolConfig over the space of ``pool_configs`` (same flags;
    every draw fits)."""
    st = _hypothesis()
    dtypes = _check_dtypes(dtypes)
    if isinstance(kinds, str) or not set(kinds) <= {"max", "avg"} or not kinds:
        raise ValueError(f"kinds must be a tuple of 'max' and/or 'avg', got {kinds!r}")

    @st.composite
    def configs(draw):
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        if per_axis:
            stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            pad = tuple(draw(st.integers(0, k // 2)) for k in kernel) if padding else (0, 0)
        else:
            stride = (draw(st.integers(1, 3)),) * 2
            pad = (draw(st.integers(0, min(kernel) // 2)),) * 2 if padding else (0, 0)
        if default_stride and draw(st.booleans()):
            stride = None
        size = [draw(st.integers(max(1, k - 2 * p), max(1, k - 2 * p) + max_size)) for k, p in zip(kernel, pad)]
        return PoolConfig(
            draw(st.sampled_from(list(kinds))),
            draw(st.integers(1, 3)),
            draw(st.integers(1, 3)),
            size[0],
            size[1],
            kernel,
            stride,
            pad,
            draw(st.sampled_from(dtypes)),
        )

    return configs()


def _hypothesis():
    try:
        from hypothesis import strategies
    except ImportError:
        raise ImportError("the config strategies need hypothesis: pip install hypothesis") from None
    return strategies


# ------------------------------------------------------------------ equivalence
_LAYER_NAMES = {
    "conv": ("conv_forward", "conv_backward"),
    "maxpool": ("max_pool_forward", "max_pool_backward"),
    "avgpool": ("avg_pool_forward", "avg_pool_backward"),
}


def _layer_pair(impl, kind, what):
    """(forward, backward) of ``impl``: a pair of callables, or an object (a module) with the
    kind's function names."""
    if isinstance(impl, tuple) and len(impl) == 2 and all(callable(f) for f in impl):
        return impl
    names = _LAYER_NAMES[kind]
    if all(callable(getattr(impl, n, None)) for n in names):
        return tuple(getattr(impl, n) for n in names)
    raise TypeError(
        f"{what} must be a (forward, backward) pair of callables or a module with "
        f"{names[0]} and {names[1]}, got {type(impl).__name__}"
    )


@dataclass(frozen=True)
class Mismatch:
    config: str
    what: str  # "out", "dx", "dw", "db", "forward", "backward", "x" (modified in place), ...
    problem: str
    error: float | None = None


class EquivalenceReport:
    """What ``check_equivalent`` found: ``checked`` configurations, ``mismatches``
    (config id, array, problem), the largest relative error per array (``worst``)."""

    def __init__(self, checked, mismatches, worst):
        self.checked, self.mismatches, self.worst = checked, list(mismatches), dict(worst)

    @property
    def ok(self):
        return not self.mismatches

    def __str__(self, limit=30):
        bad = sorted({m.config for m in self.mismatches})
        lines = [f"{len(bad)} of {self.checked} configurations differ from the reference"]
        width = max([len(m.config) for m in self.mismatches[:limit]] + [13])
        for m in self.mismatches[:limit]:
            lines.append(f"  {m.config:<{width}}  {m.what:<8} {m.problem}")
        if len(self.mismatches) > limit:
            lines.append(f"  ... and {len(self.mismatches) - limit} more")
        if self.worst:
            lines.append("largest relative errors: " + ", ".join(f"{k} {v:.2e}" for k, v in self.worst.items()))
        return "\n".join(lines)

    __repr__ = __str__


def _grad_names(config):
    return ("dx", "dw", "db") if config.kind == "conv" else ("dx",)


def check_equivalent(candidate, reference, configs, *, tolerance=None, backward=True, raise_on_failure=True):
    """Run ``candidate`` and ``reference`` on every configuration, forward and backward, and
    compare: each output and gradient must have the reference's shape and dtype (the
    config's) and a relative error below ``tolerance`` (default ``TOL`` of the dtype; a
    number, or a dict per dtype).

    ``candidate`` / ``reference``: a ``(forward, backward)`` pair, or a module with
    ``conv_forward``/``conv_backward`` (ConvConfig), ``max_pool_*`` or ``avg_pool_*``
    (PoolConfig), called as ``forward(x, w, b, **config.kwargs)`` or
    ``forward(x, **config.kwargs)`` and ``backward(dout, cache)``. The candidate's
    exceptions, a wrong return form, and inputs it modified in place are reported as
    mismatches of that configuration; the reference's exceptions propagate.

    Returns an EquivalenceReport, or raises EquivalenceError listing every mismatch with
    its configuration's id (unless ``raise_on_failure=False``).
    """
    if isinstance(configs, (ConvConfig, PoolConfig)):
        configs = [configs]
    if not isinstance(configs, Sequence) or not all(isinstance(c, (ConvConfig, PoolConfig)) for c in configs):
        raise TypeError("configs must be a list of ConvConfig/PoolConfig (from conv_configs or pool_configs)")
    if not configs:
        raise ValueError("configs is empty")
    mismatches, worst = [], {}
    for config in configs:
        cand = _layer_pair(candidate, config.kind, "candidate")
        ref = _layer_pair(reference, config.kind, "reference")
        found = _compare_on(config, cand, ref, _tolerance_for(tolerance, config.dtype), backward, worst)
        mismatches.extend(Mismatch(str(config), *m) for m in found)
    report = EquivalenceReport(len(configs), mismatches, worst)
    if raise_on_failure and not report.ok:
        raise EquivalenceError(str(report))
    return report


def _tolerance_for(tolerance, dtype):
    if tolerance is None:
        return tol(dtype)
    if isinstance(tolerance, Mapping):
        for key, value in tolerance.items():
            if np.dtype(key) == np.dtype(dtype):
                return float(value)
        raise ValueError(f"tolerance has no entry for {np.dtype(dtype).name}")
    return check_number(tolerance, "tolerance", lambda v: v > 0, "a positive number or a dict per dtype")


def _compare_on(config, cand, ref, tolerance, backward, worst):
    """The mismatches (what, problem, error) of one configuration."""
    if config.kind == "conv":
        x, w, b, dout = config.arrays()
        inputs, names = (x, w, b), ("x", "w", "b")
    else:
        x, dout = config.arrays()
        inputs, names = (x,), ("x",)
    found = []
    try:
        out_r, cache_r = ref[0](*[None if a is None else a.copy() for a in inputs], **config.kwargs)
        grads_r = _as_grads(ref[1](dout.copy(), cache_r), config) if backward else ()
    except Exception as e:
        if hasattr(e, "add_note"):
            e.add_note(f"while running the reference on {config}")
        raise
    if out_r.shape != config.out_shape:
        raise ValueError(f"{config}: the reference's out has shape {out_r.shape}, expected {config.out_shape}")
    mine = [None if a is None else a.copy() for a in inputs]
    my_dout = dout.copy()
    try:
        result = cand[0](*mine, **config.kwargs)
    except Exception as e:  # noqa: BLE001 (any error of the candidate is reported, with its configuration)
        return [("forward", f"raised {type(e).__name__}: {_one_line(e)}", None)]
    if not isinstance(result, tuple) or len(result) != 2:
        return [("forward", f"must return (out, cache), got {type(result).__name__}", None)]
    out, cache = result
    _record(found, worst, "out", out, out_r, config.dtype, tolerance)
    if backward:
        try:
            grads = _as_grads(cand[1](my_dout, cache), config)
        except Exception as e:  # noqa: BLE001 (any error of the candidate is reported, with its configuration)
            found.append(("backward", f"raised {type(e).__name__}: {_one_line(e)}", None))
            grads = None
        if grads is not None:
            for name, g, r in zip(_grad_names(config), grads, grads_r):
                if r is None:
                    if g is not None:
                        found.append((name, f"expected None (no bias), got {type(g).__name__}", None))
                elif g is None:
                    found.append((name, "backward returned None", None))
                else:
                    _record(found, worst, name, g, r, config.dtype, tolerance)
    for name, before, after in zip(names, inputs, mine):
        if before is not None and (after.shape != before.shape or after.tobytes() != before.tobytes()):
            found.append((name, "modified in place by the candidate", None))
    if my_dout.tobytes() != dout.tobytes():
        found.append(("dout", "modified in place by the candidate's backward", None))
    return found


def _as_grads(grads, config):
    expected = len(_grad_names(config))
    if expected == 1 and not isinstance(grads, (tuple, list)):
        return (grads,)
    if not isinstance(grads, (tuple, list)) or len(grads) != expected:
        raise TypeError(f"backward must return {', '.join(_grad_names(config))}, got {type(grads).__name__}")
    return tuple(grads)


def _one_line(e):
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def _record(found, worst, name, got, want, dtype, tolerance):
    problem, err = _describe_mismatch(got, want, dtype, tolerance)
    if err is not None and not np.isnan(err):
        worst[name] = max(worst.get(name, 0.0), err)
    if problem is not None:
        found.append((name, problem, err))


# ------------------------------------------------------------------ adjoint
def check_adjoint(forward, adjoint, x, y, *, dtype=np.float64, seed=0, tolerance=None):
    """Check ``<forward(x), y> == <x, adjoint(y)>``: that two linear maps are each other's
    transpose (im2col and col2im, a gather and its scatter-add, a conv's forward and its dx).

    ``x`` and ``y`` are arrays or shapes (then seeded standard normal in ``dtype``); the maps
    get copies. The error is relative to ``sum |forward(x) * y|``, so cancellation can
    neither hide nor fake one. Returns it; raises AdjointError above ``tolerance`` (default
    ``tol`` of the dtype).
    """
    for name, fn in (("forward", forward), ("adjoint", adjoint)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    rng = np.random.default_rng(seed)
    x = _adjoint_input(x, "x", dtype, rng)
    y = _adjoint_input(y, "y", dtype, rng)
    ax = np.asarray(forward(x.copy()))
    if ax.shape != y.shape:
        raise ValueError(f"forward(x) has shape {ax.shape}, but y has shape {y.shape}")
    aty = np.asarray(adjoint(y.copy()))
    if aty.shape != x.shape:
        raise ValueError(f"adjoint(y) has shape {aty.shape}, but x has shape {x.shape}")
    ax, aty, x64, y64 = (a.astype(np.float64) for a in (ax, aty, x, y))
    lhs, rhs = np.vdot(ax, y64), np.vdot(x64, aty)
    scale = max(np.vdot(np.abs(ax), np.abs(y64)), np.vdot(np.abs(x64), np.abs(aty)))
    err = float(abs(lhs - rhs) / scale) if scale > 0 else float(abs(lhs - rhs))
    tolerance = tol(x.dtype) if tolerance is None else float(tolerance)
    if not err < tolerance:
        raise AdjointError(
            f"<A x, y> = {lhs:.10g} but <x, AT y> = {rhs:.10g}: relative error {err:.3g} >= {tolerance:g}"
        )
    return err


def _adjoint_input(value, name, dtype, rng):
    if isinstance(value, np.ndarray):
        if value.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be float32 or float64, got {value.dtype}")
        return value
    if isinstance(value, (tuple, list)) and all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and 0 <= n <= 1 << 20 for n in value
    ):
        if np.prod([int(n) for n in value], dtype=object) > 1 << 26:
            raise ValueError(f"{name}: shape {tuple(value)} is too large for a check")
        tol(dtype)  # TypeError unless float32 or float64
        return rng.standard_normal(tuple(int(n) for n in value)).astype(dtype)
    raise TypeError(f"{name} must be an array or a shape tuple, got {type(value).__name__}")


# ------------------------------------------------------------------ pytest plugin
def pytest_addoption(parser):
    """``fastconv_conv_configs`` / ``fastconv_pool_configs`` ini options: grid sizes."""
    parser.addini("fastconv_conv_configs", "geometries of the conv_config grid (fastconv.testing)", default="24")
    parser.addini("fastconv_pool_configs", "geometries of the pool_config grid (fastconv.testing)", default="16")


def _parametrized(metafunc, name):
    """True if the test parametrizes ``name`` itself (its own grid wins)."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc):
    """With this module as a plugin, a test taking ``conv_config`` or ``pool_config`` runs
    once per configuration of the grid (ids as ``str(config)``), unless it parametrizes
    that argument itself."""
    for name, make, option in (
        ("conv_config", conv_configs, "fastconv_conv_configs"),
        ("pool_config", pool_configs, "fastconv_pool_configs"),
    ):
        if name in metafunc.fixturenames and not _parametrized(metafunc, name):
            try:
                n = int(metafunc.config.getini(option))
            except ValueError:
                raise ValueError(f"the ini option {option} must be an int") from None
            metafunc.parametrize(name, make(n), ids=str)
