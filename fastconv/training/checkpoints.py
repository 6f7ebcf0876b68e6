"""Solver checkpoints: one per epoch, written atomically, resumed bit for bit.

A checkpoint is two files in the Solver's ``checkpoint_dir``, named
``checkpoint_epoch<NNNN>`` (or ``<name>_epoch<NNNN>`` for a Solver given
CS231n's ``checkpoint_name``, its ``checkpoint_prefix``):

* ``checkpoint_epoch<NNNN>.npz``: the model's parameters and batchnorm
  statistics (``params/<name>``, ``buffers/<name>``), the best ones so far
  (``best_params/<name>``, ``best_buffers/<name>``), the optimizer's state
  arrays (``optim/<param>/<key>``) and the loss of every iteration so far
  (``history/loss``, float64: it grows with the run, so it stays out of the
  size-bounded JSON);
* ``checkpoint_epoch<NNNN>.json``: the model's architecture and preprocessing,
  the Solver's settings (update rule and its hyperparameters, learning rate
  decay, batch size, seed, sample counts, the SHA-256 of the training and
  validation arrays, and when used the learning-rate schedule, early stopping and
  augmentation: absent from older files, which still resume), the caller's ``run_settings``, the optimizer's scalars,
  the per-epoch histories, both random generators' states, the array manifest
  and the .npz SHA-256. The JSON's size does not grow with the iterations, so
  every checkpoint the writer makes stays within the JSON reader's limit.

Both go through ``io.files`` (temporary file, fsync, rename), the JSON last, so a
checkpoint exists only once it is complete and a crash at any moment leaves
the previous one intact. ``save_checkpoint`` then keeps the ``keep_checkpoints``
newest and removes the temporary files of writers that no longer run
(``.checkpoint_epoch<NNNN>.npz.tmp<pid>.<random>``; POSIX only). ``resume``
checks every field and array of the newest one, refuses it unless it was
written with every setting that shapes the result equal to the resuming
Solver's (model and preprocessing, update rule and hyperparameters, lr_decay,
batch size, seed, sample counts, the training and validation data, and the
caller's ``run_settings``), and only then restores the Solver's whole state.
No pickle anywhere.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from .. import optim
from ..engine.checks import check_int, check_number
from ..io.files import (
    array_manifest,
    load_arrays_beside,
    read_json,
    remove_dead_temporaries,
    remove_file,
    save_arrays,
    write_json,
)
from .model_state import load_checkpoint_model  # noqa: F401  (public here too)

CHECKPOINT_FORMAT = "fastconv-checkpoint"
#: 2 added the settings resume compares (run_settings, optim_config, num_val, data_sha256);
#: 3 starts the accuracy histories at epoch 0 (epoch + 1 entries, as CS231n's Solver) and keeps
#: the per-iteration loss history in the .npz (``history/loss``, sized by the manifest) instead
#: of the JSON, so that no checkpoint outgrows the JSON reader's limit.
#: Older files still load as models (``load_checkpoint_model``) but cannot be resumed.
CHECKPOINT_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
_UNRESUMABLE = {
    1: "does not record the settings needed to check that resuming continues the same run",
    2: "has no epoch-0 accuracies in its histories (version 3 records them, as CS231n's Solver)",
}
LOSS_KEY = "history/loss"
#: The file prefix of a Solver given ``checkpoint_dir`` (``checkpoint_name`` sets another).
DEFAULT_PREFIX = "checkpoint"


def _checkpoint_re(prefix, suffix=r"\.json"):
    return re.compile(re.escape(prefix) + r"_epoch(\d{4,})" + suffix)


def checkpoints(directory, prefix=DEFAULT_PREFIX):
    """[(epoch, json path)] of the complete checkpoints in ``directory`` (JSON and .npz present)
    named ``<prefix>_epoch<NNNN>``."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    pattern = _checkpoint_re(prefix)
    for p in directory.iterdir():
        m = pattern.fullmatch(p.name)
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
    stem = f"{solver.checkpoint_prefix}_epoch{solver.epoch:04d}"
    arrays = solver.model.state_arrays()
    arrays.update({f"best_{k}": v for k, v in _prefixed(solver.best_params, solver.best_buffers).items()})
    scalars = {}
    for pname, config in solver.optim_configs.items():
        scalars[pname] = {k: v for k, v in config.items() if not isinstance(v, np.ndarray)}
        arrays.update({f"optim/{pname}/{k}": v for k, v in config.items() if isinstance(v, np.ndarray)})
    history = solver.history()
    arrays[LOSS_KEY] = np.asarray(history.pop("loss"), dtype=np.float64)
    digest = save_arrays(directory / f"{stem}.npz", arrays)
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": solver.epoch,
        "model": solver.model.spec(),
        "solver": solver.recorded_settings(),
        "run_settings": solver.run_settings,
        "optim_scalars": scalars,
        "history": history,
        "best_val_acc": solver.best_val_acc,
        "best_epoch": solver.best_epoch,
        # PCG64 states hold 128-bit ints: fine in JSON, whose ints are unbounded
        "rng": {"solver": solver.rng.bit_generator.state, "model": solver.model.rng.bit_generator.state},
        "arrays": array_manifest(arrays),
        "npz": f"{stem}.npz",
        "npz_sha256": digest,
    }
    write_json(directory / f"{stem}.json", state)
    prune(directory, solver.keep_checkpoints, solver.checkpoint_prefix)
    return directory / f"{stem}.json"


