"""fastconv's Solver with models written the way the CS231n notebooks and the "numpy only"
tutorial write them, on their own numpy layers (issue 26 items 1-3): float32 parameters fed
float64 data, a float64 dropout mask, ``np.zeros`` in a layer; CS231n's constructor
(``num_train_samples=None``, ``checkpoint_name``), the tutorial's keywords, accuracy histories
from epoch 0, and a non-finite loss that stops one run of a search instead of the search."""

import json

import numpy as np
import pytest

from fastconv import solver as S
from fastconv.compat import cs231n as compat_cs231n
from fastconv.compat import sichkar as compat_sichkar
from fastconv.training.checkpoints import CHECKPOINT_VERSION, checkpoints


# ---------------------------------------------------------------- models as the notebooks write them
def _softmax(scores, y):
    """The notebooks' softmax loss, without the max shift (a student's first version): a diverging
    model overflows to inf and NaN, as theirs does."""
    probs = np.exp(scores)
    probs /= probs.sum(axis=1, keepdims=True)
    N = len(y)
    loss = -np.log(probs[np.arange(N), y]).mean()
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    return loss, dscores / N


class TwoLayerNet:
    """affine - relu - [dropout] - affine - softmax, as fc_net.py writes it: float32 parameters
    (``dtype=np.float32``), and whatever dtype numpy gives the arithmetic: float64 with the
    notebook's float64 data, and float64 after the dropout mask ``(np.random.rand(...) < p) / p``."""

    def __init__(
        self,
        input_dim=12,
        hidden_dim=16,
        num_classes=3,
        weight_scale=1e-1,
        reg=0.0,
        dropout=1,
        dtype=np.float32,
        seed=0,
    ):
        r = np.random.RandomState(seed)
        self.reg, self.dropout = reg, dropout
        self.params = {
            "W1": (weight_scale * r.randn(input_dim, hidden_dim)).astype(dtype),
            "b1": np.zeros(hidden_dim, dtype=dtype),
            "W2": (weight_scale * r.randn(hidden_dim, num_classes)).astype(dtype),
            "b2": np.zeros(num_classes, dtype=dtype),
        }

    def loss(self, X, y=None):
        W1, b1, W2, b2 = (self.params[k] for k in ("W1", "b1", "W2", "b2"))
        X = X.reshape(len(X), -1)
        a = X.dot(W1) + b1
        h = np.maximum(0, a)
        mask = None
        if y is not None and self.dropout < 1:
            mask = (np.random.rand(*h.shape) < self.dropout) / self.dropout  # float64, as CS231n's
            h = h * mask
        scores = h.dot(W2) + b2
        if y is None:
            return scores
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss, dscores = _softmax(scores, y)
        loss += 0.5 * self.reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
        dh = dscores.dot(W2.T)
        if mask is not None:
            dh = dh * mask
        da = dh * (a > 0)
        grads = {
            "W2": h.T.dot(dscores) + self.reg * W2,
            "b2": dscores.sum(axis=0),
            "W1": X.T.dot(da) + self.reg * W1,
            "b1": da.sum(axis=0),
        }
        return loss, grads


