"""The Solver's callbacks, learning-rate schedules, early stopping, augmentation, AdamW and label
smoothing: each checked against an independent reference, resumed exactly, refused when malformed."""

import json
import math

import numpy as np
import pytest

from fastconv import layers, optim
from fastconv import solver as S
from fastconv.callbacks import Callback, EarlyStopping
from fastconv.models import Sequential
from fastconv.testing import check_gradients, numerical_gradient, rel_error
from fastconv.training.augment import Augment, parse_augment
from fastconv.training.schedules import parse_schedule


def _data(rng, n=48, shape=(1, 6, 6), classes=3, val=12):
    X = rng.standard_normal((n + val, *shape))
    y = rng.integers(0, classes, n + val)
    return {"X_train": X[:n], "y_train": y[:n], "X_val": X[n:], "y_val": y[n:]}


def _model(seed=0, spec="fc8-relu-dropout0.2-fc", shape=(1, 6, 6), classes=3):
    return Sequential(spec, input_shape=shape, num_classes=classes, seed=seed, dtype=np.float64)


def _solver(data, seed=0, **kwargs):
    kwargs = {
        "update_rule": "adam",
        "optim_config": {"learning_rate": 1e-2},
        "batch_size": 10,
        "num_epochs": 3,
        "seed": 5,
        "verbose": False,
        **kwargs,
    }
    return S.Solver(_model(seed), data, **kwargs)


# ---------------------------------------------------------------------------- callbacks
class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            return lambda solver: self.calls.append((name, solver.epoch, len(solver.loss_history)))
        return object.__getattribute__(self, name)


def test_callbacks_are_called_at_each_point_of_the_loop(rng):
    rec = Recorder()
    solver = _solver(_data(rng, n=25), callbacks=[rec], num_epochs=2)  # 3 batches per epoch
    solver.train()
    names = [c[0] for c in rec.calls]
    epoch = ["on_epoch_begin"] + ["on_batch_begin", "on_batch_end"] * 3 + ["on_epoch_end"]
    assert names == ["on_train_begin"] + epoch * 2 + ["on_train_end"]
    assert rec.calls[1] == ("on_epoch_begin", 0, 0) and rec.calls[-2] == ("on_epoch_end", 2, 6)
    assert ("on_batch_end", 0, 1) in rec.calls  # after the first update


def test_a_callback_can_stop_the_run_and_on_iteration_still_works(rng):
    class StopAfterOne(Callback):
        def on_epoch_end(self, solver):
            solver.stop_training = True

    seen = []
    solver = _solver(_data(rng), callbacks=[StopAfterOne()], num_epochs=5)
    solver.on_iteration = lambda s: seen.append(len(s.loss_history))
    solver.train()
    assert solver.epoch == 1 and seen == [1, 2, 3, 4, 5]


def test_bad_callbacks_are_refused(rng):
    with pytest.raises(TypeError, match="callbacks must be a list"):
        _solver(_data(rng), callbacks=Callback())
    with pytest.raises(TypeError, match="a callback must define one of"):
        _solver(_data(rng), callbacks=[object()])


def test_the_per_epoch_decay_is_bit_identical_to_multiplying_after_each_epoch(rng):
    """lr_decay runs as a schedule callback now: the rates must be those of `lr *= decay` after
    each epoch, bit for bit (a reference Solver that does it by hand, one epoch at a time)."""
    data = {k: v for k, v in _data(rng).items() if k.endswith("train")}  # no validation: no best params put back
    decayed = _solver(data, lr_decay=0.85, num_epochs=3, update_rule="momentum")
    decayed.train()
    by_hand = _solver(data, num_epochs=0, update_rule="momentum")
    lr = 1e-2
    for epoch in range(1, 4):
        by_hand.num_epochs = epoch
        by_hand.train()
        lr *= 0.85
        for config in by_hand.optim_configs.values():
            config["learning_rate"] *= 0.85
    for config in decayed.optim_configs.values():
        assert config["learning_rate"] == lr
    assert decayed.loss_history == by_hand.loss_history
    exp = _solver(data, lr_schedule="exp:0.85", num_epochs=3, update_rule="momentum")
    exp.train()
    assert exp.loss_history == decayed.loss_history
    with pytest.raises(ValueError, match="give lr_decay or lr_schedule"):
        _solver(data, lr_decay=0.9, lr_schedule="cosine")