def prune(directory, keep, prefix=DEFAULT_PREFIX):
    """Keep the ``keep`` newest checkpoints named ``prefix`` in ``directory``; remove their
    temporary files whose writer no longer runs."""
    directory = Path(directory)
    for _, path in checkpoints(directory, prefix)[:-keep]:
        remove_file(path)
        remove_file(path.with_suffix(".npz"))
    remove_dead_temporaries(directory, _checkpoint_re(prefix, r"\.(?:npz|json)").pattern)


# ---------------------------------------------------------------------------- reading
def read_checkpoint(path):
    """The checkpoint JSON at ``path``: its format and version checked, and each field
    that holds an object an object."""
    state = read_json(path, "checkpoint")
    version = state.get("version")
    if state.get("format") != CHECKPOINT_FORMAT or type(version) is not int or version not in _READABLE_VERSIONS:
        raise ValueError(
            f"{path}: not a {CHECKPOINT_FORMAT} file of version {' or '.join(map(str, _READABLE_VERSIONS))}"
        )
    for key in ("model", "solver", "history", "rng", "optim_scalars", "run_settings"):
        if key in state and not isinstance(state[key], dict):
            raise ValueError(f"{path}: '{key}' must be a JSON object")
    return state


def resume(solver, path=None):
    """Restore ``solver`` from the newest complete checkpoint in its ``checkpoint_dir``
    (or from the checkpoint JSON ``path``). Returns the epoch restored, or 0 when
    there is no checkpoint yet (a fresh start). Nothing changes unless the whole
    checkpoint is valid and was written with this solver's settings (ValueErrors
    naming the file, and the settings that differ)."""
    if path is None:
        if solver.checkpoint_dir is None:
            raise ValueError("resume needs checkpoint_dir (or a checkpoint path)")
        found = checkpoints(solver.checkpoint_dir, solver.checkpoint_prefix)
        if not found:
            return 0
        path = found[-1][1]
    path = Path(path)
    state = read_checkpoint(path)
    if state["version"] != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: a version {state['version']} checkpoint {_UNRESUMABLE[state['version']]}; start afresh"
        )
    try:
        attributes, arrays, rng_states = _restored_state(path, state, solver)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: malformed checkpoint ({type(exc).__name__}: {exc})") from None
    # everything checked: now change state (set_state_arrays checks the values before it sets any)
    try:
        solver.model.set_state_arrays(arrays, prefix="")
    except ValueError as exc:  # a non-finite value
        raise ValueError(f"{path}: {exc}") from None
    solver.rng.bit_generator.state = rng_states["solver"]
    solver.model.rng.bit_generator.state = rng_states["model"]
    for name, value in attributes.items():
        setattr(solver, name, value)
    return solver.epoch


