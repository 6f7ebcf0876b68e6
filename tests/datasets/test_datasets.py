"""Data loaders on tiny files written in the official formats; no test touches the network."""

import gzip
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from fastconv import datasets as D

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# ---------------------------------------------------------------------------- writers
_IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array):
    """An array in the IDX format: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, gz=None):
    data = idx_bytes(array)
    gz = str(path).endswith(".gz") if gz is None else gz
    Path(path).write_bytes(gzip.compress(data) if gz else data)
    return path


def write_idx_arrays(folder, arrays, gz=True):
    """The four MNIST-format files of ``arrays`` ({IDX_FILES key: array}) in ``folder``; returns ``arrays``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in D.IDX_FILES.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key], gz)
    return arrays


def write_idx_set(folder, rng, n_train=50, n_test=20, gz=True, size=(28, 28)):
    """The four MNIST-format files, random pixels and labels; returns the arrays written."""
    return write_idx_arrays(
        folder,
        {
            "train_images": rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
            "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
            "test_images": rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
            "test_labels": rng.integers(0, 10, n_test).astype(np.uint8),
        },
        gz,
    )


def _learnable(rng, n):
    """28x28 images whose class is where a bright 6x6 square sits, with noise."""
    y = rng.integers(0, 10, n)
    X = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(y):
        r, c = 2 + 12 * (label // 5), 1 + 5 * (label % 5)
        X[i, r : r + 6, c : c + 6] = rng.integers(180, 256, (6, 6))
    return X, y.astype(np.uint8)


def write_learnable_set(folder, rng, n_train, n_test):
    """A data set a small net learns in an epoch or two, as the four MNIST-format files; returns the arrays."""
    (Xtr, ytr), (Xte, yte) = _learnable(rng, n_train), _learnable(rng, n_test)
    return write_idx_arrays(folder, {"train_images": Xtr, "train_labels": ytr, "test_images": Xte, "test_labels": yte})


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 str opcodes (SHORT_BINSTRING / BINSTRING), as the
    official CIFAR-10 batches (pickled by Python 2's cPickle) have them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    # Python 2 had no separate text type in these files: 'u1', '|', 'b' were str too
    dispatch[str] = lambda self, obj: self._save_py2_str(obj.encode("latin1"))


def cifar_batch_bytes(images, labels, style="py2"):
    """A CIFAR-10 python batch: {b'batch_label', b'labels', b'data', b'filenames'}.

    style "py2" mimics the official files (protocol 2, Python 2 strings,
    ``numpy.core.multiarray._reconstruct``); "py3" is what Python 3 and numpy 2
    write with protocol 2 (``_codecs.encode``, ``numpy._core``); "py5" what they
    write with protocol 5 (``numpy._core.numeric._frombuffer``, the bytes in-band)."""
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    if style in ("py3", "py5"):
        return pickle.dumps(batch, protocol=2 if style == "py3" else 5)
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(batch)
    data = buf.getvalue()
    assert b"cnumpy._core.multiarray\n_reconstruct\n" in data
    return data.replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")


def cifar_meta_bytes(names, protocol=2):
    """A batches.meta: the official keys, the class names as bytes."""
    return pickle.dumps(
        {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in names], b"num_vis": 3072},
        protocol=protocol,
    )


def write_cifar(root, rng, n=6, archive=False, style="py2", meta=None):
    """cifar-10-batches-py/ (or cifar-10-python.tar.gz) with n images per batch, and a
    batches.meta with the class names ``meta`` when given."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in (*D.CIFAR_TRAIN_BATCHES, D.CIFAR_TEST_BATCH):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        batches[name] = (images, labels, cifar_batch_bytes(images, labels, style))
    files = {name: data for name, (_, _, data) in batches.items()}
    if meta is not None:
        files[D.CIFAR_META] = cifar_meta_bytes(meta)
    if archive:
        with tarfile.open(root / D.CIFAR_ARCHIVE, "w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{D.CIFAR_FOLDER}/{name}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    else:
        folder = root / D.CIFAR_FOLDER
        folder.mkdir(exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
    return batches


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $FASTCONV_DATA, a HOME without a cache, no system folders, no network."""
    monkeypatch.delenv("FASTCONV_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(D.registry, "SYSTEM_DIRS", {})

    def no_network(url, timeout=None):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(D.download, "_urlopen", no_network)
    return tmp_path


# ---------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, rng, gz, dtype):
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write_idx(tmp_path / "a.idx", a, gz)
    b = D.read_idx(path)
    assert b.dtype == np.dtype(dtype).newbyteorder("=") and b.shape == (3, 4, 5)
    np.testing.assert_array_equal(a, b)


def test_idx_one_dimension_and_empty(tmp_path):
    np.testing.assert_array_equal(D.read_idx(write_idx(tmp_path / "l", np.arange(7, dtype=np.uint8))), np.arange(7))
    assert D.read_idx(write_idx(tmp_path / "e", np.zeros((0, 28, 28), np.uint8))).shape == (0, 28, 28)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_errors_name_the_file(tmp_path, rng, gz):
    good = idx_bytes(rng.integers(0, 256, (4, 5, 5), dtype=np.uint8))

    def check(data, match):
        path = tmp_path / ("bad.gz" if gz else "bad")
        path.write_bytes(gzip.compress(data) if gz else data)
        with pytest.raises(ValueError, match=match) as info:
            D.read_idx(path)
        assert str(path) in str(info.value)

    check(good[:-10], r"truncated: the header declares dimensions \(4, 5, 5\) \(100 bytes of data\) but only 90")
    check(good + b"\x00", "has data after the 100 bytes")
    check(b"\x00\x00\x08", "not an IDX file")
    check(b"", "not an IDX file")
    check(b"\x1f\x00\x08\x03" + good[4:], "bad magic number 0x1f000803")
    check(b"\x00\x00\x07\x03" + good[4:], "bad magic number")
    check(good[:4] + good[4:10], "truncated IDX header")
    check(b"\x00\x00\x08\x00", "0 dimensions")
    check(b"\x00\x00\x08\x02" + struct.pack(">II", 2**31, 2**31), "more than the limit")


def test_idx_corrupt_gzip(tmp_path, rng):
    data = gzip.compress(idx_bytes(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)))
    path = tmp_path / "images.gz"
    path.write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(ValueError, match=f"{path}: corrupt or truncated gzip data"):
        D.read_idx(path)
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0xFF
    path.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=str(path)):
        D.read_idx(path)
    with pytest.raises(FileNotFoundError):
        D.read_idx(tmp_path / "missing.gz")


