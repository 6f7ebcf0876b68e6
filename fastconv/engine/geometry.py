"""Shape arithmetic: output sizes and the geometry records of convolution and pooling.

Both ``fastconv.naive`` and the fast engine call these functions, so the two paths
cannot disagree on an output size or on what counts as a bad argument.
Vocabulary: x (N, C, H, W), w (F, C // groups, kh, kw), out (N, F, out_h, out_w).
"""

from __future__ import annotations

from typing import NamedTuple

from .checks import INT32_MAX, check_array_size, check_float_array, check_int, check_same_dtype, pair
from .types import FloatArray, IntPair, Shape


def conv_output_size(size: int, kernel: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution or pooling along one axis (PyTorch's formula).

    ``(size + 2*pad - dilation*(kernel - 1) - 1) // stride + 1``; values < 1 mean
    the (dilated) kernel does not fit in the padded input.
    """
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def same_pad(kernel: int) -> int:
    """The pad of a "same" convolution: ``(kernel - 1) // 2`` on each side, which keeps the
    input's size at stride 1 for an odd kernel (an even one loses a pixel)."""
    return (kernel - 1) // 2


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
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.F, self.out_h, self.out_w)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.F, self.C // self.groups, self.kh, self.kw)


def conv_geometry(
    x: FloatArray,
    w: FloatArray,
    b: FloatArray | None = None,
    stride: IntPair = 1,
    pad: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> ConvGeometry:
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
    culprits = (
        f"for x of shape {x.shape} and w of shape {w.shape}, pad ({ph}, {pw}), "
        f"stride ({sh}, {sw}) and dilation ({dh}, {dw})"
    )
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
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.out_h, self.out_w)


def pool_geometry(x: FloatArray, kernel_size: IntPair, stride: IntPair | None = None, pad: IntPair = 0) -> PoolGeometry:
    """Validate pooling arguments (PyTorch's rules) and return their PoolGeometry."""
    check_float_array(x, "x", 4)
    return pool_geometry_of_shape(x.shape, kernel_size, stride, pad)


def pool_geometry_of_shape(
    shape: Shape,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    pad: IntPair = 0,
    what: str = "x",
    names: tuple[str, str, str] = ("kernel_size", "stride", "pad"),
) -> PoolGeometry:
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
    if H * W > INT32_MAX:
        raise ValueError(f"{what} planes must have at most 2**31 - 1 pixels (H * W), got {H} * {W}")
    out_h = conv_output_size(H, kh, sh, ph)
    out_w = conv_output_size(W, kw, sw, pw)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"{k_name} ({kh}, {kw}) is larger than the padded input "
            f"({H + 2 * ph}, {W + 2 * pw}) of {what} {tuple(shape)} with {p_name} ({ph}, {pw})"
        )
    return PoolGeometry(N, C, H, W, kh, kw, sh, sw, ph, pw, out_h, out_w)