def _field(path, what, convert, value):
    """``convert(value)``, its TypeError or ValueError turned into a ValueError naming the file."""
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad {what} ({exc})") from None


def _number(value, name, minimum=-math.inf, maximum=math.inf, above=None):
    """``value`` as a float: a JSON number (not a bool), finite, within [minimum, maximum]
    (and > ``above`` when given)."""
    bound = f"> {above:g}" if above is not None else f"in [{minimum:g}, {maximum:g}]"
    return check_number(
        value, name, lambda v: minimum <= v <= maximum and (above is None or v > above), f"a finite number {bound}"
    )


def _checked_settings(path, settings):
    """The checkpoint's Solver settings (its 'solver' object), every field converted and checked."""

    def optional(check):
        return lambda v: None if v is None else check(v)

    def optim_config(config):
        if not isinstance(config, dict):
            raise TypeError("must be a JSON object")
        return {k: _number(v, f"optim_config[{k!r}]") for k, v in config.items()}

    def digest(value):
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("must be a hex SHA-256")
        return value

    def update_rule(name):
        optim.get_update_rule(name)
        return name

    fields = {
        "update_rule": update_rule,
        "optim_config": optim_config,
        "lr_decay": lambda v: _number(v, "lr_decay", above=0.0),
        "batch_size": lambda v: check_int(v, "batch_size", 1),
        "num_epochs": lambda v: check_int(v, "num_epochs", 0),
        "num_train_samples": optional(lambda v: check_int(v, "num_train_samples", 1)),
        "num_val_samples": optional(lambda v: check_int(v, "num_val_samples", 1)),
        "num_train": lambda v: check_int(v, "num_train", 1),
        "num_val": lambda v: check_int(v, "num_val", 0),
        "seed": optional(lambda v: check_int(v, "seed", 0)),
        "data_sha256": digest,
    }
    missing = sorted(set(fields) - set(settings))
    if missing:
        raise ValueError(f"{path}: the solver settings lack {missing}")
    checked = {key: _field(path, f"solver setting {key}", check, settings[key]) for key, check in fields.items()}
    for key, check in _NEWER_SETTINGS.items():  # absent from older checkpoints: None, not used
        checked[key] = _field(path, f"solver setting {key}", optional(check), settings.get(key))
    return checked


def _json_text(value):
    if not isinstance(value, str) or len(value) > 200:
        raise TypeError("must be a string of at most 200 characters")
    return value


def _early_stop_spec(value):
    if not isinstance(value, dict) or set(value) != {"patience", "monitor"}:
        raise TypeError("must be an object with patience and monitor")
    from ..callbacks import EarlyStopping

    return EarlyStopping(value["patience"], value["monitor"]).spec()


#: Solver settings recorded since version 3 was first written (None when a setting is not used).
_NEWER_SETTINGS = {
    "lr_schedule": _json_text,
    "schedule_epochs": lambda v: check_int(v, "schedule_epochs", 0),
    "early_stop": _early_stop_spec,
    "augment": _json_text,
    "label_smoothing": lambda v: _number(v, "label_smoothing", 0.0, 1.0),
}


def _differences(saved, current, keys=None):
    """['key: X in the checkpoint, Y now', ...] for each key whose values differ."""
    keys = list(current) + [k for k in saved if k not in current] if keys is None else keys
    return [
        f"{key}: {saved.get(key)!r} in the checkpoint, {current.get(key)!r} now"
        for key in keys
        if saved.get(key) != current.get(key)
    ]


