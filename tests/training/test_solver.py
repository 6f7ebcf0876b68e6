"""The Solver: overfitting small data, histories, checkpoints and exact resume."""

import json

import numpy as np
import pytest

from fastconv import solver as S
from fastconv.datasets import Preprocessing
from fastconv.models import ConvNet1, Sequential


def _small_data(rng, n=100, shape=(3, 16, 16), classes=10):
    X = rng.standard_normal((n, *shape)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return X, y


def test_overfits_100_examples(rng):
    """The tutorials' sanity check: 100 random examples are learned by heart."""
    X, y = _small_data(rng)
    model = ConvNet1(input_shape=(3, 16, 16), num_filters=8, filter_size=3, hidden_dim=100, seed=0)
    solver = S.Solver(
        model,
        {"X_train": X, "y_train": y, "X_val": X[:20], "y_val": y[:20]},
        update_rule="adam",
        optim_config={"learning_rate": 2e-3},
        batch_size=25,
        num_epochs=20,
        seed=0,
        verbose=False,
    )
    solver.train()
    assert solver.train_acc_history[-1] == 1.0
    assert solver.loss_history[-1] < 0.1 * solver.loss_history[0]
    assert len(solver.loss_history) == 20 * 4
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 20 + 1  # epoch 0 first


def test_epochs_visit_every_example_once(rng, monkeypatch):
    X, y = _small_data(rng, n=23, shape=(1, 4, 4))
    model = Sequential("fc", input_shape=(1, 4, 4), seed=0)
    seen = []
    original = model.loss

    def spy(Xb, yb=None):
        if yb is not None:
            seen.append(Xb.copy())
        return original(Xb, yb)

    monkeypatch.setattr(model, "loss", spy)
    solver = S.Solver(model, {"X_train": X, "y_train": y}, batch_size=5, num_epochs=2, seed=1, verbose=False)
    solver.train()
    sizes = [len(b) for b in seen]
    assert sizes == [5, 5, 5, 5, 3] * 2
    for epoch in (seen[:5], seen[5:]):
        got = np.concatenate(epoch)
        order = np.lexsort(got.reshape(len(got), -1).T)
        want = np.lexsort(X.reshape(len(X), -1).T)
        np.testing.assert_array_equal(got[order], X[want])  # a permutation of X: no repeats, none missing
    assert not np.array_equal(np.concatenate(seen[:5]), np.concatenate(seen[5:]))  # reshuffled


def test_lr_decay_and_best_params(rng):
    X, y = _small_data(rng, n=40, shape=(1, 6, 6))
    model = Sequential("fc8-relu-fc", input_shape=(1, 6, 6), seed=0)
    solver = S.Solver(
        model,
        {"X_train": X, "y_train": y, "X_val": X[:10], "y_val": y[:10]},
        update_rule="momentum",
        optim_config={"learning_rate": 0.01},
        lr_decay=0.5,
        batch_size=10,
        num_epochs=3,
        seed=0,
        verbose=False,
    )
    solver.train()
    for config in solver.optim_configs.values():
        assert config["learning_rate"] == pytest.approx(0.01 * 0.5**3)
    best = solver.best_epoch
    assert solver.val_acc_history[best] == max(solver.val_acc_history) == solver.best_val_acc
    for k, v in solver.best_params.items():  # the model ends with the best parameters
        np.testing.assert_array_equal(model.params[k], v)


def test_preprocessing_applied_per_batch(rng):
    images = rng.integers(0, 256, (30, 1, 5, 5), dtype=np.uint8)
    y = rng.integers(0, 3, 30)
    model = Sequential("fc", input_shape=(1, 5, 5), num_classes=3, seed=0)
    model.preprocess = Preprocessing.fit(images)
    solver = S.Solver(model, {"X_train": images, "y_train": y}, batch_size=10, num_epochs=1, verbose=False)
    solver.train()
    assert np.isfinite(solver.loss_history).all()


def _resume_setup(rng):
    X, y = _small_data(rng, n=60, shape=(2, 8, 8), classes=4)
    data = {"X_train": X[:48], "y_train": y[:48], "X_val": X[48:], "y_val": y[48:]}

    def make(seed):
        return Sequential(
            "conv4x3-bn-relu-maxpool2-fc16-bn-relu-dropout0.2-fc",
            input_shape=(2, 8, 8),
            num_classes=4,
            seed=seed,
            reg=1e-3,
        )

    kwargs = dict(
        update_rule="adam",
        optim_config={"learning_rate": 3e-3},
        lr_decay=0.9,
        batch_size=7,
        num_train_samples=20,
        seed=123,
        verbose=False,
    )
    return data, make, kwargs


def _assert_same_state(a, b):
    assert set(a.model.params) == set(b.model.params)
    for k in a.model.params:
        assert np.array_equal(a.model.params[k], b.model.params[k]), k
    for k in a.model.buffers:
        assert np.array_equal(a.model.buffers[k], b.model.buffers[k]), k
    for k in a.best_params:
        assert np.array_equal(a.best_params[k], b.best_params[k]), k
    assert a.loss_history == b.loss_history
    assert a.train_acc_history == b.train_acc_history
    assert a.val_acc_history == b.val_acc_history
    assert (a.best_epoch, a.best_val_acc) == (b.best_epoch, b.best_val_acc)
    for name in a.optim_configs:
        ca, cb = a.optim_configs[name], b.optim_configs[name]
        assert set(ca) == set(cb)
        for key in ca:
            if isinstance(ca[key], np.ndarray):
                assert np.array_equal(ca[key], cb[key])
            else:
                assert ca[key] == cb[key]
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    assert a.model.rng.bit_generator.state == b.model.rng.bit_generator.state


def test_resume_is_bit_identical(tmp_path, rng):
    data, make, kwargs = _resume_setup(rng)
    full = S.Solver(make(0), data, num_epochs=4, checkpoint_dir=tmp_path / "full", **kwargs)
    full.train()

    part = S.Solver(make(0), data, num_epochs=2, checkpoint_dir=tmp_path / "part", **kwargs)
    part.train()
    # a new process would start from a freshly initialized model: use another seed to be sure
    resumed = S.Solver(make(99), data, num_epochs=4, checkpoint_dir=tmp_path / "part", **kwargs)
    assert resumed.resume() == 2
    resumed.train()
    _assert_same_state(full, resumed)
    # the last checkpoints hold the same arrays (the .npz bytes differ: zip entries carry timestamps)
    a = json.loads((tmp_path / "full" / "checkpoint_epoch0004.json").read_text())
    b = json.loads((tmp_path / "part" / "checkpoint_epoch0004.json").read_text())
    assert a["rng"] == b["rng"]  # the loss histories are compared with the arrays below (history/loss)
    with (
        np.load(tmp_path / "full" / "checkpoint_epoch0004.npz", allow_pickle=False) as fa,
        np.load(tmp_path / "part" / "checkpoint_epoch0004.npz", allow_pickle=False) as fb,
    ):
        assert sorted(fa.files) == sorted(fb.files)
        for key in fa.files:
            assert np.array_equal(fa[key], fb[key]), key


def test_checkpoint_files(tmp_path, rng):
    data, make, kwargs = _resume_setup(rng)
    solver = S.Solver(make(0), data, num_epochs=3, checkpoint_dir=tmp_path, keep_checkpoints=2, **kwargs)
    solver.train()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "checkpoint_epoch0002.json",
        "checkpoint_epoch0002.npz",
        "checkpoint_epoch0003.json",
        "checkpoint_epoch0003.npz",
    ]
    state = json.loads((tmp_path / "checkpoint_epoch0003.json").read_text())
    assert state["epoch"] == 3 and state["solver"]["update_rule"] == "adam"
    assert len(state["history"]["train_acc"]) == 3 + 1 and len(state["history"]["epoch_seconds"]) == 3
    assert state["model"]["class"] == "sequential"
    with np.load(tmp_path / "checkpoint_epoch0003.npz", allow_pickle=False) as npz:
        files = set(npz.files)
    assert {"params/W1", "buffers/running_mean1", "best_params/W1", "optim/W1/m", "optim/W1/v"} <= files
    assert state["optim_scalars"]["W1"]["t"] == 3 * 7  # 48 images in batches of 7
    model = S.load_checkpoint_model(tmp_path / "checkpoint_epoch0003.json")
    with np.load(tmp_path / "checkpoint_epoch0003.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(model.params["W1"], npz["params/W1"])


def test_resume_ignores_incomplete_and_rejects_corrupt(tmp_path, rng):
    data, make, kwargs = _resume_setup(rng)
    S.Solver(make(0), data, num_epochs=2, checkpoint_dir=tmp_path, **kwargs).train()
    # a crash while writing epoch 3: its .npz (or a temporary file) exists, its JSON does not
    (tmp_path / "checkpoint_epoch0003.npz").write_bytes(b"half a file")
    (tmp_path / ".checkpoint_epoch0003.json.tmp123").write_text("{")
    solver = S.Solver(make(0), data, num_epochs=3, checkpoint_dir=tmp_path, **kwargs)
    assert solver.resume() == 2
    # a corrupt .npz under a complete JSON is detected by its digest
    npz = tmp_path / "checkpoint_epoch0002.npz"
    raw = bytearray(npz.read_bytes())
    raw[-100] ^= 0x55
    npz.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256"):
        S.Solver(make(0), data, num_epochs=3, checkpoint_dir=tmp_path, **kwargs).resume()


def test_resume_rejects_other_setups(tmp_path, rng):
    data, make, kwargs = _resume_setup(rng)
    S.Solver(make(0), data, num_epochs=1, checkpoint_dir=tmp_path, **kwargs).train()
    other = Sequential("fc16-relu-fc", input_shape=(2, 8, 8), num_classes=4)
    with pytest.raises(ValueError, match="different model"):
        S.Solver(other, data, num_epochs=2, checkpoint_dir=tmp_path, **kwargs).resume()
    with pytest.raises(ValueError, match="batch_size"):
        S.Solver(make(0), data, num_epochs=2, checkpoint_dir=tmp_path, **dict(kwargs, batch_size=8)).resume()
    with pytest.raises(ValueError, match="update_rule"):
        S.Solver(make(0), data, num_epochs=2, checkpoint_dir=tmp_path, **dict(kwargs, update_rule="sgd")).resume()
    path = tmp_path / "checkpoint_epoch0001.json"
    state = json.loads(path.read_text())
    state["rng"]["solver"] = {"bit_generator": "MT19937"}
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="random generator"):
        S.Solver(make(0), data, num_epochs=2, checkpoint_dir=tmp_path, **kwargs).resume()
    # no checkpoint at all: a fresh start
    assert S.Solver(make(0), data, checkpoint_dir=tmp_path / "empty", **kwargs).resume() == 0


