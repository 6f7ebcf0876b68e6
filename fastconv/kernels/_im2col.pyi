"""Types of the compiled kernels (``_im2col.pyx`` and its included ``.pxi`` files), for type checkers.

Every build (baseline, AVX2, AVX-512) has these functions: ``_im2col_avx2.pyi`` and
``_im2col_avx512.pyi`` re-export this file. ``make typecheck`` runs mypy's stubtest,
which fails when a function or an argument here differs from the compiled module's.

Argument types, from the kernels' memoryviews: ``floating[...]`` (Cython's fused float32 /
float64; every ``floating`` argument of one call has the same dtype) is a ``_FloatArray``,
``double[...]`` a float64 array, ``int32_t[...]`` an int32 array, ``Py_ssize_t[...]`` an
intp array, ``Py_ssize_t`` and ``int`` an int, ``bint`` a bool, ``double`` a float. The
kernels accept C-contiguous arrays of the documented rank (a ``::1`` last axis); the
docstrings in the ``.pxi`` files say which arguments are IN, OUT, INOUT and SCRATCH.
"""

from collections.abc import Iterable
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

_FloatArray = npt.NDArray[np.floating[Any]]
_Float64Array = npt.NDArray[np.float64]
_Int32Array = npt.NDArray[np.int32]
_IntpArray = npt.NDArray[np.intp]

# Cython's doctest table (empty: the kernels' docstrings hold no doctests).
__test__: dict[str, str]

class _BuildInfo(TypedDict):
    openmp: bool
    openmp_unavailable: bool
    debug_build: bool
    isa: str
    features: tuple[str, ...]
    source_id: int

# _im2col.pyx
def build_info() -> _BuildInfo: ...
def omp_max_threads() -> int: ...
def cpu_supports(features: Iterable[str]) -> bool: ...

# im2col.pxi
def im2col(
    x: _FloatArray,
    cols: _FloatArray,
    kh: int,
    kw: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    out_h: int,
    out_w: int,
    num_threads: int,
) -> None: ...
def col2im(
    cols: _FloatArray,
    dx: _FloatArray,
    kh: int,
    kw: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    out_h: int,
    out_w: int,
    num_threads: int,
) -> None: ...
def scatter_output(
    y: _FloatArray, out: _FloatArray, b: _FloatArray, has_bias: bool, relu: bool, num_threads: int
) -> None: ...
def gather_dout(dout: _FloatArray, dy: _FloatArray, db: _Float64Array, want_db: bool, num_threads: int) -> None: ...

# pooling.pxi
def max_pool_direct_columns(W: int, out_w: int, kw: int, stride_w: int, pad_w: int) -> int: ...
def max_pool_direct(
    x: _FloatArray,
    out: _FloatArray,
    argmax: _Int32Array,
    kh: int,
    kw: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    columns: _IntpArray,
    num_threads: int,
) -> None: ...
def max_pool_phased_scratch(H: int, W: int, out_w: int, kw: int, stride_w: int) -> tuple[int, int] | None: ...
def max_pool_phased(
    x: _FloatArray,
    out: _FloatArray,
    argmax: _Int32Array,
    kh: int,
    kw: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    scratch: _FloatArray,
    best: _Int32Array,
    num_threads: int,
) -> None: ...
def max_pool_rows_scratch(H: int, out_w: int) -> tuple[int, int]: ...
def max_pool_rows(
    x: _FloatArray,
    out: _FloatArray,
    argmax: _Int32Array,
    kh: int,
    stride_h: int,
    pad_h: int,
    pad_w: int,
    hmax: _FloatArray,
    hidx: _Int32Array,
    num_threads: int,
) -> None: ...
def max_pool2(x: _FloatArray, out: _FloatArray, argmax: _Int32Array, num_threads: int) -> None: ...
def avg_pool2(x: _FloatArray, out: _FloatArray, num_threads: int) -> None: ...
def max_pool3s2(
    x: _FloatArray,
    out: _FloatArray,
    argmax: _Int32Array,
    kh: int,
    stride_h: int,
    pad_h: int,
    num_threads: int,
) -> None: ...
def max_pool2_backward(dout: _FloatArray, argmax: _Int32Array, dx: _FloatArray, num_threads: int) -> None: ...
def max_pool_backward(dout: _FloatArray, argmax: _Int32Array, dx: _FloatArray, num_threads: int) -> None: ...
def avg_pool_forward(
    x: _FloatArray,
    out: _FloatArray,
    kh: int,
    kw: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    num_threads: int,
) -> None: ...
def avg_pool_backward(
    dout: _FloatArray,
    dx: _FloatArray,
    kh: int,
    kw: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    num_threads: int,
) -> None: ...

