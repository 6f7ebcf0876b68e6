"""`fastconv train / evaluate / predict` end to end, in process, on tiny generated data."""

import json
from pathlib import Path

import numpy as np
import pytest

from fastconv import datasets as D
from fastconv.__main__ import main
from fastconv.apps import plots
from fastconv.io.child import python_code
from fastconv.models import load_model

from test_datasets import write_cifar, write_learnable_set

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SMALL_NET = "conv4x3-relu-maxpool2-fc"


@pytest.fixture(autouse=True)
def _no_malloc_tuning(monkeypatch):
    """The commands tune glibc's malloc for their own process; not for the shared pytest process."""
    monkeypatch.setenv("FASTCONV_MALLOC_TUNING", "0")


def test_malloc_tuning_in_a_fresh_process():
    import subprocess
    import sys

    code = "from fastconv.apps.train_cli import _keep_freed_memory as k; print(k())"
    env = {k: v for k, v in __import__("os").environ.items() if k != "FASTCONV_MALLOC_TUNING"}
    out = subprocess.run(python_code(code), capture_output=True, text=True, env=env, check=True)
    expected = (
        "True"
        if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver())
        else out.stdout.strip()
    )
    assert out.stdout.strip() == expected
    off = subprocess.run(
        python_code(code), capture_output=True, text=True, env=dict(env, FASTCONV_MALLOC_TUNING="0"), check=True
    )
    assert off.stdout.strip() == "False"


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    """$FASTCONV_DATA with a small fashion-mnist; no other data, no network."""
    rng = np.random.default_rng(0)
    arrays = write_learnable_set(tmp_path / "data" / "fashion-mnist", rng, 300, 100)
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(D.registry, "SYSTEM_DIRS", {})
    monkeypatch.setattr(D.download, "_urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("no network in tests")))
    return {"root": tmp_path, "X_test": arrays["test_images"], "y_test": arrays["test_labels"]}


def _train(out, *extra, epochs=2, plots=False):
    extra = extra if plots else (*extra, "--no-plots")
    return main(
        [
            "train",
            "--dataset",
            "fashion-mnist",
            "--model",
            SMALL_NET,
            "--epochs",
            str(epochs),
            "--batch-size",
            "32",
            "--lr",
            "3e-3",
            "--out",
            str(out),
            "--no-progress",
            "--threads",
            "1",
            *extra,
        ]
    )


@pytest.mark.slow
def test_train_evaluate_predict(data_env, capsys):
    out = data_env["root"] / "run"
    assert _train(out, plots=True) == 0
    stdout = capsys.readouterr().out
    assert "test accuracy:" in stdout and "training on 270 images, validating on 30" in stdout
    assert " after 2 epochs (" in stdout
    history = json.loads((out / "history.json").read_text())
    assert history["dataset"] == "fashion-mnist" and history["num_test"] == 100
    assert len(history["loss"]) == 2 * 9 and len(history["train_acc"]) == 2 + 1  # epoch 0 first
    assert history["test_accuracy"] > 0.5  # chance is 0.1
    assert np.sum(history["confusion_matrix"]) == 100
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint_epoch0001.json",
        "checkpoint_epoch0001.npz",
        "checkpoint_epoch0002.json",
        "checkpoint_epoch0002.npz",
    ]
    model = load_model(out)
    assert model.class_names[1] == "Trouser" and model.preprocess.mode == "channel"
    if plots.have_matplotlib():
        for name in ("loss", "accuracy", "confusion", "filters", "examples", "dataset", "feature_maps"):
            assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        from PIL import Image

        with Image.open(out / "filters.gif") as gif:  # 18 iterations: a frame at 0 and after each
            assert gif.n_frames == 19

    # evaluate: the dataset comes from history.json
    assert main(["evaluate", "--model", str(out)]) == 0
    line = capsys.readouterr().out
    assert f"test accuracy: {history['test_accuracy']:.4f}" in line and "on fashion-mnist" in line

    # predict a .npy batch and a single (N, H, W) / (H, W) array
    X = data_env["X_test"]
    np.save(data_env["root"] / "batch.npy", X[:3])
    np.save(data_env["root"] / "one.npy", X[5])
    assert (
        main(
            [
                "predict",
                "--model",
                str(out),
                str(data_env["root"] / "batch.npy"),
                str(data_env["root"] / "one.npy"),
                "--top",
                "2",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith(f"{data_env['root'] / 'batch.npy'}[0]: ")
    expected = model.predict(X[:3, None], prepare=True)
    for line, label in zip(lines, expected):
        assert line.split(": ", 1)[1].startswith(model.class_names[label] + " (")
        assert line.count("(") == 2  # top 2


def test_predict_png(data_env, capsys):
    Image = pytest.importorskip("PIL.Image")
    out = data_env["root"] / "run"
    assert _train(out, epochs=1) == 0
    assert " after 1 epoch (" in capsys.readouterr().out
    X = data_env["X_test"]
    png = data_env["root"] / "img.png"
    Image.fromarray(X[7]).save(png)
    big = data_env["root"] / "big.png"
    Image.fromarray(X[7]).resize((56, 56)).convert("RGB").save(big)
    capsys.readouterr()
    assert main(["predict", "--model", str(out), str(png), str(big)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    model = load_model(out)
    label = model.class_names[model.predict(X[7:8, None], prepare=True)[0]]
    assert lines[0] == f"{png}: {label} ({lines[0].rsplit('(', 1)[1]}"
    assert "resized from 56x56 to 28x28" in lines[1]
    (data_env["root"] / "bad.png").write_bytes(b"not a png")
    assert main(["predict", "--model", str(out), str(data_env["root"] / "bad.png")]) == 1
    assert "not a readable image" in capsys.readouterr().err


def test_predict_reports_each_failed_input_and_goes_on(data_env, capsys):
    out = data_env["root"] / "run"
    assert _train(out, epochs=1) == 0
    root = data_env["root"]
    np.save(root / "a.npy", data_env["X_test"][:2])
    np.save(root / "b.npy", data_env["X_test"][2])
    np.save(root / "wrong.npy", np.zeros((2, 3, 5, 5), np.uint8))
    capsys.readouterr()
    code = main(
        [
            "predict",
            "--model",
            str(out),
            str(root / "a.npy"),
            str(root / "missing.png"),
            str(root / "wrong.npy"),
            str(root / "b.npy"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert [line.split(": ")[0] for line in captured.out.splitlines()] == [
        f"{root / 'a.npy'}[0]",
        f"{root / 'a.npy'}[1]",
        str(root / "b.npy"),
    ]
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3 and "missing.png: no such file" in errors[0]
    assert "wrong.npy: array of shape (2, 3, 5, 5) does not hold images" in errors[1]
    assert errors[2] == "fastconv predict: 2 of 4 inputs failed"


def test_predict_svm_prints_scores_and_inverts_on_request(data_env, capsys):
    Image = pytest.importorskip("PIL.Image")
    out = data_env["root"] / "svm"
    assert _train(out, "--loss", "svm", epochs=1) == 0
    X = data_env["X_test"]
    root = data_env["root"]
    Image.fromarray(X[3]).save(root / "light.png")
    Image.fromarray(255 - X[3]).save(root / "dark.png")  # a dark-on-light drawing of the same image
    np.save(root / "dark.npy", 255 - X[3])
    capsys.readouterr()
    assert main(["predict", "--model", str(out), str(root / "light.png"), "--top", "2"]) == 0
    light = capsys.readouterr().out.strip()
    model = load_model(out)
    scores = model.scores(X[3:4, None], prepare=True)[0].astype(np.float64)
    best = np.argsort(-scores, kind="stable")[:2]
    assert light == (
        f"{root / 'light.png'}: {model.class_names[best[0]]} (score {scores[best[0]]:.3f}), "
        f"{model.class_names[best[1]]} (score {scores[best[1]]:.3f})"
    )
    assert (
        main(["predict", "--model", str(out), str(root / "dark.png"), str(root / "dark.npy"), "--top", "2", "--invert"])
        == 0
    )
    png, npy = capsys.readouterr().out.strip().splitlines()
    assert png == light.replace("light.png", "dark.png") + " (inverted)"
    assert npy == light.replace("light.png", "dark.npy") + " (inverted)"


def test_resume_matches_uninterrupted_run(data_env, capsys):
    root = data_env["root"]
    assert _train(root / "full", epochs=3) == 0
    assert _train(root / "part", epochs=1) == 0
    assert _train(root / "part", "--resume", epochs=3) == 0
    assert "resuming" in capsys.readouterr().out
    a, b = load_model(root / "full"), load_model(root / "part")
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    ha = json.loads((root / "full" / "history.json").read_text())
    hb = json.loads((root / "part" / "history.json").read_text())
    assert ha["loss"] == hb["loss"] and ha["test_accuracy"] == hb["test_accuracy"]


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_one_line_errors(data_env, capsys):
    root = data_env["root"]
    msg = _error(capsys, ["train", "--model", "conv8x3-wat-fc", "--out", str(root / "x")])
    assert msg.startswith("fastconv train: error: unknown layer 'wat'")
    msg = _error(capsys, ["train", "--dataset", "mnist", "--no-download", "--out", str(root / "x")])
    assert "MNIST not found" in msg and "put train-images-idx3-ubyte.gz" in msg
    msg = _error(capsys, ["train", "--dataset", "mnist", "--out", str(root / "x")])
    assert "download failed (" in msg and "no network in tests" in msg
    msg = _error(capsys, ["train", "--model", SMALL_NET, "--num-filters", "8", "--out", str(root / "x")])
    assert "--model convnet1 only" in msg
    assert _train(root / "run", epochs=1) == 0
    msg = _error(capsys, ["train", "--model", SMALL_NET, "--out", str(root / "run")])
    assert "already holds a training run" in msg
    msg = _error(capsys, ["evaluate", "--model", str(root / "nowhere")])
    assert "no such model file" in msg
    np.save(root / "wrong.npy", np.zeros((2, 3, 5, 5), np.uint8))
    msg = _error(capsys, ["predict", "--model", str(root / "run"), str(root / "wrong.npy")])
    assert "does not hold images of shape (1, 28, 28)" in msg
    msg = _error(capsys, ["predict", "--model", str(root / "run"), str(root / "missing.png")])
    assert "no such file" in msg
    (root / "run" / "model.json").write_text("{")
    msg = _error(capsys, ["evaluate", "--model", str(root / "run"), "--dataset", "fashion-mnist"])
    assert "not a valid JSON" in msg
    # argparse errors: usage + one error line, exit code 2
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "0"])
    assert info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


def test_tutorial_preprocessing_and_fixed_split(data_env, capsys):
    out = data_env["root"] / "tutorial"
    assert _train(out, "--preprocess", "pixel", "--val-size", "50", "--val-split", "last", epochs=1) == 0
    assert "training on 250 images, validating on 50" in capsys.readouterr().out
    model = load_model(out)
    assert model.preprocess.mode == "pixel" and model.preprocess.std_image.shape == (1, 28, 28)
    # the statistics are those of the first 250 training images: the last 50 validate
    train = D.load_fashion_mnist(download=False).X_train[:250]
    expected = D.Preprocessing.fit(train, mode="pixel")
    np.testing.assert_array_equal(model.preprocess.mean_image, expected.mean_image)
    np.testing.assert_array_equal(model.preprocess.std_image, expected.std_image)
    history = json.loads((out / "history.json").read_text())
    assert history["settings"]["val_split"] == "last" and history["num_val"] == 50
    msg = _error(
        capsys,
        [
            "train",
            "--dataset",
            "fashion-mnist",
            "--model",
            SMALL_NET,
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--lr",
            "3e-3",
            "--out",
            str(out),
            "--no-progress",
            "--no-plots",
            "--preprocess",
            "pixel",
            "--val-size",
            "50",
            "--resume",
        ],
    )
    assert "--val-split: 'last' in the checkpoint, 'random' now" in msg


def test_fc_net_without_validation(data_env, capsys):
    out = data_env["root"] / "fc"
    assert (
        main(
            [
                "train",
                "--model",
                "fc",
                "--val-size",
                "0",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
                "--no-plots",
                "--optimizer",
                "momentum",
            ]
        )
        == 0
    )
    assert "training on 300 images, validating on 0" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert history["val_acc"] == [None, None] and history["best_val_acc"] is None  # epochs 0 and 1
    model = load_model(out)
    assert [model.params[f"W{i}"].shape for i in (1, 2, 3)] == [(784, 500), (500, 50), (50, 10)]


@pytest.mark.slow
def test_cifar10_rgb(data_env, capsys, monkeypatch):
    write_cifar(data_env["root"] / "data" / "cifar10", np.random.default_rng(1), n=20, archive=True)
    out = data_env["root"] / "cifar"
    assert (
        main(
            [
                "train",
                "--dataset",
                "cifar10",
                "--model",
                "conv4x5-relu-avgpool4-fc",
                "--epochs",
                "1",
                "--batch-size",
                "25",
                "--out",
                str(out),
                "--no-progress",
                "--preprocess",
                "mean_image",
                "--threads",
                "1",
                "--gif-every",
                "2",
            ]
        )
        == 0
    )
    history = json.loads((out / "history.json").read_text())
    assert history["num_train"] == 90 and history["num_test"] == 20
    assert load_model(out).preprocess.mean_image.shape == (3, 32, 32)
    if plots.have_matplotlib():
        assert (out / "filters.png").is_file() and (out / "examples.png").is_file()
        assert (out / "dataset.png").is_file() and (out / "feature_maps.png").is_file()
        from PIL import Image

        with Image.open(out / "filters.gif") as gif:  # 4 iterations, a frame every 2: at 0, 2 and 4
            assert gif.n_frames == 3


def test_help_documents_the_layer_syntax(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "conv<F>x<k>[s<stride>][p<pad>]",
        "maxpool<k>",
        "dropout[<p>]",
        "fc[<units>]",
        "--limit-train",
        "--threads",
        "--resume",
        "FASTCONV_DATA",
        "history.json",
    ):
        assert needle in text, needle


def test_without_matplotlib(data_env, capsys, monkeypatch):
    monkeypatch.setattr(plots, "have_matplotlib", lambda: False)
    out = data_env["root"] / "run"
    assert _train(out, epochs=1, plots=True) == 0
    assert "matplotlib is not installed: skipping the plots" in capsys.readouterr().out
    assert not list(out.glob("*.png"))
    assert (out / "history.json").is_file() and (out / "model.npz").is_file()


@pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="the real Fashion-MNIST files are not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_short_training(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FASTCONV_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "fashion-mnist",
            "--model",
            "convnet1",
            "--num-filters",
            "8",
            "--hidden-dim",
            "64",
            "--limit-train",
            "1200",
            "--limit-test",
            "1000",
            "--epochs",
            "2",
            "--batch-size",
            "50",
            "--out",
            str(out),
            "--no-progress",
            "--no-plots",
            "--no-download",
            "--threads",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    history = json.loads((out / "history.json").read_text())
    assert history["num_train"] == 1080 and history["num_test"] == 1000
    assert history["test_accuracy"] > 0.6, history["test_accuracy"]  # chance is 0.1


@pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)
def test_a_diverging_run_stops_with_its_one_line_error(data_env, capsys):
    """The Solver can record a non-finite loss and return (compat); `fastconv train` keeps the error."""
    out = data_env["root"] / "nan"
    line = _error(
        capsys,
        [
            "train",
            "--dataset",
            "fashion-mnist",
            "--model",
            "fc8-relu-fc",
            "--epochs",
            "1",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
            "--out",
            str(out),
            "--no-progress",
            "--no-plots",
            "--threads",
            "1",
        ],
    )
    assert "the loss became" in line and "lower the learning rate" in line
