"""Callbacks: what the Solver calls at the points of its training loop.

A callback is any object with some of these methods (``Callback`` has them all,
doing nothing); each gets the Solver, whose state it may read (``epoch``,
``loss_history``, ``val_acc_history``, ``optim_configs``, ``model``...)::

    on_train_begin(solver)   train() starts (also after a resume; solver.epoch says where)
    on_epoch_begin(solver)   an epoch starts (solver.epoch epochs are done)
    on_batch_begin(solver)   before each update (len(solver.loss_history) updates done)
    on_batch_end(solver)     after each update
    on_epoch_end(solver)     an epoch is done and measured (solver.epoch counts it), before its
                             checkpoint is written: a callback may set solver.stop_training
    on_train_end(solver)     train() returns (not when an exception leaves it)

Give them as ``Solver(..., callbacks=[...])``; they run in the order given, after the
Solver's own (the learning-rate schedule first, then early stopping). Keras' callbacks
and Chainer's trainer extensions have this shape.

A callback that changes the result (the learning rate, stopping) must be a function of
the Solver's state, which a checkpoint holds, so that a resumed run continues exactly:
``LearningRate`` computes each rate from the iteration count, ``EarlyStopping`` its
decision from the validation history.
"""

from __future__ import annotations

from .engine.checks import check_int

__all__ = ["Callback", "EarlyStopping", "IterationHook", "LearningRate", "call"]

HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_begin", "on_batch_end", "on_epoch_end", "on_train_end")


class Callback:
    """A callback that does nothing: subclass it and define the hooks you need."""

    def on_train_begin(self, solver):
        pass

    def on_epoch_begin(self, solver):
        pass

    def on_batch_begin(self, solver):
        pass

    def on_batch_end(self, solver):
        pass

    def on_epoch_end(self, solver):
        pass

    def on_train_end(self, solver):
        pass


def check_callbacks(callbacks):
    """``callbacks`` (None or an iterable) as a list, each one with at least one hook."""
    if callbacks is None:
        return []
    if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks must be a list of callbacks, got {type(callbacks).__name__}")
    out = list(callbacks)
    for cb in out:
        if not any(callable(getattr(cb, hook, None)) for hook in HOOKS):
            raise TypeError(f"a callback must define one of {', '.join(HOOKS)}; got {cb!r}")
    return out


def call(callbacks, hook, solver):
    """Call ``hook`` (one of HOOKS) of each callback that has it."""
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(solver)


class IterationHook(Callback):
    """``function(solver)`` after each update: the Solver's older ``on_iteration`` attribute."""

    def __init__(self, function):
        self.function = function

    def on_batch_end(self, solver):
        self.function(solver)


class LearningRate(Callback):
    """Sets every parameter's ``learning_rate`` from a ``fastconv.training.schedules`` schedule: before
    training and after each update, the rate of the next update, computed from the number of
    updates done (so a resumed run gets the same rates). After training the configs hold the
    rate the next update would use (as CS231n's per-epoch decay leaves them)."""

    def __init__(self, schedule, base_lr, iterations_per_epoch, total_iterations):
        self.schedule = schedule
        self.base_lr = base_lr
        self.iterations_per_epoch = iterations_per_epoch
        self.total_iterations = total_iterations

    def rate(self, iteration):
        return self.schedule.rate(self.base_lr, iteration, self.iterations_per_epoch, self.total_iterations)

    def _set(self, solver):
        lr = self.rate(len(solver.loss_history))
        for config in solver.optim_configs.values():
            config["learning_rate"] = lr

    on_train_begin = _set
    on_batch_end = _set


class EarlyStopping(Callback):
    """Stop when the validation accuracy (``monitor="val_acc"``) has not risen, or the validation
    loss (``"val_loss"``) not fallen, for ``patience`` epochs in a row; ``solver.early_stopped``
    then holds the epoch it stopped after. The model keeps the Solver's best parameters (those of
    the epoch with the best validation accuracy, or with ``monitor="val_loss"`` the lowest loss).
    The decision is a function of the history, so it holds after a resume."""

    MONITORS = ("val_acc", "val_loss")

    def __init__(self, patience, monitor="val_acc"):
        self.patience = check_int(patience, "patience", 1)
        if monitor not in self.MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(self.MONITORS)}, got {monitor!r}")
        self.monitor = monitor

    def spec(self):
        return {"patience": self.patience, "monitor": self.monitor}

    def best_epoch(self, history):
        """The first epoch with the best value in ``history`` (one value per epoch, epoch 0 first)."""
        values = [v for v in history if v is not None]
        if not values:
            return None
        best = max(values) if self.monitor == "val_acc" else min(values)
        return history.index(best)

    def should_stop(self, solver):
        history = solver.val_acc_history if self.monitor == "val_acc" else solver.val_loss_history
        best = self.best_epoch(history)
        return best is not None and len(history) - 1 - best >= self.patience

    def on_train_begin(self, solver):
        if solver.early_stopped is None and self.should_stop(solver):  # a resumed run that had stopped
            solver.early_stopped = solver.epoch
        if solver.early_stopped is not None:
            solver.stop_training = True

    def on_epoch_end(self, solver):
        if self.should_stop(solver):
            solver.early_stopped = solver.epoch
            solver.stop_training = True
