"""The named data sets: where their files come from and are looked for, and their loaders.

See ``fastconv.datasets`` for the search order and the download rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.checks import check_int
from .cifar import (
    CIFAR_ARCHIVE,
    CIFAR_FOLDER,
    CIFAR_TEST_BATCH,
    CIFAR_TRAIN_BATCHES,
    read_cifar_archive,
    read_cifar_folder,
)
from .download import fetch_files
from .idx import read_idx

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

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
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


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
    hint = (
        f"put {_expected_files(name)} in {target}/ (or set FASTCONV_DATA to a folder "
        f"with a {name}/ subfolder holding them)"
    )
    if name == "fashion-mnist":
        hint += ", or install the Debian package dataset-fashion-mnist"
    if not download:
        raise DatasetNotFoundError(f"{title} not found (looked in {where}); {hint}")
    try:
        fetch(name, target, opener=opener)
    except (OSError, ValueError) as exc:
        raise DatasetNotFoundError(
            f"{title} not found (looked in {where}) and the download failed ({exc}); {hint}"
        ) from None
    hit = find(target)
    if hit is None:  # pragma: no cover - fetch wrote every file
        raise DatasetNotFoundError(f"{title}: downloaded files missing from {target}; {hint}")
    return hit


def fetch(name, dest_dir, opener=None):
    """Download every official file of data set ``name`` into ``dest_dir`` (verified)."""
    source = SOURCES[name]
    fetch_files(source["files"], source["mirrors"], dest_dir, opener=opener)


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
        raise ValueError(
            f"{paths['test_images']}: image size {arrays['test_images'].shape[1:]} differs "
            f"from the training images' {arrays['train_images'].shape[1:]}"
        )
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
    """CIFAR-10: 50,000 + 10,000 uint8 images (N, 3, 32, 32), int64 labels 0-9; the class names
    from ``batches.meta`` when it is there."""
    location = _locate("cifar10", root, download, opener)
    batches, names = read_cifar_folder(location) if location.is_dir() else read_cifar_archive(location)
    train = [batches[b] for b in CIFAR_TRAIN_BATCHES]
    X_test, y_test = batches[CIFAR_TEST_BATCH]
    return Dataset(
        name="cifar10",
        X_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        X_test=X_test,
        y_test=y_test,
        class_names=names or CLASS_NAMES["cifar10"],  # batches.meta's, or the official ones without it
        source=str(location),
    )


LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10}


def load_dataset(name, root=None, download=True, opener=None):
    """``load_<name>`` by name: 'mnist', 'fashion-mnist' or 'cifar10'."""
    if name not in LOADERS:
        raise ValueError(f"dataset must be one of {', '.join(LOADERS)}, got {name!r}")
    return LOADERS[name](root=root, download=download, opener=opener)


#: How ``train_val_split`` chooses the validation examples.
SPLITS = ("random", "last")


def train_val_split(X, y, num_val, seed=0, method="random"):
    """Hold out ``num_val`` examples: returns (X_train, y_train, X_val, y_val).

    ``method="random"``: a random subset (drawn with ``seed``), both parts in their original order;
    ``"last"``: the last ``num_val`` examples, the tutorials' fixed split (``seed`` unused)."""
    num_val = check_int(num_val, "num_val", 0, len(X) - 1)
    if len(y) != len(X):
        raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)}")
    if method not in SPLITS:
        raise ValueError(f"method must be one of {', '.join(SPLITS)}, got {method!r}")
    if method == "last":
        cut = len(X) - num_val
        return X[:cut], y[:cut], X[cut:], y[cut:]
    order = np.random.default_rng(seed).permutation(len(X))
    val, train = np.sort(order[:num_val]), np.sort(order[num_val:])
    return X[train], y[train], X[val], y[val]