# ---------------------------------------------------------------------------- schedules
def test_schedule_rates_against_their_formulas():
    base, ipe, total = 0.1, 10, 50
    assert parse_schedule("constant").rate(base, 37, ipe, total) == base
    exp = parse_schedule("exp:0.5")
    assert [exp.rate(base, i, ipe, total) for i in (0, 9, 10, 25)] == [0.1, 0.1, 0.05, 0.025]
    step = parse_schedule("step:2:0.1")
    assert [step.rate(base, i, ipe, total) for i in (0, 19, 20, 40)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    cos = parse_schedule("cosine:0.1")
    assert cos.rate(base, 0, ipe, total) == pytest.approx(base)
    assert cos.rate(base, total - 1, ipe, total) == pytest.approx(0.01)
    assert cos.rate(base, (total - 1) / 2, ipe, total) == pytest.approx(0.055)
    one = parse_schedule("onecycle:10")
    rates = one.curve(base, ipe, total)
    assert rates[0] == pytest.approx(0.01) and max(rates) == pytest.approx(base)
    assert int(np.argmax(rates)) == 15 and rates[-1] == pytest.approx(base / 1e5)
    warm = parse_schedule("cosine", warmup=1.5)
    plain = parse_schedule("cosine")
    for i in range(20):  # a ramp over 15 updates, then the schedule itself
        want = plain.rate(base, i, ipe, total) * min(1.0, (i + 1) / 15)
        assert warm.rate(base, i, ipe, total) == pytest.approx(want)
    assert warm.describe() == "cosine:0.0 warmup 1.5"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("cosin", "unknown learning-rate schedule 'cosin'"),
        ("", "unknown learning-rate schedule ''"),
        ("exp", "exp takes 1 argument"),
        ("exp:x", "'x' is not a number"),
        ("exp:-1", "must be a number > 0"),
        ("exp:inf", "must be a number > 0"),
        ("step:0:0.5", "must be >= 1"),
        ("step:1.5:0.5", "'1.5' is not an integer"),
        ("cosine:1", "in \\[0, 1\\)"),
        ("cosine:0:1", "cosine takes 0 to 1"),
        ("onecycle:1", "in \\(1, 1e6\\]"),
    ],
)
def test_malformed_schedules_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_schedule(spec)


def test_a_schedule_sets_the_rate_of_every_update(rng):
    data = _data(rng)
    seen = []

    class Spy(Callback):
        def on_batch_begin(self, solver):
            seen.append(next(iter(solver.optim_configs.values()))["learning_rate"])

    solver = _solver(data, lr_schedule="onecycle", warmup=1, callbacks=[Spy()])
    solver.train()
    assert seen == solver.learning_rates() and len(seen) == 15
    assert seen[0] == pytest.approx(1e-2 / 25 / 5)  # the warmup's first fifth of onecycle's start


# ---------------------------------------------------------------------------- augmentation
def _reference_augment(images, shifts, flips, p):
    out = np.zeros_like(images)
    n, C, H, W = images.shape
    for i in range(n):
        padded = np.zeros((C, H + 2 * p, W + 2 * p), images.dtype)
        padded[:, p : p + H, p : p + W] = images[i]
        dy, dx = shifts[i]
        out[i] = padded[:, dy : dy + H, dx : dx + W]
        if flips[i]:
            out[i] = out[i][:, :, ::-1]
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_augmentation_against_a_loop(rng, dtype):
    images = rng.integers(1, 255, (9, 3, 5, 7)).astype(dtype)
    aug = parse_augment("crop2,flip")
    draws = aug.draw(np.random.default_rng(1), len(images))
    got = aug.apply(images, draws)
    assert got.dtype == images.dtype and got.shape == images.shape
    np.testing.assert_array_equal(got, _reference_augment(images, draws["shift"], draws["flip"], 2))
    centred = {"shift": np.full((9, 2), 2), "flip": np.zeros(9, bool)}
    np.testing.assert_array_equal(aug.apply(images, centred), images)  # no shift, no flip: the images
    assert np.all(got[draws["shift"][:, 0] == 0][:, :, :2] == 0)  # shifted down: black rows on top
    # the rows of a batch's draws give the rows of the whole batch's result (what an MPI rank does)
    np.testing.assert_array_equal(aug.apply(images[3:7], aug.rows(draws, slice(3, 7))), got[3:7])


@pytest.mark.parametrize(
    "spec, match",
    [
        ("crop", "unknown item 'crop'"),
        ("crop0", "1 <= P <= 64"),
        ("crop65", "1 <= P <= 64"),
        ("flip,flip", "flip given twice"),
        ("crop2,,flip", "unknown item ''"),
        ("rotate", "unknown item 'rotate'"),
    ],
)
def test_malformed_augmentations_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_augment(spec)