def _check_setup(path, state, settings, solver):
    """ValueError naming what differs unless the checkpoint was written with this solver's
    settings: first the caller's run_settings (in its own words, e.g. command-line options),
    else the model, its preprocessing and classes, and the Solver's settings."""
    run = state.get("run_settings", {})
    problems = _differences(run, solver.run_settings)
    if not problems:
        saved, current = state["model"], solver.model.spec()
        for key in ("class", "config"):
            if saved.get(key) != current[key]:
                problems.append(f"a different model ({key} differs: {saved.get(key)} vs {current[key]})")
        mine, theirs = current["preprocess"] or {}, saved.get("preprocess") or {}
        if mine.get("mode") != theirs.get("mode"):
            problems.append(f"preprocessing {theirs.get('mode')!r} in the checkpoint, {mine.get('mode')!r} now")
        elif mine != theirs:
            problems.append("other preprocessing statistics (fitted on other training images)")
        problems += _differences(saved, current, ["class_names"])
        problems += _differences(
            settings,
            solver.recorded_settings(),
            [
                "update_rule",
                "optim_config",
                "lr_decay",
                "batch_size",
                "seed",
                "num_train",
                "num_val",
                "num_train_samples",
                "num_val_samples",
                *_NEWER_SETTINGS,
            ],
        )
        if settings["data_sha256"] != solver.data_sha256:
            problems.append("other training or validation data (their SHA-256 differs)")
    if problems:
        raise ValueError(
            f"{path}: the checkpoint was written with other settings ({'; '.join(problems)}); "
            "resume needs the settings the run was started with"
        )


def _expected_manifest(path, manifest, model, iterations=None):
    """The manifest the .npz must follow: the model's arrays, their best copies, an
    optimizer array of each parameter's shape and dtype for each one ``manifest`` lists,
    and (version 3) the float64 loss history of ``iterations`` values."""
    expected = array_manifest(model.state_arrays())
    expected.update({f"best_{k}": v for k, v in expected.items()})
    if iterations is not None:
        expected[LOSS_KEY] = {"shape": [iterations], "dtype": "float64"}
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: 'arrays' must be a JSON object")
    for key in manifest:
        if key.startswith("optim/"):
            parts = key.split("/")
            if len(parts) != 3 or parts[1] not in model.params:
                raise ValueError(f"{path}: unexpected optimizer array {key!r}")
            expected[key] = array_manifest({key: model.params[parts[1]]})[key]
    if manifest != expected:
        raise ValueError(
            f"{path}: the array manifest does not match the model "
            f"(differs in {sorted(set(manifest) ^ set(expected)) or 'shapes or dtypes'})"
        )
    return expected


