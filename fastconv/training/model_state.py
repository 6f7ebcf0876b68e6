"""A model's state and files: what the Solver needs of a model, the one implementation of its
arrays, and every way to load one.

* ``SolverModel``: the model protocol (a ``typing.Protocol``): what ``fastconv.solver.Solver``,
  its checkpoints and ``fastconv.training.distributed`` use. ``fastconv.models``' networks have all
  of it; ``fastconv.training.model_adapter.TutorialModel`` gives it to a CS231n or tutorial model.
* ``ModelState``: the state protocol, written once: ``state_arrays`` (every array by file key,
  ``params/<name>`` and ``buffers/<name>``), ``state_manifest`` and ``set_state_arrays``
  (checked: names, shapes, dtypes, finite values; nothing changes unless all pass).
* The model files (``model.json`` + ``model.npz``, replaced atomically: ``save_model_files``,
  ``recover_model_files``) and every loader: ``load_model`` (a saved model),
  ``load_saved_model`` (the arrays a JSON file describes, for models and checkpoints),
  ``model_from_spec`` (a description, without arrays), ``build_model`` (a new model by name),
  ``load_checkpoint_model`` (a checkpoint's model) and ``load_prediction_model`` (a saved model
  for raw images, as `fastconv predict` and `fastconv serve` run it).

``fastconv.models``, ``fastconv.training.checkpoints`` and ``fastconv.apps.train_cli`` keep their names for
these (the same objects).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..io.files import (
    array_manifest,
    atomic_link,
    load_arrays_beside,
    read_json,
    remove_dead_temporaries,
    remove_file,
    save_arrays,
    sha256_of,
    write_json,
)
from .preprocessing import Preprocessing

FORMAT = "fastconv-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODEL_NPZ = "model.npz"
#: The new arrays while ``save_model_files`` replaces a model (see there).
MODEL_NPZ_NEXT = "model.next.npz"
MODEL_FILES = (MODEL_JSON, MODEL_NPZ, MODEL_NPZ_NEXT)


# ---------------------------------------------------------------------------- the protocols
@runtime_checkable
class SolverModel(Protocol):
    """What the Solver and its checkpoints use of a model (``isinstance(model, SolverModel)``
    tells whether a model has all of it; ``fastconv.training.model_adapter.solver_model`` wraps one that
    has not)."""

    params: dict  # named float arrays, updated in place by the update rule
    buffers: dict  # arrays that are not trained (batchnorm's running statistics)
    last_scores: Any  # the last training batch's scores, or None
    rng: np.random.Generator  # checkpointed: dropout masks

    def prepare(self, images): ...

    def loss(self, X, y=None): ...

    def check_accuracy(self, X, y, batch_size=500, prepare=False): ...

    def state_arrays(self) -> dict: ...

    def set_state_arrays(self, arrays, prefix=""): ...

    def spec(self) -> dict: ...


class ModelState:
    """The state protocol for a class whose state is its ``params`` and ``buffers`` dicts."""

    def state_arrays(self):
        """Every array of the model state, by file key: params/<name>, buffers/<name>."""
        arrays = {f"params/{k}": v for k, v in self.params.items()}
        arrays.update({f"buffers/{k}": v for k, v in self.buffers.items()})
        return arrays

    def state_manifest(self):
        """{file key: {"shape", "dtype"}} of the state ``set_state_arrays`` takes: the current
        arrays' (a class that knows its shapes before allocating says so here instead)."""
        return array_manifest(self.state_arrays())

    def set_state_arrays(self, arrays, prefix=""):
        """Load arrays named like ``state_arrays`` (after ``prefix``), checking names, shapes and
        dtypes, and that every value is finite (a NaN or inf parameter or statistic is refused,
        naming the array); nothing changes unless all of them pass."""
        expected = self.state_manifest()
        missing = sorted(k for k in expected if prefix + k not in arrays)
        if missing:
            raise ValueError(f"model state is missing {missing}")
        for key, spec in expected.items():
            a = arrays[prefix + key]
            if list(a.shape) != spec["shape"] or a.dtype.name != spec["dtype"]:
                raise ValueError(f"{key} is {a.dtype} {a.shape}, the model has {spec['dtype']} {tuple(spec['shape'])}")
            if not np.isfinite(a).all():
                raise ValueError(f"{key} holds non-finite values (NaN or inf)")
        for key in expected:
            group, name = key.split("/", 1)
            getattr(self, group)[name] = np.array(arrays[prefix + key], copy=True)


