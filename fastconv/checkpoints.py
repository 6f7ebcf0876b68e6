"""Solver checkpoints: one per epoch, written atomically, resumed bit for bit.

A checkpoint is two files in the Solver's ``checkpoint_dir``:

* ``checkpoint_epoch<NNNN>.npz``: the model's parameters and batchnorm
  statistics (``params/<name>``, ``buffers/<name>``), the best ones so far
  (``best_params/<name>``, ``best_buffers/<name>``) and the optimizer's state
  arrays (``optim/<param>/<key>``);
* ``checkpoint_epoch<NNNN>.json``: the model's architecture and preprocessing,
  the Solver's settings, the optimizer's scalars, the histories, both random
  generators' states, the array manifest and the .npz SHA-256.

Both go through ``_files`` (temporary file, fsync, rename), the JSON last, so a
checkpoint exists only once it is complete and a crash at any moment leaves
the previous one intact. ``save_checkpoint`` then keeps the ``keep_checkpoints``
newest and removes the temporary files of writers that no longer run
(``.checkpoint_epoch<NNNN>.npz.tmp<pid>``; POSIX only). ``resume`` checks the
newest one against the Solver (same model, update rule, batch size and number
of training images), checks every field and array before it changes anything,
then restores the Solver's whole state. No pickle anywhere.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ._files import array_manifest, load_arrays_beside, read_json, save_arrays, write_json
from ._params import check_int
from .models import model_from_spec

CHECKPOINT_FORMAT = "fastconv-checkpoint"
CHECKPOINT_VERSION = 1
_CKPT_RE = re.compile(r"checkpoint_epoch(\d{4,})\.json")
_CKPT_TMP_RE = re.compile(r"\.checkpoint_epoch\d{4,}\.(?:npz|json)\.tmp(\d+)")  # _files.atomic_write's names


def checkpoints(directory):
    """[(epoch, json path)] of the complete checkpoints in ``directory`` (JSON and .npz present)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _CKPT_RE.fullmatch(p.name)
        if m and p.with_suffix(".npz").is_file():
            found.append((int(m[1]), p))
    return sorted(found)


def _prefixed(params, buffers):
    """{name: array} dicts under the file keys of ``Sequential.state_arrays``."""
    out = {f"params/{k}": v for k, v in params.items()}
    out.update({f"buffers/{k}": v for k, v in buffers.items()})
    return out


# ---------------------------------------------------------------------------- writing
def save_checkpoint(solver):
    """Write ``solver``'s checkpoint for its current epoch (.npz, then .json) into its
    ``checkpoint_dir``; prune old ones. Returns the JSON's path."""
    directory = Path(solver.checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"checkpoint_epoch{solver.epoch:04d}"
    arrays = solver.model.state_arrays()
    arrays.update({f"best_{k}": v for k, v in _prefixed(solver.best_params, solver.best_buffers).items()})
    scalars = {}
    for pname, config in solver.optim_configs.items():
        scalars[pname] = {k: v for k, v in config.items() if not isinstance(v, np.ndarray)}
        arrays.update({f"optim/{pname}/{k}": v for k, v in config.items() if isinstance(v, np.ndarray)})
    digest = save_arrays(directory / f"{stem}.npz", arrays)
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": solver.epoch,
        "model": solver.model.spec(),
        "solver": {
            "update_rule": solver.update_rule_name,
            "lr_decay": solver.lr_decay,
            "batch_size": solver.batch_size,
            "num_epochs": solver.num_epochs,
            "num_train_samples": solver.num_train_samples,
            "num_val_samples": solver.num_val_samples,
            "num_train": len(solver.X_train),
            "seed": solver.seed if isinstance(solver.seed, (int, type(None))) else None,
        },
        "optim_scalars": scalars,
        "history": solver.history(),
        "best_val_acc": solver.best_val_acc,
        "best_epoch": solver.best_epoch,
        # PCG64 states hold 128-bit ints: fine in JSON, whose ints are unbounded
        "rng": {"solver": solver.rng.bit_generator.state, "model": solver.model.rng.bit_generator.state},
        "arrays": array_manifest(arrays),
        "npz": f"{stem}.npz",
        "npz_sha256": digest,
    }
    write_json(directory / f"{stem}.json", state)
    prune(directory, solver.keep_checkpoints)
    return directory / f"{stem}.json"


