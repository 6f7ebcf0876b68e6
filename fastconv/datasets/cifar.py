"""CIFAR-10 python batches, read without running the pickles they are.

A batch is a pickle by format, and unpickling can run arbitrary code, so every
batch goes through ``SafeCifarUnpickler``: it refuses every global except the
few the format needs, each replaced by a checking stand-in.
``read_cifar_folder`` reads the extracted ``cifar-10-batches-py/`` folder,
``read_cifar_archive`` the official ``cifar-10-python.tar.gz`` in one pass
(nothing is extracted); both also read the class names from ``batches.meta``
when it is there (``read_cifar_meta``).
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..io.files import MAX_DATA_FILE_BYTES

__all__ = ["SafeCifarUnpickler", "read_cifar_archive", "read_cifar_batch", "read_cifar_folder", "read_cifar_meta"]

CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_META = "batches.meta"

#: Longest class name accepted from batches.meta (the official ones have at most 10 characters).
MAX_CLASS_NAME = 64


class _Ndarray:
    """Stands for ``numpy.ndarray`` inside a batch: only a marker for ``_reconstruct``."""

    def __init__(self, *args):
        raise pickle.UnpicklingError("numpy.ndarray may only appear as an argument of _reconstruct")


class _DtypeStub:
    """Stands for ``numpy.dtype('u1')``; its pickled state must be the plain uint8 one."""

    def __setstate__(self, state):
        if not (
            isinstance(state, tuple)
            and len(state) == 8
            and state[0] == 3
            and state[1] in ("|", b"|")
            and state[2:5] == (None, None, None)
            and state[5:] == (-1, -1, 0)
        ):
            raise pickle.UnpicklingError(f"unexpected dtype state {state!r:.80}")


class _ArrayStub:
    """Stands for the uint8 array of a batch until its state (shape, raw bytes) is checked.

    numpy's own ``ndarray.__setstate__`` never sees data from the file: the
    array is built here with ``np.frombuffer`` from validated bytes.
    """

    array = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("unexpected array state")
        version, shape, dtype, is_fortran, raw = state
        if version != 1 or not isinstance(dtype, _DtypeStub) or is_fortran not in (False, 0):
            raise pickle.UnpicklingError("the image array must be a C-ordered uint8 array")
        if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise pickle.UnpicklingError(f"bad array shape {shape!r:.80}")
        if isinstance(raw, str):
            raw = raw.encode("latin1")
        if not isinstance(raw, bytes) or len(raw) != int(np.prod(shape, dtype=object)):
            raise pickle.UnpicklingError(f"array data do not match its shape {shape}")
        self.array = np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _safe_reconstruct(subtype, shape, typecode):
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``: an empty array whose state
    (shape, dtype, raw bytes) the pickle's BUILD opcode then sets."""
    if subtype is not _Ndarray or tuple(shape) != (0,) or typecode not in (b"b", "b"):
        raise pickle.UnpicklingError("unexpected array reconstruction arguments")
    return _ArrayStub()


def _safe_frombuffer(buf, dtype, shape, order, axis_order=None):
    """numpy's ``_frombuffer(buf, dtype, shape, order)``: how numpy pickles an array with protocol 5
    (the buffer in-band). Only raw bytes, the checked uint8 dtype, a shape of ints whose size is
    exactly the byte count, and a C or Fortran order: the array is then a view of those bytes."""
    if isinstance(buf, bytearray):
        buf = bytes(buf)
    if not isinstance(buf, bytes) or not isinstance(dtype, _DtypeStub):
        raise pickle.UnpicklingError("_frombuffer must get raw bytes and the uint8 dtype")
    if order not in ("C", "F") or axis_order is not None:
        raise pickle.UnpicklingError(f"unexpected array order {order!r:.20} / {axis_order!r:.40}")
    if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
        raise pickle.UnpicklingError(f"bad array shape {shape!r:.80}")
    if len(buf) != int(np.prod(shape, dtype=object)):
        raise pickle.UnpicklingError(f"array data ({len(buf)} bytes) do not match its shape {shape}")
    stub = _ArrayStub()
    stub.array = np.frombuffer(buf, dtype=np.uint8).reshape(shape, order=order)
    return stub


def _safe_dtype(name, align=False, copy=True):
    """``numpy.dtype`` limited to the unsigned bytes of the image data."""
    if name not in ("u1", b"u1"):
        raise pickle.UnpicklingError(f"dtype {name!r:.40} is not allowed (CIFAR-10 data is u1)")
    return _DtypeStub()