def _other_data(data):
    X = data["X_train"].copy()
    X[0, 0, 0, 0] += 1  # the same sizes, one value changed
    return dict(data, X_train=X)


def _with_preprocessing(model, std=2.0):
    model.preprocess = Preprocessing("channel", (2, 8, 8), mean=[0.0, 0.0], std=[1.0, std])
    return model


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(lr_decay=0.5), "lr_decay"),
        (dict(optim_config={"learning_rate": 1e-2}), "optim_config"),
        (dict(optim_config={"learning_rate": 3e-3, "beta1": 0.8}), "optim_config"),
        (dict(seed=124), "seed"),
        (dict(num_train_samples=10), "num_train_samples"),
        (dict(num_val_samples=5), "num_val_samples"),
        (dict(run_settings={"data": "other"}), "data: None in the checkpoint, 'other' now"),
        ("data", "other training or validation data"),
        ("val", "num_val"),
        ("preprocess", "preprocessing None in the checkpoint, 'channel' now"),
        ("statistics", "other preprocessing statistics"),
    ],
    ids=[
        "lr_decay",
        "learning_rate",
        "beta1",
        "seed",
        "num_train_samples",
        "num_val_samples",
        "run_settings",
        "data",
        "val",
        "preprocess",
        "statistics",
    ],
)
def test_resume_refuses_other_settings(tmp_path, rng, change, named):
    """Every setting that shapes the result must be the checkpoint's (only num_epochs may grow):
    a different one is refused, naming it, and the solver is left as it was."""
    data, make, kwargs = _resume_setup(rng)
    first = make(0) if change != "statistics" else _with_preprocessing(make(0))
    S.Solver(first, data, num_epochs=1, checkpoint_dir=tmp_path, **kwargs).train()
    model = make(0)
    if change == "data":
        data = _other_data(data)
    elif change == "val":
        data = dict(data, X_val=data["X_val"][:5], y_val=data["y_val"][:5])
    elif change in ("preprocess", "statistics"):
        model = _with_preprocessing(model, std=3.0)
    else:
        kwargs = dict(kwargs, **change)
    solver = S.Solver(model, data, num_epochs=2, checkpoint_dir=tmp_path, **kwargs)
    with pytest.raises(ValueError, match="written with other settings") as info:
        solver.resume()
    assert named in str(info.value) and str(tmp_path / "checkpoint_epoch0001.json") in str(info.value)
    assert solver.epoch == 0 and solver.lr_decay == kwargs["lr_decay"]