# ---------------------------------------------------------------------------- files and loaders


def model_from_spec(spec, impl="fast", initialize=True):
    """Rebuild a model (with fresh parameters, or none with ``initialize=False``) from the dict
    ``Sequential.spec()`` returns."""
    if not isinstance(spec, dict):
        raise ValueError("a model spec must be a JSON object")
    if spec.get("format") != FORMAT or spec.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"not a {FORMAT} version {FORMAT_VERSION} description "
            f"(format={spec.get('format')!r}, version={spec.get('version')!r})"
        )
    from ..models import MODEL_CLASSES  # here: models builds its classes on this module

    cls = MODEL_CLASSES.get(spec.get("class"))
    if cls is None:
        raise ValueError(f"unknown model class {spec.get('class')!r}; known: {', '.join(MODEL_CLASSES)}")
    config = spec.get("config")
    if not isinstance(config, dict):
        raise ValueError("the model config must be a JSON object")
    try:
        model = cls(**config, impl=impl, initialize=initialize)
    except TypeError as exc:
        raise ValueError(f"invalid {cls.kind} config: {exc}") from None
    if spec.get("preprocess") is not None:
        model.preprocess = Preprocessing.from_dict(spec["preprocess"])
        if model.preprocess.input_shape != model.input_shape:
            raise ValueError(
                f"preprocessing is for inputs {model.preprocess.input_shape}, the model takes {model.input_shape}"
            )
    names = spec.get("class_names")
    if names is not None:
        if not isinstance(names, list) or len(names) != model.num_classes or not all(isinstance(n, str) for n in names):
            raise ValueError(f"class_names must be a list of {model.num_classes} strings")
        model.class_names = tuple(names)
    return model


def _write_pointer(directory, spec, npz, digest):
    write_json(directory / MODEL_JSON, dict(spec, npz=npz, npz_sha256=digest))


def save_model_files(directory, spec, arrays):
    """Write ``arrays`` and the description ``spec`` as ``model.npz`` + ``model.json`` in
    ``directory``, where ``model.json`` is the one pointer to the arrays (it names its .npz
    and holds its SHA-256), replaced atomically:

    1. the arrays go to ``model.next.npz`` (an atomic write: complete once it has its name);
    2. ``model.json`` is replaced by one that names ``model.next.npz``: this one rename
       switches readers from the old model to the new one;
    3. ``model.npz`` becomes a second name of that file (a hard link, renamed into place);
    4. ``model.json`` is replaced by one that names ``model.npz``;
    5. ``model.next.npz`` is removed.

    So whenever the process dies, ``model.json`` names a complete .npz that matches its digest:
    the previous model up to step 2, the new one from then on; ``recover_model_files`` (run by
    the next save and by ``fastconv train`` when it claims the folder) finishes steps 3-5 or
    removes a ``model.next.npz`` that was never pointed at."""
    directory = Path(directory)
    recover_model_files(directory)
    digest = save_arrays(directory / MODEL_NPZ_NEXT, arrays)
    _write_pointer(directory, spec, MODEL_NPZ_NEXT, digest)
    _finish_save(directory, spec, digest)


def _finish_save(directory, spec, digest):
    """Steps 3-5 of ``save_model_files``: ``model.json`` names ``model.next.npz`` (of ``digest``)."""
    atomic_link(directory / MODEL_NPZ_NEXT, directory / MODEL_NPZ)
    _write_pointer(directory, spec, MODEL_NPZ, digest)
    remove_file(directory / MODEL_NPZ_NEXT)


def recover_model_files(directory):
    """Complete or undo a save that a crash interrupted (see ``save_model_files``); returns what
    it did ("finished", "removed model.next.npz") or None. A ``model.json`` that cannot be read
    is left alone, with the ``model.next.npz`` beside it (loading names the problem)."""
    directory = Path(directory)
    remove_dead_temporaries(directory, "|".join(map(re.escape, MODEL_FILES)))
    pending = directory / MODEL_NPZ_NEXT
    if not (pending.is_file() or pending.is_symlink()):
        return None
    json_path = directory / MODEL_JSON
    if not json_path.exists():  # the first save died before its switch: there is no model yet
        remove_file(pending)
        return f"removed {MODEL_NPZ_NEXT}"
    try:
        record = read_json(json_path, "model description")
    except (ValueError, OSError):
        return None
    if record.get("npz") != MODEL_NPZ_NEXT:  # never pointed at, or already linked as model.npz
        remove_file(pending)
        return f"removed {MODEL_NPZ_NEXT}"
    digest = record.get("npz_sha256")
    if pending.is_symlink() or sha256_of(pending) != digest:
        return None  # not what a save left: keep it for the user to see
    spec = {k: v for k, v in record.items() if k not in ("npz", "npz_sha256")}
    _finish_save(directory, spec, digest)
    return "finished"


