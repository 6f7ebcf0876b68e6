"""What ``fastconv.solver.Solver`` needs from a model and a data dict, for tutorial code too.

A fastconv model (``fastconv.models``) has everything the Solver and its
checkpoints use (``fastconv.training.model_state.SolverModel``): ``params``, ``buffers``
(batchnorm statistics), ``prepare`` (preprocessing), ``loss``, ``last_scores``
(the training batch's scores, for the running accuracy), ``check_accuracy``,
``state_arrays`` / ``set_state_arrays`` / ``spec`` (checkpoints) and ``rng``.
``solver_model`` passes such a model through and wraps any other in
``TutorialModel``, which needs only

* ``params``: a dict of named float arrays, updated in place by the Solver, and
* either CS231n's ``loss(X, y=None)`` (scores without y, ``(loss, grads)`` with
  y) or the "numpy only" tutorials' ``loss_for_training(x, y)`` and
  ``scores_for_predicting(x)``,

and uses the model's own ``buffers``, ``prepare``, ``last_scores`` and ``rng``
where it has them. A gradient may come back in the other float dtype than its
parameter (CS231n's float32 models fed float64 data, a tutorial layer's
``np.zeros``, a float64 dropout mask): it is cast to the parameter's dtype,
once, here, as the originals' updates effectively do (``w -= lr * dw`` keeps
w's dtype); a gradient that is not a float32/float64 array is refused.
``loss(X)`` without labels gives the model's scores, as CS231n's does.

Checkpoints hold ``params`` (and ``buffers``): state kept elsewhere, such as
the ``bn_params`` running statistics of CS231n's models or numpy's global
random state that their dropout draws from, is not saved, so a resumed run
equals an uninterrupted one only for models whose state is all in ``params``.

``solver_data`` reads the data dict in CS231n's keys (``X_train``, ``y_train``,
``X_val``, ``y_val``, ``X_test``, ``y_test``) or the tutorials' (``x_train``,
``y_train``, ``x_validation``, ``y_validation``, ``x_test``, ``y_test``); the
test arrays are allowed and not used.
"""

from collections.abc import Mapping

import numpy as np

from ..engine.checks import FLOAT_DTYPES, check_int
from .model_state import ModelState, SolverModel

CS231N_KEYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")
TUTORIAL_KEYS = ("x_train", "y_train", "x_validation", "y_validation", "x_test", "y_test")


def solver_data(data):
    """(X_train, y_train, X_val, y_val) of a data dict in CS231n's or the tutorials' keys (X_val
    and y_val None when absent). ValueError naming an unknown, missing or unpaired key."""
    known = f"CS231n's {', '.join(CS231N_KEYS)} or the tutorials' {', '.join(TUTORIAL_KEYS)}"
    if not isinstance(data, Mapping):
        raise ValueError(f"data must be a dict with {known}, got {type(data).__name__}")
    unknown = [k for k in data if k not in CS231N_KEYS + TUTORIAL_KEYS]
    if unknown:
        raise ValueError(f"data has unknown keys {unknown}: it takes {known}")
    cs231n = sorted(set(data) & (set(CS231N_KEYS) - set(TUTORIAL_KEYS)))
    tutorial = sorted(set(data) & (set(TUTORIAL_KEYS) - set(CS231N_KEYS)))
    if cs231n and tutorial:
        raise ValueError(f"data mixes CS231n's keys {cs231n} with the tutorials' {tutorial}: use one set")
    train, y_train, val, y_val = (
        ("x_train", "y_train", "x_validation", "y_validation") if tutorial else ("X_train", "y_train", "X_val", "y_val")
    )
    for key in (train, y_train):
        if key not in data:
            raise ValueError(f"data must hold {train} and {y_train} (and optionally {val}, {y_val}); {key} is missing")
    if (val in data) != (y_val in data):
        raise ValueError(
            f"data must hold both {val} and {y_val}, or neither; {y_val if val in data else val} is missing"
        )
    return data[train], data[y_train], data.get(val), data.get(y_val)


def solver_model(model):
    """``model`` itself when it is a ``SolverModel`` (fastconv's models), else a
    ``TutorialModel`` around it."""
    if isinstance(model, SolverModel):
        return model
    return TutorialModel(model)


