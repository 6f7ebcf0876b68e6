"""Which convolution algorithm runs: the algorithms there are, what each can serve, and
the rule of "auto". Every choice of algorithm is made here; ``conv`` and ``winograd`` only
run the one chosen.

* "im2col": every convolution (im2col + one GEMM per group and chunk).
* "winograd2" ("winograd"), "winograd4": Winograd F(2x2, 3x3) / F(4x4, 3x3) for 3x3
  kernels with stride 1 and dilation 1.
* "auto" (the default): F(4x4, 3x3) where it was measured to win (``winograd_wins``), on
  finite inputs; im2col otherwise. Backward runs its forward's algorithm.
"""
from __future__ import annotations

import numpy as np

from .geometry import ConvGeometry, conv_geometry
from .types import FloatArray, IntPair

#: The convolution algorithms ``conv_forward`` accepts (fastconv.naive always runs its loops).
CONV_ALGORITHMS = ("auto", "im2col", "winograd", "winograd2", "winograd4")


#: The output tile size m of each Winograd algorithm, F(m x m, 3x3): "winograd" is "winograd2".
WINOGRAD_TILE = {"winograd": 2, "winograd2": 2, "winograd4": 4}


def check_algorithm(g: ConvGeometry, algorithm: object) -> str:
    """``algorithm`` checked against CONV_ALGORITHMS and against geometry ``g``: Winograd
    needs a 3x3 kernel, stride 1 and dilation 1 (ValueError naming ``algorithm``). Returns
    its canonical name: "winograd" is "winograd2"."""
    if not isinstance(algorithm, str) or algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(map(repr, CONV_ALGORITHMS))}, got {algorithm!r}")
    if algorithm in WINOGRAD_TILE:
        why = winograd_unsupported(g)
        if why:
            raise ValueError(f"algorithm={algorithm!r} needs {why}")
        return f"winograd{WINOGRAD_TILE[algorithm]}"
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


def winograd_wins(g: ConvGeometry) -> str | None:
    """The Winograd algorithm "auto" runs for geometry ``g`` (which Winograd can run), or
    None where im2col is faster. Winograd's transforms cost per channel, filter and tile,
    its GEMM savings per channel times filter, so it loses on few channels and small
    images; F(4x4, 3x3) beat F(2x2, 3x3) wherever F(2x2) beat im2col. The thresholds follow
    docs/performance.md ("Winograd F(4x4, 3x3) and the rule of auto")."""
    C, P = g.C // g.groups, g.out_h * g.out_w
    wins = (C >= 64 and P >= 16 * 16) or (C >= 32 and P >= 24 * 24) or (C >= 16 and P >= 32 * 32)
    return "winograd4" if wins else None


def finite(a: FloatArray) -> bool:
    """False when ``a`` may hold a NaN or an infinity: its sum is not finite (a sum of
    finite values that overflows says False too, which costs only speed)."""
    return bool(np.isfinite(np.add.reduce(a, axis=None)))


def choose(g: ConvGeometry, algorithm: str, x: FloatArray, w: FloatArray) -> tuple[str, bool]:
    """(the algorithm a convolution over geometry ``g`` runs, whether "auto" chose it).

    Winograd's transforms mix each input patch into all the outputs of its tile,
    so a NaN or an infinity reaches outputs whose 3x3 window does not hold it; "auto"
    therefore runs it on finite x and w only (and backward on a finite dout), so that
    non-finite values propagate exactly as in direct convolution (and PyTorch)."""
    algorithm = check_algorithm(g, algorithm)
    if algorithm != "auto":
        return algorithm, False
    chosen = winograd_wins(g) if winograd_unsupported(g) is None else None
    if chosen and finite(w) and finite(x):
        return chosen, True
    return "im2col", True


def for_backward(algorithm: str, auto: bool, dout: FloatArray) -> str:
    """The algorithm of a backward pass: its forward's, unless "auto" chose Winograd and
    dout may hold non-finite values (see choose)."""
    return "im2col" if algorithm in WINOGRAD_TILE and auto and not finite(dout) else algorithm


def conv_algorithm(x: FloatArray, w: FloatArray, b: FloatArray | None = None, stride: IntPair = 1, pad: IntPair = 0,
                   dilation: IntPair = 1, groups: int = 1, algorithm: str = "auto") -> str:
    """The algorithm ``conv_forward`` runs with these arguments: "im2col", "winograd2"
    (F(2x2, 3x3), which "winograd" names too) or "winograd4" (F(4x4, 3x3))."""
    return choose(conv_geometry(x, w, b, stride, pad, dilation, groups), algorithm, x, w)[0]
