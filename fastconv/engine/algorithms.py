"""Which convolution algorithm runs: the algorithms there are, what each can serve, and
the rule of "auto". Every choice of algorithm is made here; ``conv`` and ``winograd`` only
run the one chosen.

* "im2col": every convolution (im2col + one GEMM per group and chunk).
* "winograd2" ("winograd"), "winograd4": Winograd F(2x2, 3x3) / F(4x4, 3x3) for 3x3
  kernels with stride 1 and dilation 1.
* "direct": no im2col matrix, a register-tiled kernel reading the image (``direct``): any
  layer whose per-thread buffers stay small; it wins on first layers (few input channels).
* "auto" (the default): direct where it was measured to win (``direct_wins``), else
  F(4x4, 3x3) where it was measured to win (``winograd_wins``) on finite inputs of normal
  scale, else im2col. Backward runs its forward's algorithm.
"""

from __future__ import annotations

import numpy as np

from ..kernels import picker
from . import direct
from .checks import finite
from .geometry import ConvGeometry, conv_geometry
from .types import FloatArray, IntPair

#: The convolution algorithms ``conv_forward`` accepts (fastconv.naive always runs its loops).
CONV_ALGORITHMS = ("auto", "im2col", "winograd", "winograd2", "winograd4", "direct")


#: The output tile size m of each Winograd algorithm, F(m x m, 3x3): "winograd" is "winograd2".
WINOGRAD_TILE = {"winograd": 2, "winograd2": 2, "winograd4": 4}


def check_algorithm(g: ConvGeometry, algorithm: object) -> str:
    """``algorithm`` checked against CONV_ALGORITHMS and against geometry ``g``: Winograd
    needs a 3x3 kernel, stride 1 and dilation 1, direct small per-thread buffers (ValueError
    naming ``algorithm``). Returns
    its canonical name: "winograd" is "winograd2"."""
    if not isinstance(algorithm, str) or algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(map(repr, CONV_ALGORITHMS))}, got {algorithm!r}")
    if algorithm in WINOGRAD_TILE:
        why = winograd_unsupported(g)
        if why:
            raise ValueError(f"algorithm={algorithm!r} needs {why}")
        return f"winograd{WINOGRAD_TILE[algorithm]}"
    if algorithm == "direct":
        why = direct.unsupported(g)
        if why:
            raise ValueError(f"algorithm={algorithm!r} needs {why}")
    return algorithm


def winograd_unsupported(g: ConvGeometry) -> str | None:
    """What Winograd (either tile size) would need that geometry ``g`` lacks, or None."""
    if (g.kh, g.kw) != (3, 3):
        return f"a 3x3 kernel, got {g.kh}x{g.kw}"
    if (g.stride_h, g.stride_w) != (1, 1):
        return f"stride 1, got ({g.stride_h}, {g.stride_w})"
    if (g.dil_h, g.dil_w) != (1, 1):
        return f"dilation 1, got ({g.dil_h}, {g.dil_w})"
    return None