def test_data_digest_is_of_values_dtypes_and_shapes(rng):
    from fastconv.io.files import sha256_of_arrays

    X = rng.integers(0, 256, (700, 3, 40, 40), dtype=np.uint8)  # ~3.4 MB: hashed in chunks when strided
    digest = sha256_of_arrays([X, None])
    assert sha256_of_arrays([np.asfortranarray(X), None]) == digest
    assert sha256_of_arrays([X[::-1][::-1], None]) == digest
    assert sha256_of_arrays([X.astype(np.int16), None]) != digest
    assert sha256_of_arrays([X.reshape(700, -1), None]) != digest
    assert sha256_of_arrays([X, np.zeros(0)]) != digest
    Y = X.copy()
    Y[-1, -1, -1, -1] ^= 1
    assert sha256_of_arrays([Y, None]) != digest


def test_resume_keeps_the_solvers_settings_and_records_them(tmp_path, rng):
    """The checkpoint records the settings; resume compares them instead of taking the checkpoint's."""
    data, make, kwargs = _resume_setup(rng)
    kwargs = dict(kwargs, run_settings={"--lr": 3e-3, "shape": (1, 2)})
    S.Solver(make(0), data, num_epochs=1, checkpoint_dir=tmp_path, **kwargs).train()
    state = json.loads((tmp_path / "checkpoint_epoch0001.json").read_text())
    assert state["run_settings"] == {"--lr": 3e-3, "shape": [1, 2]}
    settings = state["solver"]
    assert settings["optim_config"] == {"learning_rate": 3e-3} and settings["lr_decay"] == 0.9
    assert (settings["seed"], settings["num_train"], settings["num_val"]) == (123, 48, 12)
    assert len(settings["data_sha256"]) == 64
    resumed = S.Solver(make(0), data, num_epochs=3, checkpoint_dir=tmp_path, **kwargs)
    assert resumed.resume() == 1  # a tuple in run_settings compares equal to the list JSON gives back
    with pytest.raises(TypeError, match="run_settings"):
        S.Solver(make(0), data, run_settings={"x": object()})


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("train_acc", "not a number", "bad history"),
        ("best_epoch", 7, "bad best_epoch"),
        ("npz", "", "'npz' must name"),
        ("npz", "../checkpoint_epoch0001.npz", "'npz' must name"),
        ("npz_sha256", "0" * 63, "npz_sha256"),
        ("model", [], "'model' must be a JSON object"),
        ("rng", {"solver": {}, "model": {}}, "random generator"),
    ],
)
def test_resume_changes_nothing_unless_the_whole_checkpoint_is_valid(tmp_path, rng, field, value, match):
    data, make, kwargs = _resume_setup(rng)
    S.Solver(make(0), data, num_epochs=1, checkpoint_dir=tmp_path, **kwargs).train()
    path = tmp_path / "checkpoint_epoch0001.json"
    state = json.loads(path.read_text())
    if field == "train_acc":
        state["history"]["train_acc"][-1] = value
    else:
        state[field] = value
    path.write_text(json.dumps(state))
    fresh = S.Solver(make(5), data, num_epochs=2, checkpoint_dir=tmp_path, **kwargs)
    before = (
        {k: v.copy() for k, v in fresh.model.params.items()},
        fresh.rng.bit_generator.state,
        fresh.model.rng.bit_generator.state,
    )
    with pytest.raises(ValueError, match=match) as info:
        fresh.resume()
    assert str(path) in str(info.value)
    assert fresh.epoch == 0 and fresh.loss_history == [] and fresh.optim_configs["W1"] == kwargs["optim_config"]
    assert all(np.array_equal(fresh.model.params[k], v) for k, v in before[0].items())
    assert (fresh.rng.bit_generator.state, fresh.model.rng.bit_generator.state) == before[1:]