# batchnorm.pxi
def bn_channel_stats(
    x: _FloatArray, mean: _Float64Array, var: _Float64Array, c_lo: int, c_hi: int, num_threads: int
) -> None: ...
def bn_affine(
    x: _FloatArray,
    shift: _Float64Array,
    scale: _Float64Array,
    offset: _Float64Array,
    out: _FloatArray,
    c_lo: int,
    c_hi: int,
    num_threads: int,
) -> None: ...
def bn_backward_sums(
    dout: _FloatArray,
    x: _FloatArray,
    mean: _Float64Array,
    sum_dout: _Float64Array,
    sum_dout_xc: _Float64Array,
    c_lo: int,
    c_hi: int,
    num_threads: int,
) -> None: ...
def bn_backward_dx(
    dout: _FloatArray,
    x: _FloatArray,
    mean: _Float64Array,
    dout_scale: _Float64Array,
    xc_scale: _Float64Array,
    offset: _Float64Array,
    dx: _FloatArray,
    c_lo: int,
    c_hi: int,
    num_threads: int,
) -> None: ...

# update.pxi
def adam_update(
    w: _FloatArray,
    dw: _FloatArray,
    m: _FloatArray,
    v: _FloatArray,
    out: _FloatArray,
    one_minus_b1: float,
    one_minus_b2: float,
    b1: float,
    b2: float,
    c1: float,
    c2: float,
    lr: float,
    eps: float,
    num_threads: int,
) -> None: ...

# activations.pxi
def relu_forward_kernel(x: _FloatArray, out: _FloatArray, num_threads: int) -> None: ...
def relu_backward_kernel(dout: _FloatArray, x: _FloatArray, dx: _FloatArray, num_threads: int) -> None: ...

# winograd.pxi
def winograd_scratch(tile: int, tiles_h: int, tiles_w: int) -> int: ...
def winograd_input(
    x: _FloatArray,
    V: _FloatArray,
    pad_h: int,
    pad_w: int,
    tile: int,
    tiles_h: int,
    tiles_w: int,
    scratch: _FloatArray,
    num_threads: int,
) -> None: ...
def winograd_output(
    M: _FloatArray,
    out: _FloatArray,
    bias: _FloatArray,
    has_bias: bool,
    tile: int,
    tiles_h: int,
    tiles_w: int,
    scratch: _FloatArray,
    num_threads: int,
) -> None: ...
def winograd_output_adjoint(
    dout: _FloatArray,
    dM: _FloatArray,
    db: _Float64Array,
    has_bias: bool,
    tile: int,
    tiles_h: int,
    tiles_w: int,
    scratch: _FloatArray,
    num_threads: int,
) -> None: ...
def winograd_input_adjoint(
    dV: _FloatArray,
    dx: _FloatArray,
    pad_h: int,
    pad_w: int,
    tile: int,
    tiles_h: int,
    tiles_w: int,
    scratch: _FloatArray,
    num_threads: int,
) -> None: ...

# direct.pxi: the direct convolution (fastconv/engine/direct.py owns the policy)
DIRECT_FILTER_TILES: tuple[int, ...]

def direct_tiles() -> dict[str, Any]: ...
def direct_conv(
    x: _FloatArray,
    out: _FloatArray,
    wpk: _FloatArray,
    off: _IntpArray,
    b: _FloatArray,
    has_bias: bool,
    groups: int,
    taps: int,
    FT: int,
    up_h: int,
    up_w: int,
    at_h: int,
    at_w: int,
    Hb: int,
    S: int,
    Wq: int,
    stride_h: int,
    kernel_rows: _IntpArray,
    scratch: _FloatArray,
    num_threads: int,
) -> None: ...
def direct_conv_relu_pool2(
    x: _FloatArray,
    z: _FloatArray,
    argmax: _Int32Array,
    out_h: int,
    out_w: int,
    wpk: _FloatArray,
    off: _IntpArray,
    b: _FloatArray,
    has_bias: bool,
    groups: int,
    taps: int,
    FT: int,
    up_h: int,
    up_w: int,
    at_h: int,
    at_w: int,
    Hb: int,
    S: int,
    Wq: int,
    stride_h: int,
    kernel_rows: _IntpArray,
    band: int,
    scratch: _FloatArray,
    num_threads: int,
) -> None: ...
def direct_dw_scratch(
    Cin: int, Hb: int, S: int, Wq: int, F: int, out_h: int, out_w: int, tapsp: int, itemsize: int, routed: bool = False
) -> int: ...
def direct_dw(
    x: _FloatArray,
    dout: _FloatArray,
    parts: _FloatArray,
    db_parts: _Float64Array,
    bounds: _IntpArray,
    block_lo: int,
    off: _IntpArray,
    groups: int,
    taps: int,
    tapsp: int,
    at_h: int,
    at_w: int,
    Hb: int,
    S: int,
    Wq: int,
    stride_h: int,
    scratch: _FloatArray,
    num_threads: int,
    argmax: _Int32Array | None = None,
    out_h: int = 0,
    out_w: int = 0,
) -> None: ...

# peak.pxi: the benchmark's floating-point peak (fastconv/bench/roofline.py)
def peak_info() -> dict[str, Any]: ...
def peak_run(out: _FloatArray, x: float, step: float, m: float, c: float, iters: int, fused: bool) -> int: ...