def _json_leaves(obj):
    """Every value inside nested dicts and lists."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _json_leaves(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _json_leaves(v)
    else:
        yield obj


def _checked_rng_state(rng, state, what):
    """``state`` once it is known to load into a generator like ``rng`` unchanged (tried on a
    fresh one): its numbers whole and in range, nothing truncated or wrapped."""
    kind = type(rng.bit_generator)
    if not isinstance(state, dict) or state.get("bit_generator") != kind.__name__:
        raise ValueError(f"{what}: random generator state must be a {kind.__name__} state")
    if not all(isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in _json_leaves(state)):
        raise ValueError(f"{what}: invalid random generator state (its values must be integers)")
    probe = kind()
    try:
        probe.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"{what}: invalid random generator state ({exc})") from None
    if probe.state != state:
        raise ValueError(f"{what}: invalid random generator state (it does not load unchanged)")
    return probe.state


def _restored_history(path, history, epoch, iterations_per_epoch, loss):
    """The Solver's history attributes from the checkpoint's ``history``, which must cover
    ``epoch`` epochs of ``iterations_per_epoch`` steps (and epoch 0's accuracies), every number
    checked; the loss history is the array ``loss`` from the .npz (its length checked by the
    manifest)."""

    def numbers_list(key, length, check):
        values = history.get(key)
        if not isinstance(values, list):
            raise ValueError(f"{path}: history['{key}'] must be a list")
        if len(values) != length:
            raise ValueError(
                f"{path}: history['{key}'] holds {len(values)} values, not {length} "
                f"({epoch} epochs{' and epoch 0' if length == epoch + 1 else ''})"
            )
        return _field(path, f"history['{key}']", lambda vs: [check(v) for v in vs], values)

    def accuracy(v):
        return _number(v, "an accuracy", 0.0, 1.0)

    if not np.isfinite(loss).all():
        raise ValueError(f"{path}: bad loss history (the .npz's {LOSS_KEY} must hold finite numbers)")
    restored = {}
    if "val_loss" in history:  # recorded while early stopping watches the validation loss
        restored["val_loss_history"] = numbers_list(
            "val_loss", epoch + 1, lambda v: None if v is None else _number(v, "a loss", 0.0)
        )
    stopped = history.get("early_stopped")
    if stopped is not None:
        restored["early_stopped"] = _field(
            path, "history['early_stopped']", lambda v: check_int(v, "early_stopped", 0, epoch), stopped
        )
    return {
        **restored,
        "loss_history": loss.tolist(),
        "train_acc_history": numbers_list("train_acc", epoch + 1, accuracy),
        "val_acc_history": numbers_list("val_acc", epoch + 1, lambda v: None if v is None else accuracy(v)),
        "epoch_times": numbers_list("epoch_seconds", epoch, lambda v: _number(v, "a time", 0.0)),
    }


def _checked_optim_scalars(path, scalars, model):
    """The optimizer's scalars per parameter: the step count 't' an int >= 0, others numbers >= 0."""
    if set(scalars) != set(model.params):
        raise ValueError(f"{path}: optimizer state must cover exactly the parameters {sorted(model.params)}")
    configs = {}
    for pname, sc in scalars.items():
        if not isinstance(sc, dict):
            raise ValueError(f"{path}: optimizer state of {pname} must be a JSON object")
        configs[pname] = {
            key: _field(
                path,
                f"optimizer state of {pname}",
                lambda v, key=key: check_int(v, key, 0) if key == "t" else _number(v, key, 0.0),
                v,
            )
            for key, v in sc.items()
        }
    return configs


def _restored_state(path, state, solver):
    """Check the checkpoint ``state`` (read from ``path``) against ``solver`` and load its
    arrays; returns (Solver attributes to set, the arrays, the random generator states)."""
    model = solver.model
    settings = _checked_settings(path, state["solver"])
    _check_setup(path, state, settings, solver)
    epoch = _field(path, "epoch", lambda v: check_int(v, "epoch", 1), state["epoch"])
    configs = _checked_optim_scalars(path, state["optim_scalars"], model)
    iterations = epoch * -(-len(solver.X_train) // solver.batch_size)
    expected = _expected_manifest(path, state["arrays"], model, iterations)
    rng_states = {
        "solver": _checked_rng_state(solver.rng, state["rng"]["solver"], f"{path}: solver"),
        "model": _checked_rng_state(model.rng, state["rng"]["model"], f"{path}: model"),
    }
    arrays = load_arrays_beside(path, state, expected)
    attributes = _restored_history(path, state["history"], epoch, iterations // epoch, arrays.pop(LOSS_KEY))
    attributes.update(
        epoch=epoch,
        best_val_acc=_field(
            path, "best_val_acc", lambda v: _number(v, "best_val_acc", -1.0, 1.0), state["best_val_acc"]
        ),
        best_epoch=_field(path, "best_epoch", lambda v: check_int(v, "best_epoch", 0, epoch), state["best_epoch"]),
    )

    best = {"params": {}, "buffers": {}}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group in ("best_params", "best_buffers"):
            best[group[len("best_") :]][name] = np.array(value, copy=True)
        elif group == "optim":
            pname, key_name = name.split("/")
            configs[pname][key_name] = np.array(value, copy=True)
    attributes.update(best_params=best["params"], best_buffers=best["buffers"], optim_configs=configs)
    return attributes, arrays, rng_states