def test_progress_without_tqdm(rng, monkeypatch, capsys):
    monkeypatch.setattr(S, "_tqdm", None)
    X, y = _small_data(rng, n=20, shape=(1, 4, 4))
    solver = S.Solver(
        Sequential("fc", input_shape=(1, 4, 4)),
        {"X_train": X, "y_train": y},
        batch_size=5,
        num_epochs=1,
        print_every=2,
        verbose=True,
    )
    solver.train()
    out = capsys.readouterr().out
    assert "iteration 1/4" in out and "iteration 3/4" in out and "iteration 4/4" in out
    assert "images/s" in out and "epoch 1/1: train acc" in out


def test_progress_bar_with_tqdm(rng, capsys):
    pytest.importorskip("tqdm")
    X, y = _small_data(rng, n=20, shape=(1, 4, 4))
    S.Solver(
        Sequential("fc", input_shape=(1, 4, 4)), {"X_train": X, "y_train": y}, batch_size=5, num_epochs=1, verbose=True
    ).train()
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "img_s" in err


def test_bad_arguments(rng):
    X, y = _small_data(rng, n=10, shape=(1, 4, 4))
    model = Sequential("fc", input_shape=(1, 4, 4))
    data = {"X_train": X, "y_train": y}
    with pytest.raises(ValueError, match="X_train"):
        S.Solver(model, {"X": X})
    with pytest.raises(ValueError, match="same non-zero length"):
        S.Solver(model, {"X_train": X, "y_train": y[:5]})
    with pytest.raises(ValueError, match="update_rule"):
        S.Solver(model, data, update_rule="newton")
    with pytest.raises(ValueError, match="batch_size"):
        S.Solver(model, data, batch_size=0)
    with pytest.raises(ValueError, match="lr_decay"):
        S.Solver(model, data, lr_decay=0)
    blowup = S.Solver(model, data, optim_config={"learning_rate": 1e300}, num_epochs=3, verbose=False)
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="lower the learning rate"):
        blowup.train()
