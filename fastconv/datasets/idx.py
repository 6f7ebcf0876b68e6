"""IDX files (the MNIST format): ``read_idx(path)``, gzipped or not, every header field checked."""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from ..engine.checks import shape_size
from ..io.files import MAX_DATA_FILE_BYTES

__all__ = ["read_idx"]

# type code -> big-endian dtype, from the format's description
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# Bytes read per call: small next to any data set, large enough to cost nothing per call.
_READ_CHUNK = 1 << 20


def _read_exact(f, n):
    """Up to n bytes from f (fewer only at the end of the data); for the short header."""
    chunks, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_into(f, out):
    """Fill the array ``out`` from f, a chunk at a time (no copy of the whole); returns the bytes read."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    got = 0
    while got < len(view):
        n = f.readinto(view[got : got + _READ_CHUNK])
        if not n:
            break
        got += n
    return got


def read_idx(path, max_bytes=MAX_DATA_FILE_BYTES):
    """Read an IDX file (gzip-compressed or not) into a native-endian array.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B
    int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions,
    then each dimension as a big-endian uint32; the data follow, exactly
    prod(dims) items. Any deviation raises ValueError naming the file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            try:
                return _parse_idx(f, path, max_bytes)
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not an IDX file") from None


def _parse_idx(f, path, max_bytes):
    head = _read_exact(f, 4)
    if len(head) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(head)} bytes, the header needs 4)")
    if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number 0x{head.hex()})")
    ndim = head[3]
    if not 1 <= ndim <= 8:
        raise ValueError(f"{path}: IDX header says {ndim} dimensions, expected 1 to 8")
    raw_dims = _read_exact(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header (expected {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    dtype = np.dtype(_IDX_TYPES[head[2]])
    size = shape_size(dims) * dtype.itemsize
    if size > max_bytes:
        raise ValueError(f"{path}: IDX header declares {size} bytes of data {dims}, more than the limit {max_bytes}")
    # One array of the declared size, filled in place and byte-swapped in place: the data's only copy.
    out = np.empty(dims, dtype=dtype)
    got = _read_into(f, out)
    if got < size:
        raise ValueError(
            f"{path}: truncated: the header declares dimensions {dims} "
            f"({size} bytes of data) but only {got} bytes follow"
        )
    if f.read(1):
        raise ValueError(f"{path}: has data after the {size} bytes its header {dims} declares")
    if dtype.itemsize > 1 and not dtype.isnative:
        out = out.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return out
