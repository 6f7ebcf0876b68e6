"""Random cases for fuzzing fastconv's conv and pooling API, and a runner that survives crashes.

Used by ``tests/engine/test_fuzz.py`` (a bounded, seeded run in CI) and by
``tests/fuzz_long.py`` (a run for a set time). Not a test module itself.

**A case** is rebuilt from its id ``(seed, index, family)`` alone, so a failure
names everything needed to reproduce it: ``python tests/fuzz_long.py --case
SEED INDEX FAMILY`` (or ``describe_case`` / ``check_case`` below). It starts from a
valid configuration (shapes, dtype, hyperparameters) and applies zero to two
*mutations*: a dtype (integer, float16, complex, object, bool, byte-swapped),
a memory layout (Fortran order, steps, read-only, negative or zero strides,
unaligned), a shape (zero-size or missing dimension, mismatched channels) or an
argument value (zero, negative, 2**31 .. 2**100, float, None, str, bool, tuple of
the wrong length, numpy scalar) for the forward call, or a bad ``dout`` for the
backward call. Each mutation says whether the call must now fail
(``must_fail``), must still give the reference answer (benign: layouts, numpy
ints) or may go either way (huge values, which are valid when another
argument compensates).

**The oracle** (``check_case``): every call either returns the reference answer
(``fastconv.naive`` on the same arguments; for the compat modules, naive on the
arguments cast to the dtype of ``w`` as their docstrings promise) within the
tolerance table of ``fastconv.testing.TOL``, with the output shape given by the
convolution formula written out here, or raises ValueError/TypeError whose
message names one of the call's arguments (``x``, ``stride``, ``conv_param``...).
``fastconv.fast`` and ``fastconv.naive`` must moreover agree: both return, or
both raise the same exception with the same message. Any other exception
(MemoryError, OverflowError, IndexError...), an argument the reference rejects
but the tested code accepts (or the reverse), a wrong answer or a change to an
input array is a failure.

**The runner** (``Runner``) executes cases in a worker subprocess (``worker_main``
of this file, started through ``fastconv.io.child``, so that it imports the same
fastconv as the parent whatever the current directory) that reads case ids on
stdin and writes one JSON result per line. If the worker dies (segfault, abort) or a case exceeds its time limit,
the runner records that case as ``crash`` or ``hang`` with the worker's last
stderr lines (faulthandler's traceback) and starts a fresh worker for the
remaining cases. The worker's address space is capped (``RLIMIT_AS``, 4 GiB)
so that an absurd allocation fails fast with MemoryError instead of exhausting
the machine; a MemoryError counts as a right answer (status ``memory``) only
for a valid call whose output or im2col matrix needs more than 2 GiB, and as a
failure otherwise. Workers run with 2 OpenMP/BLAS threads unless
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say otherwise.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import select
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from fastconv.io.child import python_code
from fastconv.testing import TOL  # the one tolerance table

import _helpers

HERE = os.path.dirname(os.path.abspath(__file__))

FAMILIES = (
    "conv",
    "max_pool",
    "avg_pool",
    "cs231n_conv",
    "cs231n_conv_relu",
    "cs231n_conv_relu_pool",
    "cs231n_conv_bn_relu",
    "cs231n_max_pool",
    "sichkar_conv",
    "sichkar_max_pool",
)

#: Values far beyond any real layer; valid only when another argument compensates
#: (a huge pad with a huge stride), else they must be rejected by validation.
HUGE = (2**31 - 1, 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1, 2**63, 2**64, 2**100)
NUMPY_INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.intp)
BAD_DTYPES = (np.int32, np.int64, np.float16, np.complex64, np.complex128, object, np.bool_, np.uint8)

WORKER_MEMORY_LIMIT = 4 << 30


def out_size(size, kernel, stride, pad, dilation=1):
    """_helpers.out_size, or None for a stride < 1 (which has no output size)."""
    return None if stride < 1 else _helpers.out_size(size, kernel, stride, pad, dilation)


# ============================================================================ building blocks
class Mutations:
    """The record of what a case changed: notes for humans and the expected outcome."""

    def __init__(self):
        self.notes = []
        self.must_fail = False
        self.maybe = False
        self.kinds = []

    def add(self, kind, note, outcome):
        """outcome: 'fail' (the call must be rejected), 'maybe' (valid or rejected) or 'ok' (benign)."""
        self.kinds.append(kind)
        self.notes.append(note)
        if outcome == "fail":
            self.must_fail = True
        elif outcome == "maybe":
            self.maybe = True


def _data(rng, shape, dtype, special=False):
    """Random normal data; sometimes small integers (ties in max pooling) or a few NaN/Inf."""
    r = rng.random()
    if r < 0.15:
        a = rng.integers(-2, 3, size=shape).astype(dtype)
    else:
        a = rng.standard_normal(shape).astype(dtype)
    if special and a.size and rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 3))):
            a.flat[int(rng.integers(a.size))] = rng.choice([np.nan, np.inf, -np.inf])
    return a


# ---------------------------------------------------------------------------- memory layouts
def _fortran(a, rng):
    return np.asfortranarray(a)


def _strided(a, rng):
    step = int(rng.integers(2, 4))
    big = np.full(tuple(step * s + 1 for s in a.shape), 7.0, dtype=a.dtype)
    view = big[tuple(slice(1, None, step) for _ in a.shape)]
    view[...] = a
    return view


def _read_only(a, rng):
    a = a.copy()
    a.flags.writeable = False
    return a


def _negative(a, rng):
    return np.flip(np.flip(a).copy())


def _zero_strides(a, rng):
    """Broadcast along one axis (stride 0, read-only): same shape, repeated values."""
    if a.ndim == 0 or a.size == 0:
        return a
    axis = int(rng.integers(a.ndim))
    return np.broadcast_to(np.take(a, [0], axis=axis), a.shape)


def _transposed_copy(a, rng):
    """Same values, a non-contiguous view of a transposed buffer."""
    if a.ndim < 2:
        return a
    return np.ascontiguousarray(a.T).T


def _unaligned(a, rng):
    """A C-contiguous array whose data pointer is not a multiple of its itemsize."""
    buf = np.zeros(a.nbytes + a.itemsize + 1, dtype=np.uint8)
    view = buf[1 : 1 + a.nbytes].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


LAYOUTS = {
    "fortran": _fortran,
    "strided": _strided,
    "read-only": _read_only,
    "negative-strides": _negative,
    "zero-strides": _zero_strides,
    "transposed": _transposed_copy,
    "unaligned": _unaligned,
}


def _layout(m, rng, name, a):
    kind = list(LAYOUTS)[int(rng.integers(len(LAYOUTS)))]
    m.add("layout", f"{name}: {kind} layout", "ok")
    return LAYOUTS[kind](a, rng)


# ---------------------------------------------------------------------------- array mutations
def _mutate_array(m, rng, name, a, other_float="fail", allow_none=False, shape_outcome=None, integers="fail"):
    """One random change to array argument ``name``; returns the new value.

    other_float: outcome of the other float dtype ('ok' where the compat modules cast it).
    integers: outcome of an integer or bool dtype ('ok' where the compat modules convert it), or
        None to draw no such dtype.
    allow_none: None is a valid value (a missing bias).
    shape_outcome(axis, new_size): 'ok', 'fail' or 'maybe' for a changed size (default 'fail').
    """
    r = int(rng.integers(8))
    if r == 0:
        choices = [d for d in BAD_DTYPES if integers is not None or np.dtype(d).kind not in "biu"]
        dt = choices[int(rng.integers(len(choices)))]
        m.add("dtype", f"{name}: dtype {np.dtype(dt).name}", integers if np.dtype(dt).kind in "biu" else "fail")
        with np.errstate(invalid="ignore"):  # NaN and inf have no integer value
            return a.astype(dt)
    if r == 1:
        other = np.float64 if a.dtype == np.float32 else np.float32
        m.add("dtype", f"{name}: other float dtype {np.dtype(other).name}", other_float)
        return a.astype(other)
    if r == 2:
        m.add("dtype", f"{name}: byte-swapped {a.dtype.name}", "maybe")
        return a.astype(a.dtype.newbyteorder())
    if r == 3:
        choice = int(rng.integers(6))
        value = [None, a.tolist(), 1.0, "x", tuple(a.shape), np.float64(1.0)][choice]
        desc = ["None", "a list", "a float", "a str", "a tuple", "a numpy float"][choice]
        m.add("type", f"{name}: {desc}", "ok" if (value is None and allow_none) else "fail")
        return value
    if r == 4:  # rank
        if rng.random() < 0.5:
            m.add("shape", f"{name}: extra leading axis", "fail")
            return a[None]
        m.add("shape", f"{name}: one axis fewer", "fail")
        return _data(rng, a.shape[1:], a.dtype)
    if r == 5:  # a size changed (zero, +1, -1)
        axis = int(rng.integers(a.ndim))
        shape = list(a.shape)
        delta = [-shape[axis], 1, -1][int(rng.integers(3))]
        shape[axis] = max(0, shape[axis] + delta)
        if tuple(shape) == a.shape:
            shape[axis] += 1
        outcome = "fail" if shape_outcome is None else shape_outcome(axis, shape[axis])
        m.add("shape", f"{name}: shape {tuple(a.shape)} -> {tuple(shape)}", outcome)
        return _data(rng, tuple(shape), a.dtype)
    return _layout(m, rng, name, a)


# ---------------------------------------------------------------------------- hyperparameter values
def _spell(rng, pair_value, allow_int=True):
    """A valid hyperparameter written one of the accepted ways: int, tuple, list, numpy ints."""
    h, w = pair_value
    r = int(rng.integers(5))
    if r == 0 and h == w and allow_int:
        return int(h)
    if r == 1:
        return [int(h), int(w)]
    if r == 2:
        t = NUMPY_INTS[int(rng.integers(len(NUMPY_INTS)))]
        return (t(h), t(w)) if (h != w or not allow_int) else t(h)
    return (int(h), int(w))


def _bad_value(rng, minimum, smallest="maybe", none="fail"):
    """(value, outcome, note) for a hyperparameter that must be >= minimum.

    smallest: the outcome of ``minimum`` itself (valid for a stride, maybe not for a pad);
    none: the outcome of None (a pooling stride may be None)."""
    r = int(rng.integers(11))
    if r == 0:
        v = minimum - 1 - int(rng.choice([0, 1, 2**40]))
        return v, "fail", f"{v}"
    if r == 1:
        return 0, (smallest if minimum == 0 else "fail"), "0"
    if r <= 3:
        v = int(rng.choice(HUGE))
        t = int(rng.integers(3))
        if t == 1:
            return ((v, 1), "maybe", f"({v}, 1)") if rng.random() < 0.5 else ((1, v), "maybe", f"(1, {v})")
        if t == 2 and v < 2**64:
            return np.uint64(v), "maybe", f"np.uint64({v})"
        return v, "maybe", f"{v}"
    if r == 4:
        v = [1.0, 2.5, float("nan"), float("inf"), np.float64(1.0), np.float32(2.0)][int(rng.integers(6))]
        return v, "fail", repr(v)
    if r == 5:
        return None, none, "None"
    if r == 6:
        v = [True, np.bool_(True), "1", b"1", 1 + 0j][int(rng.integers(5))]
        return v, "fail", repr(v)
    if r == 7:
        v = [(), (1,), (1, 1, 1), ((1, 1), 1), [1, None], (1, 1.5), {"h": 1, "w": 1}][int(rng.integers(7))]
        return v, "fail", repr(v)
    if r == 8:
        v = [np.array(1), np.array([1, 1]), np.array([[1, 1]])][int(rng.integers(3))]
        return v, "maybe", f"array {v.tolist()!r}"
    if r == 9:
        t = [np.int8, np.int16, np.int64][int(rng.integers(3))]
        return t(-1), "fail", f"{t.__name__}(-1)"
    return minimum, smallest, f"{minimum} (smallest allowed)"


def _mutate_pair(m, rng, name, minimum, smallest="maybe", none="fail"):
    """A mutated value for hyperparameter ``name`` (an int or (h, w) pair >= minimum)."""
    value, outcome, note = _bad_value(rng, minimum, smallest, none)
    m.add("value", f"{name}={note}", outcome)
    return value


# ============================================================================ the cases
@dataclass
class Impl:
    """One implementation's calls: forward(*args, **kwargs), then backward(dout, cache)."""

    label: str
    forward: object
    args: tuple
    kwargs: dict
    backward: object = None
    dout: object = None
    out_dtype: object = None  # dtypes of forward out / backward results (None: no check)
    grad_dtypes: tuple = ()
    forward_names: tuple = ()  # argument names of the calls, for the message check
    backward_names: tuple = ("dout", "cache")
    backward_kwargs: dict = field(default_factory=dict)