def test_augmentation_draws_from_the_solvers_generator(rng):
    data = _data(rng)
    a, b = _solver(data, augment="crop1,flip"), _solver(data, augment=Augment(crop=1, flip=True))
    a.train()
    b.train()
    assert a.loss_history == b.loss_history
    plain = _solver(data)
    plain.train()
    assert plain.loss_history != a.loss_history
    assert a.recorded_settings()["augment"] == "crop1,flip"
    flat = {k: v.reshape(len(v), -1) if k.startswith("X") else v for k, v in data.items()}
    with pytest.raises(ValueError, match=r"augment needs images \(N, C, H, W\) as X_train, got shape \(48, 36\)"):
        S.Solver(_model(), flat, augment="flip")  # refused before any step


# ---------------------------------------------------------------------------- early stopping
def test_early_stopping_decides_from_the_history():
    stop = EarlyStopping(2)

    class Fake:
        val_acc_history = [0.1, 0.5, 0.4, 0.5]
        val_loss_history = [2.0, 1.0, 1.1, 0.9]

    assert stop.best_epoch(Fake.val_acc_history) == 1 and stop.should_stop(Fake)  # equal is not better
    Fake.val_acc_history = [0.1, 0.5, 0.4]
    assert not stop.should_stop(Fake)
    assert not EarlyStopping(2, "val_loss").should_stop(Fake)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="patience must be >= 1"):
            EarlyStopping(bad)
    with pytest.raises(ValueError, match="monitor must be one of"):
        EarlyStopping(1, "train_acc")


@pytest.mark.parametrize("monitor", ["val_acc", "val_loss"])
def test_early_stopping_ends_the_run_keeps_the_best_and_resumes(tmp_path, rng, monitor):
    data = _data(rng)
    data["y_val"] = rng.integers(0, 3, len(data["y_val"]))  # unlearnable: the validation score wanders
    kwargs = dict(early_stop=EarlyStopping(2, monitor), num_epochs=30, optim_config={"learning_rate": 5e-2})
    solver = _solver(data, checkpoint_dir=tmp_path, **kwargs)
    solver.train()
    assert solver.early_stopped == solver.epoch < 30
    history = solver.val_acc_history if monitor == "val_acc" else solver.val_loss_history
    assert len(history) == solver.epoch + 1
    assert solver.best_epoch == EarlyStopping(2, monitor).best_epoch(history) == solver.epoch - 2
    for k, v in solver.best_params.items():
        np.testing.assert_array_equal(solver.model.params[k], v)
    state = json.loads((tmp_path / f"checkpoint_epoch{solver.epoch:04d}.json").read_text())
    assert state["history"]["early_stopped"] == solver.epoch
    assert state["solver"]["early_stop"] == {"patience": 2, "monitor": monitor}
    again = _solver(data, checkpoint_dir=tmp_path, **{**kwargs, "num_epochs": 40})
    assert again.resume() == solver.epoch
    again.train()  # a run that stopped stays stopped
    assert again.epoch == solver.epoch and again.loss_history == solver.loss_history
    other = _solver(data, checkpoint_dir=tmp_path, **{**kwargs, "early_stop": 3})
    with pytest.raises(ValueError, match="early_stop"):
        other.resume()


def test_early_stopping_needs_validation_data(rng):
    data = _data(rng)
    with pytest.raises(ValueError, match="early_stop needs validation data"):
        S.Solver(_model(), {"X_train": data["X_train"], "y_train": data["y_train"]}, early_stop=2)


