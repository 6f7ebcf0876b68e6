"""Your own images as a data set: an image folder (torchvision's ``ImageFolder`` layout) or an .npz.

``load_folder(path)`` reads

* a folder with one sub-folder per class of PNG/JPEG files (``DIR/cat/001.png``...); the class
  names are the sub-folders' names, sorted. When ``DIR/train/`` and ``DIR/test/`` exist, each
  holds such class folders (the same ones), and they are the training and test splits;
  otherwise ``test_fraction`` of each class (at least one image) is split off as the test
  set, drawn with ``seed``. Every image is decoded by the loader ``fastconv predict`` uses
  (``fastconv.io.inputs.read_image``: Pillow, 16-bit images scaled to 8 bits), at most
  ``MAX_IMAGE_FILE_BYTES`` per file, ``MAX_FOLDER_IMAGES`` images and ``MAX_DATA_FILE_BYTES``
  of pixels in all. The images take the size (at most ``MAX_IMAGE_SIDE`` a side) and channels
  of the first one (sorted by class, then file name): grey if it is grey, RGB otherwise (the
  others are converted). Images of another size (read from the file's header, before decoding)
  are refused naming the file, or, with ``resize=True``, resized to that size (bilinear; at most
  ``MAX_RESIZED_SIDE`` a side) and counted in the data set's ``source``.
  A class folder with fewer than two images is refused (it could not be both learned and
  tested), and so is a folder with no images or fewer than two classes.
* an ``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test``: images (N, C, H, W),
  or (N, H, W) for one channel, of pixel values 0-255 (uint8, or integers/floats in that range,
  stored as uint8), integer labels 0..K-1, and optionally ``class_names``: a 1-D unicode array
  of K unique, printable names of 1 to ``MAX_CLASS_NAME`` characters (without it the class
  names are "0".."K-1"). Read with ``allow_pickle=False`` through
  ``fastconv.io.files.load_arrays`` (sizes checked before anything is inflated, at most
  ``MAX_DATA_FILE_BYTES``).

Errors are ValueErrors naming the file or folder.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..engine.checks import shape_size
from ..io.files import MAX_DATA_FILE_BYTES, load_arrays, npy_header
from ..io.inputs import read_image
from .cifar import MAX_CLASS_NAME
from .registry import Dataset

__all__ = ["load_folder", "IMAGE_SUFFIXES", "MAX_FOLDER_IMAGES", "MAX_IMAGE_FILE_BYTES", "MAX_IMAGE_SIDE"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Most images an image folder may hold (all splits), and bytes per image file.
MAX_FOLDER_IMAGES = 200_000
MAX_IMAGE_FILE_BYTES = 32 << 20
#: Most classes of an .npz data set (its largest label + 1 sizes the output layer).
MAX_CLASSES = 10_000
#: Largest height or width of the images of a data set, and of an image resized to that size.
MAX_IMAGE_SIDE = 512
MAX_RESIZED_SIDE = 4096


def load_folder(path, resize=False, test_fraction=0.2, seed=0):
    """A ``Dataset`` from an image folder or an .npz (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder or file")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise ValueError(f"{path}: give a folder of class folders of images, or an .npz file")
        return _load_npz(path)
    if (path / "train").is_dir() and (path / "test").is_dir():
        train, test = _class_files(path / "train"), _class_files(path / "test")
        if sorted(train) != sorted(test):
            raise ValueError(
                f"{path}: train/ and test/ must hold the same class folders, got {sorted(train)} and {sorted(test)}"
            )
        names = sorted(train)
        reader = _Reader(resize)
        X_train, y_train = reader.read(train, names)
        X_test, y_test = reader.read(test, names)
    else:
        files = _class_files(path)
        names = sorted(files)
        reader = _Reader(resize)
        X, y = reader.read(files, names)
        X_train, y_train, X_test, y_test = _split(X, y, len(names), test_fraction, seed)
    source = f"{path}" + (
        f" ({reader.resized} images resized to {reader.shape[2]}x{reader.shape[1]})" if reader.resized else ""
    )
    return Dataset(path.name or str(path), X_train, y_train, X_test, y_test, tuple(names), source)


def _class_files(folder):
    """{class name: [image paths, sorted]} of ``folder``'s sub-folders; every class at least 2 images."""
    classes = {}
    total = 0
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        total += len(files)
        if total > MAX_FOLDER_IMAGES:
            raise ValueError(f"{folder}: more than {MAX_FOLDER_IMAGES:,} images")
        if len(files) < 2:
            raise ValueError(
                f"{sub}: the class folder holds {len(files)} image{'s' if len(files) != 1 else ''} "
                f"({', '.join(IMAGE_SUFFIXES)}); a class needs at least 2"
            )
        classes[sub.name] = files
    if not classes:
        raise ValueError(f"{folder}: no class folders of images ({', '.join(IMAGE_SUFFIXES)}) in it")
    if len(classes) < 2:
        raise ValueError(f"{folder}: one class folder only ({next(iter(classes))}); a classifier needs 2 or more")
    return classes


class _Reader:
    """Decodes the images of a data set to the shape of its first image."""

    def __init__(self, resize):
        self.resize, self.shape, self.resized = resize, None, 0

    def _first_shape(self, path):
        from PIL import Image

        try:
            with Image.open(path) as img:
                W, H = img.size
                channels = (
                    1
                    if img.mode in ("1", "L", "LA", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
                    and not (img.mode == "P" and "RGB" in img.palette.mode)
                    else 3
                )
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from None
        if not (1 <= H <= MAX_IMAGE_SIDE and 1 <= W <= MAX_IMAGE_SIDE):
            raise ValueError(
                f"{path}: {W}x{H} pixels; images of at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} are accepted"
            )
        return (channels, H, W)

    def read(self, classes, names):
        count = sum(len(files) for files in classes.values())
        X, y = None, np.empty(count, dtype=np.int64)
        i = 0
        for k, name in enumerate(names):
            for path in classes[name]:
                size = os.stat(path).st_size
                if size > MAX_IMAGE_FILE_BYTES:
                    raise ValueError(
                        f"{path}: {size:,} bytes, more than the {MAX_IMAGE_FILE_BYTES:,} an image file may have"
                    )
                if self.shape is None:
                    self.shape = self._first_shape(path)
                if X is None:
                    nbytes = count * shape_size(self.shape)
                    if nbytes > MAX_DATA_FILE_BYTES:
                        raise ValueError(
                            f"{path.parent.parent}: {count:,} images of {self.shape} take {nbytes:,} "
                            f"bytes, more than the {MAX_DATA_FILE_BYTES:,} a data set may have"
                        )
                    X = np.empty((count, *self.shape), dtype=np.uint8)
                W, H = _pixel_size(path)
                if (H, W) != self.shape[1:]:  # checked on the header, before the image is decoded
                    if not self.resize:
                        raise ValueError(
                            f"{path}: {W}x{H} pixels, not the first image's {self.shape[2]}x"
                            f"{self.shape[1]}; give --resize to resize every image to the first "
                            "one's size"
                        )
                    if max(H, W) > MAX_RESIZED_SIDE:
                        raise ValueError(
                            f"{path}: {W}x{H} pixels; images to resize may have at most {MAX_RESIZED_SIDE} on a side"
                        )
                    self.resized += 1
                batch, _ = read_image(str(path), self.shape)
                X[i], y[i] = batch[0], k
                i += 1
        return X, y


def _pixel_size(path):
    """(width, height) of the image file ``path`` from its header (nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def _split(X, y, classes, fraction, seed):
    """(X_train, y_train, X_test, y_test): ``fraction`` of each class (at least 1) for testing."""
    rng = np.random.default_rng(seed)
    test = []
    for k in range(classes):
        members = np.flatnonzero(y == k)
        n = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        test.append(rng.permutation(members)[:n])
    is_test = np.zeros(len(y), bool)
    is_test[np.concatenate(test)] = True
    return X[~is_test], y[~is_test], X[is_test], y[is_test]


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_NAMES = "class_names"
#: Widest unicode dtype of ``class_names`` (a fixed width wider than its longest name is fine).
_MAX_NAMES_DTYPE_CHARS = 256


def _load_npz(path):
    """The data set in a user's .npz (its four arrays checked)."""
    size = os.stat(path).st_size
    if size > MAX_DATA_FILE_BYTES:
        raise ValueError(f"{path}: {size:,} bytes, more than the {MAX_DATA_FILE_BYTES:,} a data file may have")
    try:
        with zipfile.ZipFile(path) as z:
            manifest = {}
            for info in z.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with z.open(info) as member:
                    shape, _, dtype = npy_header(member, f"{path}: array {name!r}")
                manifest[name] = {"shape": list(shape), "dtype": dtype.name}
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a valid .npz file ({exc})") from None
    missing = [k for k in _NPZ_KEYS if k not in manifest]
    extra = sorted(set(manifest) - {*_NPZ_KEYS, _NPZ_NAMES})
    if missing or extra:
        raise ValueError(
            f"{path}: an .npz data set holds x_train, y_train, x_test and y_test (and optionally class_names)"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
        )
    arrays = _load_checked(path, manifest)
    X_train, X_test = (_images(path, k, arrays[k]) for k in ("x_train", "x_test"))
    if X_train.shape[1:] != X_test.shape[1:]:
        raise ValueError(f"{path}: x_train holds images {X_train.shape[1:]}, x_test {X_test.shape[1:]}")
    y_train, y_test = (_labels(path, k, arrays[k], len(x)) for k, x in (("y_train", X_train), ("y_test", X_test)))
    K = int(max(y_train.max(), y_test.max(initial=0))) + 1
    if K < 2:
        raise ValueError(f"{path}: the labels name one class only; a classifier needs 2 or more")
    names = _class_names(path, arrays[_NPZ_NAMES], K) if _NPZ_NAMES in arrays else tuple(map(str, range(K)))
    return Dataset(path.stem, X_train, y_train, X_test, y_test, names, str(path))


def _load_checked(path, manifest):
    numbers = {k: v for k, v in manifest.items() if k != _NPZ_NAMES}
    dtypes_ok = all(
        spec["dtype"] in ("uint8", "uint16", "int8", "int16", "int32", "int64", "float32", "float64")
        for spec in numbers.values()
    )
    if not dtypes_ok:
        raise ValueError(
            f"{path}: the arrays must be integers or floats, got { {k: v['dtype'] for k, v in numbers.items()} }"
        )
    if _NPZ_NAMES in manifest:
        shape, dtype = manifest[_NPZ_NAMES]["shape"], manifest[_NPZ_NAMES]["dtype"]
        # the header's dtype and shape bound what is inflated (numpy names a unicode dtype str<bits>)
        chars = int(dtype[3:]) // 32 if dtype.startswith("str") and dtype[3:].isdigit() else None
        if chars is None or len(shape) != 1:
            raise ValueError(
                f"{path}: class_names must be a 1-D array of strings (unicode), got {dtype} {tuple(shape)}"
            )
        if not (1 <= shape[0] <= MAX_CLASSES and 1 <= chars <= _MAX_NAMES_DTYPE_CHARS):
            raise ValueError(
                f"{path}: class_names must hold 1 to {MAX_CLASSES:,} names in a unicode dtype of at most "
                f"{_MAX_NAMES_DTYPE_CHARS} characters, got {shape[0]:,} in a dtype of {chars}"
            )
    return load_arrays(path, manifest, text=(_NPZ_NAMES,))


def _class_names(path, a, K):
    """The K class names in the .npz's ``class_names`` array (its dtype and size already checked)."""
    if len(a) != K:
        raise ValueError(f"{path}: class_names holds {len(a)} names, the labels 0..{K - 1} need {K}")
    names = tuple(str(n).strip() for n in a)
    for n in names:
        if not 0 < len(n) <= MAX_CLASS_NAME or not n.isprintable():
            raise ValueError(
                f"{path}: class_names must be printable names of 1 to {MAX_CLASS_NAME} characters, got {n!r:.80}"
            )
    if len(set(names)) != K:
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: class_names must be unique, got {twice[0]!r} twice or more")
    return names


def _images(path, key, a):
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or len(a) == 0 or not (1 <= a.shape[1] <= 4):
        raise ValueError(f"{path}: {key} must hold images (N, C, H, W) or (N, H, W), got shape {a.shape}")
    if not all(1 <= n <= MAX_IMAGE_SIDE for n in a.shape[2:]):
        raise ValueError(
            f"{path}: {key} holds {a.shape[3]}x{a.shape[2]} images; at most "
            f"{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} are accepted"
        )
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"{path}: {key} must hold finite pixel values")
    if a.min() < 0 or a.max() > 255:
        raise ValueError(f"{path}: {key} must hold pixel values 0-255, got {a.min()}..{a.max()}")
    return np.ascontiguousarray(np.rint(a) if a.dtype.kind == "f" else a).astype(np.uint8)


def _labels(path, key, y, count):
    if y.dtype.kind not in "iu" or y.shape != (count,):
        raise ValueError(f"{path}: {key} must hold {count} integer labels, got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= MAX_CLASSES):
        raise ValueError(f"{path}: {key} must hold labels in [0, {MAX_CLASSES}), got {y.min()}..{y.max()}")
    return y.astype(np.int64)
