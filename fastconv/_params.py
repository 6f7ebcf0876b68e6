"""Argument checking and shape arithmetic shared by every layer implementation.

Both ``fastconv.naive`` and ``fastconv.fast`` call these functions, so the two
paths cannot disagree on an output size or on what counts as a bad argument.
Vocabulary: x (N, C, H, W), w (F, C // groups, kh, kw), out (N, F, out_h, out_w).
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INT32_MAX = 2**31 - 1

#: Largest stride, pad, dilation or kernel size accepted (PyTorch's pooling bound). It keeps
#: every index the Cython kernels compute from them (``oh * stride - pad + i * dilation``,
#: ``-start + stride - 1``...) far from Py_ssize_t overflow, which would read and write out of
#: bounds with bounds checks off.
HYPERPARAMETER_MAX = _INT32_MAX

#: numpy's limit on the bytes of one array.
_ARRAY_BYTES_MAX = np.iinfo(np.intp).max


def conv_output_size(size, kernel, stride=1, pad=0, dilation=1):
    """Output length of a convolution or pooling along one axis (PyTorch's formula).

    ``(size + 2*pad - dilation*(kernel - 1) - 1) // stride + 1``; values < 1 mean
    the (dilated) kernel does not fit in the padded input.
    """
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def shape_size(shape):
    """The number of items in an array of ``shape``, as a Python int: exact for any shape
    (``np.prod`` works in int64, where (2**31, 2**31, 4) wraps to 0)."""
    return math.prod(int(n) for n in shape)


def same_pad(kernel):
    """The pad of a "same" convolution: ``(kernel - 1) // 2`` on each side, which keeps the
    input's size at stride 1 for an odd kernel (an even one loses a pixel)."""
    return (kernel - 1) // 2


def check_int(value, name, minimum=None, maximum=None):
    """``value`` as an int: TypeError unless it is an integer (bool is not), ValueError
    naming ``name`` unless ``minimum <= value <= maximum`` (either bound may be None)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        bound = "2**31 - 1" if maximum == _INT32_MAX else maximum
        raise ValueError(f"{name} must be <= {bound}, got {value!r}")
    return int(value)


def pair(value, name, minimum):
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


def check_array_size(shape, itemsize, what, culprits):
    """ValueError naming ``culprits`` if an array of ``shape`` could not exist (more bytes than
    numpy allows: it would raise its own error, naming no argument). A zero-size axis does not
    count, as numpy checks the other axes all the same."""
    count = itemsize
    for n in shape:
        count *= max(int(n), 1)
    if count > _ARRAY_BYTES_MAX:
        raise ValueError(f"{culprits} give {what} of shape {tuple(shape)}, larger than any array can be")


def check_float_array(a, name, ndim=None):
    """Check that ``a`` is a float32/float64 ndarray (of rank ``ndim``)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {a.shape}")
    return a


def check_same_dtype(**arrays):
    """TypeError unless all given (non-None) arrays share one dtype."""
    given = {k: v for k, v in arrays.items() if v is not None}
    dtypes = {v.dtype for v in given.values()}
    if len(dtypes) > 1:
        desc = ", ".join(f"{k}: {v.dtype}" for k, v in given.items())
        raise TypeError(f"{', '.join(given)} must share one dtype (float32 or float64), got {desc}")


def check_dout(dout, expected_shape, dtype):
    """Check an upstream gradient against the shape and dtype of the forward output."""
    check_float_array(dout, "dout")
    if dout.shape != tuple(expected_shape):
        raise ValueError(f"dout must have the forward output's shape {tuple(expected_shape)}, got {dout.shape}")
    if dout.dtype != dtype:
        raise TypeError(f"dout must have the forward pass's dtype {dtype}, got {dout.dtype}")
    return dout


class ConvGeometry(NamedTuple):
    """Every size a convolution needs, computed once."""

    N: int
    C: int
    H: int
    W: int
    F: int
    kh: int
    kw: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dil_h: int
    dil_w: int
    groups: int
    out_h: int
    out_w: int

    @property
    def out_shape(self):
        return (self.N, self.F, self.out_h, self.out_w)

    @property
    def w_shape(self):
        return (self.F, self.C // self.groups, self.kh, self.kw)


def conv_geometry(x, w, b=None, stride=1, pad=0, dilation=1, groups=1):
    """Validate convolution arguments and return their ConvGeometry."""
    check_float_array(x, "x", 4)
    check_float_array(w, "w", 4)
    if b is not None:
        check_float_array(b, "b", 1)
    check_same_dtype(x=x, w=w, b=b)
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(pad, "pad", 0)
    dh, dw = pair(dilation, "dilation", 1)
    groups = check_int(groups, "groups", 1)
    N, C, H, W = x.shape
    F, Cg, kh, kw = w.shape
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"x must have shape (N, C, H, W) with C, H, W >= 1, got {x.shape}")
    if F < 1 or kh < 1 or kw < 1:
        raise ValueError(f"w must have shape (F, C // groups, kh, kw) with F, kh, kw >= 1, got {w.shape}")
    if C % groups or F % groups:
        raise ValueError(f"groups={groups} must divide both the input channels C={C} and the filters F={F}")
    if Cg * groups != C:
        raise ValueError(
            f"w must have shape (F, C // groups, kh, kw) = ({F}, {C // groups}, {kh}, {kw}) "
            f"for x with C={C} and groups={groups}, got {w.shape}"
        )
    if b is not None and b.shape != (F,):
        raise ValueError(f"b must have shape (F,) = ({F},), got {b.shape}")
    out_h = conv_output_size(H, kh, sh, ph, dh)
    out_w = conv_output_size(W, kw, sw, pw, dw)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"the kernel (kh, kw)=({kh}, {kw}) with dilation ({dh}, {dw}) spans "
            f"({dh * (kh - 1) + 1}, {dw * (kw - 1) + 1}), larger than the padded input "
            f"({H + 2 * ph}, {W + 2 * pw}) of x {x.shape} with pad ({ph}, {pw})"
        )
    culprits = (f"for x of shape {x.shape} and w of shape {w.shape}, pad ({ph}, {pw}), "
                f"stride ({sh}, {sw}) and dilation ({dh}, {dw})")
    check_array_size((N, F, out_h, out_w), x.itemsize, "an output", culprits)
    check_array_size((C * kh * kw, out_h * out_w), x.itemsize, "one image's im2col matrix", culprits)
    return ConvGeometry(N, C, H, W, F, kh, kw, sh, sw, ph, pw, dh, dw, groups, out_h, out_w)