def prune(directory, keep):
    """Keep the ``keep`` newest checkpoints in ``directory``; remove the temporary
    checkpoint files whose writer no longer runs."""
    directory = Path(directory)
    for _, path in checkpoints(directory)[:-keep]:
        _remove(path)
        _remove(path.with_suffix(".npz"))
    for p in directory.glob(".checkpoint_epoch*.tmp*"):
        m = _CKPT_TMP_RE.fullmatch(p.name)
        if m and _dead(int(m[1])):
            _remove(p)


def _remove(path):
    try:
        path.unlink()
    except FileNotFoundError:  # pragma: no cover - concurrent cleanup
        pass


def _dead(pid):
    """True when no process ``pid`` runs (POSIX only: elsewhere nothing is known dead)."""
    if os.name != "posix" or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: an existence check, nothing is sent
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: it runs under another user
        return False
    return False


# ---------------------------------------------------------------------------- reading
def _read(path):
    """The checkpoint JSON at ``path``: its format and version checked, and each field
    that holds an object an object."""
    state = read_json(path, "checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} version {CHECKPOINT_VERSION} file")
    for key in ("model", "solver", "history", "rng"):
        if key in state and not isinstance(state[key], dict):
            raise ValueError(f"{path}: '{key}' must be a JSON object")
    return state


def resume(solver, path=None):
    """Restore ``solver`` from the newest complete checkpoint in its ``checkpoint_dir``
    (or from the checkpoint JSON ``path``). Returns the epoch restored, or 0 when
    there is no checkpoint yet (a fresh start). Nothing changes unless the whole
    checkpoint is valid for this solver."""
    if path is None:
        if solver.checkpoint_dir is None:
            raise ValueError("resume needs checkpoint_dir (or a checkpoint path)")
        found = checkpoints(solver.checkpoint_dir)
        if not found:
            return 0
        path = found[-1][1]
    path = Path(path)
    state = _read(path)
    try:
        attributes, arrays, rng_states = _restored_state(path, state, solver)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: malformed checkpoint ({type(exc).__name__}: {exc})") from None
    # everything checked: now change state
    solver.model.set_state_arrays(arrays, prefix="")
    solver.rng.bit_generator.state = rng_states["solver"]
    solver.model.rng.bit_generator.state = rng_states["model"]
    for name, value in attributes.items():
        setattr(solver, name, value)
    return solver.epoch


def _check_setup(path, state, solver):
    """ValueError unless the checkpoint was written for this model and these Solver settings."""
    saved, current = state["model"], solver.model.spec()
    for key in ("class", "config"):
        if saved.get(key) != current[key]:
            raise ValueError(f"{path}: the checkpoint is for a different model ({key} differs): "
                             f"{saved.get(key)} vs {current[key]}")
    settings = state["solver"]
    for key, mine in (("update_rule", solver.update_rule_name), ("batch_size", solver.batch_size),
                      ("num_train", len(solver.X_train))):
        if settings.get(key) != mine:
            raise ValueError(f"{path}: the checkpoint was trained with {key}={settings.get(key)!r}, "
                             f"this solver has {mine!r}")


def _expected_manifest(path, manifest, model):
    """The manifest the .npz must follow: the model's arrays, their best copies, and an
    optimizer array of each parameter's shape and dtype for each one ``manifest`` lists."""
    expected = array_manifest(model.state_arrays())
    expected.update({f"best_{k}": v for k, v in expected.items()})
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: 'arrays' must be a JSON object")
    for key in manifest:
        if key.startswith("optim/"):
            parts = key.split("/")
            if len(parts) != 3 or parts[1] not in model.params:
                raise ValueError(f"{path}: unexpected optimizer array {key!r}")
            expected[key] = array_manifest({key: model.params[parts[1]]})[key]
    if manifest != expected:
        raise ValueError(f"{path}: the array manifest does not match the model "
                         f"(differs in {sorted(set(manifest) ^ set(expected)) or 'shapes or dtypes'})")
    return expected