def load_model(path, impl="fast"):
    """Load a model saved by ``save``: ``path`` is its directory or its ``model.json``.

    Checks the format, the architecture and its size (see "Size limits") and the
    array manifest before allocating anything, then the .npz digest and every
    array's name, shape, dtype and values (all finite); errors are ValueErrors
    naming the file (FileNotFoundError when a file is missing).
    """
    path = Path(path)
    json_path = path / MODEL_JSON if path.is_dir() else path
    if not json_path.exists():
        raise FileNotFoundError(
            f"{json_path}: no such model file (a model directory holds "
            f"{MODEL_JSON} and {MODEL_NPZ}, written by `fastconv train`)"
        )
    pointer = _identity(json_path)
    for attempt in range(3):
        spec = read_json(json_path, "model description")
        try:
            return load_saved_model(json_path, spec, spec, impl)
        except (ValueError, FileNotFoundError):
            # a save replaced model.json while we read (see save_model_files): read the new one
            now = _identity(json_path)
            if attempt == 2 or now == pointer:
                raise
            pointer = now


def _identity(path):
    """(device, inode, modification time) of ``path``: a replaced file has another one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def load_saved_model(json_path, model_spec, record, impl="fast", more_arrays=False):
    """The model ``model_spec`` describes, with its arrays from the .npz that ``record`` (the
    object of the JSON file ``json_path``) names: the model is sized and its array manifest
    checked against ``record["arrays"]`` before anything is allocated or read (with
    ``more_arrays``, the manifest may list others too: a checkpoint's optimizer state).
    Errors are ValueErrors naming the file; a non-finite value names the .npz (a model) or
    the JSON (a checkpoint, whose JSON is what a user resumes from)."""
    try:
        model = model_from_spec(model_spec, impl, initialize=False)
    except ValueError as exc:
        raise ValueError(f"{json_path}: {exc}") from None
    expected, manifest = model.state_manifest(), record.get("arrays")
    if not isinstance(manifest, dict):
        raise ValueError(f"{json_path}: 'arrays' must be a JSON object")
    if any(manifest.get(name) != entry for name, entry in expected.items()) if more_arrays else manifest != expected:
        raise ValueError(
            f"{json_path}: the array manifest does not match the architecture (expected {sorted(expected)})"
        )
    arrays = load_arrays_beside(json_path, record, manifest)
    try:
        model.set_state_arrays(arrays)
    except ValueError as exc:  # a non-finite value
        raise ValueError(f"{json_path if more_arrays else json_path.parent / record['npz']}: {exc}") from None
    return model


def build_model(name, input_shape, num_classes, **kwargs):
    """'convnet1', 'fc' or a layer string -> a new model for the given input and classes."""
    from ..models import ConvNet1, FullyConnectedNet, Sequential

    if name == "convnet1":
        return ConvNet1(input_shape=input_shape, num_classes=num_classes, **kwargs)
    if name == "fc":
        return FullyConnectedNet(input_shape=input_shape, num_classes=num_classes, **kwargs)
    return Sequential(name, input_shape=input_shape, num_classes=num_classes, **kwargs)


def load_checkpoint_model(path, impl="fast"):
    """The model stored in a checkpoint JSON (its current parameters, not the best ones)."""
    from .checkpoints import read_checkpoint  # here: checkpoints loads through this module

    path = Path(path)
    state = read_checkpoint(path)
    return load_saved_model(path, state.get("model"), state, impl, more_arrays=True)


def load_prediction_model(path, impl="fast"):
    """The model saved in ``path``, for raw images (it must have its preprocessing), and its
    class names (the class numbers as strings when it has none): what `fastconv predict` and
    `fastconv serve` run."""
    model = load_model(path, impl=impl)
    if model.preprocess is None:
        raise ValueError(f"{path}: the model has no saved preprocessing, so it cannot take raw images")
    return model, model.class_names or tuple(str(i) for i in range(model.num_classes))