@dataclass
class Case:
    seed: int
    index: int
    family: str
    phase: str  # "forward" or "backward"
    mutations: Mutations
    impls: list  # the implementations under test; impls[0] is the reference
    compute_dtype: object  # whose tolerance applies
    out_shape: tuple  # from the formula (None if the base config is invalid)
    grad_shapes: tuple = ()
    functions: list = field(default_factory=list)  # qualified names called, for coverage
    base: str = ""  # the valid configuration the mutations started from
    big_bytes: int = 0  # the largest array the call legitimately needs (0: unknown)
    loose: bool = False  # an ill-conditioned composite (batchnorm): 10x tolerance, gradients scaled together
    workspace_bytes: int = 0  # if set, fast.WORKSPACE_BYTES during the case (small: many chunks)
    magnitudes: object = None  # stage -> per-result sums of |terms| (conv only), for a second look

    @property
    def id(self):
        return (self.seed, self.index, self.family)

    def describe(self):
        muts = "; ".join(self.mutations.notes) or "no mutation"
        return f"case {self.seed} {self.index} {self.family} [{self.phase}] {self.base}: {muts}"


def case_rng(seed, index):
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _conv_base(rng, groups_ok=True, dilation_ok=True):
    big = rng.random() < 0.08
    dtype = np.float32 if rng.random() < 0.5 else np.float64
    groups = int(rng.choice([1, 1, 1, 2, 3])) if groups_ok else 1
    cmax = 5 if big else 3
    C = groups * int(rng.integers(1, cmax))
    F = groups * int(rng.integers(1, cmax))
    if groups_ok and rng.random() < 0.1:  # depthwise
        groups = C = F = int(rng.integers(1, 5))
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    sh, sw = (int(v) for v in rng.integers(1, 4, 2))
    ph, pw = (int(v) for v in rng.integers(0, 4, 2))
    dh, dw = (int(v) for v in rng.integers(1, 3, 2)) if dilation_ok else (1, 1)
    extra = 20 if big else 7
    H = max(1, dh * (kh - 1) + 1 - 2 * ph) + int(rng.integers(0, extra))
    W = max(1, dw * (kw - 1) + 1 - 2 * pw) + int(rng.integers(0, extra))
    N = int(rng.choice([0, 1, 1, 2, 2, 3])) if not big else int(rng.integers(1, 4))
    return dict(
        dtype=dtype,
        N=N,
        C=C,
        H=H,
        W=W,
        F=F,
        groups=groups,
        kernel=(kh, kw),
        stride=(sh, sw),
        pad=(ph, pw),
        dilation=(dh, dw),
        bias=rng.random() < 0.75,
    )


def _conv_out_shape(c):
    oh = out_size(c["H"], c["kernel"][0], c["stride"][0], c["pad"][0], c["dilation"][0])
    ow = out_size(c["W"], c["kernel"][1], c["stride"][1], c["pad"][1], c["dilation"][1])
    return (c["N"], c["F"], oh, ow)


def _conv_desc(c):
    return (
        f"x({c['N']},{c['C']},{c['H']},{c['W']}) w({c['F']},{c['C'] // c['groups']},{c['kernel'][0]},"
        f"{c['kernel'][1]}) {'bias' if c['bias'] else 'nobias'} s{c['stride']} p{c['pad']} "
        f"d{c['dilation']} g{c['groups']} {np.dtype(c['dtype']).name}"
    )


def _pool_base(rng):
    big = rng.random() < 0.08
    dtype = np.float32 if rng.random() < 0.5 else np.float64
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    stride = None if rng.random() < 0.3 else tuple(int(v) for v in rng.integers(1, 4, 2))
    ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
    extra = 60 if big else 7
    H = max(1, kh - 2 * ph) + int(rng.integers(0, extra))
    W = max(1, kw - 2 * pw) + int(rng.integers(0, extra))
    N = int(rng.choice([0, 1, 1, 2, 3])) if not big else int(rng.integers(2, 5))
    C = int(rng.integers(1, 9 if big else 4))
    return dict(dtype=dtype, N=N, C=C, H=H, W=W, kernel=(kh, kw), stride=stride, pad=(ph, pw))


