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
``fastconv.training.model_adapter`` for what such a model may add and what its
checkpoints hold.

Each epoch visits every training example once, in an order drawn from the
Solver's random generator (shuffled, without replacement; the last batch may
be smaller). After each epoch the learning rate of every parameter is
multiplied by ``lr_decay``, the train accuracy is measured on a random sample
of ``num_train_samples`` training examples (all of them when it is None) and
the validation accuracy on (at most ``num_val_samples`` of) the validation
set; the parameters with the best validation accuracy are kept as copies and
put back into the model when training ends. Without validation data the
final parameters are kept.

Histories, as CS231n's: ``loss_history`` holds every iteration's loss;
``train_acc_history`` and ``val_acc_history`` hold ``num_epochs + 1``
accuracies, epoch 0 first (the model before its first update; CS231n's and
the tutorial's Solvers measure it after the first update, one step later),
so ``plt.plot(solver.train_acc_history)`` puts epoch e at x = e. Epoch 0
takes part in choosing the best parameters. ``epoch_times`` holds one time
per epoch (``num_epochs`` entries).

Gradients: a model's gradient of another float dtype than its parameter
(CS231n's float32 models fed float64 data, the tutorials' ``np.zeros`` in a
layer) is cast to the parameter's dtype once, before the update, as the
originals' in-place updates effectively do; fastconv's own models return
gradients in their parameters' dtype.

A non-finite loss (NaN or inf) raises ValueError with ``nonfinite_loss="raise"``
(the default; ``fastconv train`` relies on it). With ``nonfinite_loss="stop"``
(the default of ``fastconv.compat.cs231n.Solver``) the loss is recorded in
``loss_history``, the update is skipped, the run stops there (no accuracy is
measured for the unfinished epoch, no checkpoint written) and ``train()``
returns with the best parameters so far in the model; ``stopped`` then says
where, and ``train()`` does nothing more. A hyperparameter search goes on
with its next trial and reads ``best_val_acc`` as usual.

The tutorial's keyword names are taken too: ``optimization_config``
(``optim_config``), ``learning_rate_decay`` (``lr_decay``),
``number_of_epochs`` (``num_epochs``), ``verbose_mode`` (``verbose``); giving
both names of one setting with different values is a TypeError. The
tutorial's ``train_accuracy_history``, ``validation_accuracy_history`` and
``best_validation_accuracy`` read the histories above.

Checkpoints: with ``checkpoint_dir``, the end of each epoch writes a
checkpoint (``fastconv.training.checkpoints``: atomic, only the ``keep_checkpoints``
newest kept). CS231n's ``checkpoint_name`` (e.g. ``"runs/fc_net"``) writes
the same safe checkpoints under that name, ``runs/fc_net_epoch0001.json`` +
``.npz``, instead of CS231n's pickles (``fc_net_epoch_1.pkl``): never a
pickle, so a checkpoint from elsewhere cannot run code when loaded. Give
``checkpoint_dir`` or ``checkpoint_name``, not both. ``resume()`` restores
the newest complete one and ``train()`` then continues where it stopped
(epoch 0's accuracies come from the checkpoint): the result is bit-identical
to a run that was never interrupted (same seed, same thread count). A checkpoint records
every setting that shapes the result (``recorded_settings``, with a SHA-256
of the training and validation data) and the caller's ``run_settings`` (a
JSON object, e.g. the command line's options); ``resume()`` refuses one
written with any of them different, naming them. Only ``num_epochs`` may
differ (to train for longer). No pickle anywhere.

Callbacks, schedules, early stopping, augmentation:

* ``callbacks=[...]``: objects with ``on_train_begin``, ``on_epoch_begin``,
  ``on_batch_begin``, ``on_batch_end``, ``on_epoch_end``, ``on_train_end`` (each given the
  Solver; see ``fastconv.callbacks``). A callback may set ``stop_training`` at an epoch's
  end. The older ``on_iteration`` attribute still works (called after each update).
* ``lr_schedule``: the learning rate of every update, a spec such as ``"cosine"``,
  ``"step:5:0.5"``, ``"onecycle"`` or a ``fastconv.training.schedules.Schedule``, from the
  ``learning_rate`` of ``optim_config``; ``warmup`` epochs of linear ramp (with or
  without a schedule). ``lr_decay`` itself runs as the schedule ``exp:G`` (the same rates,
  bit for bit). Give ``lr_decay`` or ``lr_schedule``, not both.
* ``early_stop``: a patience (epochs without a better validation accuracy) or a
  ``fastconv.callbacks.EarlyStopping`` (``monitor="val_loss"`` watches the validation
  loss, kept in ``val_loss_history``, and then chooses the best parameters by it);
  ``early_stopped`` holds the epoch the run stopped after (None otherwise).
* ``augment``: a spec such as ``"crop4,flip"`` or a ``fastconv.training.augment.Augment``, applied
  to each training batch (the raw images, before ``model.prepare``), with random draws from
  the Solver's generator.

All four are recorded in the checkpoints and ``resume()`` refuses other values; a schedule
whose rates depend on the run's length (cosine, one-cycle) also records ``num_epochs``.

MPI: with ``comm`` (an mpi4py communicator, e.g. ``MPI.COMM_WORLD``) every rank
runs the same Solver on the same data and each step's batch is split over the
ranks; the result is one process's up to rounding (``fastconv.training.distributed``).

Progress: with ``verbose``, a tqdm bar per epoch shows the loss, the running
training accuracy and images/s; without tqdm, a line every ``print_every``
iterations.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from . import optim
from .callbacks import EarlyStopping, IterationHook, LearningRate, call, check_callbacks
from .engine.checks import check_int, check_number
from .io.files import sha256_of_arrays
from .training import checkpoints as _checkpoints
from .training.augment import parse_augment
from .training.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, checkpoints, load_checkpoint_model  # noqa: F401
from .training.model_adapter import solver_data, solver_model
from .training.schedules import parse_schedule

try:  # tqdm is optional (the "train" extra)
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover - depends on the environment
    _tqdm = None


class Solver:
    """Train a model (see the module docstring)."""

    #: Called as ``on_iteration(solver)`` after each update (e.g. ``fastconv.apps.animation.FilterFrames``).
    on_iteration = None

    #: What ``nonfinite_loss`` is when not given: "raise" here, "stop" in ``fastconv.compat.cs231n.Solver``.
    default_nonfinite_loss = "raise"

    def __init__(
        self,
        model,
        data,
        update_rule="sgd",
        optim_config=None,
        lr_decay=1.0,
        batch_size=100,
        num_epochs=10,
        num_train_samples=1000,
        num_val_samples=None,
        print_every=100,
        checkpoint_dir=None,
        keep_checkpoints=2,
        seed=None,
        verbose=True,
        progress=None,
        run_settings=None,
        comm=None,
        *,
        checkpoint_name=None,
        nonfinite_loss=None,
        optimization_config=None,
        learning_rate_decay=None,
        number_of_epochs=None,
        verbose_mode=None,
        callbacks=None,
        lr_schedule=None,
        warmup=0.0,
        early_stop=None,
        augment=None,
    ):
        # the tutorial's names for four settings (its Solver's keywords)
        optim_config = _alias(optim_config, None, "optim_config", optimization_config, "optimization_config")
        lr_decay = _alias(lr_decay, 1.0, "lr_decay", learning_rate_decay, "learning_rate_decay")
        num_epochs = _alias(num_epochs, 10, "num_epochs", number_of_epochs, "number_of_epochs")
        verbose = _alias(verbose, True, "verbose", verbose_mode, "verbose_mode")
        self.model = solver_model(model)  # fastconv's models as they are, CS231n's and the tutorials' adapted
        X_train, y_train, self.X_val, self.y_val = solver_data(data)  # CS231n's keys or the tutorials'
        self.X_train, self.y_train = X_train, np.asarray(y_train)
        if len(self.X_train) != len(self.y_train) or len(self.X_train) == 0:
            raise ValueError(
                f"X_train and y_train must have the same non-zero length, "
                f"got {len(self.X_train)} and {len(self.y_train)}"
            )
        if self.X_val is not None:
            self.y_val = np.asarray(self.y_val)
            if len(self.X_val) != len(self.y_val):
                raise ValueError(
                    f"X_val and y_val must have the same length, got {len(self.X_val)} and {len(self.y_val)}"
                )
            if len(self.X_val) == 0:
                self.X_val = self.y_val = None
        self.update_rule_name = update_rule
        self.update_rule = optim.get_update_rule(update_rule)
        if optim_config is not None and not isinstance(optim_config, dict):
            raise TypeError(f"optim_config must be a dict, got {type(optim_config).__name__}")
        self.optim_config = dict(optim_config or {})
        self.lr_decay = check_number(lr_decay, "lr_decay", lambda d: d > 0, "a number > 0.0")
        if lr_schedule is not None and self.lr_decay != 1.0:
            raise ValueError("give lr_decay or lr_schedule, not both (lr_schedule='exp:G' is lr_decay=G)")
        if lr_schedule is None and warmup:  # a warmup before the per-epoch decay
            lr_schedule = "constant" if self.lr_decay == 1.0 else f"exp:{self.lr_decay!r}"
        self.lr_schedule = None if lr_schedule is None else parse_schedule(lr_schedule, warmup)
        self.early_stop = _early_stop(early_stop)
        if self.early_stop is not None and self.X_val is None:
            raise ValueError("early_stop needs validation data (X_val, y_val)")
        if self._watches_val_loss and not callable(getattr(self.model, "scores", None)):
            raise TypeError(
                "early stopping on val_loss needs a model with scores(X, batch_size, prepare) "
                "(fastconv.models); monitor 'val_acc' works with any model"
            )
        self.callbacks = check_callbacks(callbacks)
        self.augment = parse_augment(augment)
        if self.augment is not None and np.ndim(self.X_train) != 4:
            raise ValueError(f"augment needs images (N, C, H, W) as X_train, got shape {np.shape(self.X_train)}")
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.num_epochs = check_int(num_epochs, "num_epochs", 0)
        self.num_train_samples = (
            None if num_train_samples is None else check_int(num_train_samples, "num_train_samples", 1)
        )  # None: the whole training set, as CS231n's
        self.num_val_samples = None if num_val_samples is None else check_int(num_val_samples, "num_val_samples", 1)
        self.print_every = check_int(print_every, "print_every", 1)
        self.keep_checkpoints = check_int(keep_checkpoints, "keep_checkpoints", 1)
        self.checkpoint_dir, self.checkpoint_prefix = _checkpoint_place(checkpoint_dir, checkpoint_name)
        nonfinite_loss = self.default_nonfinite_loss if nonfinite_loss is None else nonfinite_loss
        if nonfinite_loss not in ("raise", "stop"):
            raise ValueError(f"nonfinite_loss must be 'raise' or 'stop', got {nonfinite_loss!r}")
        self.nonfinite_loss = nonfinite_loss
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
        self.stopped = None  # where a non-finite loss stopped the run (nonfinite_loss="stop")
        self.val_loss_history = []  # per epoch from epoch 0, measured when early stopping watches it
        self.early_stopped = None  # the epoch early stopping ended the run after
        self.stop_training = False  # a callback sets it to end the run after this epoch
        self._callbacks = []
        self.optim_configs = {name: dict(self.optim_config) for name in self.model.params}

    # ------------------------------------------------------------------ training
    def _step(self, idx):
        if self.distributed is not None:  # this rank's rows of the batch, then one Allreduce
            loss, grads, correct = self.distributed.loss_and_grads(idx)
        else:
            loss, grads, correct = self._loss_and_grads(idx)
        if not np.isfinite(loss):
            if self.nonfinite_loss == "raise":
                raise ValueError(f"the loss became {loss} at epoch {self.epoch + 1}; lower the learning rate")
            self.loss_history.append(float(loss))  # recorded, as CS231n's Solver records it; no update
            self.stopped = (
                f"the loss became {float(loss)} at epoch {self.epoch + 1}, iteration {len(self.loss_history)}"
            )
            return float(loss), None
        for name, w in self.model.params.items():
            next_w, self.optim_configs[name] = self.update_rule(w, grads[name], self.optim_configs[name])
            self.model.params[name] = next_w
        self.loss_history.append(float(loss))
        return float(loss), correct

    def _loss_and_grads(self, idx):
        X_batch = self.model.prepare(self.train_images(idx))
        y_batch = self.y_train[idx]
        loss, grads = self.model.loss(X_batch, y_batch)
        scores = self.model.last_scores
        correct = int(np.sum(scores.argmax(axis=1) == y_batch)) if scores is not None else None
        return loss, grads, correct  # correct is None for a model that does not keep its scores

    def train_images(self, idx, rows=slice(None)):
        """The training images of the batch ``idx`` (its ``rows``, a slice), augmented when asked:
        the random draws are made for the whole batch, so every part of it sees what one
        process sees (``fastconv.training.distributed`` takes its rank's rows)."""
        if self.augment is None:
            return self.X_train[idx[rows]]
        draws = self.augment.draw(self.rng, len(idx))
        return self.augment.apply(self.X_train[idx[rows]], self.augment.rows(draws, rows))

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
        batches = [order[i : i + self.batch_size] for i in range(0, N, self.batch_size)]
        bar = None
        if self.verbose and self.progress and _tqdm is not None:
            bar = _tqdm(
                total=N,
                desc=f"epoch {self.epoch + 1}/{self.num_epochs}",
                unit="img",
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
            )
        t0 = time.perf_counter()
        seen = correct = 0
        callbacks = self._callbacks
        for it, idx in enumerate(batches):
            call(callbacks, "on_batch_begin", self)
            loss, right = self._step(idx)
            if self.stopped is not None:
                break
            call(callbacks, "on_batch_end", self)
            seen += len(idx)
            correct = None if right is None or correct is None else correct + right
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            if bar is not None:
                bar.update(len(idx))
                if it % 5 == 0 or it == len(batches) - 1:
                    bar.set_postfix(
                        loss=f"{loss:.4f}", acc=_accuracy(correct, seen), img_s=f"{rate:.0f}", refresh=False
                    )
            elif self.verbose and (it % self.print_every == 0 or it == len(batches) - 1):
                print(
                    f"(epoch {self.epoch + 1}/{self.num_epochs}, iteration {it + 1}/{len(batches)}) "
                    f"loss {loss:.4f}, batch acc {_accuracy(correct, seen)}, {rate:.0f} images/s",
                    flush=True,
                )
        if bar is not None:
            bar.close()
        if self.stopped is not None and self.verbose:
            print(f"stopped: {self.stopped}", flush=True)
        return time.perf_counter() - t0

    def _record_accuracies(self):
        """Measure this epoch's train and validation accuracy, append them to the histories and
        keep the parameters if they are the best so far. Returns (train_acc, val_acc)."""
        train_acc = self.check_accuracy(self.X_train, self.y_train, self.num_train_samples)
        val_acc = None
        if self.X_val is not None:
            val_acc = self.check_accuracy(self.X_val, self.y_val, self.num_val_samples)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if self._watches_val_loss:
            self.val_loss_history.append(None if self.X_val is None else self.validation_loss())
        if self._improved(val_acc):
            self.best_val_acc, self.best_epoch = val_acc, self.epoch
            self.best_params = {k: v.copy() for k, v in self.model.params.items()}
            self.best_buffers = {k: v.copy() for k, v in self.model.buffers.items()}
        return train_acc, val_acc

    @property
    def _watches_val_loss(self):
        return self.early_stop is not None and self.early_stop.monitor == "val_loss"

    def _improved(self, val_acc):
        """Whether this epoch's parameters are the best so far: the highest validation accuracy
        (the first of equal ones), or the lowest validation loss when early stopping watches it."""
        if val_acc is None:
            return False
        if not self._watches_val_loss:
            return val_acc > self.best_val_acc
        *before, now = self.val_loss_history
        before = [v for v in before if v is not None]
        return not before or now < min(before)

    def validation_loss(self, batch_size=None):
        """The model's mean data loss (no regularization) on the whole validation set, in test mode."""
        from . import layers

        scores = self.model.scores(self.X_val, batch_size or max(self.batch_size, 256), prepare=True)
        loss = layers.svm_loss if getattr(self.model, "loss_type", "softmax") == "svm" else layers.softmax_loss
        return loss(scores.astype(np.float64), self.y_val)[0]

    def base_learning_rate(self):
        """The learning rate a schedule starts from: ``optim_config``'s, or the update rule's default."""
        if "learning_rate" in self.optim_config:
            return float(self.optim_config["learning_rate"])
        probe = np.zeros(1)
        return self.update_rule(probe, probe, {})[1]["learning_rate"]

    @property
    def iterations_per_epoch(self):
        return -(-len(self.X_train) // self.batch_size)

    def _own_callbacks(self):
        """The Solver's callbacks for its own settings: the learning rate (a schedule, or the
        per-epoch lr_decay), early stopping, and the older ``on_iteration`` hook."""
        own = []
        schedule = self.lr_schedule
        if schedule is None and self.lr_decay != 1.0:
            schedule = parse_schedule(f"exp:{self.lr_decay!r}")
        if schedule is not None:
            ipe = self.iterations_per_epoch
            own.append(LearningRate(schedule, self.base_learning_rate(), ipe, self.num_epochs * ipe))
        if self.early_stop is not None:
            own.append(self.early_stop)
        return own

    def learning_rates(self):
        """The learning rate of each update of the whole run (``num_epochs`` epochs)."""
        ipe = self.iterations_per_epoch
        schedule = self.lr_schedule
        if schedule is None:
            schedule = parse_schedule(f"exp:{self.lr_decay!r}")
        return schedule.curve(self.base_learning_rate(), ipe, self.num_epochs * ipe)

    def train(self):
        """Train until ``num_epochs`` epochs are done (from where ``resume`` left off), or until a
        non-finite loss stops the run (``nonfinite_loss="stop"``; then, and once stopped, it returns),
        or until early stopping (or another callback) ends it."""
        if self.distributed is not None:
            self.distributed.start()  # every rank takes rank 0's state
            from .training.distributed import bcast_json

            extra = bcast_json(
                self.distributed.comm, {"val_loss": self.val_loss_history, "early_stopped": self.early_stopped}
            )
            self.val_loss_history, self.early_stopped = extra["val_loss"], extra["early_stopped"]
        if self.stopped is not None:
            return self
        self._callbacks = self._own_callbacks() + self.callbacks
        if self.on_iteration is not None:
            self._callbacks.append(IterationHook(self.on_iteration))
        self.stop_training = False
        call(self._callbacks, "on_train_begin", self)
        if self.epoch == 0 and not self.train_acc_history:  # epoch 0: the model before its first update
            train_acc, val_acc = self._record_accuracies()
            if self.verbose:
                val = f", val acc {val_acc:.4f}" if val_acc is not None else ""
                print(f"epoch 0/{self.num_epochs}: train acc {train_acc:.4f}{val}", flush=True)
        while self.epoch < self.num_epochs and not self.stop_training:
            call(self._callbacks, "on_epoch_begin", self)
            seconds = self._run_epoch()
            if self.stopped is not None:
                break  # the unfinished epoch is neither measured nor checkpointed
            self.epoch += 1
            train_acc, val_acc = self._record_accuracies()
            self.epoch_times.append(seconds)
            if self.verbose:
                val = f", val acc {val_acc:.4f}" if val_acc is not None else ""
                print(
                    f"epoch {self.epoch}/{self.num_epochs}: train acc {train_acc:.4f}{val}, "
                    f"{seconds:.1f} s ({len(self.X_train) / seconds:.0f} images/s)",
                    flush=True,
                )
            call(self._callbacks, "on_epoch_end", self)
            if self.verbose and self.early_stopped == self.epoch:
                print(
                    f"early stopping after epoch {self.epoch}: no better {self.early_stop.monitor} for "
                    f"{self.early_stop.patience} epochs (best: epoch {self.best_epoch})",
                    flush=True,
                )
            if self.checkpoint_dir is not None:
                self.save_checkpoint()
        if self.X_val is not None and self.val_acc_history:
            self.model.params = {k: v.copy() for k, v in self.best_params.items()}
            self.model.buffers = {k: v.copy() for k, v in self.best_buffers.items()}
        call(self._callbacks, "on_train_end", self)
        return self

    # the tutorial's Solver's names for the histories and the best accuracy (read-only)
    train_accuracy_history = property(lambda self: self.train_acc_history)
    validation_accuracy_history = property(lambda self: self.val_acc_history)
    best_validation_accuracy = property(lambda self: self.best_val_acc)

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
            "optim_config": {
                k: v.item() if isinstance(v, np.generic) else v
                for k, v in self.optim_config.items()
                if not isinstance(v, np.ndarray)
            },
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
            # the newer settings: None when not used, so that older checkpoints compare equal
            "lr_schedule": None if self.lr_schedule is None else self.lr_schedule.describe(),
            "schedule_epochs": self.num_epochs
            if self.lr_schedule is not None and self.lr_schedule.needs_total
            else None,
            "early_stop": None if self.early_stop is None else self.early_stop.spec(),
            "augment": None if self.augment is None else self.augment.spec(),
            "label_smoothing": getattr(self.model, "label_smoothing", 0.0) or None,  # a fastconv model's
        }

    def save_checkpoint(self):
        """Write this epoch's checkpoint into ``checkpoint_dir`` (see ``fastconv.training.checkpoints``)."""
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
        """Histories as JSON-able lists: the accuracies from epoch 0 (``epoch + 1`` values; val
        accuracies are None without validation data), one loss per iteration, one time per epoch."""
        return {
            "loss": list(self.loss_history),
            "train_acc": list(self.train_acc_history),
            "val_acc": list(self.val_acc_history),
            "epoch_seconds": list(self.epoch_times),
            "iterations_per_epoch": -(-len(self.X_train) // self.batch_size),
            **({"val_loss": list(self.val_loss_history)} if self._watches_val_loss else {}),
            **({"early_stopped": self.early_stopped} if self.early_stop is not None else {}),
        }


def _alias(value, default, name, tutorial_value, tutorial_name):
    """A setting given by its CS231n name or its tutorial name (None when not given); TypeError
    when both are given with different values."""
    if tutorial_value is None:
        return value
    if value != default and value != tutorial_value:
        raise TypeError(
            f"give {name} or {tutorial_name} (the tutorial's name), not both: got {value!r} and {tutorial_value!r}"
        )
    return tutorial_value


def _checkpoint_place(checkpoint_dir, checkpoint_name):
    """(directory, file prefix) of the checkpoints: ``checkpoint_dir`` with the prefix
    'checkpoint', or CS231n's ``checkpoint_name`` split into its folder and its name."""
    if checkpoint_name is None:
        return (None if checkpoint_dir is None else Path(checkpoint_dir)), _checkpoints.DEFAULT_PREFIX
    if checkpoint_dir is not None:
        raise TypeError("give checkpoint_dir or checkpoint_name, not both")
    if not isinstance(checkpoint_name, (str, Path)) or not str(checkpoint_name):
        raise TypeError(f"checkpoint_name must be a non-empty str or path, got {checkpoint_name!r}")
    path = Path(checkpoint_name)
    if path.name in ("", ".", "..") or str(checkpoint_name).endswith(("/", "\\")):
        raise ValueError(f"checkpoint_name must end in a file name (e.g. 'runs/fc_net'), got {checkpoint_name!r}")
    return path.parent, path.name


def _early_stop(value):
    """None, an EarlyStopping, or a patience (an int >= 1: early stopping on the validation accuracy)."""
    if value is None or isinstance(value, EarlyStopping):
        return value
    return EarlyStopping(value)


def _data_parallel(solver, comm):
    from .training.distributed import DataParallel  # mpi4py only when asked for

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
