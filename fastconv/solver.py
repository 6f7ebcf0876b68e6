"""The Solver: minibatch training with checkpoints that resume exactly.

Usage (CS231n's interface)::

    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3},
                    lr_decay=0.95, batch_size=128, num_epochs=10, checkpoint_dir="run/checkpoints",
                    seed=0)
    solver.train()
    solver.loss_history, solver.train_acc_history, solver.val_acc_history

``data`` holds ``X_train, y_train`` and optionally ``X_val, y_val``. The
inputs may be raw images: each batch goes through ``model.prepare`` (the
model's preprocessing, or a cast of float arrays to the model's dtype), so a
uint8 data set is never converted as a whole.

Each epoch visits every training example once, in an order drawn from the
Solver's random generator (shuffled, without replacement; the last batch may
be smaller). After each epoch the learning rate of every parameter is
multiplied by ``lr_decay``, the train accuracy is measured on a random sample
of ``num_train_samples`` training examples and the validation accuracy on
(at most ``num_val_samples`` of) the validation set; the parameters with the
best validation accuracy are kept as copies and put back into the model when
training ends. Without validation data the final parameters are kept.

Checkpoints: with ``checkpoint_dir``, the end of each epoch writes
``checkpoint_epoch<NNNN>.npz`` (parameters, batchnorm statistics, optimizer
state, best parameters) and then ``checkpoint_epoch<NNNN>.json`` (model
architecture and preprocessing, hyperparameters, histories, random generator
states, the .npz SHA-256). Both are written atomically (temporary file,
fsync, rename) and the JSON last, so a checkpoint exists only once it is
complete; a crash at any moment leaves the previous one intact. Only the
``keep_checkpoints`` newest are kept; temporary files that a killed writer
left behind (``.checkpoint_epoch<NNNN>.npz.tmp<pid>``, POSIX: the pid no
longer runs) are removed at the next save. ``resume()`` loads the newest complete
one (checking digest, names, shapes and dtypes) and ``train()`` then
continues where it stopped: the result is bit-identical to a run that was
never interrupted (same seed, same thread count). No pickle anywhere.

Progress: with ``verbose``, a tqdm bar per epoch shows the loss, the running
training accuracy and images/s; without tqdm, a line every ``print_every``
iterations.
"""
from __future__ import annotations

import numbers
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from . import optim
from ._files import array_manifest, load_arrays, read_json, save_arrays, write_json
from .models import model_from_spec

CHECKPOINT_FORMAT = "fastconv-checkpoint"
CHECKPOINT_VERSION = 1
_CKPT_RE = re.compile(r"checkpoint_epoch(\d{4,})\.json")
_CKPT_TMP_RE = re.compile(r"\.checkpoint_epoch\d{4,}\.(?:npz|json)\.tmp(\d+)")  # _files.atomic_write's names

try:  # tqdm is optional (the "train" extra)
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover - depends on the environment
    _tqdm = None


def _rng_state(rng):
    """A Generator's state as JSON-able numbers (PCG64 holds 128-bit ints; JSON ints are unbounded)."""
    return rng.bit_generator.state


def _set_rng_state(rng, state, what):
    if not isinstance(state, dict) or state.get("bit_generator") != type(rng.bit_generator).__name__:
        raise ValueError(f"{what}: random generator state must be a {type(rng.bit_generator).__name__} state")
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{what}: invalid random generator state ({exc})") from None


