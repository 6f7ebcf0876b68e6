"""fastconv's Solver with the models and data dicts tutorial code brings: a CS231n-style
ThreeLayerConvNet (written here, on fastconv.compat.cs231n's layers) and the "numpy only"
tutorial's ConvNet1 (fastconv.compat.sichkar); training, checkpoints, exact resume, progress."""

import numpy as np
import pytest

from fastconv import solver as S
from fastconv.compat import cs231n as L
from fastconv.compat.sichkar import ConvNet1 as TutorialConvNet1
from fastconv.models import ConvNet1
from fastconv.training.model_adapter import TutorialModel, solver_model


class ThreeLayerConvNet:
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax, as CS231n's assignment writes it:
    a params dict, and loss(X, y=None) returning scores without y, (loss, grads) with y."""

    def __init__(
        self,
        input_dim=(3, 32, 32),
        num_filters=32,
        filter_size=7,
        hidden_dim=100,
        num_classes=10,
        weight_scale=1e-3,
        reg=0.0,
        dtype=np.float32,
        seed=0,
    ):
        C, H, W = input_dim
        r = np.random.RandomState(seed)
        self.reg, self.dtype = reg, dtype
        self.params = {
            "W1": weight_scale * r.randn(num_filters, C, filter_size, filter_size),
            "b1": np.zeros(num_filters),
            "W2": weight_scale * r.randn(num_filters * (H // 2) * (W // 2), hidden_dim),
            "b2": np.zeros(hidden_dim),
            "W3": weight_scale * r.randn(hidden_dim, num_classes),
            "b3": np.zeros(num_classes),
        }
        for k, v in self.params.items():
            self.params[k] = v.astype(dtype)

    def loss(self, X, y=None):
        W1, b1, W2, b2, W3, b3 = (self.params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
        conv_param = {"stride": 1, "pad": (W1.shape[2] - 1) // 2}
        pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        a1, c1 = L.conv_relu_pool_forward(X, W1, b1, conv_param, pool_param)
        a2, c2 = L.affine_relu_forward(a1, W2, b2)
        scores, c3 = L.affine_forward(a2, W3, b3)
        if y is None:
            return scores
        loss, dscores = L.softmax_loss(scores, y)
        loss += 0.5 * self.reg * sum(np.sum(w * w) for w in (W1, W2, W3))
        grads = {}
        da2, grads["W3"], grads["b3"] = L.affine_backward(dscores, c3)
        da1, grads["W2"], grads["b2"] = L.affine_relu_backward(da2, c2)
        _, grads["W1"], grads["b1"] = L.conv_relu_pool_backward(da1, c1)
        for k in ("W1", "W2", "W3"):
            grads[k] += self.reg * self.params[k]
        return loss, grads


def _data(rng, n=60, shape=(3, 8, 8), classes=4, dtype=np.float64):
    X = rng.standard_normal((n, *shape)).astype(dtype)
    y = rng.integers(0, classes, n)
    return X, y


def _cs231n_model(seed=0):
    return ThreeLayerConvNet(
        input_dim=(3, 8, 8),
        num_filters=6,
        filter_size=3,
        hidden_dim=20,
        num_classes=4,
        weight_scale=1e-1,
        reg=1e-3,
        seed=seed,
    )


def test_fastconv_models_pass_through_others_are_adapted():
    model = ConvNet1(input_shape=(1, 8, 8), num_filters=2, hidden_dim=4, seed=0)
    assert solver_model(model) is model
    assert isinstance(solver_model(_cs231n_model()), TutorialModel)


def test_cs231n_three_layer_convnet_trains(rng):
    X, y = _data(rng)
    model = _cs231n_model()
    solver = S.Solver(
        model,
        {"X_train": X[:40], "y_train": y[:40], "X_val": X[40:], "y_val": y[40:], "X_test": X[:2], "y_test": y[:2]},
        update_rule="adam",
        optim_config={"learning_rate": 5e-3},
        batch_size=10,
        num_epochs=20,
        seed=0,
        verbose=False,
    )
    solver.train()
    losses = np.array(solver.loss_history)
    assert losses[-4:].mean() < 0.4 * losses[:4].mean()
    assert solver.train_acc_history[-1] > 0.9  # 40 examples learned by heart
    assert solver.model.model is model and solver.model.params is model.params  # the user's model, trained
    assert all(v.dtype == np.float32 for v in model.params.values())  # float64 data, float32 parameters
    for k, v in solver.best_params.items():  # the best parameters are put back, into the model's dict
        np.testing.assert_array_equal(model.params[k], v)


@pytest.mark.parametrize("kind", ["cs231n", "tutorial"])
def test_resume_equals_an_uninterrupted_run(tmp_path, rng, kind):
    X, y = _data(rng, shape=(1, 8, 8) if kind == "tutorial" else (3, 8, 8))
    if kind == "cs231n":
        data = {"X_train": X[:48], "y_train": y[:48], "X_val": X[48:], "y_val": y[48:]}

        def make(seed):
            return _cs231n_model(seed)
    else:
        data = {"x_train": X[:48], "y_train": y[:48], "x_validation": X[48:], "y_validation": y[48:]}

        def make(seed):
            return TutorialConvNet1(
                input_dimension=(1, 8, 8),
                number_of_filters=4,
                size_of_filter=3,
                hidden_dimension=16,
                number_of_classes=4,
                weight_scale=1e-1,
                regularization=1e-3,
                seed=seed,
            )

    kwargs = dict(
        update_rule="adam",
        optim_config={"learning_rate": 3e-3},
        lr_decay=0.9,
        batch_size=7,
        num_train_samples=20,
        seed=5,
        verbose=False,
    )
    full = S.Solver(make(0), data, num_epochs=4, checkpoint_dir=tmp_path / "full", **kwargs)
    full.train()
    first = S.Solver(make(0), data, num_epochs=2, checkpoint_dir=tmp_path / "part", **kwargs)
    first.train()
    resumed = S.Solver(make(1), data, num_epochs=4, checkpoint_dir=tmp_path / "part", **kwargs)  # other weights
    assert resumed.resume() == 2
    resumed.train()
    for k in full.model.params:
        np.testing.assert_array_equal(resumed.model.params[k], full.model.params[k], err_msg=k)
    assert resumed.loss_history == full.loss_history
    assert resumed.val_acc_history == full.val_acc_history
    assert (resumed.best_epoch, resumed.best_val_acc) == (full.best_epoch, full.best_val_acc)


def test_tutorial_convnet1_trains_with_the_tutorials_data_dict(rng):
    X = rng.integers(0, 256, (50, 1, 12, 12)).astype(np.float64)
    X = (X - X.mean(axis=0)) / X.std(axis=0)  # the tutorials' preprocessing gives float64 data
    y = rng.integers(0, 3, 50)
    state = np.random.get_state()
    try:
        np.random.seed(3)  # the tutorial's weights come from numpy's global state
        model = TutorialConvNet1(
            input_dimension=(1, 12, 12), number_of_filters=8, size_of_filter=3, hidden_dimension=32, number_of_classes=3
        )
        np.random.seed(3)
        again = TutorialConvNet1(
            input_dimension=(1, 12, 12), number_of_filters=8, size_of_filter=3, hidden_dimension=32, number_of_classes=3
        )
    finally:
        np.random.set_state(state)
    for k in model.params:
        np.testing.assert_array_equal(model.params[k], again.params[k])
    assert set(model.params) == {"w1", "b1", "w2", "b2", "w3", "b3"}
    assert model.params["w2"].shape == (8 * 6 * 6, 32) and model.params["w1"].dtype == np.float32
    data = {
        "x_train": X[:40],
        "y_train": y[:40],
        "x_validation": X[40:],
        "y_validation": y[40:],
        "x_test": X[:1],
        "y_test": y[:1],
    }
    solver = S.Solver(
        model,
        data,
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        batch_size=10,
        num_epochs=15,
        seed=0,
        verbose=False,
    )
    solver.train()
    losses = np.array(solver.loss_history)
    assert losses[-4:].mean() < 0.5 * losses[:4].mean()
    assert solver.train_acc_history[-1] > 0.8


def test_progress_says_when_the_batch_accuracy_is_unknown(rng, monkeypatch, capsys):
    monkeypatch.setattr(S, "_tqdm", None)
    X, y = _data(rng, n=20)
    S.Solver(_cs231n_model(), {"X_train": X, "y_train": y}, batch_size=5, num_epochs=1, print_every=2).train()
    out = capsys.readouterr().out
    assert "iteration 1/4" in out and "batch acc n/a" in out and "epoch 1/1: train acc" in out


def test_a_model_that_keeps_its_scores_shows_the_batch_accuracy(rng, monkeypatch, capsys):
    monkeypatch.setattr(S, "_tqdm", None)

    class Keeps(ThreeLayerConvNet):
        def loss(self, X, y=None):
            self.last_scores = super().loss(X)
            return self.last_scores if y is None else super().loss(X, y)

    X, y = _data(rng, n=10)
    model = Keeps(input_dim=(3, 8, 8), num_filters=2, filter_size=3, hidden_dim=4, num_classes=4)
    S.Solver(model, {"X_train": X, "y_train": y}, batch_size=10, num_epochs=1).train()
    out = capsys.readouterr().out
    assert "batch acc n/a" not in out and "batch acc 0." in out


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path, rng):
    X, y = _data(rng, n=20)
    data = {"X_train": X, "y_train": y}
    S.Solver(_cs231n_model(), data, num_epochs=1, batch_size=10, checkpoint_dir=tmp_path, verbose=False).train()
    other = ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=5, filter_size=3, hidden_dim=20, num_classes=4)
    with pytest.raises(ValueError, match="a different model"):
        S.Solver(other, data, num_epochs=2, batch_size=10, checkpoint_dir=tmp_path, verbose=False).resume()


DATA_ERRORS = [
    ("unknown-key", {"X_train": 1, "y_train": 1, "X_validation": 1}, r"unknown keys \['X_validation'\].*X_val"),
    (
        "mixed",
        {"X_train": 1, "y_train": 1, "x_validation": 1, "y_validation": 1},
        r"mixes CS231n's keys \['X_train'\] with the tutorials' \['x_validation', 'y_validation'\]",
    ),
    ("no-train", {"x_validation": 1, "y_validation": 1}, r"must hold x_train and y_train .* x_train is missing"),
    ("no-y-train", {"X_train": 1}, r"must hold X_train and y_train .* y_train is missing"),
    (
        "unpaired-val",
        {"x_train": 1, "y_train": 1, "x_validation": 1},
        r"both x_validation and y_validation.*"
        r"y_validation is missing",
    ),
    ("not-a-dict", [("X_train", 1)], r"^data must be a dict"),
]


@pytest.mark.parametrize("data, match", [pytest.param(*e[1:], id=e[0]) for e in DATA_ERRORS])
def test_bad_data_dicts(data, match):
    with pytest.raises(ValueError, match=match):
        S.Solver(_cs231n_model(), data)


def test_bad_models(rng):
    X, y = _data(rng, n=10)
    data = {"X_train": X, "y_train": y}

    class NoLoss:
        params = {"W": np.zeros(3)}

    class IntParams:
        params = {"W": np.zeros(3, int)}

        def loss(self, X, y=None):
            return 0.0, {}

    class SlashName(IntParams):
        params = {"a/b": np.zeros(3)}

    with pytest.raises(TypeError, match="no loss.*loss_for_training"):
        S.Solver(NoLoss(), data)
    with pytest.raises(TypeError, match=r"must have params, a non-empty dict"):
        S.Solver(object(), data)
    with pytest.raises(TypeError, match=r"model.params\['W'\] must be a float32 or float64"):
        S.Solver(IntParams(), data)
    with pytest.raises(ValueError, match="without '/'"):
        S.Solver(SlashName(), data)

    model = _cs231n_model()
    original = model.loss
    model.loss = lambda X, y=None: original(X) if y is None else (original(X, y)[0], {})
    with pytest.raises(ValueError, match=r"must return a gradient of shape \(6, 3, 3, 3\) for params\['W1'\]"):
        S.Solver(model, data, verbose=False).train()
    model.loss = lambda X, y=None: original(X) if y is None else original(X, y)[0]
    with pytest.raises(TypeError, match=r"model.loss\(X, y\) must return \(loss, grads\)"):
        S.Solver(model, data, verbose=False).train()


def test_scores_of_the_wrong_shape_are_refused(rng):
    X, y = _data(rng, n=10)
    model = _cs231n_model()
    original = model.loss
    model.loss = lambda X, y=None: original(X)[:, 0] if y is None else original(X, y)
    expected = r"the model's scores must have shape \(N, classes\) = \(10, \.\.\.\), got \(10,\)"
    with pytest.raises(ValueError, match=expected):
        S.Solver(model, {"X_train": X, "y_train": y}, batch_size=10, num_epochs=1, verbose=False).train()


def test_state_arrays_are_checked_before_any_is_set():
    model = TutorialModel(_cs231n_model())
    state = {k: v.copy() for k, v in model.state_arrays().items()}
    before = {k: v.copy() for k, v in model.params.items()}
    bad_shape = dict(state, **{"params/b3": np.zeros(5, np.float32)})
    bad_dtype = dict(state, **{"params/b3": np.zeros(4, np.float64)})
    bad_value = dict(state, **{"params/b3": np.array([0, np.nan, 0, 0], np.float32)})
    missing = {k: v for k, v in state.items() if k != "params/W2"}
    for arrays, match in [
        (bad_shape, r"params/b3 is float32 \(5,\), the model has float32 \(4,\)"),
        (bad_dtype, r"params/b3 is float64"),
        (bad_value, r"params/b3 holds non-finite"),
        (missing, r"model state is missing \['params/W2'\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            model.set_state_arrays(arrays)
        for k, v in before.items():
            np.testing.assert_array_equal(model.params[k], v)
    new = {k: v + 1 for k, v in state.items()}
    model.set_state_arrays(new)
    np.testing.assert_array_equal(model.params["W1"], state["params/W1"] + 1)
