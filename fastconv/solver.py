"""The Solver: minibatch training with checkpoints that resume exactly.

Usage (CS231n's interface)::

    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3},
                    lr_decay=0.95, batch_size=128, num_epochs=10, checkpoint_dir="run/checkpoints",
                    seed=0)
    solver.train()
    solver.loss_history, solver.train_acc_history, solver.val_acc_history

``data`` holds ``X_train, y_train`` and optionally ``X_val, y_val`` (or the
tutorials' ``x_train, y_train, x_validation, y_validation``; ``X_test, y_test``
are allowed and unused). The inputs may be raw images: each batch goes through
``model.prepare`` (the model's preprocessing, or a cast of float arrays to the
model's dtype), so a uint8 data set is never converted as a whole.

``model`` is one of ``fastconv.models``, or any CS231n-style model (a ``params``
dict and ``loss(X, y=None)``) or tutorial-style one (``params``,
``loss_for_training(x, y)``, ``scores_for_predicting(x)``); see
``fastconv._model_adapter`` for what such a model may add and what its
checkpoints hold.

Each epoch visits every training example once, in an order drawn from the
Solver's random generator (shuffled, without replacement; the last batch may
be smaller). After each epoch the learning rate of every parameter is
multiplied by ``lr_decay``, the train accuracy is measured on a random sample
of ``num_train_samples`` training examples and the validation accuracy on
(at most ``num_val_samples`` of) the validation set; the parameters with the
best validation accuracy are kept as copies and put back into the model when
training ends. Without validation data the final parameters are kept.

Checkpoints: with ``checkpoint_dir``, the end of each epoch writes a
checkpoint (``fastconv.checkpoints``: atomic, only the ``keep_checkpoints``
newest kept). ``resume()`` restores the newest complete one and ``train()``
then continues where it stopped: the result is bit-identical to a run that
was never interrupted (same seed, same thread count). A checkpoint records
every setting that shapes the result (``recorded_settings``, with a SHA-256
of the training and validation data) and the caller's ``run_settings`` (a
JSON object, e.g. the command line's options); ``resume()`` refuses one
written with any of them different, naming them. Only ``num_epochs`` may
differ (to train for longer). No pickle anywhere.

MPI: with ``comm`` (an mpi4py communicator, e.g. ``MPI.COMM_WORLD``) every rank
runs the same Solver on the same data and each step's batch is split over the
ranks; the result is one process's up to rounding (``fastconv.distributed``).

Progress: with ``verbose``, a tqdm bar per epoch shows the loss, the running
training accuracy and images/s; without tqdm, a line every ``print_every``
iterations.
"""
from __future__ import annotations

import json
import numbers
import sys
import time
from pathlib import Path

import numpy as np

from . import checkpoints as _checkpoints
from . import optim
from ._files import sha256_of_arrays
from ._model_adapter import solver_data, solver_model
from .checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, checkpoints, load_checkpoint_model  # noqa: F401
from .engine.checks import check_int

try:  # tqdm is optional (the "train" extra)
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover - depends on the environment
    _tqdm = None


