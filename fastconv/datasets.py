"""Real data sets: MNIST, Fashion-MNIST and CIFAR-10, read from their official files.

* ``load_mnist(root=None)``, ``load_fashion_mnist(root=None)``,
  ``load_cifar10(root=None)`` return a ``Dataset``: images as uint8 arrays
  (N, C, H, W), labels as int64 arrays (N,), the class names, and where the
  files were found.
* ``read_idx(path)`` reads one IDX file (the MNIST format), gzipped or not,
  checking its magic number, dimensions and size; anything wrong raises a
  ValueError that names the file.
* ``read_cifar_batch(data, name)`` reads one CIFAR-10 python batch. Those
  batches are pickles by format, and unpickling can run arbitrary code, so
  they go through ``SafeCifarUnpickler``: it refuses every global except the
  four the format needs, each replaced by a checking stand-in.
* ``Preprocessing`` turns uint8 images into the float input of a model; its
  statistics (per-channel mean and std, or the mean image) are computed on the
  training split, saved with the model, and applied again at prediction.
* ``train_val_split`` holds out a validation set from the training split.

Where the files are looked for, without ``root`` (the first place that has
all of a data set's files wins):

1. ``$FASTCONV_DATA/<name>/`` when the variable is set,
2. ``~/.cache/fastconv/<name>/``,
3. for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist/`` (the Debian
   package ``dataset-fashion-mnist``),

with ``<name>`` one of ``mnist``, ``fashion-mnist``, ``cifar10``. With
``root``, the files are looked for in ``root/<name>/`` and in ``root``
itself. IDX files may be gzipped (``train-images-idx3-ubyte.gz``) or not
(``train-images-idx3-ubyte``); CIFAR-10 may be the official archive
``cifar-10-python.tar.gz`` or its extracted folder ``cifar-10-batches-py/``.

When nothing is found and ``download`` is true, the official files are
downloaded into the first of ``root/<name>``, ``$FASTCONV_DATA/<name>``,
``~/.cache/fastconv/<name>``, each verified against its SHA-256 before it
is moved into place. Without a network the loader raises a
``DatasetNotFoundError`` (an ``OSError``) that says which files to put where.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import numbers
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._files import sha256_of as file_sha256

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "Preprocessing",
    "SafeCifarUnpickler",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "read_cifar_batch",
    "read_idx",
    "train_val_split",
    "download_file",
]

# ---------------------------------------------------------------------------- sources
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"

#: Official download locations and the SHA-256 of each file. Mirrors are tried
#: in order; a file is used only if its digest matches.
SOURCES = {
    "mnist": {
        "mirrors": [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
        "files": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    },
    "fashion-mnist": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "files": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
    "cifar10": {
        "mirrors": ["https://www.cs.toronto.edu/~kriz/"],
        "files": {CIFAR_ARCHIVE: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
    },
}

#: Places searched after $FASTCONV_DATA and ~/.cache/fastconv.
SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}

CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
}
TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}

#: The opener used for downloads (``urllib.request.urlopen``); tests replace it.
_urlopen = urllib.request.urlopen

_MAX_FILE_BYTES = 1 << 30  # no data file of these sets comes close


class DatasetNotFoundError(FileNotFoundError):
    """The data set's files are not on disk and could not be downloaded."""