class TutorialModel(ModelState):
    """A CS231n- or tutorial-style model as the Solver sees it (see the module docstring).

    ``params`` and ``buffers`` are the model's own dicts (assigning them assigns the
    model's); any other attribute is the model's (``solver.model.reg``).
    """

    def __init__(self, model):
        params = getattr(model, "params", None)
        if not isinstance(params, dict) or not params:
            raise TypeError(
                f"the model must have params, a non-empty dict of named float arrays (got {type(params).__name__})"
            )
        for name, value in params.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"model.params names must be non-empty strings without '/', got {name!r}")
            if not isinstance(value, np.ndarray) or value.dtype not in FLOAT_DTYPES:
                raise TypeError(
                    f"model.params[{name!r}] must be a float32 or float64 numpy array, got "
                    f"{getattr(value, 'dtype', type(value).__name__)}"
                )
        if callable(getattr(model, "loss", None)):
            self._train_loss, self._scores = model.loss, model.loss
            self._loss_name = "model.loss(X, y)"
        elif callable(getattr(model, "loss_for_training", None)) and callable(
            getattr(model, "scores_for_predicting", None)
        ):
            self._train_loss, self._scores = model.loss_for_training, model.scores_for_predicting
            self._loss_name = "model.loss_for_training(x, y)"
        else:
            raise TypeError(
                f"{type(model).__name__} has no loss(X, y=None) (CS231n's models) nor "
                "loss_for_training(x, y) and scores_for_predicting(x) (the tutorials' models)"
            )
        self.model = model
        own_rng = getattr(model, "rng", None)
        # the Solver checkpoints this generator's state; a model without one draws from none of it
        self.rng = own_rng if isinstance(own_rng, np.random.Generator) else np.random.default_rng(0)

    def __getattr__(self, name):  # only for names this class does not define
        if name == "model":  # not set yet (during __init__)
            raise AttributeError(name)
        return getattr(self.model, name)

    @property
    def params(self):
        return self.model.params

    @params.setter
    def params(self, value):
        self.model.params = value

    @property
    def buffers(self):
        buffers = getattr(self.model, "buffers", None)
        return buffers if isinstance(buffers, dict) else {}

    @buffers.setter
    def buffers(self, value):
        if isinstance(getattr(self.model, "buffers", None), dict):
            self.model.buffers = value

    @property
    def last_scores(self):
        """The model's scores of the last training batch when it keeps them, else None (unknown)."""
        return getattr(self.model, "last_scores", None)

    def prepare(self, images):
        """The model's ``prepare`` when it has one, else the images as they are (as CS231n's Solver)."""
        prepare = getattr(self.model, "prepare", None)
        return prepare(images) if callable(prepare) else images

    def loss(self, X, y=None):
        """(loss, grads) of a training batch, checked: a finite-able number and a gradient for
        every parameter, of its shape, a float array (cast to the parameter's dtype when it is
        the other float dtype). Without y, the model's scores, as CS231n's ``loss(X)``: the
        notebooks score the test set with ``solver.model.loss(X_test)``."""
        if y is None:
            return self._scores(X)
        result = self._train_loss(X, y)
        if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[1], dict):
            raise TypeError(
                f"{self._loss_name} must return (loss, grads) with grads a dict, got {type(result).__name__}"
            )
        loss, grads = result
        cast = {}
        for name, p in self.params.items():
            g = grads.get(name)
            if not isinstance(g, np.ndarray) or g.shape != p.shape:
                raise ValueError(
                    f"{self._loss_name} must return a gradient of shape {p.shape} for "
                    f"params[{name!r}], got {getattr(g, 'shape', type(g).__name__)}"
                )
            if g.dtype not in FLOAT_DTYPES:
                raise TypeError(
                    f"{self._loss_name} must return a float32 or float64 gradient for params[{name!r}], got {g.dtype}"
                )
            if g.dtype != p.dtype:
                cast[name] = g.astype(p.dtype)
        if cast:
            grads = {**grads, **cast}  # a new dict: the model's own stays as it returned it
        return float(loss), grads

    def scores(self, X, batch_size=500, prepare=False):
        """Test-mode scores of X in batches (``loss(X)`` or ``scores_for_predicting(x)``)."""
        batch_size = check_int(batch_size, "batch_size", 1)
        parts = []
        for i in range(0, len(X), batch_size):
            xb = X[i : i + batch_size]
            scores = np.asarray(self._scores(self.prepare(xb) if prepare else xb))
            if scores.ndim != 2 or len(scores) != len(xb):
                raise ValueError(
                    f"the model's scores must have shape (N, classes) = ({len(xb)}, ...), got {scores.shape}"
                )
            parts.append(scores)
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    def check_accuracy(self, X, y, batch_size=500, prepare=False):
        """Fraction of X classified as y (NaN for no examples)."""
        if len(X) == 0:
            return float("nan")
        return float(np.mean(self.scores(X, batch_size, prepare).argmax(axis=1) == np.asarray(y)))

    # ------------------------------------------------------------------ checkpoints
    def spec(self):
        """What a checkpoint records of the model: its class and the names, shapes and dtypes of
        its arrays (resume refuses a checkpoint of another class or other arrays)."""
        kind = type(self.model)
        return {
            "format": "external-model",
            "class": f"{kind.__module__}.{kind.__qualname__}",
            "config": self.state_manifest(),
            "preprocess": None,
            "class_names": None,
        }