# ---------------------------------------------------------------------------- MNIST-style loaders
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_load_fashion_mnist_from_root(isolated, rng, gz):
    arrays = write_idx_set(isolated / "data" / "fashion-mnist", rng, gz=gz)
    ds = D.load_fashion_mnist(root=isolated / "data")
    assert ds.X_train.shape == (50, 1, 28, 28) and ds.X_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.X_test.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(ds.X_train[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.class_names[0] == "T-shirt/top" and ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    # root itself may hold the files
    write_idx_set(isolated / "flat", rng, gz=gz)
    assert D.load_mnist(root=isolated / "flat").class_names[3] == "3"


def test_search_order(isolated, rng, monkeypatch):
    env = write_idx_set(isolated / "env" / "mnist", rng, n_train=11)
    cache = write_idx_set(isolated / "home" / ".cache" / "fastconv" / "mnist", rng, n_train=12)
    system = isolated / "system"
    write_idx_set(system, rng, n_train=13)
    monkeypatch.setattr(D.registry, "SYSTEM_DIRS", {"mnist": [system]})
    monkeypatch.setenv("FASTCONV_DATA", str(isolated / "env"))
    ds = D.load_mnist()
    assert len(ds.X_train) == 11 and ds.source == str(isolated / "env" / "mnist")
    np.testing.assert_array_equal(ds.X_train[:, 0], env["train_images"])
    monkeypatch.delenv("FASTCONV_DATA")
    ds = D.load_mnist()
    assert len(ds.X_train) == 12
    np.testing.assert_array_equal(ds.X_train[:, 0], cache["train_images"])
    (isolated / "home" / ".cache" / "fastconv" / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()  # incomplete
    assert len(D.load_mnist().X_train) == 13


def test_inconsistent_files(isolated, rng):
    folder = isolated / "data" / "mnist"
    write_idx_set(folder, rng)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(49, np.uint8))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: 49 labels for the 50 images"):
        D.load_mnist(root=isolated / "data")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(50, 10, np.uint8))
    with pytest.raises(ValueError, match="labels must be in"):
        D.load_mnist(root=isolated / "data")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(50, np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((20, 28, 28), np.float32))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: expected uint8 images"):
        D.load_mnist(root=isolated / "data")


def test_missing_without_network_says_where_to_put_files(isolated):
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.load_mnist()
    msg = str(info.value)
    assert "MNIST not found" in msg and "download failed" in msg and "network disabled" in msg
    assert str(isolated / "home" / ".cache" / "fastconv" / "mnist") in msg
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert "\n" not in msg
    with pytest.raises(D.DatasetNotFoundError, match="cifar-10-python.tar.gz"):
        D.load_cifar10(download=False)
    with pytest.raises(D.DatasetNotFoundError, match="dataset-fashion-mnist"):
        D.load_fashion_mnist(download=False)
    assert isinstance(info.value, OSError)


def _serve(monkeypatch, name, files_dir):
    """Point the data set's mirror at a file:// folder (urllib reads it like a server)."""
    monkeypatch.setattr(D.download, "_urlopen", __import__("urllib.request").request.urlopen)
    sources = {k: dict(v) for k, v in D.SOURCES.items()}
    sources[name]["mirrors"] = [files_dir.as_uri() + "/"]
    sources[name]["files"] = {p.name: D.file_sha256(p) for p in sorted(files_dir.iterdir())}
    monkeypatch.setattr(D.registry, "SOURCES", sources)
    return sources[name]


def test_download_verified_by_sha256(isolated, rng, monkeypatch):
    served = isolated / "server"
    arrays = write_idx_set(served, rng)
    source = _serve(monkeypatch, "fashion-mnist", served)
    ds = D.load_fashion_mnist()
    target = isolated / "home" / ".cache" / "fastconv" / "fashion-mnist"
    assert ds.source == str(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(source["files"])
    np.testing.assert_array_equal(ds.X_test[:, 0], arrays["test_images"])
    # with $FASTCONV_DATA set (and nothing in the cache), downloads go there
    import shutil

    shutil.rmtree(target)
    monkeypatch.setenv("FASTCONV_DATA", str(isolated / "envdata"))
    D.load_fashion_mnist()
    assert (isolated / "envdata" / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_download_with_wrong_digest_is_discarded(isolated, rng, monkeypatch):
    served = isolated / "server"
    write_idx_set(served, rng)
    source = _serve(monkeypatch, "mnist", served)
    source["files"]["t10k-images-idx3-ubyte.gz"] = "0" * 64
    with pytest.raises(D.DatasetNotFoundError, match="SHA-256 mismatch"):
        D.load_mnist()
    target = isolated / "home" / ".cache" / "fastconv" / "mnist"
    assert not (target / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in target.iterdir() if ".part" in p.name]


def test_download_file_with_injected_opener(tmp_path):
    payload = b"x" * 3000
    calls = []

    def opener(url, timeout=None):
        calls.append((url, timeout))
        return io.BytesIO(payload)

    import hashlib

    digest = hashlib.sha256(payload).hexdigest()
    dest = D.download_file("https://example.invalid/f", tmp_path / "sub" / "f", digest, opener=opener)
    assert dest.read_bytes() == payload and calls == [("https://example.invalid/f", 30)]
    with pytest.raises(ValueError, match="larger than"):
        D.download_file("u", tmp_path / "g", digest, opener=opener, max_bytes=100)
    assert not (tmp_path / "g").exists()


def test_official_digests_are_well_formed():
    for name, source in D.SOURCES.items():
        assert source["mirrors"] and all(m.endswith("/") for m in source["mirrors"])
        for filename, digest in source["files"].items():
            assert len(digest) == 64 and int(digest, 16) >= 0, (name, filename)


# ---------------------------------------------------------------------------- CIFAR-10
@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar.gz"])
@pytest.mark.parametrize("style", ["py2", "py3", "py5"])
def test_load_cifar10(isolated, rng, archive, style):
    batches = write_cifar(isolated / "data" / "cifar10", rng, archive=archive, style=style)
    ds = D.load_cifar10(root=isolated / "data")
    assert ds.X_train.shape == (30, 3, 32, 32) and ds.X_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.X_test.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(ds.X_train[6:12], batches["data_batch_2"][0])
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][1])
    assert ds.class_names[9] == "truck"


def test_official_layout_is_channel_planes():
    """Each row of 'data' is 1024 red, 1024 green, 1024 blue values, row-major."""
    images = np.zeros((1, 3, 32, 32), np.uint8)
    images[0, 1, 2, 3] = 7  # green, row 2, column 3
    flat = images.reshape(1, -1)
    assert flat[0, 1024 + 2 * 32 + 3] == 7
    got, _ = D.read_cifar_batch(cifar_batch_bytes(images, [0]))
    assert got[0, 1, 2, 3] == 7


def test_cifar_truncated_archive(isolated, rng):
    write_cifar(isolated / "data", rng, archive=True)
    path = isolated / "data" / D.CIFAR_ARCHIVE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=f"{path}: corrupt or truncated archive"):
        D.load_cifar10(root=isolated / "data")


