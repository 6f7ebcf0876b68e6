"""Real data sets: MNIST, Fashion-MNIST and CIFAR-10, read from their official files.

* ``load_mnist(root=None)``, ``load_fashion_mnist(root=None)``,
  ``load_cifar10(root=None)`` return a ``Dataset``: images as uint8 arrays
  (N, C, H, W), labels as int64 arrays (N,), the class names, and where the
  files were found.
* ``read_idx(path)`` reads one IDX file (the MNIST format), gzipped or not,
  checking its magic number, dimensions and size; anything wrong raises a
  ValueError that names the file.
* ``read_cifar_batch(data, name)`` reads one CIFAR-10 python batch (as
  pickled by the official files, or re-pickled with protocol 2 or 5), and
  ``read_cifar_meta`` the class names of its ``batches.meta``. Those files
  are pickles by format, and unpickling can run arbitrary code, so they go
  through ``SafeCifarUnpickler``: it refuses every global except the few the
  format needs, each replaced by a checking stand-in.
* ``Preprocessing`` (``fastconv.training.preprocessing``, re-exported here) turns uint8
  images into the float input of a model; its statistics are computed on the
  training split, saved with the model, and applied again at prediction.
* ``train_val_split`` holds out a validation set from the training split: a
  random one, or the last examples (the tutorials' fixed split).

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

Modules: ``idx`` (the IDX format), ``cifar`` (the safe CIFAR-10 unpickler and
batch readers), ``download`` (verified downloads), ``registry`` (the named
data sets: sources, search places, loaders).
"""

from __future__ import annotations

from ..io.files import sha256_of as file_sha256
from ..training.preprocessing import Preprocessing

# The constants are re-exported for reading. To replace SOURCES or SYSTEM_DIRS (tests do), patch
# them in fastconv.datasets.registry, where the loaders read them.
from .cifar import (
    CIFAR_ARCHIVE,
    CIFAR_FOLDER,
    CIFAR_META,
    CIFAR_TEST_BATCH,
    CIFAR_TRAIN_BATCHES,
    SafeCifarUnpickler,
    read_cifar_batch,
    read_cifar_meta,
)
from .download import download_file
from .idx import read_idx
from .registry import (
    CLASS_NAMES,
    IDX_FILES,
    LOADERS,
    SOURCES,
    SPLITS,
    SYSTEM_DIRS,
    TITLES,
    Dataset,
    DatasetNotFoundError,
    fetch,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    train_val_split,
)

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "Preprocessing",
    "SafeCifarUnpickler",
    "download_file",
    "fetch",
    "file_sha256",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "read_cifar_batch",
    "read_cifar_meta",
    "read_idx",
    "train_val_split",
    # constants, for reading (patch them in fastconv.datasets.registry)
    "CIFAR_ARCHIVE",
    "CIFAR_FOLDER",
    "CIFAR_META",
    "CIFAR_TEST_BATCH",
    "CIFAR_TRAIN_BATCHES",
    "CLASS_NAMES",
    "IDX_FILES",
    "LOADERS",
    "SOURCES",
    "SPLITS",
    "SYSTEM_DIRS",
    "TITLES",
]