def _checked_rng_state(rng, state, what):
    """``state`` once it is known to load into a generator like ``rng`` (tried on a fresh one)."""
    kind = type(rng.bit_generator)
    if not isinstance(state, dict) or state.get("bit_generator") != kind.__name__:
        raise ValueError(f"{what}: random generator state must be a {kind.__name__} state")
    probe = kind()
    try:
        probe.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{what}: invalid random generator state ({exc})") from None
    return probe.state


def _field(path, what, convert, value):
    """``convert(value)``, its TypeError or ValueError turned into a ValueError naming the file."""
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad {what} ({exc})") from None


def _restored_history(path, history, epoch):
    """The Solver's history attributes from the checkpoint's ``history``, which must cover ``epoch`` epochs."""
    for key in ("loss", "train_acc", "val_acc", "epoch_seconds"):
        if not isinstance(history.get(key), list):
            raise ValueError(f"{path}: history['{key}'] must be a list")
    if len(history["train_acc"]) != epoch:
        raise ValueError(f"{path}: the history covers {len(history['train_acc'])} epochs, not {epoch}")
    return {
        "loss_history": _field(path, "history['loss']", lambda v: [float(x) for x in v], history["loss"]),
        "train_acc_history": list(history["train_acc"]),
        "val_acc_history": list(history["val_acc"]),
        "epoch_times": list(history["epoch_seconds"]),
    }


def _restored_state(path, state, solver):
    """Check the checkpoint ``state`` (read from ``path``) against ``solver`` and load its
    arrays; returns (Solver attributes to set, the arrays, the random generator states)."""
    model = solver.model
    _check_setup(path, state, solver)
    epoch = _field(path, "epoch", lambda v: check_int(v, "epoch", 1), state["epoch"])
    scalars = state["optim_scalars"]
    if not isinstance(scalars, dict) or set(scalars) != set(model.params):
        raise ValueError(f"{path}: optimizer state must cover exactly the parameters {sorted(model.params)}")
    configs = {}
    for pname, sc in scalars.items():
        if not isinstance(sc, dict):
            raise ValueError(f"{path}: optimizer state of {pname} must be a JSON object")
        configs[pname] = dict(sc)
    attributes = _restored_history(path, state["history"], epoch)
    attributes.update(
        epoch=epoch,
        best_val_acc=_field(path, "best_val_acc", float, state["best_val_acc"]),
        best_epoch=_field(path, "best_epoch", lambda v: check_int(v, "best_epoch", 0, epoch), state["best_epoch"]),
        lr_decay=_field(path, "lr_decay", float, state["solver"]["lr_decay"]),
    )
    rng_states = {"solver": _checked_rng_state(solver.rng, state["rng"]["solver"], f"{path}: solver"),
                  "model": _checked_rng_state(model.rng, state["rng"]["model"], f"{path}: model")}
    arrays = load_arrays_beside(path, state, _expected_manifest(path, state["arrays"], model))

    best = {"params": {}, "buffers": {}}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group in ("best_params", "best_buffers"):
            best[group[len("best_"):]][name] = np.array(value, copy=True)
        elif group == "optim":
            pname, key_name = name.split("/")
            configs[pname][key_name] = np.array(value, copy=True)
    attributes.update(best_params=best["params"], best_buffers=best["buffers"], optim_configs=configs)
    return attributes, arrays, rng_states


def load_checkpoint_model(path, impl="fast"):
    """The model stored in a checkpoint JSON (its current parameters, not the best ones)."""
    path = Path(path)
    state = _read(path)
    try:
        model = model_from_spec(state.get("model"), impl)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    manifest = state.get("arrays")
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: 'arrays' must be a JSON object")
    arrays = load_arrays_beside(path, state, manifest)
    try:
        model.set_state_arrays(arrays)
    except ValueError as exc:  # the manifest itself was wrong for the architecture
        raise ValueError(f"{path}: {exc}") from None
    return model