# ---------------------------------------------------------------------------- resume
def test_every_new_option_resumes_bit_identically_and_other_values_are_refused(tmp_path, rng):
    data = _data(rng, shape=(2, 6, 6))

    def make(seed, epochs, where, **changes):
        model = Sequential("conv3x3-bn-relu-fc8-dropout0.2-fc", input_shape=(2, 6, 6), num_classes=3, seed=seed)
        model.label_smoothing = 0.1
        kwargs = dict(
            update_rule="adamw",
            optim_config={"learning_rate": 1e-2, "weight_decay": 0.05},
            lr_schedule="cosine:0.05",
            warmup=0.5,
            augment="crop1,flip",
            early_stop=EarlyStopping(50),
            batch_size=10,
            seed=3,
            verbose=False,
            num_epochs=epochs,
            checkpoint_dir=tmp_path / where,
        )
        return S.Solver(model, data, **{**kwargs, **changes})

    full = make(0, 4, "full")
    full.train()
    # a cosine schedule depends on the length of the run: a shorter first leg is another run;
    # kill the run after 2 epochs instead (a callback stops it, as a crash after the checkpoint would)

    class Crash(Callback):
        def on_epoch_end(self, solver):
            if solver.epoch == 2:
                solver.stop_training = True

    part = make(0, 4, "part", callbacks=[Crash()])
    part.train()
    resumed = make(99, 4, "part")
    assert resumed.resume() == 2
    resumed.train()
    assert resumed.loss_history == full.loss_history
    for k in full.model.params:
        np.testing.assert_array_equal(resumed.model.params[k], full.model.params[k])
    assert resumed.rng.bit_generator.state == full.rng.bit_generator.state
    for change, named in [
        ({"lr_schedule": "cosine:0.1"}, "lr_schedule"),
        ({"warmup": 1}, "lr_schedule"),
        ({"num_epochs": 5}, "schedule_epochs"),
        ({"augment": "crop1"}, "augment"),
        ({"optim_config": {"learning_rate": 1e-2, "weight_decay": 0.1}}, "optim_config"),
    ]:
        with pytest.raises(ValueError, match=named):
            make(0, 4, "part", **change).resume()
    other = make(0, 4, "part")
    other.model.label_smoothing = 0.2
    with pytest.raises(ValueError, match="label_smoothing: 0.1 in the checkpoint, 0.2 now"):
        other.resume()


# ---------------------------------------------------------------------------- AdamW
def test_adamw_is_adam_on_decoupled_decayed_weights(rng):
    w, dw = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    cfg = {"learning_rate": 1e-2, "weight_decay": 0.0}
    np.testing.assert_array_equal(optim.adamw(w, dw, dict(cfg))[0], optim.adam(w, dw, {"learning_rate": 1e-2})[0])
    # the reference: PyTorch's AdamW order, in float64 by hand, over three steps
    lr, wd, b1, b2, eps = 1e-2, 0.1, 0.9, 0.999, 1e-8
    config, ref, m, v = {"learning_rate": lr, "weight_decay": wd}, w.copy(), 0 * w, 0 * w
    got = w
    for t in range(1, 4):
        g = rng.standard_normal(w.shape)
        got, config = optim.adamw(got, g, config)
        ref = ref * (1 - lr * wd)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        ref = ref - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    assert rel_error(got, ref) < 1e-12
    # decoupled: a zero gradient still shrinks the weights by exactly (1 - lr * wd)
    w0 = np.ones((2, 2))
    np.testing.assert_allclose(optim.adamw(w0, 0 * w0, {"learning_rate": lr, "weight_decay": wd})[0], 1 - lr * wd)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.adamw(w, dw, {"weight_decay": -1.0})


# ---------------------------------------------------------------------------- label smoothing
def test_label_smoothing_off_is_the_plain_loss_bit_for_bit(rng):
    scores, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    plain, smooth0 = layers.softmax_loss(scores, y), layers.softmax_loss(scores, y, label_smoothing=0.0)
    assert plain[0] == smooth0[0] and np.array_equal(plain[1], smooth0[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_label_smoothing_loss_and_gradient(rng, dtype):
    scores, y, e = rng.standard_normal((6, 4)).astype(dtype), rng.integers(0, 4, 6), 0.2
    loss, dscores = layers.softmax_loss(scores, y, label_smoothing=e)
    s64 = scores.astype(np.float64)
    target = np.full((6, 4), e / 4) + (1 - e) * np.eye(4)[y]
    logp = s64 - s64.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert loss == pytest.approx(-(target * logp).sum() / 6, rel=1e-6)
    assert dscores.dtype == dtype
    num = numerical_gradient(lambda s: layers.softmax_loss(s, y, label_smoothing=e)[0], (s64,))[0]
    assert rel_error(dscores, num) < (1e-7 if dtype == np.float64 else 1e-5)
    with pytest.raises(ValueError, match="label_smoothing"):
        layers.softmax_loss(scores, y, label_smoothing=1.0)


def test_a_model_with_label_smoothing_passes_the_gradient_check(rng):
    model = Sequential("fc6-relu-fc", input_shape=(1, 3, 3), num_classes=4, seed=0, dtype=np.float64, reg=0.1)
    model.label_smoothing = 0.3
    X, y = rng.standard_normal((5, 1, 3, 3)), rng.integers(0, 4, 5)
    check_gradients(model, X, y)
    smoothed = model.loss(X, y)[0]
    model.label_smoothing = 0.0
    assert not math.isclose(smoothed, model.loss(X, y)[0])