class Solver:
    """Train a model (see the module docstring)."""

    def __init__(self, model, data, update_rule="sgd", optim_config=None, lr_decay=1.0, batch_size=100,
                 num_epochs=10, num_train_samples=1000, num_val_samples=None, print_every=100,
                 checkpoint_dir=None, keep_checkpoints=2, seed=None, verbose=True, progress=None):
        self.model = model
        if not isinstance(data, dict) or "X_train" not in data or "y_train" not in data:
            raise ValueError("data must be a dict with X_train and y_train (and optionally X_val, y_val)")
        self.X_train, self.y_train = data["X_train"], np.asarray(data["y_train"])
        self.X_val, self.y_val = data.get("X_val"), data.get("y_val")
        if len(self.X_train) != len(self.y_train) or len(self.X_train) == 0:
            raise ValueError(f"X_train and y_train must have the same non-zero length, "
                             f"got {len(self.X_train)} and {len(self.y_train)}")
        if self.X_val is not None:
            self.y_val = np.asarray(self.y_val)
            if len(self.X_val) != len(self.y_val):
                raise ValueError(f"X_val and y_val must have the same length, got {len(self.X_val)} and {len(self.y_val)}")
            if len(self.X_val) == 0:
                self.X_val = self.y_val = None
        self.update_rule_name = update_rule
        self.update_rule = optim.get_update_rule(update_rule)
        if optim_config is not None and not isinstance(optim_config, dict):
            raise TypeError(f"optim_config must be a dict, got {type(optim_config).__name__}")
        self.optim_config = dict(optim_config or {})
        for name, value, lo in (("lr_decay", lr_decay, 0.0),):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > lo:
                raise ValueError(f"{name} must be a number > {lo}, got {value!r}")
        self.lr_decay = float(lr_decay)
        self.batch_size = self._positive(batch_size, "batch_size")
        self.num_epochs = self._positive(num_epochs, "num_epochs", 0)
        self.num_train_samples = self._positive(num_train_samples, "num_train_samples")
        self.num_val_samples = None if num_val_samples is None else self._positive(num_val_samples, "num_val_samples")
        self.print_every = self._positive(print_every, "print_every")
        self.keep_checkpoints = self._positive(keep_checkpoints, "keep_checkpoints")
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.seed = seed
        self.verbose = bool(verbose)
        self.progress = (_tqdm is not None) if progress is None else bool(progress)
        self.rng = np.random.default_rng(seed)
        self._reset()

    @staticmethod
    def _positive(value, name, minimum=1):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        return int(value)

    def _reset(self):
        self.epoch = 0
        self.best_val_acc = -1.0
        self.best_epoch = 0
        self.best_params = {k: v.copy() for k, v in self.model.params.items()}
        self.best_buffers = {k: v.copy() for k, v in self.model.buffers.items()}
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self.epoch_times = []
        self.optim_configs = {name: dict(self.optim_config) for name in self.model.params}

    # ------------------------------------------------------------------ training
    def _step(self, idx):
        X_batch = self.model.prepare(self.X_train[idx])
        y_batch = self.y_train[idx]
        loss, grads = self.model.loss(X_batch, y_batch)
        if not np.isfinite(loss):
            raise ValueError(f"the loss became {loss} at epoch {self.epoch + 1}; lower the learning rate")
        for name, w in self.model.params.items():
            next_w, self.optim_configs[name] = self.update_rule(w, grads[name], self.optim_configs[name])
            self.model.params[name] = next_w
        self.loss_history.append(float(loss))
        scores = self.model.last_scores
        correct = int(np.sum(scores.argmax(axis=1) == y_batch)) if scores is not None else 0
        return float(loss), correct

    def check_accuracy(self, X, y, num_samples=None, batch_size=None):
        """Accuracy of the model on (a random sample of ``num_samples`` of) X, y."""
        if num_samples is not None and len(X) > num_samples:
            idx = np.sort(self.rng.choice(len(X), num_samples, replace=False))
            X, y = X[idx], y[idx]
        return self.model.check_accuracy(X, y, batch_size or max(self.batch_size, 256), prepare=True)

    def _run_epoch(self):
        N = len(self.X_train)
        order = self.rng.permutation(N)
        batches = [order[i:i + self.batch_size] for i in range(0, N, self.batch_size)]
        bar = None
        if self.verbose and self.progress and _tqdm is not None:
            bar = _tqdm(total=N, desc=f"epoch {self.epoch + 1}/{self.num_epochs}", unit="img",
                        leave=True, dynamic_ncols=True, file=sys.stderr)
        t0 = time.perf_counter()
        seen = correct = 0
        for it, idx in enumerate(batches):
            loss, right = self._step(idx)
            seen += len(idx)
            correct += right
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            if bar is not None:
                bar.update(len(idx))
                if it % 5 == 0 or it == len(batches) - 1:
                    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{correct / seen:.3f}", img_s=f"{rate:.0f}",
                                    refresh=False)
            elif self.verbose and (it % self.print_every == 0 or it == len(batches) - 1):
                print(f"(epoch {self.epoch + 1}/{self.num_epochs}, iteration {it + 1}/{len(batches)}) "
                      f"loss {loss:.4f}, batch acc {correct / seen:.3f}, {rate:.0f} images/s", flush=True)
        if bar is not None:
            bar.close()
        return time.perf_counter() - t0

    def train(self):
        """Train until ``num_epochs`` epochs are done (from where ``resume`` left off)."""
        while self.epoch < self.num_epochs:
            seconds = self._run_epoch()
            self.epoch += 1
            for config in self.optim_configs.values():
                if "learning_rate" in config:  # set (to its default) by the first update
                    config["learning_rate"] *= self.lr_decay
            train_acc = self.check_accuracy(self.X_train, self.y_train, self.num_train_samples)
            val_acc = None
            if self.X_val is not None:
                val_acc = self.check_accuracy(self.X_val, self.y_val, self.num_val_samples)
            self.train_acc_history.append(train_acc)
            self.val_acc_history.append(val_acc)
            self.epoch_times.append(seconds)
            if val_acc is not None and val_acc > self.best_val_acc:
                self.best_val_acc, self.best_epoch = val_acc, self.epoch
                self.best_params = {k: v.copy() for k, v in self.model.params.items()}
                self.best_buffers = {k: v.copy() for k, v in self.model.buffers.items()}
            if self.verbose:
                val = f", val acc {val_acc:.4f}" if val_acc is not None else ""
                print(f"epoch {self.epoch}/{self.num_epochs}: train acc {train_acc:.4f}{val}, "
                      f"{seconds:.1f} s ({len(self.X_train) / seconds:.0f} images/s)", flush=True)
            if self.checkpoint_dir is not None:
                self.save_checkpoint()
        if self.X_val is not None and self.best_epoch > 0:
            self.model.params = {k: v.copy() for k, v in self.best_params.items()}
            self.model.buffers = {k: v.copy() for k, v in self.best_buffers.items()}
        return self

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_arrays(self):
        arrays = self.model.state_arrays()
        arrays.update({f"best_{k}": v for k, v in _prefixed(self.best_params, self.best_buffers).items()})
        for pname, config in self.optim_configs.items():
            for key, value in config.items():
                if isinstance(value, np.ndarray):
                    arrays[f"optim/{pname}/{key}"] = value
        return arrays

    def _checkpoint_scalars(self):
        out = {}
        for pname, config in self.optim_configs.items():
            out[pname] = {k: v for k, v in config.items() if not isinstance(v, np.ndarray)}
        return out

    def save_checkpoint(self):
        """Write this epoch's checkpoint (.npz, then .json), atomically; prune old ones."""
        directory = self.checkpoint_dir
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"checkpoint_epoch{self.epoch:04d}"
        arrays = self._checkpoint_arrays()
        digest = save_arrays(directory / f"{stem}.npz", arrays)
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "epoch": self.epoch,
            "model": self.model.spec(),
            "solver": {
                "update_rule": self.update_rule_name,
                "lr_decay": self.lr_decay,
                "batch_size": self.batch_size,
                "num_epochs": self.num_epochs,
                "num_train_samples": self.num_train_samples,
                "num_val_samples": self.num_val_samples,
                "num_train": len(self.X_train),
                "seed": self.seed if isinstance(self.seed, (int, type(None))) else None,
            },
            "optim_scalars": self._checkpoint_scalars(),
            "history": self.history(),
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "rng": {"solver": _rng_state(self.rng), "model": _rng_state(self.model.rng)},
            "arrays": array_manifest(arrays),
            "npz": f"{stem}.npz",
            "npz_sha256": digest,
        }
        write_json(directory / f"{stem}.json", state)
        self._prune(directory)
        return directory / f"{stem}.json"

    def _prune(self, directory):
        found = sorted(checkpoints(directory))
        for epoch, path in found[:-self.keep_checkpoints]:
            for p in (path, path.with_suffix(".npz")):
                try:
                    p.unlink()
                except FileNotFoundError:  # pragma: no cover - concurrent cleanup
                    pass
        for p in directory.glob(".checkpoint_epoch*.tmp*"):
            m = _CKPT_TMP_RE.fullmatch(p.name)
            if m and _dead(int(m[1])):
                try:
                    p.unlink()
                except FileNotFoundError:  # pragma: no cover - concurrent cleanup
                    pass

    def history(self):
        """Histories as JSON-able lists (val accuracies are None without validation data)."""
        return {
            "loss": list(self.loss_history),
            "train_acc": list(self.train_acc_history),
            "val_acc": list(self.val_acc_history),
            "epoch_seconds": list(self.epoch_times),
            "iterations_per_epoch": -(-len(self.X_train) // self.batch_size),
        }

    def resume(self, path=None):
        """Restore the state of the newest complete checkpoint in ``checkpoint_dir``
        (or of the checkpoint JSON ``path``). Returns the epoch restored, or 0 when
        there is no checkpoint yet (a fresh start)."""
        if path is None:
            if self.checkpoint_dir is None:
                raise ValueError("resume needs checkpoint_dir (or a checkpoint path)")
            found = checkpoints(self.checkpoint_dir)
            if not found:
                return 0
            path = max(found)[1]
        path = Path(path)
        state = read_json(path, "checkpoint")
        if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} version {CHECKPOINT_VERSION} file")
        try:
            self._restore(path, state)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: malformed checkpoint ({type(exc).__name__}: {exc})") from None
        return self.epoch

    def _restore(self, path, state):
        model = self.model
        saved = state["model"]
        current = model.spec()
        for key in ("class", "config"):
            if saved.get(key) != current[key]:
                raise ValueError(f"{path}: the checkpoint is for a different model ({key} differs): "
                                 f"{saved.get(key)} vs {current[key]}")
        solver = state["solver"]
        for key, mine in (("update_rule", self.update_rule_name), ("batch_size", self.batch_size),
                          ("num_train", len(self.X_train))):
            if solver.get(key) != mine:
                raise ValueError(f"{path}: the checkpoint was trained with {key}={solver.get(key)!r}, "
                                 f"this solver has {mine!r}")
        epoch = state["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"{path}: bad epoch {epoch!r}")
        npz_name = state["npz"]
        if not isinstance(npz_name, str) or Path(npz_name).name != npz_name:
            raise ValueError(f"{path}: 'npz' must name the file beside it")
        scalars = state["optim_scalars"]
        if not isinstance(scalars, dict) or set(scalars) != set(model.params):
            raise ValueError(f"{path}: optimizer state must cover exactly the parameters {sorted(model.params)}")
        # the manifest the arrays must follow: the model's own arrays, the best copies, the optimizer state
        expected = array_manifest(model.state_arrays())
        expected.update({f"best_{k}": v for k, v in expected.items()})
        manifest = state["arrays"]
        if not isinstance(manifest, dict):
            raise ValueError(f"{path}: 'arrays' must be a JSON object")
        for key, spec in manifest.items():
            if key.startswith("optim/"):
                parts = key.split("/")
                if len(parts) != 3 or parts[1] not in model.params:
                    raise ValueError(f"{path}: unexpected optimizer array {key!r}")
                p = model.params[parts[1]]
                expected[key] = {"shape": list(p.shape), "dtype": p.dtype.name}
        if manifest != expected:
            raise ValueError(f"{path}: the array manifest does not match the model "
                             f"(differs in {sorted(set(manifest) ^ set(expected)) or 'shapes or dtypes'})")
        digest = state["npz_sha256"]
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"{path}: 'npz_sha256' must be the hex SHA-256 of {npz_name}")
        arrays = load_arrays(path.parent / npz_name, expected, digest)
        rng_states = state["rng"]
        history = state["history"]
        for key in ("loss", "train_acc", "val_acc", "epoch_seconds"):
            if not isinstance(history.get(key), list):
                raise ValueError(f"{path}: history['{key}'] must be a list")
        if len(history["train_acc"]) != epoch:
            raise ValueError(f"{path}: the history covers {len(history['train_acc'])} epochs, not {epoch}")

        # everything checked: now change state
        model.set_state_arrays(arrays, prefix="")
        best = {}
        for k, v in arrays.items():
            if k.startswith("best_params/"):
                best.setdefault("params", {})[k.split("/", 1)[1]] = np.array(v, copy=True)
            elif k.startswith("best_buffers/"):
                best.setdefault("buffers", {})[k.split("/", 1)[1]] = np.array(v, copy=True)
        self.best_params = best.get("params", {})
        self.best_buffers = best.get("buffers", {})
        configs = {}
        for pname, sc in scalars.items():
            if not isinstance(sc, dict):
                raise ValueError(f"{path}: optimizer state of {pname} must be a JSON object")
            configs[pname] = dict(sc)
        for key, value in arrays.items():
            if key.startswith("optim/"):
                _, pname, name = key.split("/")
                configs[pname][name] = np.array(value, copy=True)
        self.optim_configs = configs
        _set_rng_state(self.rng, rng_states["solver"], f"{path}: solver")
        _set_rng_state(model.rng, rng_states["model"], f"{path}: model")
        self.epoch = epoch
        self.loss_history = [float(v) for v in history["loss"]]
        self.train_acc_history = list(history["train_acc"])
        self.val_acc_history = list(history["val_acc"])
        self.epoch_times = list(history["epoch_seconds"])
        self.best_val_acc = float(state["best_val_acc"])
        self.best_epoch = int(state["best_epoch"])
        self.lr_decay = float(state["solver"]["lr_decay"])


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


def _prefixed(params, buffers):
    out = {f"params/{k}": v for k, v in params.items()}
    out.update({f"buffers/{k}": v for k, v in buffers.items()})
    return out


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


def load_checkpoint_model(path, impl="fast"):
    """The model stored in a checkpoint JSON (its current parameters, not the best ones)."""
    path = Path(path)
    state = read_json(path, "checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} file")
    try:
        model = model_from_spec(state.get("model"), impl)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    manifest, npz_name, digest = state.get("arrays"), state.get("npz"), state.get("npz_sha256")
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: 'arrays' must be a JSON object")
    if not isinstance(npz_name, str) or Path(npz_name).name != npz_name:
        raise ValueError(f"{path}: 'npz' must name the file beside it")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{path}: 'npz_sha256' must be the hex SHA-256 of {npz_name}")
    arrays = load_arrays(path.parent / npz_name, manifest, digest)
    try:
        model.set_state_arrays(arrays)
    except ValueError as exc:  # the manifest itself was wrong for the architecture
        raise ValueError(f"{path}: {exc}") from None
    return model