def _pool_out_shape(c):
    s = c["stride"] or c["kernel"]
    return (
        c["N"],
        c["C"],
        out_size(c["H"], c["kernel"][0], s[0], c["pad"][0]),
        out_size(c["W"], c["kernel"][1], s[1], c["pad"][1]),
    )


def _pool_desc(c):
    return (
        f"x({c['N']},{c['C']},{c['H']},{c['W']}) k{c['kernel']} s{c['stride']} p{c['pad']} {np.dtype(c['dtype']).name}"
    )


def _dout_mutation(m, rng, dout, other_float_ok=False):
    """A (possibly) bad upstream gradient for a backward call."""
    r = rng.random()
    if r < 0.3:
        return dout
    return _mutate_array(m, rng, "dout", dout, other_float="ok" if other_float_ok else "fail")


def _x_shape_outcome(conv):
    """A changed size of x: any N; C only for pooling (a conv's w fixes C); H, W maybe (the kernel
    may no longer fit); zero C, H or W never."""

    def outcome(axis, size):
        if axis == 0:
            return "ok"
        if size == 0:
            return "fail"
        if axis == 1:
            return "fail" if conv else "ok"
        return "maybe"

    return outcome


def _w_shape_outcome(groups, bias):
    """A changed size of w: F only without a bias and when groups divides it; never C // groups
    or zero; kh, kw maybe."""

    def outcome(axis, size):
        if size == 0 or axis == 1:
            return "fail"
        if axis == 0:
            return "ok" if (not bias and size % groups == 0) else "fail"
        return "maybe"

    return outcome


def as_pair(v):
    """(h, w) ints if ``v`` is an int or a pair of ints (as fastconv accepts them), else None."""
    import numbers

    items = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(items) != 2:
        return None
    if any(isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral) for i in items):
        return None
    return int(items[0]), int(items[1])


def conv_expected_shape(x, w, stride, pad, dilation=1):
    """The output shape the formula gives for these arguments (None if they are not well-formed)."""
    s, p, d = as_pair(stride), as_pair(pad), as_pair(dilation)
    if None in (s, p, d) or getattr(x, "ndim", 0) != 4 or getattr(w, "ndim", 0) != 4:
        return None
    shape = (
        x.shape[0],
        w.shape[0],
        out_size(x.shape[2], w.shape[2], s[0], p[0], d[0]),
        out_size(x.shape[3], w.shape[3], s[1], p[1], d[1]),
    )
    return None if None in shape else shape


def pool_expected_shape(x_shape, kernel, stride, pad):
    k, p = as_pair(kernel), as_pair(pad)
    s = k if stride is None else as_pair(stride)
    if None in (k, s, p) or len(x_shape) != 4:
        return None
    shape = (x_shape[0], x_shape[1], out_size(x_shape[2], k[0], s[0], p[0]), out_size(x_shape[3], k[1], s[1], p[1]))
    return None if None in shape else shape


def conv_work_bytes(x, w, out_shape, groups=1):
    """Bytes of the output and of one image's im2col matrix (0 if unknown)."""
    if out_shape is None or getattr(x, "ndim", 0) != 4 or getattr(w, "ndim", 0) != 4:
        return 0
    item = x.dtype.itemsize if x.dtype.kind == "f" else 8
    P = max(out_shape[2], 0) * max(out_shape[3], 0)
    return item * max(P * max(out_shape[0], 1) * out_shape[1], P * x.shape[1] * w.shape[2] * w.shape[3])


def pool_work_bytes(x, out_shape):
    if out_shape is None or getattr(x, "ndim", 0) != 4:
        return 0
    return 12 * max(out_shape[0], 1) * out_shape[1] * max(out_shape[2], 0) * max(out_shape[3], 0)


def _n_mutations(rng):
    return int(rng.choice([0, 0, 1, 1, 1, 1, 2]))


def _pick_targets(rng, targets, exclusive):
    """Up to two distinct mutation targets, at most one from the ``exclusive`` set (mutations
    there interact: a missing bias makes a changed filter count valid, a changed kernel size
    makes a too-large pad fit...), so that each case's expected outcome stays exact."""
    chosen = []
    n = _n_mutations(rng)
    for t in rng.permutation(targets):
        if len(chosen) == n:
            break
        if t in exclusive and any(c in exclusive for c in chosen):
            continue
        chosen.append(str(t))
    return chosen