class PoolGeometry(NamedTuple):
    """Every size a pooling layer needs, computed once: ConvGeometry's fields and names
    less F, dilation and groups (two record types, so the shared field names are listed twice)."""

    N: int
    C: int
    H: int
    W: int
    kh: int
    kw: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    out_h: int
    out_w: int

    @property
    def out_shape(self):
        return (self.N, self.C, self.out_h, self.out_w)


def pool_geometry(x, kernel_size, stride=None, pad=0):
    """Validate pooling arguments (PyTorch's rules) and return their PoolGeometry."""
    check_float_array(x, "x", 4)
    return pool_geometry_of_shape(x.shape, kernel_size, stride, pad)


def pool_geometry_of_shape(shape, kernel_size, stride=None, pad=0, what="x",
                           names=("kernel_size", "stride", "pad")):
    """pool_geometry for an input of ``shape`` (N, C, H, W); errors call the input
    ``what`` and the arguments ``names`` (the fused conv_relu_pool layers pass theirs)."""
    k_name, s_name, p_name = names
    kh, kw = pair(kernel_size, k_name, 1)
    sh, sw = (kh, kw) if stride is None else pair(stride, s_name, 1)
    ph, pw = pair(pad, p_name, 0)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"{p_name} must be at most half the {k_name} ({p_name} <= {k_name} // 2 = "
            f"({kh // 2}, {kw // 2})), got {p_name} ({ph}, {pw})"
        )
    N, C, H, W = shape
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"{what} must have shape (N, C, H, W) with C, H, W >= 1, got {tuple(shape)}")
    if H * W > _INT32_MAX:
        raise ValueError(f"{what} planes must have at most 2**31 - 1 pixels (H * W), got {H} * {W}")
    out_h = conv_output_size(H, kh, sh, ph)
    out_w = conv_output_size(W, kw, sw, pw)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"{k_name} ({kh}, {kw}) is larger than the padded input "
            f"({H + 2 * ph}, {W + 2 * pw}) of {what} {tuple(shape)} with {p_name} ({ph}, {pw})"
        )
    return PoolGeometry(N, C, H, W, kh, kw, sh, sw, ph, pw, out_h, out_w)


#: The convolution algorithms ``conv_forward`` accepts (fastconv.naive always runs its loops).
CONV_ALGORITHMS = ("auto", "im2col", "winograd", "winograd2", "winograd4", "direct")

#: The output tile size m of each Winograd algorithm, F(m x m, 3x3): "winograd" is "winograd2".
WINOGRAD_TILE = {"winograd": 2, "winograd2": 2, "winograd4": 4}


def check_algorithm(g, algorithm):
    """``algorithm`` checked against CONV_ALGORITHMS and against geometry ``g``: Winograd
    needs a 3x3 kernel, stride 1 and dilation 1, direct small per-thread buffers
    (ValueError naming ``algorithm``). Returns
    its canonical name: "winograd" is "winograd2"."""
    if not isinstance(algorithm, str) or algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(map(repr, CONV_ALGORITHMS))}, got {algorithm!r}")
    if algorithm in WINOGRAD_TILE:
        why = winograd_unsupported(g)
        if why:
            raise ValueError(f"algorithm={algorithm!r} needs {why}")
        return f"winograd{WINOGRAD_TILE[algorithm]}"
    if algorithm == "direct":
        from ._direct import unsupported  # imported here: fastconv/_direct.py imports this module

        why = unsupported(g)
        if why:
            raise ValueError(f"algorithm={algorithm!r} needs {why}")
    return algorithm


def winograd_unsupported(g):
    """What Winograd (either tile size) would need that geometry ``g`` lacks, or None."""
    if (g.kh, g.kw) != (3, 3):
        return f"a 3x3 kernel, got {g.kh}x{g.kw}"
    if (g.stride_h, g.stride_w) != (1, 1):
        return f"stride 1, got ({g.stride_h}, {g.stride_w})"
    if (g.dil_h, g.dil_w) != (1, 1):
        return f"dilation 1, got ({g.dil_h}, {g.dil_w})"
    return None


def winograd_tiles(g, tile):
    """(tiles_h, tiles_w): the tile x tile output tiles of Winograd F(tile x tile, 3x3)
    covering (out_h, out_w)."""
    return -(-g.out_h // tile), -(-g.out_w // tile)