def winograd_tiles(g: ConvGeometry, tile: int) -> tuple[int, int]:
    """(tiles_h, tiles_w): the tile x tile output tiles of Winograd F(tile x tile, 3x3)
    covering (out_h, out_w)."""
    return -(-g.out_h // tile), -(-g.out_w // tile)


#: "auto" runs direct convolution on layers within these bounds, where it was measured to
#: beat im2col forward and forward + backward (docs/performance.md, "Direct convolution and
#: the rule of auto"): stride 1, no dilation, no groups (the sweep measured only those).
AUTO_MAX_CHANNELS = 8
AUTO_MAX_FILTERS = 32
AUTO_KERNEL = (3, 7)
AUTO_MIN_OUT_W = 24


def direct_wins(g: ConvGeometry) -> bool:
    """Whether "auto" runs direct convolution for geometry ``g``: a first layer (up to 32
    filters and 8 input channels; a 3x3 to 7x7 kernel; output rows of 24 pixels or more;
    stride 1, no dilation, no groups), on a kernel build with FMA instructions."""
    lo, hi = AUTO_KERNEL
    return (
        g.groups == 1
        and (g.stride_h, g.stride_w) == (1, 1)
        and (g.dil_h, g.dil_w) == (1, 1)
        and g.C <= AUTO_MAX_CHANNELS
        and g.F <= AUTO_MAX_FILTERS
        and g.out_w >= AUTO_MIN_OUT_W
        and lo <= g.kh <= hi
        and lo <= g.kw <= hi
        and direct.unsupported(g) is None
        and direct.hardware_fma(picker.kernels.build_info())
    )


def winograd_wins(g: ConvGeometry) -> str | None:
    """The Winograd algorithm "auto" runs for geometry ``g`` (which Winograd can run), or
    None where im2col is faster. Winograd's transforms cost per channel, filter and tile,
    its GEMM savings per channel times filter, so it loses on few channels and small
    images; F(4x4, 3x3) beat F(2x2, 3x3) wherever F(2x2) beat im2col. The thresholds follow
    docs/performance.md ("Winograd F(4x4, 3x3) and the rule of auto")."""
    C, P = g.C // g.groups, g.out_h * g.out_w
    wins = (C >= 64 and P >= 16 * 16) or (C >= 32 and P >= 24 * 24) or (C >= 16 and P >= 32 * 32)
    return "winograd4" if wins else None


def magnitude(a: FloatArray) -> float:
    """The largest |value| of ``a`` (two reductions, no temporary array)."""
    return max(float(np.maximum.reduce(a, axis=None, initial=0)), -float(np.minimum.reduce(a, axis=None, initial=0)))


def normal_products(a: FloatArray, b: FloatArray) -> bool:
    """False when the largest |a| * |b| is not 0 but below 1024 times the dtype's smallest normal
    number: Winograd's products would then be subnormal numbers, whose fixed rounding error
    (2**-150 in float32), amplified by F(4x4)'s output transform, is large against the result
    (about 30 times im2col's error on 1e-41 inputs; the 1024 keeps a margin of about 100 above
    where it starts). All products 0 are exact."""
    largest = magnitude(a) * magnitude(b)
    return bool(largest == 0 or largest >= np.finfo(a.dtype).tiny * 1024)  # a np.bool_ otherwise


def choose(g: ConvGeometry, algorithm: str, x: FloatArray, w: FloatArray) -> tuple[str, bool]:
    """(the algorithm a convolution over geometry ``g`` runs, whether "auto" chose it).

    Winograd's transforms mix each input patch into all the outputs of its tile,
    so a NaN or an infinity reaches outputs whose 3x3 window does not hold it; "auto"
    therefore runs it on finite x and w only (and backward on a finite dout), so that
    non-finite values propagate exactly as in direct convolution (and PyTorch); and only
    when their products are normal numbers (``normal_products``), so that its error stays
    within its bound."""
    algorithm = check_algorithm(g, algorithm)
    if algorithm != "auto":
        return algorithm, False
    if direct_wins(g):  # it propagates NaN and infinity as the naive loops do
        return "direct", True
    chosen = winograd_wins(g) if winograd_unsupported(g) is None else None
    if chosen and finite(w) and finite(x) and normal_products(x, w):
        return chosen, True
    return "im2col", True


def for_backward(algorithm: str, auto: bool, dout: FloatArray, x: FloatArray, w: FloatArray) -> str:
    """The algorithm of a backward pass: its forward's, unless "auto" chose Winograd and
    dout may hold non-finite values, or its products with w or x are subnormal (see choose)."""
    if (
        algorithm in WINOGRAD_TILE
        and auto
        and not (finite(dout) and normal_products(dout, w) and normal_products(dout, x))
    ):
        return "im2col"
    return algorithm


def conv_algorithm(
    x: FloatArray,
    w: FloatArray,
    b: FloatArray | None = None,
    stride: IntPair = 1,
    pad: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    algorithm: str = "auto",
) -> str:
    """The algorithm ``conv_forward`` runs with these arguments: "im2col", "winograd2"
    (F(2x2, 3x3), which "winograd" names too), "winograd4" (F(4x4, 3x3)) or "direct"."""
    return choose(conv_geometry(x, w, b, stride, pad, dilation, groups), algorithm, x, w)[0]