class PoolNet:
    """The tutorial's style: 2x2 max pooling written with loops into ``np.zeros`` (float64 whatever
    the input) - affine - softmax, float32 parameters, ``loss_for_training`` and
    ``scores_for_predicting``."""

    def __init__(self, input_dimension=(1, 6, 6), number_of_classes=3, weight_scale=1e-1, dtype=np.float32):
        C, H, W = input_dimension
        r = np.random.RandomState(1)
        self.params = {
            "w1": (weight_scale * r.rand(C * (H // 2) * (W // 2), number_of_classes)).astype(dtype),
            "b1": np.zeros(number_of_classes).astype(dtype),
        }

    @staticmethod
    def _pool(x):
        N, C, H, W = x.shape
        out = np.zeros((N, C, H // 2, W // 2))
        for i in range(H // 2):
            for j in range(W // 2):
                out[:, :, i, j] = x[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(2, 3))
        return out

    def scores_for_predicting(self, x):
        return self._pool(x).reshape(len(x), -1).dot(self.params["w1"]) + self.params["b1"]

    def loss_for_training(self, x, y):
        pooled = self._pool(x).reshape(len(x), -1)
        scores = pooled.dot(self.params["w1"]) + self.params["b1"]
        loss, dscores = _softmax(scores - scores.max(axis=1, keepdims=True), y)
        return loss, {"w1": pooled.T.dot(dscores), "b1": dscores.sum(axis=0)}


def _separable(seed, n=90, shape=(12,), classes=3, dtype=np.float64, features=lambda X: X):
    """Data the models can learn: labels from a fixed random projection of ``features(X)``."""
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, *shape)).astype(dtype)
    f = features(X).reshape(n, -1)
    y = f.dot(r.standard_normal((f.shape[1], classes))).argmax(axis=1)
    return X, y


def _cs231n_data(seed=0, **kw):
    X, y = _separable(seed, **kw)
    return {"X_train": X[:60], "y_train": y[:60], "X_val": X[60:], "y_val": y[60:]}


def _tutorial_data(seed=0):
    X, y = _separable(seed, shape=(1, 6, 6), dtype=np.float32, features=PoolNet._pool)
    return {"x_train": X[:60], "y_train": y[:60], "x_validation": X[60:], "y_validation": y[60:]}


def _accuracy(model, X, y):
    scores = model.loss(X) if hasattr(model, "loss") else model.scores_for_predicting(X)
    return float(np.mean(np.argmax(scores, axis=1) == y))


# ---------------------------------------------------------------- item 1: gradients of another float dtype
@pytest.mark.parametrize(
    "make, data",
    [
        (lambda: TwoLayerNet(), _cs231n_data),
        (lambda: TwoLayerNet(dropout=0.8), _cs231n_data),
        (lambda: PoolNet(), _tutorial_data),
    ],
    ids=["fc-float32-params-float64-data", "fc-dropout-float64-mask", "tutorial-np-zeros-pool"],
)
def test_float64_gradients_of_float32_parameters_train(make, data):
    np.random.seed(231)
    model = make()
    X_key, y_key = list(data())[:2]
    loss_of = model.loss if hasattr(model, "loss") else model.loss_for_training
    _, grads = loss_of(data()[X_key][:10], data()[y_key][:10])
    assert all(g.dtype == np.float64 for g in grads.values())  # what the originals' Solvers take
    seen = []
    solver = S.Solver(
        model,
        data(),
        update_rule="sgd",
        optim_config={"learning_rate": 0.5},
        batch_size=10,
        num_epochs=4,
        seed=0,
        verbose=False,
    )
    rule = solver.update_rule

    def spy(w, dw, config):
        seen.append((w.dtype, dw.dtype))
        return rule(w, dw, config)

    solver.update_rule = spy
    solver.train()
    assert seen and set(seen) == {(np.dtype(np.float32), np.dtype(np.float32))}  # cast before the update
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert solver.train_acc_history[-1] > solver.train_acc_history[0]
    assert solver.best_val_acc > 0.6


@pytest.mark.parametrize(
    "make, data",
    [(lambda: TwoLayerNet(), _cs231n_data), (lambda: PoolNet(), _tutorial_data)],
    ids=["cs231n-loss", "tutorial-scores_for_predicting"],
)
def test_solver_model_scores_the_test_set_as_the_notebooks_call_it(make, data):
    """``y_test_pred = np.argmax(solver.model.loss(data['X_test']), axis=1)``."""
    model = make()
    d = data()
    X_val = d.get("X_val", d.get("x_validation"))
    solver = S.Solver(model, d, num_epochs=1, seed=0, verbose=False)
    want = model.loss(X_val) if hasattr(model, "loss") else model.scores_for_predicting(X_val)
    assert np.array_equal(solver.model.loss(X_val), want)
    assert solver.model.params is model.params


def test_a_gradient_that_is_not_float_is_refused():
    model = TwoLayerNet()
    loss = model.loss
    model.loss = lambda X, y=None: (
        loss(X, y) if y is None else (loss(X, y)[0], {**loss(X, y)[1], "b2": np.zeros(3, dtype=np.int64)})
    )
    solver = S.Solver(model, _cs231n_data(), num_epochs=1, verbose=False)
    with pytest.raises(TypeError, match=r"float32 or float64 gradient for params\['b2'\], got int64"):
        solver.train()


# ---------------------------------------------------------------- item 2: constructor, histories
def test_accuracy_histories_start_at_epoch_0_as_cs231n():
    data = _cs231n_data()
    model = TwoLayerNet()
    before_train = _accuracy(model, data["X_train"], data["y_train"])
    before_val = _accuracy(model, data["X_val"], data["y_val"])
    solver = S.Solver(
        model,
        data,
        optim_config={"learning_rate": 0.5},
        batch_size=10,
        num_epochs=3,
        num_train_samples=None,
        seed=0,
        verbose=False,
    )
    solver.train()
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 3 + 1
    assert len(solver.epoch_times) == 3 and len(solver.loss_history) == 3 * 6
    assert solver.train_acc_history[0] == before_train and solver.val_acc_history[0] == before_val
    # the last entry is the model after the last epoch (best_epoch may restore an earlier one)
    assert solver.best_val_acc == max(solver.val_acc_history)
    assert solver.val_acc_history[solver.best_epoch] == solver.best_val_acc
    # the tutorial's names of the same lists
    assert solver.train_accuracy_history is solver.train_acc_history
    assert solver.validation_accuracy_history is solver.val_acc_history
    assert solver.best_validation_accuracy == solver.best_val_acc


def test_num_train_samples_none_uses_the_whole_training_set():
    data = _cs231n_data()
    solver = S.Solver(
        TwoLayerNet(),
        data,
        optim_config={"learning_rate": 0.5},
        batch_size=10,
        num_epochs=1,
        num_train_samples=None,
        seed=0,
        verbose=False,
    )
    solver.train()
    assert solver.num_train_samples is None
    # each of the 60 examples counts: an accuracy is a multiple of 1/60, not of 1/1000
    assert all(round(a * 60) == a * 60 for a in solver.train_acc_history)
    assert solver.recorded_settings()["num_train_samples"] is None


def test_tutorial_keywords_are_taken(capsys):
    np.random.seed(0)
    solver = S.Solver(
        PoolNet(),
        _tutorial_data(),
        update_rule="sgd",
        optimization_config={"learning_rate": 0.5},
        learning_rate_decay=0.5,
        batch_size=20,
        number_of_epochs=3,
        verbose_mode=False,
    )
    solver.train()
    assert solver.num_epochs == 3 and len(solver.train_accuracy_history) == 4 and not solver.verbose
    assert solver.optim_configs["w1"]["learning_rate"] == pytest.approx(0.5 * 0.5**3)
    assert capsys.readouterr().out == ""


def test_both_names_of_one_setting_must_agree():
    with pytest.raises(TypeError, match="give num_epochs or number_of_epochs"):
        S.Solver(PoolNet(), _tutorial_data(), num_epochs=3, number_of_epochs=5)
    with pytest.raises(TypeError, match="give lr_decay or learning_rate_decay"):
        S.Solver(PoolNet(), _tutorial_data(), lr_decay=0.9, learning_rate_decay=0.5)
    solver = S.Solver(PoolNet(), _tutorial_data(), num_epochs=5, number_of_epochs=5, verbose=False)
    assert solver.num_epochs == 5


def test_checkpoint_name_writes_safe_checkpoints_under_that_name_and_resumes_exactly(tmp_path):
    data = _cs231n_data()
    settings = dict(
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        batch_size=10,
        num_train_samples=None,
        seed=3,
        verbose=False,
    )
    full = S.Solver(TwoLayerNet(), data, num_epochs=3, checkpoint_name=str(tmp_path / "a" / "fc_net"), **settings)
    full.train()
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [
        "fc_net_epoch0002.json",
        "fc_net_epoch0002.npz",
        "fc_net_epoch0003.json",
        "fc_net_epoch0003.npz",
    ]  # keep_checkpoints=2 newest; no .pkl
    state = json.loads((tmp_path / "a" / "fc_net_epoch0003.json").read_text())
    assert state["version"] == CHECKPOINT_VERSION and len(state["history"]["train_acc"]) == 4
    with np.load(tmp_path / "a" / "fc_net_epoch0003.npz", allow_pickle=False) as npz:
        assert "params/W1" in npz.files
    assert [e for e, _ in checkpoints(tmp_path / "a", "fc_net")] == [2, 3]
    assert checkpoints(tmp_path / "a") == []  # not under the default name

    name = tmp_path / "b" / "fc_net"
    S.Solver(TwoLayerNet(), data, num_epochs=1, checkpoint_name=name, **settings).train()
    resumed = S.Solver(TwoLayerNet(), data, num_epochs=3, checkpoint_name=name, **settings)
    assert resumed.resume() == 1 and len(resumed.train_acc_history) == 2
    resumed.train()
    assert resumed.loss_history == full.loss_history
    assert resumed.train_acc_history == full.train_acc_history
    assert resumed.val_acc_history == full.val_acc_history
    for k in full.model.params:
        assert np.array_equal(resumed.model.params[k], full.model.params[k])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(checkpoint_name="x", checkpoint_dir="y"), TypeError, "checkpoint_dir or checkpoint_name"),
        (dict(checkpoint_name=""), TypeError, "checkpoint_name must be a non-empty"),
        (dict(checkpoint_name="runs/"), ValueError, "must end in a file name"),
        (dict(checkpoint_name=5), TypeError, "checkpoint_name must be"),
        (dict(num_train_samples=0), ValueError, "num_train_samples"),
    ],
    ids=["both", "empty", "folder", "int", "samples-0"],
)
def test_bad_cs231n_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        S.Solver(TwoLayerNet(), _cs231n_data(), **kwargs)


def test_a_version_2_checkpoint_is_refused_for_resume_with_the_reason(tmp_path):
    solver = S.Solver(TwoLayerNet(), _cs231n_data(), num_epochs=1, checkpoint_dir=tmp_path, seed=0, verbose=False)
    solver.train()
    path = checkpoints(tmp_path)[-1][1]
    state = json.loads(path.read_text())
    state["version"] = 2
    state["history"]["train_acc"] = state["history"]["train_acc"][1:]
    path.write_text(json.dumps(state))
    again = S.Solver(TwoLayerNet(), _cs231n_data(), num_epochs=2, checkpoint_dir=tmp_path, seed=0, verbose=False)
    with pytest.raises(ValueError, match="version 2 checkpoint has no epoch-0 accuracies"):
        again.resume()


# ---------------------------------------------------------------- item 3: a non-finite loss
def _diverging(lr):
    return dict(
        update_rule="sgd", optim_config={"learning_rate": lr}, batch_size=10, num_epochs=3, seed=0, verbose=False
    )


def test_by_default_a_non_finite_loss_stops_training_with_a_clear_error():
    solver = S.Solver(TwoLayerNet(), _cs231n_data(), **_diverging(1e8))
    with pytest.raises(ValueError, match="the loss became nan at epoch 1; lower the learning rate"):
        solver.train()


@pytest.mark.parametrize(
    "make",
    [
        lambda model, data, **kw: compat_cs231n.Solver(model, data, **kw),
        lambda model, data, **kw: compat_sichkar.Solver(model, data, **kw),
        lambda model, data, **kw: S.Solver(model, data, nonfinite_loss="stop", **kw),
    ],
    ids=["compat-cs231n-Solver", "compat-sichkar-Solver", "option"],
)
def test_a_non_finite_loss_stops_the_run_and_returns(make, tmp_path):
    data = _cs231n_data()
    model = TwoLayerNet()
    initial = {k: v.copy() for k, v in model.params.items()}
    solver = make(model, data, checkpoint_dir=tmp_path, **_diverging(1e8))
    assert solver.train() is solver
    assert solver.stopped.startswith("the loss became nan at epoch 1, iteration ")
    assert np.isnan(solver.loss_history[-1]) and np.isfinite(solver.loss_history[:-1]).all()
    assert solver.epoch == 0 and len(solver.train_acc_history) == len(solver.val_acc_history) == 1
    assert checkpoints(tmp_path) == []  # the unfinished epoch is not checkpointed
    # the best parameters so far (epoch 0's here) are back in the model: finite, usable
    for k, v in model.params.items():
        assert np.array_equal(v, initial[k])
    n = len(solver.loss_history)
    solver.train()  # a stopped run stays stopped
    assert len(solver.loss_history) == n


def test_a_hyperparameter_search_scores_its_diverging_trials():
    """FullyConnectedNets' last cell: a loop over random settings keeps the best solver."""
    data = _cs231n_data()
    results = {}
    for lr in (1e8, 0.5, 1e9):
        solver = compat_cs231n.Solver(TwoLayerNet(), data, **_diverging(lr))
        solver.train()
        results[lr] = (solver.best_val_acc, solver.stopped is not None)
    assert results[1e8][1] and results[1e9][1] and not results[0.5][1]
    assert results[0.5][0] > max(results[1e8][0], results[1e9][0])


def test_nonfinite_loss_must_be_raise_or_stop():
    with pytest.raises(ValueError, match="nonfinite_loss must be 'raise' or 'stop'"):
        S.Solver(TwoLayerNet(), _cs231n_data(), nonfinite_loss="ignore")


def test_the_compat_solvers_stay_out_of_the_star_imports():
    """``from fastconv.compat.cs231n import *`` after ``from cs231n.solver import Solver`` must
    not replace the notebook's Solver."""
    for module in (compat_cs231n, compat_sichkar):
        assert "Solver" not in module.__all__
        namespace = {}
        exec(f"from {module.__name__} import *", namespace)
        assert "Solver" not in namespace
