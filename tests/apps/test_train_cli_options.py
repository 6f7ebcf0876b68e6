"""`fastconv train`'s training options (schedules, augmentation, early stopping, AdamW, label
smoothing, --summary, --data) and `fastconv summary`, end to end on tiny generated data."""

import json
import shlex

import numpy as np
import pytest

from fastconv.__main__ import main
from fastconv.apps import plots
from fastconv.bench.common import ConvSpec
from fastconv.models import Sequential, load_model
from fastconv.training.summary import layer_rows

from _helpers import ROOT
from test_train_cli import SMALL_NET, _error, _train, data_env  # noqa: F401 (a fixture)

PIL = pytest.importorskip("PIL.Image")


def test_options_train_record_and_plot(data_env, capsys):  # noqa: F811
    out = data_env["root"] / "run"
    assert (
        _train(
            out,
            "--lr-schedule",
            "cosine:0.1",
            "--warmup",
            "0.5",
            "--augment",
            "crop2,flip",
            "--early-stop",
            "5",
            "--optimizer",
            "adamw",
            "--weight-decay",
            "0.02",
            "--label-smoothing",
            "0.1",
            "--summary",
            epochs=2,
            plots=plots.have_matplotlib(),
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "FLOPs fwd+bwd" in text and "schedule cosine:0.1 warmup 0.5" in text and "augment crop2,flip" in text
    history = json.loads((out / "history.json").read_text())
    assert len(history["learning_rate"]) == len(history["loss"]) == 2 * history["iterations_per_epoch"]
    assert history["learning_rate"][0] < history["learning_rate"][5]  # warming up
    assert history["early_stopped"] is None and history["settings"]["augment"] == "crop2,flip"
    state = json.loads(sorted((out / "checkpoints").glob("*.json"))[-1].read_text())
    assert state["run_settings"]["--augment"] == "crop2,flip"
    assert state["solver"]["augment"] == "crop2,flip" and state["solver"]["lr_schedule"] == "cosine:0.1 warmup 0.5"
    assert state["optim_scalars"]["W1"]["weight_decay"] == 0.02
    if plots.have_matplotlib():
        assert (out / "augmented.png").is_file() and (out / "loss.png").is_file()
    # --resume refuses another augmentation or schedule, naming it
    for option, value in (("--augment", "crop2"), ("--lr-schedule", "cosine")):
        argv = [
            "train",
            "--dataset",
            "fashion-mnist",
            "--model",
            SMALL_NET,
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--lr",
            "3e-3",
            "--out",
            str(out),
            "--no-progress",
            "--no-plots",
            "--resume",
            "--warmup",
            "0.5",
            "--early-stop",
            "5",
            "--optimizer",
            "adamw",
            "--weight-decay",
            "0.02",
            "--label-smoothing",
            "0.1",
            "--lr-schedule",
            "cosine:0.1",
            "--augment",
            "crop2,flip",
        ]
        argv[argv.index(option) + 1] = value
        assert option in _error(capsys, argv)


def test_early_stop_ends_the_run_and_resume_matches(data_env, capsys):  # noqa: F811
    root = data_env["root"]
    opts = ("--early-stop", "1", "--lr-schedule", "exp:0.5", "--augment", "flip")
    assert _train(root / "full", *opts, epochs=12) == 0
    history = json.loads((root / "full" / "history.json").read_text())
    stopped = history["early_stopped"]
    assert stopped is not None and stopped < 12 and len(history["train_acc"]) == stopped + 1
    assert history["best_epoch"] == stopped - 1
    assert _train(root / "part", *opts, epochs=1) == 0
    assert _train(root / "part", *opts, "--resume", epochs=12) == 0
    again = json.loads((root / "part" / "history.json").read_text())
    assert again["loss"] == history["loss"] and again["early_stopped"] == stopped
    a, b = load_model(root / "full"), load_model(root / "part")
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k


@pytest.mark.parametrize(
    "extra, named",
    [
        (("--augment", "crop4,rotate"), "--augment: augmentation 'crop4,rotate': unknown item 'rotate'"),
        (("--augment", "crop0"), "--augment: augmentation 'crop0'"),
        (("--lr-schedule", "cosine:2"), "--lr-schedule: learning-rate schedule 'cosine:2'"),
        (("--lr-schedule", "warm"), "--lr-schedule: unknown learning-rate schedule 'warm'"),
        (("--lr-schedule", "cosine", "--lr-decay", "0.9"), "--lr-decay G is --lr-schedule exp:G"),
        (("--early-stop", "0"), "--early-stop: the patience must be a positive number"),
        (("--early-stop", "-2"), "--early-stop: the patience must be a positive number"),
        (("--weight-decay", "0.1"), "--weight-decay applies to --optimizer adamw"),
        (("--label-smoothing", "1"), "--label-smoothing must be in [0, 1)"),
    ],
    ids=[
        "augment-item",
        "augment-crop0",
        "schedule-arg",
        "schedule-name",
        "decay-and-schedule",
        "patience-0",
        "patience-negative",
        "weight-decay-without-adamw",
        "smoothing-1",
    ],
)
def test_bad_options_are_one_line_and_write_nothing(data_env, capsys, extra, named):  # noqa: F811
    out = data_env["root"] / "never"
    msg = _error(capsys, ["train", "--model", SMALL_NET, "--out", str(out), *extra])
    assert named in msg, msg
    assert not out.exists()


# ---------------------------------------------------------------------------- summary
def test_summary_rows_and_flops_against_the_benchmark_formula():
    model = Sequential(
        "conv8x3-bn-relu-maxpool2-conv16x5s2p1-relu-fc32-dropout-fc", input_shape=(3, 12, 10), num_classes=5, seed=0
    )
    rows = layer_rows(model)
    assert [r["layer"] for r in rows] == [
        "conv8x3",
        "bn",
        "relu",
        "maxpool2",
        "conv16x5s2p1",
        "relu",
        "fc32",
        "dropout0.5",
        "fc",
    ]
    first, second = ConvSpec(1, 3, 12, 10, 8, 3, 1, 1), ConvSpec(1, 8, 6, 5, 16, 5, 2, 1)
    assert rows[0]["flops_forward"] == first.flops("fwd")
    assert rows[0]["flops_train"] == 2 * first.flops("fwd")  # the first layer computes no dx
    assert rows[4]["flops_forward"] == second.flops("fwd") and rows[4]["flops_train"] == second.flops("fwdbwd")
    assert rows[4]["output_shape"] == (16,) + second.out_hw
    assert sum(r["params"] for r in rows) == sum(p.size for p in model.params.values())
    assert rows[6]["flops_forward"] == 2 * 16 * 2 * 2 * 32 and rows[6]["flops_train"] == 3 * 2 * 16 * 2 * 2 * 32
    assert rows[0]["activation_bytes"] == 8 * 12 * 10 * 4
    text = model.summary()
    assert "total" in text and f"{sum(p.size for p in model.params.values()):,}" in text


def test_summary_command_on_a_spec_and_on_a_run(data_env, capsys):  # noqa: F811
    assert main(["summary", "--model", "conv4x3-relu-maxpool2-fc"]) == 0
    text = capsys.readouterr().out
    assert "input 1x28x28" in text and "conv4x3" in text and "4x28x28" in text
    out = data_env["root"] / "run"
    assert _train(out, epochs=1) == 0
    capsys.readouterr()
    assert main(["summary", "--model", str(out)]) == 0
    assert capsys.readouterr().out.strip() == load_model(out).summary()
    assert "unknown layer 'wat'" in _error(capsys, ["summary", "--model", "conv4x3-wat"])


# ---------------------------------------------------------------------------- --data
def _image_folder(root, sizes=None, per_class=6, mode="L"):
    rng = np.random.default_rng(0)
    for k, name in enumerate(("circle", "square", "zebra")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = (sizes or {}).get((name, i), (12, 10))
            a = rng.integers(0, 60, (h, w)).astype(np.uint8) + np.uint8(60 * k)
            PIL.fromarray(a if mode == "L" else np.stack([a] * 3, -1)).save(root / name / f"{i:03d}.png")
    return root


def test_train_on_an_image_folder_then_predict(data_env, capsys):  # noqa: F811
    root = data_env["root"]
    folder = _image_folder(root / "shapes")
    out = root / "mine"
    argv = [
        "train",
        "--data",
        str(folder),
        "--model",
        SMALL_NET,
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "1e-2",
        "--out",
        str(out),
        "--no-progress",
        "--no-plots",
        "--val-size",
        "2",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "shapes: 15 training and 3 test images (1, 12, 10)" in text  # a test image per class (a fifth of 6)
    model = load_model(out)
    assert model.class_names == ("circle", "square", "zebra") and model.input_shape == (1, 12, 10)
    assert main(["predict", "--model", str(out), str(folder / "zebra" / "000.png")]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{folder / 'zebra' / '000.png'}: ")
    from fastconv.apps.serve_model import ModelService  # what `fastconv serve` answers with

    service = ModelService(out)
    answer = service.predict((folder / "zebra" / "000.png").read_bytes())
    assert service.describe()["class_names"] == ["circle", "square", "zebra"]
    assert line.split(": ")[1].split(" (")[0] == answer["predictions"][0]["class"]
    assert answer["feature_maps"]["shape"] == [4, 12, 10]  # the first conv layer's maps of a 12x10 image


def test_train_on_an_npz(data_env, capsys):  # noqa: F811
    root = data_env["root"]
    rng = np.random.default_rng(1)
    y = np.arange(40) % 2
    x = (rng.integers(0, 50, (40, 1, 8, 8)) + 150 * y[:, None, None, None]).astype(np.uint8)
    np.savez(root / "mine.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    out = root / "npz-run"
    assert (
        main(
            [
                "train",
                "--data",
                str(root / "mine.npz"),
                "--model",
                "fc",
                "--epochs",
                "2",
                "--out",
                str(out),
                "--no-progress",
                "--no-plots",
                "--val-size",
                "5",
                "--quiet",
            ]
        )
        == 0
    )
    assert "test accuracy: 1.0000 (10/10)" in capsys.readouterr().out
    assert load_model(out).class_names == ("0", "1")


def test_train_on_an_npz_with_class_names(data_env, capsys):  # noqa: F811
    """An .npz's class_names name the classes of the model, of predict and of serve."""
    root = data_env["root"]
    rng = np.random.default_rng(1)
    y = np.arange(40) % 2
    x = (rng.integers(0, 50, (40, 8, 8)) + 150 * y[:, None, None]).astype(np.uint8)
    # a fixed width wider than the names, and spaces around one, as a user may write them
    names = np.array(["dark", " light "], dtype="U20")
    np.savez(root / "named.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:], class_names=names)
    out = root / "named-run"
    argv = ["train", "--data", str(root / "named.npz"), "--model", "fc", "--epochs", "2", "--out", str(out)]
    assert main([*argv, "--no-progress", "--no-plots", "--val-size", "5", "--quiet"]) == 0
    assert "test accuracy: 1.0000 (10/10)" in capsys.readouterr().out
    assert load_model(out).class_names == ("dark", "light")
    PIL.fromarray(x[31]).save(root / "light.png")  # y[31] == 1
    assert main(["predict", "--model", str(out), str(root / "light.png")]) == 0
    assert capsys.readouterr().out.startswith(f"{root / 'light.png'}: light (")
    from fastconv.apps.serve_model import ModelService  # what `fastconv serve` answers with

    service = ModelService(out)
    assert service.describe()["class_names"] == ["dark", "light"]
    assert service.predict((root / "light.png").read_bytes())["predictions"][0]["class"] == "light"


@pytest.mark.parametrize(
    "names, expected",
    [
        (np.array(["a", "b", "c"]), "class_names holds 3 names, the labels 0..1 need 2"),
        (np.array(["a"]), "class_names holds 1 names, the labels 0..1 need 2"),
        (np.array([0, 1]), "class_names must be a 1-D array of strings (unicode), got int64 (2,)"),
        (np.array([b"a", b"b"]), "class_names must be a 1-D array of strings (unicode), got bytes8 (2,)"),
        (np.array(["a", "b"], dtype=object), "class_names must be a 1-D array of strings (unicode), got object"),
        (np.array([["a", "b"]]), "class_names must be a 1-D array of strings (unicode), got str32 (1, 2)"),
        (np.array(["a", "a"]), "class_names must be unique, got 'a' twice or more"),
        (np.array(["a ", " a"]), "class_names must be unique, got 'a' twice or more"),
        (np.array(["a", ""]), "class_names must be printable names of 1 to 64 characters, got ''"),
        (np.array(["a", "   "]), "class_names must be printable names of 1 to 64 characters, got ''"),
        (np.array(["a", "b\nc"]), "class_names must be printable names of 1 to 64 characters, got 'b\\nc'"),
        (np.array(["a", "x" * 65]), "class_names must be printable names of 1 to 64 characters, got 'xxx"),
        (
            np.array(["a", "b"], dtype="U257"),
            "class_names must hold 1 to 10,000 names in a unicode dtype of at most 256 characters, "
            "got 2 in a dtype of 257",
        ),
        (
            np.array([], dtype="U3"),
            "class_names must hold 1 to 10,000 names in a unicode dtype of at most 256 characters, "
            "got 0 in a dtype of 3",
        ),
    ],
    ids=[
        "too-many",
        "too-few",
        "integers",
        "bytes",
        "object-dtype",
        "two-dimensional",
        "duplicates",
        "duplicates-after-strip",
        "empty",
        "blank",
        "unprintable",
        "too-long",
        "dtype-too-wide",
        "no-names",
    ],
)
def test_bad_npz_class_names_are_one_line_naming_the_file(data_env, capsys, names, expected):  # noqa: F811
    root = data_env["root"]
    x = np.zeros((4, 4, 4), np.uint8)
    y = np.array([0, 1, 0, 1])
    np.savez(root / "names.npz", x_train=x, y_train=y, x_test=x, y_test=y, class_names=names)
    out = root / "never"
    msg = _error(capsys, ["train", "--data", str(root / "names.npz"), "--model", "fc", "--out", str(out)])
    assert f"names.npz: {expected}" in msg, msg
    assert not out.exists()


def test_bad_image_folders_are_one_line_naming_the_file(data_env, capsys):  # noqa: F811
    root = data_env["root"]

    def fails(folder, *extra):
        out = root / "never"
        msg = _error(capsys, ["train", "--data", str(folder), "--model", SMALL_NET, "--out", str(out), *extra])
        assert not out.exists()
        return msg

    (root / "empty" / "a").mkdir(parents=True)
    (root / "empty" / "b").mkdir(parents=True)
    assert "empty/a: the class folder holds 0 images" in fails(root / "empty")
    (root / "nothing").mkdir()
    assert "no class folders of images" in fails(root / "nothing")
    lonely = _image_folder(root / "lonely")
    for p in list((lonely / "square").iterdir())[1:]:
        p.unlink()
    assert "lonely/square: the class folder holds 1 image (.png" in fails(lonely)
    mixed = _image_folder(root / "mixed", sizes={("square", 2): (14, 10)})
    msg = fails(mixed)
    assert "mixed/square/002.png: 10x14 pixels, not the first image's 10x12; give --resize" in msg
    assert (
        main(
            [
                "train",
                "--data",
                str(mixed),
                "--resize",
                "--model",
                "fc",
                "--epochs",
                "1",
                "--out",
                str(root / "resized"),
                "--no-progress",
                "--no-plots",
                "--val-size",
                "2",
            ]
        )
        == 0
    )
    assert "(1 images resized to 10x12)" in capsys.readouterr().out
    broken = _image_folder(root / "broken")
    (broken / "circle" / "004.png").write_bytes(b"\x89PNG not really")
    assert "broken/circle/004.png: not a readable image" in fails(broken)
    big = _image_folder(root / "big")
    from fastconv.datasets import folder as F

    limit = F.MAX_IMAGE_FILE_BYTES
    try:
        F.MAX_IMAGE_FILE_BYTES = 50
        assert "big/circle/000.png" in fails(big) and "more than the 50 an image file may have" in fails(big)
    finally:
        F.MAX_IMAGE_FILE_BYTES = limit
    for name, value, expected in (
        ("MAX_IMAGE_SIDE", 8, "big/circle/000.png: 10x12 pixels; images of at most 8x8"),
        ("MAX_DATA_FILE_BYTES", 2000, "big: 18 images of (1, 12, 10) take 2,160 bytes"),
    ):
        saved = getattr(F, name)
        try:
            setattr(F, name, value)
            assert expected in fails(big)
        finally:
            setattr(F, name, saved)
    np.savez(root / "bad.npz", x_train=np.zeros((3, 4, 4)), y_train=np.zeros(3, int))
    assert "bad.npz: an .npz data set holds x_train" in fails(root / "bad.npz")


# ---------------------------------------------------------------------------- MPI
from test_distributed import _argv as _mpi_argv  # noqa: E402
from test_distributed import _assert_same_model, _ranks, _single, env, needs_mpi  # noqa: E402,F401 (env: a fixture)


@needs_mpi
def test_augmentation_schedule_and_early_stop_are_the_same_on_k_ranks(env):  # noqa: F811
    """The augmentation draws are made for the whole batch on every rank (each applies its rows'),
    so 2 and 3 ranks train what one process trains, up to rounding; with batches of 2 on 3 ranks
    a rank without rows still draws."""
    root = env["root"]
    extra = (
        "--augment",
        "crop2,flip",
        "--lr-schedule",
        "cosine",
        "--warmup",
        "0.5",
        "--early-stop",
        "3",
        "--optimizer",
        "adamw",
        "--label-smoothing",
        "0.1",
    )
    _single(env, _mpi_argv(root / "aug-one", epochs=2, extra=extra))
    for k in (2, 3):
        _ranks(env, k, _mpi_argv(root / f"aug-k{k}", epochs=2, extra=extra))
        _assert_same_model(root / "aug-one", root / f"aug-k{k}", "float64")
        a, b = (json.loads((root / f"aug-{w}" / "history.json").read_text()) for w in ("one", f"k{k}"))
        assert b["train_acc"] == a["train_acc"] and b["val_acc"] == a["val_acc"]
    small = extra + ("--batch-size", "2", "--limit-train", "30", "--val-size", "10")
    _single(env, _mpi_argv(root / "aug-small-one", extra=small))
    _ranks(env, 3, _mpi_argv(root / "aug-small-k3", extra=small))
    _assert_same_model(root / "aug-small-one", root / "aug-small-k3", "float64")


def test_load_folder_with_train_and_test_folders_and_rgb(tmp_path):
    from fastconv.datasets.folder import load_folder

    _image_folder(tmp_path / "set" / "train", per_class=4, mode="RGB")
    _image_folder(tmp_path / "set" / "test", per_class=2, mode="RGB")
    data = load_folder(tmp_path / "set")
    assert data.X_train.shape == (12, 3, 12, 10) and data.X_test.shape == (6, 3, 12, 10)
    assert data.class_names == ("circle", "square", "zebra") and list(data.y_test) == [0, 0, 1, 1, 2, 2]
    png = PIL.open(tmp_path / "set" / "test" / "square" / "001.png")
    np.testing.assert_array_equal(data.X_test[3], np.asarray(png).transpose(2, 0, 1))
    (tmp_path / "set" / "test" / "zebra").rename(tmp_path / "set" / "test" / "horse")
    with pytest.raises(ValueError, match="train/ and test/ must hold the same class folders"):
        load_folder(tmp_path / "set")


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"y_train": np.array([0, 1, 10000])}, "y_train must hold labels in \\[0, 10000\\)"),
        ({"y_train": np.zeros(3, np.int64), "y_test": np.zeros(2, np.int64)}, "one class only"),
        ({"x_train": np.full((3, 4, 4), 300.0)}, "x_train must hold pixel values 0-255"),
        ({"x_train": np.zeros((3, 4, 5), np.uint8)}, "x_train holds images \\(1, 4, 5\\), x_test \\(1, 4, 4\\)"),
        ({"y_test": np.array([0.0, 1.0])}, "y_test must hold 2 integer labels"),
    ],
    ids=["label-out-of-range", "one-class", "pixels-out-of-range", "sizes-differ", "float-labels"],
)
def test_bad_npz_data_sets(tmp_path, arrays, match):
    from fastconv.datasets.folder import MAX_CLASSES, load_folder

    assert MAX_CLASSES == 10000
    base = {
        "x_train": np.zeros((3, 4, 4), np.uint8),
        "y_train": np.array([0, 1, 1]),
        "x_test": np.zeros((2, 4, 4), np.uint8),
        "y_test": np.array([1, 0]),
    }
    np.savez(tmp_path / "d.npz", **{**base, **arrays})
    with pytest.raises(ValueError, match=match):
        load_folder(tmp_path / "d.npz")


# ============================================================================ the published recipe


def _recipe_options(text, start):
    """The options of the `fastconv train` command that begins at ``start`` in ``text``
    (continued over lines ending in a backslash), as {option: value}."""
    lines = text[text.index(start) :].splitlines()
    command = []
    for line in lines:
        command.append(line.rstrip("\\").strip())
        if not line.rstrip().endswith("\\"):
            break
    words = shlex.split(" ".join(command))
    assert words[:2] == ["fastconv", "train"], words
    options, key = {}, None
    for word in words[2:]:
        if word.startswith("--"):
            key = word
            options[key] = None
        else:
            options[key] = word
    return options


def test_the_recipe_is_one_command_in_the_help_readme_and_docs_and_it_runs(data_env, capsys):  # noqa: F811
    """`fastconv train --help`, README.md and docs/training.md print the same recipe, and it
    trains (one epoch on the small data set: a misspelled option or value would fail here)."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    helped = _recipe_options(capsys.readouterr().out, "fastconv train --model")
    readme = _recipe_options(
        (ROOT / "README.md").read_text(encoding="utf-8"),
        "fastconv train --dataset fashion-mnist --out runs/fmnist-recipe",
    )
    docs = _recipe_options(
        (ROOT / "docs" / "training.md").read_text(encoding="utf-8"),
        "fastconv train --dataset fashion-mnist --out runs/fmnist-recipe",
    )
    assert readme == docs
    assert {k: v for k, v in readme.items() if k not in ("--dataset", "--out")} == helped
    assert helped["--model"].endswith("-fc") and "--lr-schedule" in helped
    argv = [x for k, v in readme.items() for x in ((k,) if v is None else (k, v))]
    out = data_env["root"] / "recipe"
    argv += ["--out", str(out), "--epochs", "1", "--threads", "1", "--no-plots", "--quiet"]
    assert main(["train", *argv]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history["epoch_seconds"]) == 1 and history["settings"]["optimizer"] == "adamw"