@dataclass
class Dataset:
    """A data set in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    source: str

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.X_train.shape[1:])

    @property
    def num_classes(self):
        return len(self.class_names)


# ---------------------------------------------------------------------------- IDX
# type code -> big-endian dtype, from the format's description
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_exact(f, n):
    """Up to n bytes from f (fewer only at the end of the data)."""
    chunks, got = [], 0
    while got < n:
        chunk = f.read(min(n - got, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_idx(path, max_bytes=_MAX_FILE_BYTES):
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
    size = int(np.prod(dims, dtype=object)) * dtype.itemsize
    if size > max_bytes:
        raise ValueError(f"{path}: IDX header declares {size} bytes of data {dims}, more than the limit {max_bytes}")
    data = _read_exact(f, size)
    if len(data) < size:
        raise ValueError(f"{path}: truncated: the header declares dimensions {dims} "
                         f"({size} bytes of data) but only {len(data)} bytes follow")
    if f.read(1):
        raise ValueError(f"{path}: has data after the {size} bytes its header {dims} declares")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------- CIFAR-10
class _Ndarray:
    """Stands for ``numpy.ndarray`` inside a batch: only a marker for ``_reconstruct``."""

    def __init__(self, *args):
        raise pickle.UnpicklingError("numpy.ndarray may only appear as an argument of _reconstruct")


class _DtypeStub:
    """Stands for ``numpy.dtype('u1')``; its pickled state must be the plain uint8 one."""

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3
                and state[1] in ("|", b"|") and state[2:5] == (None, None, None)
                and state[5:] == (-1, -1, 0)):
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
    ``_codecs.encode``. Each is mapped to a stand-in that accepts only the
    arguments the format uses; any other global raises UnpicklingError before
    anything is called. The array and its dtype are rebuilt by stand-ins that
    check their state, so numpy never sees a hostile state either.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy", "ndarray"): _Ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _safe_encode,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 batch") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed in a CIFAR-10 batch")


def _key(d, name):
    for k in (name, name.encode()):
        if k in d:
            return d[k]
    raise ValueError(f"has no '{name}' entry")


def read_cifar_batch(data, name="<batch>"):
    """Parse one CIFAR-10 python batch (its bytes) with ``SafeCifarUnpickler``.

    Returns (images uint8 (N, 3, 32, 32), labels int64 (N,)). Errors are
    ValueErrors that start with ``name``.
    """
    try:
        batch = SafeCifarUnpickler(io.BytesIO(data), encoding="bytes").load()
        if not isinstance(batch, dict):
            raise ValueError(f"holds a {type(batch).__name__}, not a dict")
        images = _key(batch, "data")
        labels = _key(batch, "labels")
        images = images.array if isinstance(images, _ArrayStub) else None
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
                or images.shape[1] != 3 * 32 * 32:
            raise ValueError("'data' must be a uint8 array (N, 3072)")
        if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                   for v in labels):
            raise ValueError("'labels' must be a list of ints")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"has {images.shape[0]} images but {labels.size} labels")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError("labels must be in [0, 9]")
    except ValueError as exc:
        raise ValueError(f"{name}: not a valid CIFAR-10 batch: {exc}") from None
    except Exception as exc:  # UnpicklingError, EOFError, TypeError, ... from a corrupt or hostile file
        raise ValueError(f"{name}: not a valid CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    return images.reshape(-1, 3, 32, 32).copy(), labels


def _read_cifar_folder(folder):
    out = {}
    for batch in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        path = folder / batch
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise ValueError(f"{path}: too large for a CIFAR-10 batch")
        out[batch] = read_cifar_batch(path.read_bytes(), str(path))
    return out


def _read_cifar_archive(archive):
    """Read the batches straight from the tar.gz in one pass (nothing is extracted)."""
    wanted = {f"{CIFAR_FOLDER}/{b}": b for b in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH)}
    out = {}
    try:
        with tarfile.open(archive, "r|gz") as tf:
            for member in tf:
                batch = wanted.get(member.name.lstrip("./"))
                if batch is None:
                    continue
                if not member.isfile() or member.size > _MAX_FILE_BYTES:
                    raise ValueError(f"{archive}: member {member.name} is not a regular file of sane size")
                out[batch] = read_cifar_batch(tf.extractfile(member).read(), f"{archive}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{archive}: corrupt or truncated archive ({exc})") from None
    missing = sorted(set(wanted.values()) - set(out))
    if missing:
        raise ValueError(f"{archive}: the archive has no {', '.join(f'{CIFAR_FOLDER}/{m}' for m in missing)}")
    return out


# ---------------------------------------------------------------------------- finding files
def _search_dirs(name, root):
    if root is not None:
        return [Path(root) / name, Path(root)]
    dirs = []
    env = os.environ.get("FASTCONV_DATA")
    if env:
        dirs.append(Path(env) / name)
    dirs.append(Path.home() / ".cache" / "fastconv" / name)
    dirs.extend(SYSTEM_DIRS.get(name, []))
    return dirs


def _download_dir(name, root):
    if root is not None:
        return Path(root) / name
    env = os.environ.get("FASTCONV_DATA")
    return Path(env) / name if env else Path.home() / ".cache" / "fastconv" / name


def _idx_paths(folder):
    """{key: path} when ``folder`` holds all four IDX files (gzipped or not), else None."""
    found = {}
    for key, stem in IDX_FILES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _cifar_location(folder):
    for candidate in (folder / CIFAR_FOLDER, folder):
        if all((candidate / b).is_file() for b in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH)):
            return candidate
    archive = folder / CIFAR_ARCHIVE
    return archive if archive.is_file() else None


def _expected_files(name):
    if name == "cifar10":
        return f"{CIFAR_ARCHIVE} (or its extracted folder {CIFAR_FOLDER}/)"
    return ", ".join(f"{stem}.gz" for stem in IDX_FILES.values()) + " (gzipped or not)"


def _locate(name, root, download, opener):
    """Path of the data (a folder of IDX files, a CIFAR folder or archive), downloading if needed."""
    find = _cifar_location if name == "cifar10" else _idx_paths
    searched = _search_dirs(name, root)
    for folder in searched:
        hit = find(folder)
        if hit is not None:
            return hit
    title = TITLES[name]
    where = ", ".join(str(d) for d in searched)
    target = _download_dir(name, root)
    hint = (f"put {_expected_files(name)} in {target}/ (or set FASTCONV_DATA to a folder "
            f"with a {name}/ subfolder holding them)")
    if name == "fashion-mnist":
        hint += ", or install the Debian package dataset-fashion-mnist"
    if not download:
        raise DatasetNotFoundError(f"{title} not found (looked in {where}); {hint}")
    try:
        fetch(name, target, opener=opener)
    except (OSError, ValueError) as exc:
        raise DatasetNotFoundError(f"{title} not found (looked in {where}) and the download failed "
                                   f"({exc}); {hint}") from None
    hit = find(target)
    if hit is None:  # pragma: no cover - fetch wrote every file
        raise DatasetNotFoundError(f"{title}: downloaded files missing from {target}; {hint}")
    return hit


# ---------------------------------------------------------------------------- downloads
def download_file(url, dest, sha256, opener=None, timeout=30, max_bytes=_MAX_FILE_BYTES):
    """Download ``url`` to ``dest``, moving it into place only if its SHA-256 matches.

    ``opener(url, timeout=...)`` returns a file-like response (default
    ``urllib.request.urlopen``, which also reads ``file://`` URLs). The data
    go to a temporary file next to ``dest``; a digest mismatch removes it and
    raises ValueError.
    """
    opener = _urlopen if opener is None else opener
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part{os.getpid()}")
    h = hashlib.sha256()
    size = 0
    try:
        with opener(url, timeout=timeout) as response, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                size += len(block)
                if size > max_bytes:
                    raise ValueError(f"{url}: larger than {max_bytes} bytes")
                h.update(block)
                out.write(block)
        digest = h.hexdigest()
        if digest != sha256:
            raise ValueError(f"{url}: SHA-256 mismatch (expected {sha256}, got {digest})")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def fetch(name, dest_dir, opener=None):
    """Download every official file of data set ``name`` into ``dest_dir`` (verified)."""
    source = SOURCES[name]
    for filename, digest in source["files"].items():
        dest = Path(dest_dir) / filename
        if dest.is_file() and file_sha256(dest) == digest:
            continue
        errors = []
        for mirror in source["mirrors"]:
            try:
                download_file(mirror + filename, dest, digest, opener=opener)
                break
            except (OSError, ValueError, urllib.error.URLError) as exc:
                errors.append(f"{mirror + filename}: {getattr(exc, 'reason', exc)}")
        else:
            raise OSError("; ".join(errors))


# ---------------------------------------------------------------------------- loaders
def _load_idx_set(name, root, download, opener):
    paths = _locate(name, root, download, opener)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        ipath, lpath = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{ipath}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise ValueError(f"{lpath}: expected uint8 labels (N,), got {labels.dtype} {labels.shape}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"{lpath}: {labels.shape[0]} labels for the {images.shape[0]} images of {ipath}")
        if labels.size and labels.max() > 9:
            raise ValueError(f"{lpath}: labels must be in [0, 9], found {labels.max()}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise ValueError(f"{paths['test_images']}: image size {arrays['test_images'].shape[1:]} differs "
                         f"from the training images' {arrays['train_images'].shape[1:]}")
    return Dataset(
        name=name,
        X_train=arrays["train_images"][:, None],
        y_train=arrays["train_labels"].astype(np.int64),
        X_test=arrays["test_images"][:, None],
        y_test=arrays["test_labels"].astype(np.int64),
        class_names=CLASS_NAMES[name],
        source=str(paths["train_images"].parent),
    )


def load_mnist(root=None, download=True, opener=None):
    """MNIST: 60,000 + 10,000 uint8 images (N, 1, 28, 28), int64 labels 0-9."""
    return _load_idx_set("mnist", root, download, opener)


def load_fashion_mnist(root=None, download=True, opener=None):
    """Fashion-MNIST: 60,000 + 10,000 uint8 images (N, 1, 28, 28), int64 labels 0-9."""
    return _load_idx_set("fashion-mnist", root, download, opener)


def load_cifar10(root=None, download=True, opener=None):
    """CIFAR-10: 50,000 + 10,000 uint8 images (N, 3, 32, 32), int64 labels 0-9."""
    location = _locate("cifar10", root, download, opener)
    batches = _read_cifar_folder(location) if location.is_dir() else _read_cifar_archive(location)
    train = [batches[b] for b in CIFAR_TRAIN_BATCHES]
    X_test, y_test = batches[CIFAR_TEST_BATCH]
    return Dataset(
        name="cifar10",
        X_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        X_test=X_test,
        y_test=y_test,
        class_names=CLASS_NAMES["cifar10"],
        source=str(location),
    )


LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10}


def load_dataset(name, root=None, download=True, opener=None):
    """``load_<name>`` by name: 'mnist', 'fashion-mnist' or 'cifar10'."""
    if name not in LOADERS:
        raise ValueError(f"dataset must be one of {', '.join(LOADERS)}, got {name!r}")
    return LOADERS[name](root=root, download=download, opener=opener)


def train_val_split(X, y, num_val, seed=0):
    """Hold out ``num_val`` random examples: returns (X_train, y_train, X_val, y_val)."""
    if isinstance(num_val, bool) or not isinstance(num_val, numbers.Integral) or not 0 <= num_val < len(X):
        raise ValueError(f"num_val must be an int in [0, {len(X)}), got {num_val!r}")
    if len(y) != len(X):
        raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)}")
    order = np.random.default_rng(seed).permutation(len(X))
    val, train = np.sort(order[:num_val]), np.sort(order[num_val:])
    return X[train], y[train], X[val], y[val]


# ---------------------------------------------------------------------------- preprocessing
class Preprocessing:
    """Raw uint8 images (N, C, H, W) -> the float input of a model.

    Modes (statistics from the training split, via ``fit``):

    * ``"channel"`` (default): ``(x / 255 - mean[c]) / std[c]`` per channel;
    * ``"mean_image"``: ``x / 255 - mean_image`` (CS231n's mean image);
    * ``"scale"``: ``x / 255``.

    The statistics go into the model's JSON file (``to_dict``/``from_dict``),
    so prediction applies exactly what training did.
    """

    MODES = ("channel", "mean_image", "scale")

    def __init__(self, mode="channel", input_shape=None, mean=None, std=None, mean_image=None):
        if mode not in self.MODES:
            raise ValueError(f"preprocessing mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        self.mean_image = None if mean_image is None else np.asarray(mean_image, dtype=np.float64)
        self._validate()

    def _validate(self):
        shape = self.input_shape
        if shape is None or len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"preprocessing input_shape must be (C, H, W), got {shape}")
        C = shape[0]
        if self.mode == "channel":
            for name, a in (("mean", self.mean), ("std", self.std)):
                if a is None or a.shape != (C,) or not np.all(np.isfinite(a)):
                    raise ValueError(f"preprocessing {name} must be {C} finite numbers")
            if np.any(self.std <= 0):
                raise ValueError("preprocessing std must be positive")
        if self.mode == "mean_image":
            a = self.mean_image
            if a is None or a.shape != shape or not np.all(np.isfinite(a)):
                raise ValueError(f"preprocessing mean_image must be a finite array of shape {shape}")

    @classmethod
    def fit(cls, images, mode="channel", eps=1e-8, chunk=4096):
        """Statistics of uint8 training images (N, C, H, W), in float64, chunk by chunk."""
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"images must be an array (N, C, H, W) with N >= 1, got {getattr(images, 'shape', images)}")
        N, C = images.shape[:2]
        if mode == "scale":
            return cls("scale", images.shape[1:])
        total = np.zeros(images.shape[1:], dtype=np.float64)
        for i in range(0, N, chunk):
            total += images[i:i + chunk].sum(axis=0, dtype=np.float64)
        mean_image = total / (255.0 * N)
        if mode == "mean_image":
            return cls("mean_image", images.shape[1:], mean_image=mean_image)
        mean = mean_image.mean(axis=(1, 2))
        sq = np.zeros(C, dtype=np.float64)
        for i in range(0, N, chunk):
            x = images[i:i + chunk].astype(np.float64) / 255.0 - mean.reshape(1, C, 1, 1)
            sq += np.einsum("nchw,nchw->c", x, x)
        std = np.sqrt(sq / (N * images.shape[2] * images.shape[3])) + eps
        return cls("channel", images.shape[1:], mean=mean, std=std)

    def __call__(self, images, dtype=np.float32):
        """Apply to images (N, C, H, W) of any real dtype; returns ``dtype`` (float32 or float64)."""
        dtype = np.dtype(dtype)
        if not isinstance(images, np.ndarray) or images.shape[1:] != self.input_shape:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {getattr(images, 'shape', type(images).__name__)}")
        if images.dtype.kind not in "uif":
            raise TypeError(f"images must be a real array, got {images.dtype}")
        x = images.astype(dtype)
        if self.mode == "channel":
            C = self.input_shape[0]
            scale = (1.0 / (255.0 * self.std)).astype(dtype).reshape(1, C, 1, 1)
            shift = (-self.mean / self.std).astype(dtype).reshape(1, C, 1, 1)
            x *= scale
            x += shift
        elif self.mode == "mean_image":
            x *= dtype.type(1 / 255.0)
            x -= self.mean_image.astype(dtype)
        else:
            x *= dtype.type(1 / 255.0)
        return x

    def to_dict(self):
        d = {"mode": self.mode, "input_shape": list(self.input_shape)}
        if self.mode == "channel":
            d["mean"], d["std"] = self.mean.tolist(), self.std.tolist()
        elif self.mode == "mean_image":
            d["mean_image"] = self.mean_image.tolist()
        return d

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ValueError(f"preprocessing must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"mode", "input_shape", "mean", "std", "mean_image"}
        if unknown:
            raise ValueError(f"preprocessing has unknown keys {sorted(unknown)}")
        try:
            return cls(d.get("mode"), d.get("input_shape"), d.get("mean"), d.get("std"), d.get("mean_image"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid preprocessing: {exc}") from None

    def __repr__(self):
        return f"Preprocessing({json.dumps({k: v for k, v in self.to_dict().items() if k != 'mean_image'})})"
