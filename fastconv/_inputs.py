"""The inputs of ``fastconv predict``: ``.npy`` arrays and image files -> raw pixel batches.

``read_npy(path, shape)`` and ``read_image(path, shape)`` return an array (N, C, H, W) of
raw pixel values (0-255) for a model that takes images ``shape`` (C, H, W); anything
wrong is a ValueError naming the file.

* A ``.npy`` file's header (``np.lib.format``) is read and checked first: a pixel dtype
  (never an object array, so never a pickle), a shape that holds at least one image of
  ``shape``, and a data size that the file really holds, at most ``MAX_DATA_FILE_BYTES``.
  Only then is one array of that size allocated and filled.
* An image file goes through Pillow. 8-bit images are converted to the model's channels by
  Pillow; 16-bit ones (modes ``I;16``..., and ``I`` from a 16-bit PNG or a TIFF that gives
  its bit depth) are scaled from their bit depth to 8 bits first (Pillow's ``convert("L")``
  would clip them: 32768 of 65535 is mid-grey, not white).
"""
from __future__ import annotations

import os

import numpy as np

from ._files import MAX_DATA_FILE_BYTES, npy_header
from .engine.checks import shape_size

__all__ = ["read_image", "read_npy"]



def read_npy(path, shape, max_bytes=MAX_DATA_FILE_BYTES):
    """The images (N, C, H, W) in the .npy file ``path``: (N, C, H, W), one image (C, H, W),
    and for one channel (N, H, W) or (H, W); pixel values 0-255 of an integer or float dtype."""
    try:
        with open(path, "rb") as f:
            dtype, array_shape, fortran_order = _npy_header(f, path)
            images = _images_shape(path, array_shape, shape)
            nbytes = shape_size(array_shape) * dtype.itemsize
            held = os.fstat(f.fileno()).st_size - f.tell()
            if nbytes > max_bytes:
                raise ValueError(f"{path}: its header declares an array {array_shape} of {nbytes} bytes, "
                                 f"more than the limit of {max_bytes}")
            if held != nbytes:
                raise ValueError(f"{path}: its header declares an array {dtype} {array_shape} of {nbytes} "
                                 f"bytes, but the file holds {held} bytes of data")
            a = np.empty(shape_size(array_shape), dtype=dtype)
            if f.readinto(memoryview(a.view(np.uint8))) != nbytes:
                raise ValueError(f"{path}: truncated while reading (the file changed?)")
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a .npy file") from None
    a = a.reshape(array_shape, order="F" if fortran_order else "C").reshape(images)
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"{path}: pixel values must be finite")
    if a.min() < 0 or a.max() > 255:
        raise ValueError(f"{path}: pixel values must lie in 0-255 (raw images), got {a.min()}..{a.max()}")
    return a


def _npy_header(f, path):
    """(dtype, shape, fortran_order) from the .npy header at the start of ``f``; a pixel dtype."""
    try:
        array_shape, fortran_order, dtype = npy_header(f, path)
    except ValueError:
        f.seek(0)
        if f.read(4) == b"PK\x03\x04":
            raise ValueError(f"{path}: not a .npy array of pixel values (an .npz archive?)") from None
        raise
    if dtype.kind not in "uif":
        raise ValueError(f"{path}: expected pixel values, got dtype {dtype}")
    return dtype, tuple(array_shape), fortran_order


def _images_shape(path, array_shape, shape):
    """The (N, C, H, W) shape that an array of ``array_shape`` holds images of ``shape`` in."""
    C, H, W = shape
    if array_shape == shape or (C == 1 and array_shape == (H, W)):
        images = (1, *shape)
    elif C == 1 and len(array_shape) == 3 and array_shape[1:] == (H, W):
        images = (array_shape[0], *shape)
    elif len(array_shape) == 4 and array_shape[1:] == shape:
        images = array_shape
    else:
        raise ValueError(f"{path}: array of shape {array_shape} does not hold images of shape {shape}")
    if images[0] == 0:
        raise ValueError(f"{path}: holds no images (shape {array_shape})")
    return images


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def read_image(path, shape):
    """The image file ``path`` as a batch (1, C, H, W) of uint8, converted to C channels and
    resized to H x W; returns (batch, note), the note saying when it was resized."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading PNG/JPEG files needs Pillow (pip install pillow); "
                          "or pass a .npy array of pixel values") from None
    C, H, W = shape
    try:
        with Image.open(path) as img:
            img = _eight_bit(img, Image).convert("L" if C == 1 else "RGB")
            note = ""
            if img.size != (W, H):
                note = f" (resized from {img.size[0]}x{img.size[1]} to {W}x{H})"
                img = img.resize((W, H), Image.Resampling.BILINEAR)
            a = np.asarray(img, dtype=np.uint8)
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None
    a = a[None] if C == 1 else a.transpose(2, 0, 1)
    return a[None], note


def _eight_bit(img, Image):
    """``img``, with a grey level deeper than 8 bits scaled down to an 8-bit "L" image by its bit
    depth (the high byte of a 16-bit value, as Pillow reads 16-bit colour PNGs); others as they are."""
    bits = _bit_depth(img)
    if bits is None:
        return img
    a = np.asarray(img)
    top = int(a.max(initial=0))
    if int(a.min(initial=0)) < 0 or top >= 1 << bits:
        raise ValueError(f"{bits}-bit image with pixel values outside 0..{(1 << bits) - 1}")
    a8 = a >> (bits - 8) if bits >= 8 else a << (8 - bits)
    return Image.fromarray(a8.astype(np.uint8))


def _bit_depth(img):
    """Bits per grey level of an image Pillow keeps in more than 8 bits, else None."""
    if img.mode not in _SIXTEEN_BIT_MODES + ("I", "F"):
        return None
    if img.mode == "F":
        raise ValueError("floating-point pixels have no defined range; save the image with 8 or 16 bits")
    tags = getattr(img, "tag_v2", None)  # a TIFF's BitsPerSample
    bits = tags.get(258) if tags is not None else None
    bits = bits[0] if isinstance(bits, tuple) else bits
    if bits:
        return int(bits)
    if img.mode in _SIXTEEN_BIT_MODES or img.format == "PNG":  # older Pillows open 16-bit PNGs as "I"
        return 16
    raise ValueError("32-bit integer pixels of unknown bit depth; save the image with 8 or 16 bits")