def test_cifar_archive_missing_member(isolated, rng):
    (isolated / "data").mkdir()
    with tarfile.open(isolated / "data" / D.CIFAR_ARCHIVE, "w:gz") as tf:
        data = cifar_batch_bytes(np.zeros((1, 3, 32, 32), np.uint8), [0])
        info = tarfile.TarInfo(f"{D.CIFAR_FOLDER}/data_batch_1")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="the archive has no .*data_batch_2"):
        D.load_cifar10(root=isolated / "data")


def test_cifar_corrupt_batches(isolated, rng):
    write_cifar(isolated / "data", rng)
    path = isolated / "data" / D.CIFAR_FOLDER / "data_batch_3"
    good = path.read_bytes()
    for data, match in [
        (good[: len(good) // 2], "data_batch_3: not a valid CIFAR-10 batch"),
        (b"not a pickle", "data_batch_3: not a valid CIFAR-10 batch"),
        (pickle.dumps([1, 2, 3], protocol=2), "holds a list"),
        (pickle.dumps({b"data": b"x", b"labels": []}, protocol=2), "'data' must be"),
        (cifar_batch_bytes(np.zeros((2, 3, 32, 32), np.uint8), [1]), "2 images but 1 labels"),
        (cifar_batch_bytes(np.zeros((1, 3, 32, 32), np.uint8), [12]), r"labels must be in \[0, 9\]"),
    ]:
        path.write_bytes(data)
        with pytest.raises(ValueError, match=match):
            D.load_cifar10(root=isolated / "data")


class _RunsCode:
    """A batch entry whose unpickling would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


class _HugeArray:
    """Abuses the allowed numpy global to ask for a giant array."""

    def __reduce__(self):
        import numpy._core.multiarray as ma

        return (ma._reconstruct, (np.ndarray, (10**12,), b"b"))


class _ObjectDtypeArray:
    def __reduce__(self):
        import numpy._core.multiarray as ma

        return (ma._reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), np.dtype(object), False, [{"x": 1}]))


class _LyingArrayState:
    def __reduce__(self):
        import numpy._core.multiarray as ma

        return (ma._reconstruct, (np.ndarray, (0,), b"b"), (1, (1000, 3072), np.dtype(np.uint8), False, b"too short"))


class _RogueCodec:
    def __reduce__(self):
        import _codecs

        return (_codecs.encode, ("payload", "rot13"))


@pytest.mark.parametrize(
    "payload, match",
    [
        (None, "global 'posix.system' is not allowed"),
        (_CallsEval(), "eval' is not allowed"),
        (_HugeArray(), "reconstruction arguments"),
        (_ObjectDtypeArray(), "dtype"),
        (_LyingArrayState(), "do not match its shape"),
        (_RogueCodec(), "_codecs.encode"),
    ],
    ids=["os.system", "eval", "huge-array", "object-dtype", "lying-state", "rogue-codec"],
)
def test_malicious_batch_rejected_without_running_payload(isolated, rng, payload, match):
    marker = isolated / "pwned"
    write_cifar(isolated / "data", rng)
    evil = {b"batch_label": b"x", b"labels": [0], b"data": payload if payload is not None else _RunsCode(marker)}
    (isolated / "data" / D.CIFAR_FOLDER / "data_batch_1").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(ValueError, match=match):
        D.load_cifar10(root=isolated / "data")
    assert not marker.exists()
    # the same refusal from inside the official archive
    write_cifar(isolated / "arch", rng, archive=True)
    with tarfile.open(isolated / "arch" / D.CIFAR_ARCHIVE, "w:gz") as tf:
        for name in (*D.CIFAR_TRAIN_BATCHES, D.CIFAR_TEST_BATCH):
            data = (
                pickle.dumps(evil, protocol=2)
                if name == "data_batch_1"
                else cifar_batch_bytes(np.zeros((1, 3, 32, 32), np.uint8), [0])
            )
            info = tarfile.TarInfo(f"{D.CIFAR_FOLDER}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=match):
        D.load_cifar10(root=isolated / "arch")
    assert not marker.exists()


def _frombuffer(*args):
    """An object whose protocol-5 pickle calls numpy's _frombuffer with ``args``."""
    import numpy._core.numeric as numeric

    class Payload:
        def __reduce__(self):
            return (numeric._frombuffer, args)

    return Payload()


_U1 = np.dtype(np.uint8)
_IMAGE_BYTES = bytes(3072)


@pytest.mark.parametrize(
    "payload, match",
    [
        (_frombuffer(_IMAGE_BYTES, np.dtype("<f8"), (1, 384), "C"), "dtype 'f8' is not allowed"),
        (_frombuffer(_IMAGE_BYTES, np.dtype(object), (1, 3072), "C"), "dtype 'O8?' is not allowed"),
        (_frombuffer(_IMAGE_BYTES, "u1", (1, 3072), "C"), "raw bytes and the uint8 dtype"),
        (_frombuffer([0] * 3072, _U1, (1, 3072), "C"), "raw bytes and the uint8 dtype"),
        (_frombuffer(b"too short", _U1, (1000, 3072), "C"), r"\(9 bytes\) do not match its shape \(1000, 3072\)"),
        (_frombuffer(b"x", _U1, (10**12, 3072), "C"), "do not match its shape"),
        (_frombuffer(b"", _U1, (-1, 3072), "C"), "bad array shape"),
        (_frombuffer(_IMAGE_BYTES, _U1, (1.0, 3072), "C"), "bad array shape"),
        (_frombuffer(_IMAGE_BYTES, _U1, (1, 3072), "K", (1, 0)), "unexpected array order"),
        (_frombuffer(_IMAGE_BYTES, _U1, (1, 3072), "C", None, "extra"), "TypeError"),
    ],
    ids=[
        "float64",
        "object-dtype",
        "dtype-as-text",
        "list-buffer",
        "short-buffer",
        "huge-shape",
        "negative-dim",
        "float-dim",
        "axis-order",
        "extra-argument",
    ],
)
def test_protocol5_hostile_frombuffer_refused_naming_the_file(isolated, rng, payload, match):
    write_cifar(isolated / "data", rng)
    path = isolated / "data" / D.CIFAR_FOLDER / "data_batch_2"
    path.write_bytes(pickle.dumps({b"labels": [0], b"data": payload}, protocol=5))
    with pytest.raises(ValueError, match=f"{path}: not a valid CIFAR-10 batch.*{match}"):
        D.load_cifar10(root=isolated / "data")


def test_protocol5_refuses_out_of_band_buffers_and_accepts_fortran_order(isolated, rng):
    write_cifar(isolated / "data", rng)
    path = isolated / "data" / D.CIFAR_FOLDER / "data_batch_4"
    images = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    buffers = []
    path.write_bytes(pickle.dumps({b"labels": [0, 1, 2], b"data": images}, protocol=5, buffer_callback=buffers.append))
    assert buffers  # the array's bytes went out of band: the file does not hold them
    with pytest.raises(ValueError, match=f"{path}: not a valid CIFAR-10 batch.*out-of-band"):
        D.load_cifar10(root=isolated / "data")
    # an array pickled in Fortran order is the same array
    path.write_bytes(pickle.dumps({b"labels": [0, 1, 2], b"data": np.asfortranarray(images)}, protocol=5))
    assert b"_frombuffer" in path.read_bytes()
    ds = D.load_cifar10(root=isolated / "data")
    np.testing.assert_array_equal(ds.X_train[18:21].reshape(3, -1), images)


_NAMES = tuple(f"class {i}" for i in range(10))


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar.gz"])
def test_cifar_class_names_from_batches_meta(isolated, rng, archive):
    write_cifar(isolated / "data", rng, archive=archive, meta=_NAMES)
    assert D.load_cifar10(root=isolated / "data").class_names == _NAMES
    write_cifar(isolated / "plain", rng, archive=archive)  # no batches.meta: the official names
    assert D.load_cifar10(root=isolated / "plain").class_names == D.CLASS_NAMES["cifar10"]


def test_cifar_hostile_batches_meta_refused_naming_it(isolated, rng):
    marker = isolated / "pwned"
    write_cifar(isolated / "data", rng, meta=_NAMES)
    path = isolated / "data" / D.CIFAR_FOLDER / D.CIFAR_META
    for data, match in [
        (cifar_meta_bytes(_NAMES[:9]), "list of the 10 class names"),
        (cifar_meta_bytes(("x" * 65,) + _NAMES[1:]), "printable name of 1 to 64"),
        (cifar_meta_bytes(("",) + _NAMES[1:], protocol=5), "printable name"),
        (cifar_meta_bytes(("a\nb",) + _NAMES[1:]), "printable name"),
        (pickle.dumps({b"label_names": [1] * 10}, protocol=2), "printable name"),
        (pickle.dumps({b"num_vis": 3072}, protocol=5), "has no 'label_names' entry"),
        (pickle.dumps({b"label_names": _RunsCode(marker)}, protocol=2), "is not allowed"),
        (b"garbage", "UnpicklingError"),
    ]:
        path.write_bytes(data)
        with pytest.raises(ValueError, match=f"{path}: not a valid CIFAR-10 batches.meta.*{match}"):
            D.load_cifar10(root=isolated / "data")
    assert not marker.exists()


# ---------------------------------------------------------------------------- preprocessing
def test_preprocessing_channel_statistics(rng):
    images = rng.integers(0, 256, (40, 3, 5, 6), dtype=np.uint8)
    prep = D.Preprocessing.fit(images, chunk=7)
    x = images.astype(np.float64) / 255
    np.testing.assert_allclose(prep.mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(prep.std, x.std(axis=(0, 2, 3)), rtol=1e-6)
    out = prep(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert prep(images, np.float64).dtype == np.float64
    again = D.Preprocessing.from_dict(prep.to_dict())
    np.testing.assert_array_equal(again(images), out)
    import json

    json.dumps(prep.to_dict(), allow_nan=False)  # JSON-able


def test_preprocessing_other_modes(rng):
    images = rng.integers(0, 256, (10, 1, 4, 4), dtype=np.uint8)
    mean_image = D.Preprocessing.fit(images, mode="mean_image")
    np.testing.assert_allclose(mean_image(images, np.float64), images / 255 - (images / 255).mean(axis=0), atol=1e-12)
    scale = D.Preprocessing.fit(images, mode="scale")
    np.testing.assert_allclose(scale(images, np.float64), images / 255, rtol=1e-15)
    for p in (mean_image, scale):
        np.testing.assert_array_equal(D.Preprocessing.from_dict(p.to_dict())(images), p(images))


def test_preprocessing_pixel_mode_is_the_tutorials(rng):
    """(x / 255 - mean image) / per-pixel std, as the numpy tutorials preprocess; a constant pixel
    (std 0) comes out 0, and a pixel's std is at least one grey level."""
    images = rng.integers(0, 256, (30, 2, 3, 4), dtype=np.uint8)
    images[:, 0, 0, 0] = 77  # a constant pixel: std 0
    images[:, 1, 2, 3] = 10
    images[5, 1, 2, 3] = 11  # changes in one image only: std below one grey level
    prep = D.Preprocessing.fit(images, mode="pixel", chunk=7)
    x = images / 255.0
    mean, std = x.mean(axis=0), x.std(axis=0)
    np.testing.assert_allclose(prep.mean_image, mean, rtol=1e-12)
    np.testing.assert_allclose(prep.std_image, np.maximum(std, 1 / 255), rtol=1e-10)
    assert prep.std_image[0, 0, 0] == 1 / 255 and std[1, 2, 3] < 1 / 255
    out = prep(images, np.float64)
    assert np.all(np.isfinite(out)) and np.all(out[:, 0, 0, 0] == 0)
    assert np.abs(out[:, 1, 2, 3]).max() < 1.01  # (11 - 10.03) / 255 / (1 / 255), not 5.4 stds
    np.testing.assert_allclose(out, (x - mean) / np.maximum(std, 1 / 255), rtol=1e-9, atol=1e-12)
    again = D.Preprocessing.from_dict(json_round_trip(prep.to_dict()))
    assert again.mode == "pixel"
    np.testing.assert_array_equal(again(images), prep(images))


def json_round_trip(d):
    import json

    return json.loads(json.dumps(d, allow_nan=False))


@pytest.mark.parametrize("mode", D.Preprocessing.MODES)
def test_preprocessing_takes_channels_last_when_told(rng, mode):
    nchw = rng.integers(0, 256, (9, 3, 5, 4), dtype=np.uint8)
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    prep = D.Preprocessing.fit(nchw, mode=mode)
    other = D.Preprocessing.fit(nhwc, mode=mode, layout="NHWC")
    a, b = prep.to_dict(), other.to_dict()
    assert a.keys() == b.keys() and a["input_shape"] == b["input_shape"] == [3, 5, 4]
    for key in a.keys() - {"mode", "input_shape"}:  # summed in another order: equal to rounding
        np.testing.assert_allclose(b[key], a[key], rtol=1e-13, err_msg=key)
    out = prep(nhwc, layout="NHWC")
    assert out.shape == (9, 3, 5, 4) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, prep(nchw))
    # never guessed: an NHWC array given as NCHW is refused, and so is an unknown layout
    with pytest.raises(ValueError, match=r"shape \(N, 3, 5, 4\), got \(9, 5, 4, 3\)"):
        prep(nhwc)
    with pytest.raises(ValueError, match=r"shape \(N, 5, 4, 3\) \(layout NHWC\), got \(9, 3, 5, 4\)"):
        prep(nchw, layout="NHWC")
    for bad in ("nhwc", "CHW", None):
        with pytest.raises(ValueError, match="layout must be one of NCHW, NHWC"):
            prep(nchw, layout=bad)
        with pytest.raises(ValueError, match="layout must be one of NCHW, NHWC"):
            D.Preprocessing.fit(nchw, mode=mode, layout=bad)
    with pytest.raises(ValueError, match=r"images must be an array \(N, H, W, C\)"):
        D.Preprocessing.fit(nhwc[0], mode=mode, layout="NHWC")


def test_preprocessing_validation(rng):
    prep = D.Preprocessing.fit(rng.integers(0, 256, (5, 1, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"shape \(N, 1, 4, 4\)"):
        prep(np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(TypeError, match="real array"):
        prep(np.zeros((2, 1, 4, 4), complex))
    pixel = D.Preprocessing.fit(rng.integers(0, 256, (5, 1, 2, 2), dtype=np.uint8), mode="pixel").to_dict()
    for bad in (
        {"mode": "zca", "input_shape": [1, 4, 4]},
        {"mode": "channel", "input_shape": [1, 4, 4], "mean": [0.1], "std": [0.0]},
        dict(pixel, std_image=[[[0.5, 0.5], [0.5, 0.0]]]),
        dict(pixel, std_image=[[[0.5, 0.5]]]),
        dict(pixel, mean_image=[[[0.5, 0.5], [0.5, float("nan")]]]),
        {k: v for k, v in pixel.items() if k != "std_image"},
        {"mode": "channel", "input_shape": [1, 4, 4], "mean": [0.1, 0.2], "std": [1, 1]},
        {"mode": "scale", "input_shape": [4, 4]},
        {"mode": "scale", "input_shape": [1, 4, 4], "evil": 1},
        ["scale"],
    ):
        with pytest.raises(ValueError):
            D.Preprocessing.from_dict(bad)
    D.Preprocessing.from_dict(pixel)  # the unchanged dict is accepted
    with pytest.raises(ValueError, match="std_image must be at least"):
        D.Preprocessing.from_dict(dict(pixel, std_image=[[[0.5, 0.5], [0.5, 0.0]]]))
    with pytest.raises(ValueError, match="preprocessing mode must be one of"):
        D.Preprocessing.fit(np.zeros((2, 1, 2, 2), np.uint8), mode="zca")


def test_train_val_split(rng):
    X = np.arange(20).reshape(20, 1, 1, 1)
    y = np.arange(20)
    Xt, yt, Xv, yv = D.train_val_split(X, y, 5, seed=3)
    assert len(Xv) == 5 and len(Xt) == 15
    assert sorted(np.concatenate([yt, yv]).tolist()) == list(range(20))
    np.testing.assert_array_equal(Xt[:, 0, 0, 0], yt)
    again = D.train_val_split(X, y, 5, seed=3)
    np.testing.assert_array_equal(again[3], yv)
    with pytest.raises(ValueError, match="num_val"):
        D.train_val_split(X, y, 20)
    # the tutorials' fixed split: the last num_val examples, whatever the seed
    Xt, yt, Xv, yv = D.train_val_split(X, y, 5, seed=3, method="last")
    assert yt.tolist() == list(range(15)) and yv.tolist() == list(range(15, 20))
    np.testing.assert_array_equal(D.train_val_split(X, y, 5, seed=4, method="last")[3], yv)
    assert D.train_val_split(X, y, 0, method="last")[0].shape == X.shape
    with pytest.raises(ValueError, match="method must be one of random, last"):
        D.train_val_split(X, y, 5, method="first")


# ---------------------------------------------------------------------------- the real files
@pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="the real Fashion-MNIST files are not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTCONV_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    ds = D.load_fashion_mnist(download=False)
    assert ds.source == str(FASHION_DIR)
    assert ds.X_train.shape == (60000, 1, 28, 28) and ds.X_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
