"""The inputs of ``fastconv predict``: ``.npy`` arrays and image files -> raw pixel batches.

``read_npy(path, shape)`` and ``read_image(path, shape)`` return an array (N, C, H, W) of
raw pixel values (0-255) for a model that takes images ``shape`` (C, H, W); anything
wrong is a ValueError naming the file.

* A ``.npy`` file's header (``np.lib.format``) is read and checked first: a pixel dtype
  (never an object array, so never a pickle), a shape that holds at least one image of
  ``shape``, and a data size that the file really holds, at most ``MAX_DATA_FILE_BYTES``.
  Only then is one array of that size allocated and filled.
* An image file goes through Pillow. At most ``MAX_IMAGE_BYTES`` are read from it, whatever it
  is (a pipe or a device is read up to that bound, then refused), and its size is checked from
  its header against ``image_pixel_limit`` before any pixel is decoded (``fastconv serve`` checks
  its uploads against the same limit). Any failure of the decoder is the file's: a ValueError
  naming it (Pillow raises SyntaxError, TypeError, struct.error... on broken files). 8-bit images
  are converted to the model's channels by Pillow; 16-bit ones (modes ``I;16``..., and ``I`` from
  a 16-bit PNG or a TIFF that gives its bit depth) are scaled from their bit depth to 8 bits first
  (Pillow's ``convert("L")`` would clip them: 32768 of 65535 is mid-grey, not white).

Messages name a file by ``display_name``: a name holding a newline or another unprintable
character is quoted with escapes, so it cannot forge a line of output.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat

import numpy as np

from ..engine.checks import shape_size
from .files import MAX_DATA_FILE_BYTES, npy_header

__all__ = [
    "check_image_size",
    "display_name",
    "image_pixel_limit",
    "quiet_pillow_size_warning",
    "read_image",
    "read_npy",
]

#: Most bytes read from an image file (a 4096x4096 picture is far less as a PNG or JPEG).
MAX_IMAGE_BYTES = 64 << 20


def image_pixel_limit(shape):
    """Most pixels of an image decoded for a model that takes images ``shape`` (C, H, W): 64 times the
    model's input per side (the most a resize to H x W can make use of), at least 2048x2048 and at
    most 4096x4096. Checked from the image's header, before decoding: a small file can declare a
    huge image (a 164 KB PNG of 13000x13000 decodes into 383 MB)."""
    _, H, W = shape
    return min(1 << 24, max(1 << 22, 4096 * H * W))


def display_name(path):
    """``path`` as messages and output print it: as it is when it is plainly printable, else quoted
    with Python's escapes ('a\\nb.png'), so that a name cannot forge a line."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    if text.isprintable() and "\\" not in text and not text.startswith(("'", '"')):
        return text
    return repr(text)


def quiet_pillow_size_warning():
    """For a command that owns its process: no DecompressionBombWarning. Pillow warns of an image over
    89 M pixels as it opens it; ``check_image_size`` refuses far smaller ones in one line of its own,
    so the warning would only be a second line."""
    with contextlib.suppress(ImportError):
        import warnings

        from PIL import Image

        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def check_image_size(size, shape, name):
    """Refuse an image of ``size`` (width, height) over ``image_pixel_limit(shape)``, naming it."""
    width, height = size
    limit = image_pixel_limit(shape)
    if width * height > limit:
        raise _Refused(
            f"{name}: the image is {width}x{height} pixels, more than the {limit} pixels an image "
            f"may have for this model's {shape[2]}x{shape[1]} input; scale it down first"
        )


def read_npy(path, shape, max_bytes=MAX_DATA_FILE_BYTES):
    """The images (N, C, H, W) in the .npy file ``path``: (N, C, H, W), one image (C, H, W),
    and for one channel (N, H, W) or (H, W); pixel values 0-255 of an integer or float dtype."""
    source, path = path, display_name(path)
    try:
        with open(source, "rb") as f:
            dtype, array_shape, fortran_order = _npy_header(f, path)
            images = _images_shape(path, array_shape, shape)
            nbytes = shape_size(array_shape) * dtype.itemsize
            held = os.fstat(f.fileno()).st_size - f.tell()
            if nbytes > max_bytes:
                raise ValueError(
                    f"{path}: its header declares an array {array_shape} of {nbytes} bytes, "
                    f"more than the limit of {max_bytes}"
                )
            if held != nbytes:
                raise ValueError(
                    f"{path}: its header declares an array {dtype} {array_shape} of {nbytes} "
                    f"bytes, but the file holds {held} bytes of data"
                )
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
    """The image file ``path`` (or a binary file object, named by its ``str``) as a batch (1, C, H, W)
    of uint8, converted to C channels and resized to H x W; returns (batch, note), the note saying
    when it was resized."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "reading PNG/JPEG files needs Pillow (pip install pillow); or pass a .npy array of pixel values"
        ) from None
    C, H, W = shape
    name = display_name(path)
    f = _open_bounded(path, name) if isinstance(path, (str, bytes, os.PathLike)) else path
    try:
        with f, Image.open(f) as img:
            check_image_size(img.size, shape, name)
            img = _eight_bit(img, Image).convert("L" if C == 1 else "RGB")
            note = ""
            if img.size != (W, H):
                note = f" (resized from {img.size[0]}x{img.size[1]} to {W}x{H})"
                img = img.resize((W, H), Image.Resampling.BILINEAR)
            a = np.asarray(img, dtype=np.uint8)
    except _Refused:
        raise
    except Exception as exc:  # noqa: BLE001  (any decoder failure is the file's fault, not fastconv's)
        raise ValueError(f"{name}: not a readable image ({decoder_error(exc)})") from None
    a = a[None] if C == 1 else a.transpose(2, 0, 1)
    return a[None], note


class _Refused(ValueError):
    """A refusal of ours, already naming the file."""


def decoder_error(exc):
    """One line saying what a decoder raised: its message, with the exception's type unless it is an
    OSError or a ValueError (whose messages read as the reason)."""
    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, (OSError, ValueError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open_bounded(path, name, max_bytes=MAX_IMAGE_BYTES):
    """``path`` opened for Pillow: a regular file of at most ``max_bytes``, or what a pipe, a device or
    a socket gives up to that bound, in memory (Pillow would read an unseekable file whole)."""
    try:
        f = open(path, "rb")
    except IsADirectoryError:
        raise _Refused(f"{name}: is a directory, not an image") from None
    with contextlib.ExitStack() as closing:
        closing.callback(f.close)
        info = os.fstat(f.fileno())
        if stat.S_ISREG(info.st_mode):
            if info.st_size > max_bytes:
                raise _Refused(f"{name}: {info.st_size} bytes, more than the limit of {max_bytes} for an image")
            closing.pop_all()
            return f
        data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _Refused(
                f"{name}: more than the limit of {max_bytes} bytes for an image (a pipe or a device that does not end?)"
            )
        return io.BytesIO(data)


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