# ---------------------------------------------------------------------------- fastconv.fast / naive
def _core_conv(seed, index, rng):
    import fastconv.fast as fast
    import fastconv.naive as naive

    c = _conv_base(rng)
    winograd = rng.random() < 0.25
    if winograd:  # a case fast's Winograd path can run, asked for by name
        c.update(
            kernel=(3, 3),
            stride=(1, 1),
            dilation=(1, 1),
            H=max(c["H"], 3 - 2 * c["pad"][0]),
            W=max(c["W"], 3 - 2 * c["pad"][1]),
        )
    m = Mutations()
    dtype = c["dtype"]
    g = c["groups"]
    # Winograd spreads a NaN or an infinity over its output tile (documented, tested in
    # test_winograd.py), so its cases hold finite values: the comparison here is exact
    x = _data(rng, (c["N"], c["C"], c["H"], c["W"]), dtype, special=not winograd)
    w = _data(rng, (c["F"], c["C"] // g) + c["kernel"], dtype, special=not winograd)
    b = _data(rng, (c["F"],), dtype) if c["bias"] else None
    hyper = {k: _spell(rng, c[k]) for k in ("stride", "pad", "dilation")}
    hyper["groups"] = g if rng.random() < 0.8 else NUMPY_INTS[int(rng.integers(len(NUMPY_INTS)))](g)
    phase = "backward" if rng.random() < 0.4 else "forward"
    out_shape = _conv_out_shape(c)
    picked = []
    if phase == "forward":
        targets = ["x", "w", "b", "stride", "pad", "dilation", "groups", "channels"]
        picked = _pick_targets(rng, targets, {"x", "w", "b", "groups", "channels"})
        for target in picked:
            if target == "x":
                x = _mutate_array(m, rng, "x", x, shape_outcome=_x_shape_outcome(True))
            elif target == "w":
                w = _mutate_array(m, rng, "w", w, shape_outcome=_w_shape_outcome(g, c["bias"]))
            elif target == "b":
                b = (
                    _mutate_array(m, rng, "b", b, allow_none=True)
                    if b is not None
                    else _mutate_array(m, rng, "b", _data(rng, (c["F"],), dtype), allow_none=True)
                )
            elif target == "channels":
                m.add("shape", "w: channels C // groups + 1", "fail")
                w = _data(rng, (c["F"], c["C"] // g + 1) + c["kernel"], dtype)
            elif target == "groups":
                r = int(rng.integers(4))
                if r == 0:
                    v = c["C"] + 1 if c["C"] > 1 else 2
                    m.add("value", f"groups={v} (not dividing C={c['C']})", "fail")
                    hyper["groups"] = v
                else:
                    hyper["groups"] = _mutate_pair_scalar(m, rng, "groups")
            else:
                minimum = 0 if target == "pad" else 1
                hyper[target] = _mutate_pair(m, rng, target, minimum, smallest="maybe" if target == "pad" else "ok")
    dout = _data(rng, out_shape, dtype)
    if phase == "backward":
        dout = _dout_mutation(m, rng, dout)
    kwargs = {}
    args = [x, w]
    if rng.random() < 0.5:
        kwargs = dict(b=b, **hyper)
    else:
        args += [b, hyper["stride"], hyper["pad"], hyper["dilation"], hyper["groups"]]
    if winograd and not {"w", "stride", "dilation", "channels"} & set(picked):
        # both tile sizes, by the case's index (no draw: the other cases stay as they were);
        # naive checks the request the same way, then runs its loops
        kwargs["algorithm"] = ("winograd", "winograd4")[index % 2]
    elif not winograd and index % 4 == 1:
        # a share of the others on direct convolution (any geometry; NaN and infinity included)
        kwargs["algorithm"] = "direct"
    names = tuple(inspect.signature(fast.conv_forward).parameters)
    backward_kwargs, need_dx = {}, True
    if phase == "backward" and rng.random() < 0.3:  # a first layer's backward: no dx
        need_dx = [False, True, np.bool_(False), 0, 1][int(rng.integers(5))]
        backward_kwargs = {"need_dx": need_dx}
    impls = [
        Impl(
            "naive",
            naive.conv_forward,
            tuple(args),
            kwargs,
            naive.conv_backward,
            dout,
            dtype,
            (dtype, dtype, dtype if c["bias"] else None),
            names,
            backward_kwargs=backward_kwargs,
        ),
        Impl(
            "fast",
            fast.conv_forward,
            tuple(args),
            kwargs,
            fast.conv_backward,
            dout,
            dtype,
            (dtype, dtype, dtype if c["bias"] else None),
            names,
            backward_kwargs=backward_kwargs,
        ),
    ]
    case = Case(
        seed,
        index,
        "conv",
        phase,
        m,
        impls,
        dtype,
        conv_expected_shape(x, w, hyper["stride"], hyper["pad"], hyper["dilation"]),
        (
            (c["N"], c["C"], c["H"], c["W"]) if need_dx else None,
            (c["F"], c["C"] // g) + c["kernel"],
            (c["F"],) if c["bias"] else None,
        ),
    )
    case.base = (
        _conv_desc(c)
        + ("" if not backward_kwargs else f" need_dx={need_dx!r}")
        + (f" {kwargs['algorithm']}" if "algorithm" in kwargs else "")
    )
    case.big_bytes = conv_work_bytes(x, w, case.out_shape)
    case.magnitudes = _conv_magnitudes(x, w, b, dout, args, kwargs)
    if rng.random() < 0.3:  # a small workspace: the batch goes in chunks of one or a few images
        case.workspace_bytes = int(rng.integers(1, 64 * 1024))
        case.base += f" workspace {case.workspace_bytes} B"
    return case


def _conv_magnitudes(x, w, b, dout, args, kwargs):
    """stage -> sums of the absolute values of the terms of each result element (the naive
    layers on |x|, |w|, |b|, |dout| in float64); called only for a valid call (that returned)."""
    import fastconv.naive as naive

    def magnitudes(stage):
        a = [np.abs(np.asarray(v, dtype=np.float64)) if isinstance(v, np.ndarray) else v for v in args]
        kw = {k: np.abs(np.asarray(v, dtype=np.float64)) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        a[0], a[1] = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
        out, cache = naive.conv_forward(*a, **kw)
        if stage == "forward":
            return [out]
        return list(naive.conv_backward(np.abs(dout.astype(np.float64)), cache))  # dx even if unused

    return magnitudes


def _mutate_pair_scalar(m, rng, name):
    value, outcome, note = _bad_value(rng, 1)  # 1 is valid only when the base groups was 1: maybe
    if isinstance(value, (tuple, list, np.ndarray)) and outcome != "fail":
        outcome = "fail"  # groups is a plain int, never a pair
    m.add("value", f"{name}={note}", outcome)
    return value


def _core_pool(seed, index, rng, kind):
    import fastconv.fast as fast
    import fastconv.naive as naive

    c = _pool_base(rng)
    m = Mutations()
    dtype = c["dtype"]
    x = _data(rng, (c["N"], c["C"], c["H"], c["W"]), dtype, special=True)
    kernel = _spell(rng, c["kernel"])
    stride = None if c["stride"] is None else _spell(rng, c["stride"])
    pad = _spell(rng, c["pad"])
    phase = "backward" if rng.random() < 0.4 else "forward"
    out_shape = _pool_out_shape(c)
    if phase == "forward":
        targets = ["x", "kernel_size", "stride", "pad", "huge-window", "pad-over-half"]
        # huge-window sets kernel_size, pad and stride together
        for target in _pick_targets(rng, targets, {"kernel_size", "stride", "pad", "huge-window", "pad-over-half"}):
            if target == "x":
                x = _mutate_array(m, rng, "x", x, other_float="ok", shape_outcome=_x_shape_outcome(False))
                dtype = x.dtype.type if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) else dtype
            elif target == "kernel_size":
                kernel = _mutate_pair(m, rng, "kernel_size", 1)
            elif target == "stride":  # None means kernel_size: maybe, as the window may now overlap
                stride = _mutate_pair(m, rng, "stride", 1, smallest="ok", none="maybe")
            elif target == "pad":
                pad = _mutate_pair(m, rng, "pad", 0)
            elif target == "pad-over-half":
                kh = c["kernel"][0]
                pad = (kh // 2 + 1, 0)
                m.add("value", f"pad={pad} (over half of kernel {c['kernel']})", "fail")
            else:  # a window far larger than the image, made valid by padding of half its size
                k = int(rng.choice(HUGE[:5] + (2**20, 2**24)))
                axes = [(0,), (1,), (0, 1)][int(rng.integers(3))]
                kernel = tuple(k if a in axes else c["kernel"][a] for a in (0, 1))
                pad = tuple(k // 2 if a in axes else c["pad"][a] for a in (0, 1))
                if rng.random() < 0.5:
                    stride = tuple(k if a in axes else 1 for a in (0, 1))
                m.add("value", f"kernel_size={kernel}, pad={pad}, stride={stride}", "maybe")
    dout = _data(rng, out_shape, dtype)
    if phase == "backward":
        dout = _dout_mutation(m, rng, dout)
    if rng.random() < 0.5:
        args, kwargs = (x, kernel), dict(stride=stride, pad=pad)
    else:
        args, kwargs = (x, kernel, stride, pad), {}
    fwd = f"{kind}_pool_forward"
    bwd = f"{kind}_pool_backward"
    names = tuple(inspect.signature(getattr(fast, fwd)).parameters)
    impls = [
        Impl(
            mod.__name__.split(".")[-1],
            getattr(mod, fwd),
            args,
            kwargs,
            getattr(mod, bwd),
            dout,
            dtype,
            (dtype,),
            names,
        )
        for mod in (naive, fast)
    ]
    case = Case(
        seed,
        index,
        f"{kind}_pool",
        phase,
        m,
        impls,
        dtype,
        pool_expected_shape(getattr(x, "shape", ()), kernel, stride, pad),
        ((c["N"], c["C"], c["H"], c["W"]),),
    )
    case.base = _pool_desc(c)
    case.big_bytes = pool_work_bytes(x, case.out_shape)
    return case


# ---------------------------------------------------------------------------- compat modules
def _compat_dict(m, rng, name, entries, value_mutators, structural=True):
    """A parameter dict with ``entries``; maybe a mutated value, a missing key, extra keys or not a dict."""
    d = dict(entries)
    r = rng.random()
    if r < 0.35:
        return d
    if r < 0.7:
        key = list(value_mutators)[int(rng.integers(len(value_mutators)))]
        d[key] = value_mutators[key](m, rng, f"{name}[{key!r}]")
        return d
    if not structural:
        return d
    k = int(rng.integers(5))
    if k == 0:
        key = list(d)[int(rng.integers(len(d)))]
        del d[key]
        m.add("dict", f"{name}: {key!r} missing", "fail")
        return d
    if k == 1:
        d.update(dilation=2, mode="train", unused=None)
        m.add("dict", f"{name}: extra keys", "ok")
        return d
    if k == 2:
        import types

        m.add("dict", f"{name}: a read-only mapping", "ok")
        return types.MappingProxyType(d)
    bad = [None, list(d.items()), tuple(d.values())][int(rng.integers(3))]
    m.add("dict", f"{name}: {type(bad).__name__} instead of a dict", "fail")
    return bad


def _compat_conv(seed, index, rng, family):
    import fastconv.naive as naive
    from fastconv import layers
    from fastconv.compat import cs231n, sichkar

    c = _conv_base(rng, groups_ok=False, dilation_ok=False)
    c["bias"] = True
    m = Mutations()
    wdt = c["dtype"]
    xdt = wdt if rng.random() < 0.6 else (np.float64 if wdt == np.float32 else np.float32)
    bdt = wdt if rng.random() < 0.7 else xdt
    pool = None
    if family == "cs231n_conv_relu_pool":
        pool = dict(kernel=(int(rng.integers(1, 3)), int(rng.integers(1, 3))), stride=None)
        pool["stride"] = (int(rng.integers(1, 3)),) * 2
    if family == "cs231n_conv_bn_relu":
        c["N"] = max(c["N"], 1)
    x = _data(rng, (c["N"], c["C"], c["H"], c["W"]), xdt, special=family != "cs231n_conv_bn_relu")
    w = _data(rng, (c["F"], c["C"]) + c["kernel"], wdt)
    b = _data(rng, (c["F"],), bdt)
    out_shape = _conv_out_shape(c)
    if pool is not None:  # make the pooling fit the conv output
        oh, ow = out_shape[2:]
        pool["kernel"] = (min(pool["kernel"][0], oh), min(pool["kernel"][1], ow))
    phase = "backward" if rng.random() < 0.4 else "forward"
    stride, pad = c["stride"], c["pad"]
    pname = "cnn_params" if family.startswith("sichkar") else "conv_param"
    value_mut = {
        "stride": lambda m_, r_, n_: _mutate_pair(m_, r_, n_, 1, smallest="ok"),
        "pad": lambda m_, r_, n_: _mutate_pair(m_, r_, n_, 0),
    }
    conv_param = {"stride": _spell(rng, stride), "pad": _spell(rng, pad)}
    pool_param = bn = gamma = beta = None
    if pool is not None:
        pool_param = {
            "pool_height": pool["kernel"][0],
            "pool_width": pool["kernel"][1],
            "stride": _spell(rng, pool["stride"]),
        }
    if family == "cs231n_conv_bn_relu":
        gamma = _data(rng, (c["F"],), wdt)
        beta = _data(rng, (c["F"],), wdt)
        bn = {"mode": "train"}
    if phase == "forward" and rng.random() < 0.75:
        target = rng.choice(["x", "w", "b", "dict", "dict", "pool_param" if pool is not None else "dict"])
        if target == "x":
            # batchnorm of converted integers (uint8 wraps -1 to 255) in float32 is too ill-conditioned
            # to compare two implementations; tests/compat/test_compat_tutorials.py checks that case
            x = _mutate_array(
                m, rng, "x", x, other_float="ok", shape_outcome=_x_shape_outcome(True), integers=None if bn else "ok"
            )
        elif target == "w":  # the compute dtype follows w; batchnorm then promotes w's and gamma's (numpy)
            w = _mutate_array(
                m,
                rng,
                "w",
                w,
                other_float="ok",
                shape_outcome=_w_shape_outcome(1, True),
                integers="maybe" if bn else "ok",
            )
        elif target == "b":
            b = _mutate_array(m, rng, "b", b, other_float="ok", integers="ok")
        elif target == "pool_param":
            pool_param = _compat_dict(
                m,
                rng,
                "pool_param",
                pool_param,
                {
                    "pool_height": lambda m_, r_, n_: _mutate_int(m_, r_, n_),
                    "stride": lambda m_, r_, n_: _mutate_pair(m_, r_, n_, 1, smallest="ok"),
                },
            )
        else:
            conv_param = _compat_dict(m, rng, pname, conv_param, value_mut)
    # integer and bool arrays are converted to the computing dtype: w's, or float64 for an integer w
    ref_dtype = (
        w.dtype.type
        if isinstance(w, np.ndarray) and w.dtype in (np.float32, np.float64)
        else (np.float64 if isinstance(w, np.ndarray) and w.dtype.kind in "biu" else wdt)
    )
    gdt = (xdt, wdt, bdt)
    base_pool = pool
    if isinstance(pool_param, dict) and all(k in pool_param for k in ("pool_height", "pool_width", "stride")):
        pool = dict(kernel=(pool_param["pool_height"], pool_param["pool_width"]), stride=pool_param["stride"])
    # the reference: naive layers on the arguments cast to w's dtype
    if isinstance(conv_param, dict) and "stride" in conv_param and "pad" in conv_param:
        ref_stride, ref_pad = conv_param["stride"], conv_param["pad"]
    else:
        ref_stride, ref_pad = stride, pad

    def converted(a):
        if isinstance(a, np.ndarray) and (a.dtype in (np.float32, np.float64) or a.dtype.kind in "biu"):
            return a.astype(ref_dtype)
        return a

    xr, wr, br = converted(x), converted(w), converted(b)
    # compat's batchnorm computes in numpy's promotion of the conv output's dtype and gamma's
    bn_dtype = np.result_type(ref_dtype, wdt).type

    def ref_forward(x_, w_, b_):
        out, conv_cache = naive.conv_forward(x_, w_, b_, ref_stride, ref_pad)
        caches = [conv_cache]
        if family == "cs231n_conv_bn_relu":
            out, bn_cache = layers.spatial_batchnorm_forward(
                out.astype(bn_dtype), gamma.astype(bn_dtype), beta.astype(bn_dtype), {"mode": "train"}
            )
            caches.append(bn_cache)
        if family != "cs231n_conv" and family != "sichkar_conv":
            out, relu_cache = layers.relu_forward(out)
            caches.append(relu_cache)
        if pool is not None:
            out, pool_cache = naive.max_pool_forward(out, pool["kernel"], pool["stride"])
            caches.append(pool_cache)
        return out, caches

    def ref_backward(dout, caches):
        caches = list(caches)
        dbn = None
        if pool is not None:
            dout = naive.max_pool_backward(dout, caches.pop())
        if family != "cs231n_conv" and family != "sichkar_conv":
            relu_cache = caches.pop()  # compat: dout in the conv's dtype, the ReLU's dx in dout's
            dout = layers.relu_backward(dout.astype(relu_cache.dtype), relu_cache).astype(dout.dtype)
        if family == "cs231n_conv_bn_relu":
            dout, dgamma, dbeta = layers.spatial_batchnorm_backward(dout.astype(bn_dtype), caches.pop())
            dout = dout.astype(ref_dtype)
            dbn = (dgamma, dbeta)
        dx, dw, db = naive.conv_backward(dout, caches.pop())
        grads = (dx.astype(xdt), dw, db.astype(bdt))
        return grads + dbn if dbn else grads

    if base_pool is not None:  # dout has the shape of the unmutated call's output
        ps = base_pool["stride"]
        out_shape = (
            c["N"],
            c["F"],
            out_size(out_shape[2], base_pool["kernel"][0], ps[0], 0),
            out_size(out_shape[3], base_pool["kernel"][1], ps[1], 0),
        )
    expected = conv_expected_shape(xr, w, ref_stride, ref_pad)
    if expected is not None and pool is not None:
        expected = pool_expected_shape(expected, pool["kernel"], pool["stride"], 0)
    dout_dt = ref_dtype if rng.random() < 0.7 else xdt
    dout = _data(rng, out_shape, dout_dt)
    if phase == "backward":
        dout = _dout_mutation(m, rng, dout, other_float_ok=True)
    is_float = isinstance(dout, np.ndarray) and dout.dtype in (np.float32, np.float64)
    dout_ref = dout.astype(ref_dtype) if is_float else dout

    if family.startswith("sichkar"):
        fwd, bwd, args = sichkar.cnn_forward_naive, sichkar.cnn_backward_naive, (x, w, b, conv_param)
    else:
        name = {
            "cs231n_conv": "conv_forward_" + str(rng.choice(["naive", "fast", "im2col", "strides"])),
            "cs231n_conv_relu": "conv_relu_forward",
            "cs231n_conv_relu_pool": "conv_relu_pool_forward",
            "cs231n_conv_bn_relu": "conv_bn_relu_forward",
        }[family]
        fwd = getattr(cs231n, name)
        bwd = getattr(cs231n, name.replace("forward", "backward"))
        args = (x, w, b, conv_param)
        if pool is not None:
            args += (pool_param,)
        if family == "cs231n_conv_bn_relu":
            args = (x, w, b, gamma, beta, conv_param, bn)
    grad_dtypes = gdt + ((bn_dtype, bn_dtype) if family == "cs231n_conv_bn_relu" else ())
    out_dtype = bn_dtype if family == "cs231n_conv_bn_relu" else ref_dtype
    grad_shapes = ((c["N"], c["C"], c["H"], c["W"]), (c["F"], c["C"]) + c["kernel"], (c["F"],))
    if family == "cs231n_conv_bn_relu":
        grad_shapes += ((c["F"],), (c["F"],))
    names = tuple(inspect.signature(fwd).parameters)
    impls = [
        Impl(
            "reference",
            lambda *a: ref_forward(xr, wr, br),
            (),
            {},
            ref_backward,
            dout_ref,
            out_dtype,
            grad_dtypes,
            names,
        ),
        Impl(family.split("_")[0], fwd, args, {}, bwd, dout, out_dtype, grad_dtypes, names),
    ]
    case = Case(seed, index, family, phase, m, impls, ref_dtype, expected, grad_shapes)
    case.big_bytes = conv_work_bytes(xr, w, conv_expected_shape(xr, w, ref_stride, ref_pad))
    case.loose = family == "cs231n_conv_bn_relu"
    if family in ("cs231n_conv", "sichkar_conv") and isinstance(xr, np.ndarray) and isinstance(w, np.ndarray):
        case.magnitudes = _conv_magnitudes(xr, wr, br, dout_ref, (xr, wr, br, ref_stride, ref_pad), {})
    case.base = (
        _conv_desc(c)
        + (f" x:{np.dtype(xdt).name} b:{np.dtype(bdt).name}")
        + (f" pool k{pool['kernel']} s{pool['stride']}" if pool else "")
    )
    module = "fastconv.compat." + family.split("_")[0]
    fname = fwd.__name__ if family.startswith("sichkar") else name
    case.functions = [f"{module}.{fname}"] + (
        [f"{module}.{fname.replace('forward', 'backward')}"] if phase == "backward" else []
    )
    return case


def _mutate_int(m, rng, name):
    value, outcome, note = _bad_value(rng, 1)
    if isinstance(value, (tuple, list, np.ndarray)) and outcome != "fail":
        outcome = "fail"  # the pooling height/width entries are plain ints
    m.add("value", f"{name}={note}", outcome)
    return value


def _compat_pool(seed, index, rng, family):
    import fastconv.naive as naive
    from fastconv.compat import cs231n, sichkar

    c = _pool_base(rng)
    c["pad"] = (0, 0)  # these tutorials' pooling has no padding
    c["H"], c["W"] = max(c["H"], c["kernel"][0]), max(c["W"], c["kernel"][1])
    if c["stride"] is None:
        c["stride"] = c["kernel"]
    m = Mutations()
    dtype = c["dtype"]
    x = _data(rng, (c["N"], c["C"], c["H"], c["W"]), dtype, special=True)
    if family.startswith("sichkar"):
        pname, hk, wk = "pooling_params", "pooling_height", "pooling_width"
        fwd, bwd = sichkar.max_pooling_forward_naive, sichkar.max_pooling_backward_naive
    else:
        pname, hk, wk = "pool_param", "pool_height", "pool_width"
        variant = str(rng.choice(["naive", "fast", "reshape", "im2col"]))
        fwd = getattr(cs231n, f"max_pool_forward_{variant}")
        bwd = getattr(cs231n, f"max_pool_backward_{variant}")
    params = {hk: c["kernel"][0], wk: c["kernel"][1], "stride": _spell(rng, c["stride"])}
    if rng.random() < 0.3:
        params[hk] = NUMPY_INTS[int(rng.integers(len(NUMPY_INTS)))](params[hk])
    phase = "backward" if rng.random() < 0.4 else "forward"
    if phase == "forward" and rng.random() < 0.75:
        if rng.random() < 0.35:
            x = _mutate_array(m, rng, "x", x, other_float="ok", shape_outcome=_x_shape_outcome(False), integers="ok")
            dtype = x.dtype.type if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) else dtype
            if isinstance(x, np.ndarray) and x.dtype.kind in "biu":  # converted to float64
                dtype = np.float64
        else:
            params = _compat_dict(
                m,
                rng,
                pname,
                params,
                {
                    hk: lambda m_, r_, n_: _mutate_int(m_, r_, n_),
                    wk: lambda m_, r_, n_: _mutate_int(m_, r_, n_),
                    "stride": lambda m_, r_, n_: _mutate_pair(m_, r_, n_, 1, smallest="ok"),
                },
            )
    xr = x.astype(dtype) if isinstance(x, np.ndarray) and x.dtype.kind in "biu" else x
    if isinstance(params, dict) and all(k in params for k in (hk, wk, "stride")):
        ref_kernel, ref_stride = (params[hk], params[wk]), params["stride"]
    else:
        ref_kernel, ref_stride = c["kernel"], c["stride"]
    out_shape = _pool_out_shape(c)
    dout = _data(rng, out_shape, dtype)
    if phase == "backward":  # compat casts a dout of the other float dtype to x's (np.zeros_like(x))
        dout = _dout_mutation(m, rng, dout, other_float_ok=True)
    dout_ref = dout.astype(dtype) if isinstance(dout, np.ndarray) and dout.dtype in (np.float32, np.float64) else dout
    names = tuple(inspect.signature(fwd).parameters)
    impls = [
        Impl(
            "reference",
            lambda *a: naive.max_pool_forward(xr, ref_kernel, ref_stride),
            (),
            {},
            naive.max_pool_backward,
            dout_ref,
            dtype,
            (dtype,),
            names,
        ),
        Impl(family.split("_")[0], fwd, (x, params), {}, bwd, dout, dtype, (dtype,), names),
    ]
    case = Case(
        seed,
        index,
        family,
        phase,
        m,
        impls,
        dtype,
        pool_expected_shape(getattr(x, "shape", ()), ref_kernel, ref_stride, 0),
        ((c["N"], c["C"], c["H"], c["W"]),),
    )
    case.base = _pool_desc(c)
    case.big_bytes = pool_work_bytes(x, case.out_shape)
    module = "fastconv.compat." + family.split("_")[0]
    case.functions = [f"{module}.{fwd.__name__ if family.startswith('sichkar') else 'max_pool_forward_' + variant}"]
    if phase == "backward":
        case.functions.append(case.functions[0].replace("forward", "backward"))
    return case


def make_case(seed, index, family=None):
    """Build case ``index`` of run ``seed`` (family chosen at random when None)."""
    rng = case_rng(seed, index)
    fam = FAMILIES[int(rng.integers(len(FAMILIES)))]
    if family is not None:
        fam = family
    if fam == "conv":
        case = _core_conv(seed, index, rng)
    elif fam in ("max_pool", "avg_pool"):
        case = _core_pool(seed, index, rng, fam[:3])
    elif fam.endswith("_max_pool"):
        case = _compat_pool(seed, index, rng, fam)
    else:
        case = _compat_conv(seed, index, rng, fam)
    case.family = fam
    if not case.functions:
        fns = [case.impls[1].forward] + ([case.impls[1].backward] if case.phase == "backward" else [])
        case.functions = [f"{mod}.{fn.__name__}" for fn in fns for mod in ("fastconv.naive", "fastconv.fast")]
    return case


# ============================================================================ the oracle
class Outcome:
    def __init__(self, value=None, exc=None):
        self.value, self.exc = value, exc

    @property
    def ok(self):
        return self.exc is None


def _call(fn, *args, **kwargs):
    try:
        return Outcome(value=fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001  (classifying every exception is the point)
        return Outcome(exc=exc)


def names_argument(message, names):
    """True if ``message`` mentions one of ``names`` as a word (``x``, ``stride``, ``conv_param``...)."""
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message) for n in names)


_NUM = re.compile(r"[-+]?\b\d+(\.\d+)?(e[-+]?\d+)?\b|\bnan\b|\binf\b")


def normalize_message(exc_type, message):
    """An error message with the values taken out, so that messages can be counted as templates."""
    msg = re.sub(r"\bgot\b.*$", "got <value>", message, flags=re.S)
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "<str>", msg) if "[" not in msg else msg
    msg = _NUM.sub("#", msg)
    msg = re.sub(r"\((?:#|, |\s)+\)", "(#)", msg)
    return f"{exc_type}: {msg}"


def compare_arrays(actual, reference, dtype, tolerance, scale_floor=0.0, magnitudes=None):
    """None if ``actual`` matches ``reference`` (same NaN and Inf positions, finite values within
    ``tolerance`` relative to the largest finite reference value, or to ``scale_floor`` if
    larger, or element by element to ``magnitudes`` (the sum of the absolute values of the terms
    each element adds up: rounding error is relative to it) where larger); else the reason."""
    if not isinstance(actual, np.ndarray):
        return f"expected an ndarray, got {type(actual).__name__}"
    if actual.shape != reference.shape:
        return f"shape {actual.shape} != reference {reference.shape}"
    if dtype is not None and actual.dtype != np.dtype(dtype):
        return f"dtype {actual.dtype} != {np.dtype(dtype)}"
    a = actual.astype(np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if not np.array_equal(np.isnan(a), np.isnan(r)):
        return f"NaN positions differ ({int(np.isnan(a).sum())} vs reference {int(np.isnan(r).sum())})"
    inf_a, inf_r = np.isinf(a), np.isinf(r)
    if not np.array_equal(inf_a, inf_r) or not np.array_equal(a[inf_a], r[inf_r]):
        return "Inf positions or signs differ"
    fin = np.isfinite(r)
    if not fin.any():
        return None
    diff = np.max(np.abs(a[fin] - r[fin]))
    scale = max(np.max(np.abs(r[fin])), scale_floor)
    if magnitudes is not None:
        denom = np.maximum(scale, np.asarray(magnitudes, dtype=np.float64)[fin])
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = np.max(np.where(denom > 0, np.abs(a[fin] - r[fin]) / denom, np.abs(a[fin] - r[fin])))
        scale = 1.0
    err = diff / scale if scale > 0 else diff
    if not err < tolerance:
        return f"relative error {err:.3g} >= {tolerance:g}"
    return None


def _snapshot(args, kwargs):
    """Copies of every numeric ndarray argument, to prove the call did not write to its inputs."""
    items = list(args) + list(kwargs.values())
    snaps = []
    for a in items:
        if isinstance(a, np.ndarray) and a.dtype.kind in "fcbiu":
            snaps.append((a, a.copy()))
        elif isinstance(a, dict) and "mode" not in a:  # bn_param's running averages change by design
            snaps.append((a, dict(a)))
    return snaps


def _unchanged(snaps):
    for a, copy in snaps:
        if isinstance(copy, dict):
            if set(a) != set(copy) or any(a[k] is not copy[k] for k in copy):
                return False
        elif not np.array_equal(a, copy, equal_nan=a.dtype.kind in "fc"):
            return False
    return True


def _result_arrays(value, what):
    """The arrays of a forward result (out) or of a backward result (dx[, dw, db, ...])."""
    if what == "forward":
        if not (isinstance(value, tuple) and len(value) == 2):
            raise AssertionError(f"forward must return (out, cache), got {type(value).__name__}")
        return (value[0],)
    return value if isinstance(value, tuple) else (value,)


def memory_ok(case):
    """A MemoryError is the right answer to a valid call that needs more than the worker may allocate."""
    return case.big_bytes > WORKER_MEMORY_LIMIT // 2


def _judge(case, stage, outcomes, impls, names):
    """Failures (strings) of one stage (forward or backward) given each implementation's Outcome.

    The mutations of a case apply to the stage of its phase (a backward case mutates only dout)."""
    fails = []
    ref, rest = outcomes[0], outcomes[1:]
    core = case.family in ("conv", "max_pool", "avg_pool")
    mutated = stage == case.phase
    must_fail = mutated and case.mutations.must_fail
    maybe = mutated and case.mutations.maybe
    for impl, o in zip(impls, outcomes):
        if not core and impl is impls[0]:
            continue  # the compat reference is internal: only its verdict counts
        if not o.ok:
            exc = o.exc
            if isinstance(exc, MemoryError) and memory_ok(case):
                continue
            if not isinstance(exc, (ValueError, TypeError)):
                fails.append(f"{impl.label} {stage}: unexpected {type(exc).__name__}: {exc}")
            elif not names_argument(str(exc), names):
                fails.append(f"{impl.label} {stage}: {type(exc).__name__} naming no argument of {names}: {exc}")
    for impl, o in zip(impls[1:], rest):
        if o.ok and must_fail:
            fails.append(f"{impl.label} {stage}: accepted an invalid argument ({'; '.join(case.mutations.notes)})")
        if core and ref.ok and not o.ok:
            fails.append(f"{impl.label} {stage}: raised where naive returned: {type(o.exc).__name__}: {o.exc}")
        if core and not ref.ok and o.ok:
            fails.append(f"{impl.label} {stage}: returned where naive raised {type(ref.exc).__name__}: {ref.exc}")
        both_memory = isinstance(ref.exc, MemoryError) and isinstance(o.exc, MemoryError) and memory_ok(case)
        if (
            core
            and not ref.ok
            and not o.ok
            and not both_memory
            and (type(ref.exc) is not type(o.exc) or str(ref.exc) != str(o.exc))
        ):
            fails.append(
                f"{impl.label} {stage}: error differs from naive's: "
                f"{type(o.exc).__name__}: {o.exc} | naive {type(ref.exc).__name__}: {ref.exc}"
            )
        if not core and ref.ok and not o.ok and not must_fail and not maybe:
            fails.append(f"{impl.label} {stage}: rejected a valid call: {type(o.exc).__name__}: {o.exc}")
        if not core and not ref.ok and o.ok:
            fails.append(
                f"{impl.label} {stage}: returned where the reference raised {type(ref.exc).__name__}: {ref.exc}"
            )
    if not must_fail and not maybe and not ref.ok and core:
        fails.append(f"naive {stage}: rejected a valid call: {type(ref.exc).__name__}: {ref.exc}")
    return fails


def check_case(case):
    """Run one case; returns a JSON-able dict: status 'equal', 'error', 'memory' or 'fail', the
    errors raised and the failures."""
    if not case.workspace_bytes:
        return _check_case(case)
    import fastconv.fast as fast

    saved = fast.WORKSPACE_BYTES
    fast.WORKSPACE_BYTES = case.workspace_bytes
    try:
        return _check_case(case)
    finally:
        fast.WORKSPACE_BYTES = saved


def _check_case(case):
    result = {
        "id": list(case.id),
        "phase": case.phase,
        "family": case.family,
        "kinds": case.mutations.kinds,
        "functions": case.functions,
        "errors": [],
        "failures": [],
    }
    tolerance = TOL[np.dtype(case.compute_dtype).type] * (10 if case.loose else 1)
    impls = case.impls
    # forward
    snaps = [_snapshot(i.args, i.kwargs) for i in impls]
    fwd = [_call(i.forward, *i.args, **i.kwargs) for i in impls]
    fails = _judge(case, "forward", fwd, impls, impls[0].forward_names)
    for impl, s in zip(impls, snaps):
        if not _unchanged(s):
            fails.append(f"{impl.label} forward: wrote to an input")
    if all(o.ok for o in fwd):
        ref_out = _result_arrays(fwd[0].value, "forward")[0]
        if case.out_shape is not None and ref_out.shape != case.out_shape:
            fails.append(f"reference output shape {ref_out.shape} != formula {case.out_shape}")
        for impl, o in zip(impls[1:], fwd[1:]):
            why = compare_arrays(_result_arrays(o.value, "forward")[0], ref_out, impl.out_dtype, tolerance)
            if why and case.magnitudes is not None:  # a sum that cancels: judge against its terms
                why = compare_arrays(
                    _result_arrays(o.value, "forward")[0],
                    ref_out,
                    impl.out_dtype,
                    tolerance,
                    magnitudes=case.magnitudes("forward")[0],
                )
            if why:
                fails.append(f"{impl.label} forward out: {why}")
    errors = [(type(o.exc).__name__, str(o.exc)) for o in fwd if not o.ok]
    if case.phase == "backward" and not fails:
        if not all(o.ok for o in fwd):
            fails.append("the forward pass of a backward case failed: " + "; ".join(f"{t}: {m}" for t, m in errors))
        else:
            snaps = [_snapshot((i.dout,), {}) for i in impls]
            bwd = [_call(i.backward, i.dout, o.value[1], **i.backward_kwargs) for i, o in zip(impls, fwd)]
            fails += _judge(case, "backward", bwd, impls, impls[0].backward_names)
            for impl, o, first in zip(impls[1:], fwd[1:], bwd[1:]):  # a cache can be used again
                again = _call(impl.backward, impl.dout, o.value[1], **impl.backward_kwargs)
                if first.ok != again.ok or (
                    first.ok
                    and not all(
                        (a is None and b is None) or np.array_equal(a, b, equal_nan=True)
                        for a, b in zip(
                            _result_arrays(first.value, "backward"), _result_arrays(again.value, "backward")
                        )
                    )
                ):
                    fails.append(f"{impl.label} backward: a second call on the same cache differs")
            for impl, s in zip(impls, snaps):
                if not _unchanged(s):
                    fails.append(f"{impl.label} backward: wrote to dout")
            errors += [(type(o.exc).__name__, str(o.exc)) for o in bwd if not o.ok]
            if all(o.ok for o in bwd):
                ref_grads = _result_arrays(bwd[0].value, "backward")
                floor = (
                    max((float(np.nanmax(np.abs(r), initial=0.0)) for r in ref_grads if r is not None), default=0.0)
                    if case.loose
                    else 0.0
                )
                for k, (shape, r) in enumerate(zip(case.grad_shapes, ref_grads)):
                    if (shape is None) != (r is None) or (r is not None and r.shape != shape):
                        fails.append(f"reference gradient {k} shape {getattr(r, 'shape', None)} != {shape}")
                for impl, o in zip(impls[1:], bwd[1:]):
                    grads = _result_arrays(o.value, "backward")
                    if len(grads) != len(ref_grads):
                        fails.append(f"{impl.label} backward: {len(grads)} results, reference {len(ref_grads)}")
                        continue
                    for k, (g, r, dt) in enumerate(zip(grads, ref_grads, impl.grad_dtypes)):
                        if r is None or g is None:
                            if (r is None) != (g is None):
                                fails.append(f"{impl.label} backward result {k}: {g!r} vs reference {r!r}")
                            continue
                        why = compare_arrays(g, r, dt, tolerance, floor)
                        if why and case.magnitudes is not None:
                            why = compare_arrays(g, r, dt, tolerance, floor, magnitudes=case.magnitudes("backward")[k])
                        if why:
                            fails.append(f"{impl.label} backward result {k}: {why}")
    result["errors"] = [[t, m[:300], normalize_message(t, m)] for t, m in errors]
    result["failures"] = fails
    memory = any(t == "MemoryError" for t, _ in errors)
    result["status"] = "fail" if fails else ("memory" if memory else "error" if errors else "equal")
    result["desc"] = case.describe()
    return result


# ============================================================================ worker and runner
def _special(kind):
    """Deliberate misbehaviour, to prove that the runner catches it."""
    if kind == "segv":
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "null-read":
        import ctypes

        ctypes.string_at(0)
    if kind == "abort":
        os.abort()
    if kind == "hang":
        time.sleep(3600)
    if kind == "exit":
        os._exit(3)
    if kind == "wrong-answer":  # a real failure reported through the normal channel
        return {"id": ["special", kind], "status": "fail", "failures": ["deliberate"], "errors": []}
    return {"id": ["special", kind], "status": "equal", "failures": [], "errors": []}


def worker_main():
    """Read case specs (JSON lines) on stdin; write one JSON result per line to the original stdout."""
    import faulthandler
    import resource

    faulthandler.enable()
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = WORKER_MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY_LIMIT, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        pass
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the code under test prints goes to stderr
    import warnings

    warnings.simplefilter("ignore")
    import fastconv
    import fastconv.fast  # import errors surface here, not as a case failure
    import fastconv.kernels._im2col as ext

    out.write(
        json.dumps(
            {
                "ready": True,
                "build": ext.build_info(),
                "file": ext.__file__,
                "fastconv_path": os.path.dirname(fastconv.__file__),
            }
        )
        + "\n"
    )
    for line in sys.stdin:
        spec = json.loads(line)
        if spec[0] == "special":
            res = _special(spec[1])
        else:
            _, seed, index, family = spec
            try:
                res = check_case(make_case(seed, index, family))
            except Exception:  # noqa: BLE001  (a bug of this harness, reported, not hidden)
                res = {
                    "id": [seed, index, family],
                    "status": "fail",
                    "errors": [],
                    "failures": ["harness error: " + traceback.format_exc()],
                }
        out.write(json.dumps(res, default=str) + "\n")


# The worker: this folder first on sys.path (for this module and _helpers), then worker_main.
_WORKER = f"import sys\nsys.path.insert(0, {HERE!r})\nimport _fuzz_cases\n_fuzz_cases.worker_main()\n"


class Runner:
    """Runs case specs in a worker subprocess; a crash or a hang fails that case only."""

    def __init__(self, timeout=10.0, env=None, python=None):
        self.timeout = timeout
        # two OpenMP/BLAS threads unless told otherwise: the parallel code paths run, and a
        # many-core machine's per-thread BLAS buffers stay within the worker's address-space cap
        self.env = dict(os.environ if env is None else env)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            self.env.setdefault(var, "2")
        self.python = python or sys.executable
        self.proc = None
        self.stderr = None
        self.build = None
        self.fastconv_path = None
        self.restarts = 0

    def _start(self):
        import tempfile

        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            python_code(_WORKER, python=self.python),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=self.env,
        )
        self._buf = b""
        hello = self._readline(60.0)
        if hello is None:
            raise RuntimeError("fuzz worker failed to start: " + self._stderr_tail())
        info = json.loads(hello)
        self.build = info["build"]
        self.extension_file = info["file"]
        self.fastconv_path = info["fastconv_path"]

    def _readline(self, timeout):
        """The worker's next line; None if it closed its end (died) or the time ran out
        (``self.timed_out`` says which)."""
        self.timed_out = False
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], left)[0] if left > 0 else []
            if not ready:
                self.timed_out = True
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def _stderr_tail(self, lines=25):
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def _stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()  # our own worker, by its Popen handle
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self.stderr.close()
            self.proc = None

    def run_one(self, spec):
        if self.proc is None:
            self._start()
        try:
            self.proc.stdin.write((json.dumps(spec) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        started = time.monotonic()
        line = self._readline(self.timeout)
        if line is not None:
            res = json.loads(line)
            res["seconds"] = time.monotonic() - started
            return res
        hung = self.timed_out
        if hung:
            self.proc.kill()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # closed its output but lives on: end it
            self.proc.kill()
            code = self.proc.wait()
        status = "hang" if hung else "crash"
        desc = f"{spec}"
        if spec[0] != "special":
            try:
                desc = make_case(*spec[1:]).describe()
            except Exception as exc:  # noqa: BLE001
                desc += f" (could not rebuild: {exc})"
        res = {
            "id": spec[1:] if spec[0] != "special" else spec,
            "status": status,
            "returncode": code,
            "signal": -code if code is not None and code < 0 else None,
            "errors": [],
            "failures": [
                f"{status}: worker "
                f"{'exceeded ' + str(self.timeout) + ' s' if hung else 'died with code ' + str(code)}"
                f" on {desc}\n{self._stderr_tail()}"
            ],
            "desc": desc,
            "seconds": time.monotonic() - started,
        }
        self._stop()
        self.restarts += 1
        return res

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self._stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Summary:
    """Counts of a fuzz run: cases, outcomes, failures, distinct error messages, coverage."""

    def __init__(self):
        self.cases = 0
        self.status = {}
        self.failures = []
        self.messages = {}
        self.examples = {}
        self.kinds = {}
        self.functions = set()
        self.families = {}
        self.seconds = 0.0

    def add(self, res):
        self.cases += 1
        st = res["status"]
        self.status[st] = self.status.get(st, 0) + 1
        if res.get("failures"):
            self.failures.append(res)
        for t, m, norm in res.get("errors", []):
            self.messages[norm] = self.messages.get(norm, 0) + 1
            self.examples.setdefault(norm, f"{t}: {m}")
        for k in res.get("kinds", []):
            self.kinds[k] = self.kinds.get(k, 0) + 1
        self.functions.update(res.get("functions", []))
        fam = res.get("family")
        if fam:
            self.families[fam] = self.families.get(fam, 0) + 1

    def report(self, max_failures=10):
        lines = [
            f"cases: {self.cases} ({', '.join(f'{k} {v}' for k, v in sorted(self.status.items()))})",
            f"distinct error messages: {len(self.messages)}",
            f"families: {dict(sorted(self.families.items()))}",
            f"mutation kinds: {dict(sorted(self.kinds.items()))}",
            f"functions called: {len(self.functions)}",
        ]
        for res in self.failures[:max_failures]:
            lines.append(f"FAIL {res.get('desc', res['id'])}")
            lines += ["    " + f.replace("\n", "\n    ") for f in res["failures"]]
        if len(self.failures) > max_failures:
            lines.append(f"... and {len(self.failures) - max_failures} more failures")
        return "\n".join(lines)


def run_cases(specs, timeout=10.0, env=None, summary=None, deadline=None):
    """Run case specs through a Runner; returns the Summary (and the Runner's build info)."""
    summary = summary or Summary()
    with Runner(timeout=timeout, env=env) as runner:
        for spec in specs:
            if deadline is not None and time.monotonic() > deadline:
                break
            summary.add(runner.run_one(spec))
        summary.build = runner.build
        summary.restarts = runner.restarts
    return summary