def _safe_encode(text, encoding="utf-8"):
    """``_codecs.encode(str, 'latin1')``: how Python 3 pickles bytes with protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is allowed")
    return text.encode("latin1")


class SafeCifarUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10 python batches that refuses every other global.

    A batch is a dict of bytes (or str), lists of ints and one uint8 numpy
    array. Rebuilding that array needs ``numpy.core.multiarray._reconstruct``
    (``numpy._core`` when pickled by numpy 2), ``numpy.ndarray`` and
    ``numpy.dtype``; batches re-pickled by Python 3 also use
    ``_codecs.encode``, and those re-pickled with protocol 5 rebuild the array
    with ``numpy._core.numeric._frombuffer`` (``numpy.core`` before numpy 2)
    instead of ``_reconstruct``. Each is mapped to a stand-in that accepts only
    the arguments the format uses; any other global raises UnpicklingError
    before anything is called. The array and its dtype are rebuilt by
    stand-ins that check their state, so numpy never sees a hostile state
    either; out-of-band buffers (protocol 5's NEXT_BUFFER) are refused.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
        ("numpy", "ndarray"): _Ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _safe_encode,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 file") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed in a CIFAR-10 file")


def _key(d, name):
    for k in (name, name.encode()):
        if k in d:
            return d[k]
    raise ValueError(f"has no '{name}' entry")


def _unpickle(data, name, what, parse):
    """``parse(the dict in data)``, unpickled by ``SafeCifarUnpickler``; every error is a
    ValueError that starts with ``name`` and says it is not a valid ``what``."""
    try:
        obj = SafeCifarUnpickler(io.BytesIO(data), encoding="bytes").load()
        if not isinstance(obj, dict):
            raise ValueError(f"holds a {type(obj).__name__}, not a dict")
        return parse(obj)
    except ValueError as exc:
        raise ValueError(f"{name}: not a valid {what}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (UnpicklingError, EOFError, TypeError, ... from a corrupt or hostile file)
        raise ValueError(f"{name}: not a valid {what} ({type(exc).__name__}: {exc})") from None


def _batch_arrays(batch):
    images = _key(batch, "data")
    labels = _key(batch, "labels")
    images = images.array if isinstance(images, _ArrayStub) else None
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 2
        or images.shape[1] != 3 * 32 * 32
    ):
        raise ValueError("'data' must be a uint8 array (N, 3072)")
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise ValueError("'labels' must be a list of ints")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"has {images.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError("labels must be in [0, 9]")
    return images.reshape(-1, 3, 32, 32).copy(), labels


def read_cifar_batch(data, name="<batch>"):
    """Parse one CIFAR-10 python batch (its bytes) with ``SafeCifarUnpickler``.

    Returns (images uint8 (N, 3, 32, 32), labels int64 (N,)). Errors are
    ValueErrors that start with ``name``.
    """
    return _unpickle(data, name, "CIFAR-10 batch", _batch_arrays)


def _class_names(meta):
    names = _key(meta, "label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise ValueError("'label_names' must be a list of the 10 class names")
    out = []
    for n in names:
        text = n.decode("utf-8") if isinstance(n, bytes) else n
        if not isinstance(text, str) or not 0 < len(text.strip()) <= MAX_CLASS_NAME or not text.isprintable():
            raise ValueError(f"class name {n!r:.80} is not a printable name of 1 to {MAX_CLASS_NAME} characters")
        out.append(text.strip())
    return tuple(out)


def read_cifar_meta(data, name="<batches.meta>"):
    """The 10 class names (str) in a CIFAR-10 ``batches.meta`` (its bytes: a pickled dict with
    ``label_names``), read with ``SafeCifarUnpickler``; errors are ValueErrors naming ``name``."""
    return _unpickle(data, name, "CIFAR-10 batches.meta", _class_names)


def read_cifar_folder(folder):
    """({batch name: (images, labels)} of the six batches in an extracted ``cifar-10-batches-py/``,
    the class names of its ``batches.meta``, or None without one)."""
    folder = Path(folder)
    out = {}
    for batch in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        path = folder / batch
        if path.stat().st_size > MAX_DATA_FILE_BYTES:
            raise ValueError(f"{path}: too large for a CIFAR-10 batch")
        out[batch] = read_cifar_batch(path.read_bytes(), str(path))
    meta = folder / CIFAR_META
    names = None
    if meta.is_file():
        if meta.stat().st_size > MAX_DATA_FILE_BYTES:
            raise ValueError(f"{meta}: too large for a CIFAR-10 batches.meta")
        names = read_cifar_meta(meta.read_bytes(), str(meta))
    return out, names


def read_cifar_archive(archive):
    """Read the batches (and the class names of ``batches.meta``, or None) straight from the
    tar.gz in one pass (nothing is extracted); returns what ``read_cifar_folder`` does."""
    wanted = {f"{CIFAR_FOLDER}/{b}": b for b in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH, CIFAR_META)}
    out = {}
    try:
        with tarfile.open(archive, "r|gz") as tf:
            for member in tf:
                batch = wanted.get(member.name.lstrip("./"))
                if batch is None:
                    continue
                if not member.isfile() or member.size > MAX_DATA_FILE_BYTES:
                    raise ValueError(f"{archive}: member {member.name} is not a regular file of sane size")
                read = read_cifar_meta if batch == CIFAR_META else read_cifar_batch
                out[batch] = read(tf.extractfile(member).read(), f"{archive}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{archive}: corrupt or truncated archive ({exc})") from None
    names = out.pop(CIFAR_META, None)
    missing = sorted(set(wanted.values()) - set(out) - {CIFAR_META})
    if missing:
        raise ValueError(f"{archive}: the archive has no {', '.join(f'{CIFAR_FOLDER}/{m}' for m in missing)}")
    return out, names