class Solver:
    """Train a model (see the module docstring)."""

    #: Called as ``on_iteration(solver)`` after each update (e.g. ``fastconv.animation.FilterFrames``).
    on_iteration = None

    def __init__(self, model, data, update_rule="sgd", optim_config=None, lr_decay=1.0, batch_size=100,
                 num_epochs=10, num_train_samples=1000, num_val_samples=None, print_every=100,
                 checkpoint_dir=None, keep_checkpoints=2, seed=None, verbose=True, progress=None,
                 run_settings=None, comm=None):
        self.model = solver_model(model)  # fastconv's models as they are, CS231n's and the tutorials' adapted
        X_train, y_train, self.X_val, self.y_val = solver_data(data)  # CS231n's keys or the tutorials'
        self.X_train, self.y_train = X_train, np.asarray(y_train)
        if len(self.X_train) != len(self.y_train) or len(self.X_train) == 0:
            raise ValueError(f"X_train and y_train must have the same non-zero length, "
                             f"got {len(self.X_train)} and {len(self.y_train)}")
        if self.X_val is not None:
            self.y_val = np.asarray(self.y_val)
            if len(self.X_val) != len(self.y_val):
                raise ValueError(
                    f"X_val and y_val must have the same length, got {len(self.X_val)} and {len(self.y_val)}")
            if len(self.X_val) == 0:
                self.X_val = self.y_val = None
        self.update_rule_name = update_rule
        self.update_rule = optim.get_update_rule(update_rule)
        if optim_config is not None and not isinstance(optim_config, dict):
            raise TypeError(f"optim_config must be a dict, got {type(optim_config).__name__}")
        self.optim_config = dict(optim_config or {})
        if isinstance(lr_decay, bool) or not isinstance(lr_decay, numbers.Real) or not lr_decay > 0:
            raise ValueError(f"lr_decay must be a number > 0.0, got {lr_decay!r}")
        self.lr_decay = float(lr_decay)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.num_epochs = check_int(num_epochs, "num_epochs", 0)
        self.num_train_samples = check_int(num_train_samples, "num_train_samples", 1)
        self.num_val_samples = None if num_val_samples is None else check_int(num_val_samples, "num_val_samples", 1)
        self.print_every = check_int(print_every, "print_every", 1)
        self.keep_checkpoints = check_int(keep_checkpoints, "keep_checkpoints", 1)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.seed = seed
        self.run_settings = _json_object(run_settings, "run_settings")
        self._data_sha256 = None
        self.verbose = bool(verbose)
        self.progress = (_tqdm is not None) if progress is None else bool(progress)
        self.rng = np.random.default_rng(seed)
        self._reset()
        self.distributed = None if comm is None else _data_parallel(self, comm)

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
        if self.distributed is not None:  # this rank's rows of the batch, then one Allreduce
            loss, grads, correct = self.distributed.loss_and_grads(idx)
        else:
            loss, grads, correct = self._loss_and_grads(idx)
        if not np.isfinite(loss):
            raise ValueError(f"the loss became {loss} at epoch {self.epoch + 1}; lower the learning rate")
        for name, w in self.model.params.items():
            next_w, self.optim_configs[name] = self.update_rule(w, grads[name], self.optim_configs[name])
            self.model.params[name] = next_w
        self.loss_history.append(float(loss))
        return float(loss), correct

    def _loss_and_grads(self, idx):
        X_batch = self.model.prepare(self.X_train[idx])
        y_batch = self.y_train[idx]
        loss, grads = self.model.loss(X_batch, y_batch)
        scores = self.model.last_scores
        correct = int(np.sum(scores.argmax(axis=1) == y_batch)) if scores is not None else None
        return loss, grads, correct  # correct is None for a model that does not keep its scores

    def check_accuracy(self, X, y, num_samples=None, batch_size=None):
        """Accuracy of the model on (a random sample of ``num_samples`` of) X, y."""
        if num_samples is not None and len(X) > num_samples:
            idx = np.sort(self.rng.choice(len(X), num_samples, replace=False))
            X, y = X[idx], y[idx]
        if self.distributed is not None:
            return self.distributed.accuracy(X, y, batch_size or max(self.batch_size, 256))
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
            if self.on_iteration is not None:
                self.on_iteration(self)
            seen += len(idx)
            correct = None if right is None or correct is None else correct + right
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            if bar is not None:
                bar.update(len(idx))
                if it % 5 == 0 or it == len(batches) - 1:
                    bar.set_postfix(loss=f"{loss:.4f}", acc=_accuracy(correct, seen), img_s=f"{rate:.0f}",
                                    refresh=False)
            elif self.verbose and (it % self.print_every == 0 or it == len(batches) - 1):
                print(f"(epoch {self.epoch + 1}/{self.num_epochs}, iteration {it + 1}/{len(batches)}) "
                      f"loss {loss:.4f}, batch acc {_accuracy(correct, seen)}, {rate:.0f} images/s", flush=True)
        if bar is not None:
            bar.close()
        return time.perf_counter() - t0

    def train(self):
        """Train until ``num_epochs`` epochs are done (from where ``resume`` left off)."""
        if self.distributed is not None:
            self.distributed.start()  # every rank takes rank 0's state
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
    @property
    def num_val(self):
        return 0 if self.X_val is None else len(self.X_val)

    @property
    def data_sha256(self):
        """SHA-256 of the training and validation arrays (computed once, when a checkpoint
        is first written or resumed: the data must not change in place meanwhile)."""
        if self._data_sha256 is None:
            self._data_sha256 = sha256_of_arrays((self.X_train, self.y_train, self.X_val, self.y_val))
        return self._data_sha256

    def recorded_settings(self):
        """The settings a checkpoint records (JSON values): all but ``num_epochs`` must be
        the same for ``resume`` to accept it."""
        return {
            "update_rule": self.update_rule_name,
            "optim_config": {k: v.item() if isinstance(v, np.generic) else v
                             for k, v in self.optim_config.items() if not isinstance(v, np.ndarray)},
            "lr_decay": self.lr_decay,
            "batch_size": self.batch_size,
            "num_epochs": self.num_epochs,
            "num_train_samples": self.num_train_samples,
            "num_val_samples": self.num_val_samples,
            "num_train": len(self.X_train),
            "num_val": self.num_val,
            # an int seed, or None; a Generator or SeedSequence given as seed is not recorded
            "seed": self.seed if isinstance(self.seed, int) and not isinstance(self.seed, bool) else None,
            "data_sha256": self.data_sha256,
        }

    def save_checkpoint(self):
        """Write this epoch's checkpoint into ``checkpoint_dir`` (see ``fastconv.checkpoints``)."""
        if self.distributed is not None and not self.distributed.writes:
            return None  # rank 0 writes
        return _checkpoints.save_checkpoint(self)

    def resume(self, path=None):
        """Restore the state of the newest complete checkpoint in ``checkpoint_dir``
        (or of the checkpoint JSON ``path``). Returns the epoch restored, or 0 when
        there is no checkpoint yet (a fresh start)."""
        if self.distributed is not None:
            return self.distributed.resume(path)
        return _checkpoints.resume(self, path)

    def history(self):
        """Histories as JSON-able lists (val accuracies are None without validation data)."""
        return {
            "loss": list(self.loss_history),
            "train_acc": list(self.train_acc_history),
            "val_acc": list(self.val_acc_history),
            "epoch_seconds": list(self.epoch_times),
            "iterations_per_epoch": -(-len(self.X_train) // self.batch_size),
        }


def _data_parallel(solver, comm):
    from .distributed import DataParallel  # mpi4py only when asked for

    return DataParallel(solver, comm)


def _accuracy(correct, seen):
    """The running training accuracy for progress, or 'n/a' for a model that does not keep its scores."""
    return "n/a" if correct is None else f"{correct / seen:.3f}"


def _json_object(value, name):
    """A copy of ``value`` (a dict of JSON values, or None for {}) as JSON gives it back, so a
    checkpoint's copy compares equal (tuples become lists)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of JSON values, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a dict of JSON values ({exc})") from None
