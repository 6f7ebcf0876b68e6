"""`python -m fastconv ...` on bad input: one error line, a non-zero exit code, no traceback.

Every case runs the real command in a subprocess (so what is checked is what a
user sees: the exit status and the bytes on stderr), with ``$FASTCONV_DATA``
pointing at tiny files in the official IDX format and no other data or network.
Usage errors (argparse) exit with 2 and print the usage and one error line;
every other error exits with 1 and prints exactly one line,
``fastconv <command>: error: ...``, unless ``fastconv --debug`` asks for the
traceback.
"""

import gzip
import os
import subprocess

import numpy as np
import pytest

from fastconv import datasets as D
from fastconv.io.child import python_module

from _helpers import checkout_pythonpath, child_environ
from test_datasets import idx_bytes, write_idx_set

NET = "conv2x3-relu-maxpool2-fc"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)

    good = root / "good" / "fashion-mnist"
    write_idx_set(good, rng, n_train=40, n_test=10)
    environ = child_environ(root / "good", root / "home")
    e = {"root": root, "env": environ, "good": good}
    model = root / "model"
    proc = _run(
        e,
        "train",
        "--no-download",
        "--model",
        NET,
        "--epochs",
        "1",
        "--batch-size",
        "20",
        "--out",
        str(model),
        "--no-plots",
        "--quiet",
        "--threads",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    e["model"] = model
    return e


def _run(env, *argv, data=None, debug=False):
    environ = dict(env["env"])
    if data is not None:
        environ["FASTCONV_DATA"] = str(data)
    cmd = python_module("fastconv", *(["--debug"] if debug else []), *argv)
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=120)


def _one_line_error(proc, command, *expected):
    """Exit 1 and exactly one stderr line 'fastconv <command>: error: ...' holding each of ``expected``."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"fastconv {command}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
        (["train", "--epochs", "three"], "expected a positive integer, got 'three'"),
        (["train", "--lr", "nan"], "argument --lr: expected a positive number, got nan"),
        (["train", "--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
        (["train", "--resume", "--overwrite"], "argument --overwrite: not allowed with argument --resume"),
        (["train", "--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
        (["train", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["evaluate"], "the following arguments are required: --model"),
        (["predict", "--model", "m"], "the following arguments are required: IMAGE"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
    ids=["zero", "word", "nan", "seed", "resume-overwrite", "dataset", "option", "no-model", "no-image", "command"],
)
def test_usage_errors(env, argv, expected):
    proc = _run(env, *argv)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fastconv") and "error: " in last and expected in last, last
    assert proc.stderr.startswith("usage: fastconv")


def test_no_command_prints_help(env):
    proc = _run(env)
    assert proc.returncode == 2 and "usage: fastconv" in proc.stdout and "Traceback" not in proc.stderr


def test_missing_files(env, tmp_path):
    root = env["root"]
    _one_line_error(_run(env, "evaluate", "--model", str(tmp_path / "nowhere")), "evaluate", "no such model file")
    _one_line_error(
        _run(env, "predict", "--model", str(env["model"]), str(tmp_path / "missing.npy")),
        "predict",
        "missing.npy: no such file",
    )
    _one_line_error(
        _run(env, "train", "--dataset", "mnist", "--no-download", "--out", str(tmp_path / "x")),
        "train",
        "MNIST not found",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(
        _run(env, "train", "--no-download", "--data-root", str(empty), "--out", str(tmp_path / "y")),
        "train",
        "not found",
    )
    _one_line_error(
        _run(env, "train", "--no-download", "--model", NET, "--out", str(env["model"])),
        "train",
        "already holds a training run",
    )
    assert (root / "model" / "model.json").is_file()  # the refused run did not touch it


def _broken_data(env, tmp_path, name, damage):
    """A copy of the good data set with the file ``name`` (an IDX_FILES key) damaged by ``damage(path)``."""
    folder = tmp_path / name / "fashion-mnist"
    folder.mkdir(parents=True)
    for p in env["good"].iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    damage(folder / f"{D.IDX_FILES[name]}.gz")
    return folder.parent, folder / f"{D.IDX_FILES[name]}.gz"


def _truncated_gzip(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_idx(path):
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-7]))


def _bad_magic(path):
    path.write_bytes(gzip.compress(b"\x1f\x8b\x08\x03" + gzip.decompress(path.read_bytes())[4:]))


def _labels_out_of_range(path):
    path.write_bytes(gzip.compress(idx_bytes(np.full(40, 200, np.uint8))))


def _a_directory(path):
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize(
    "name, damage, expected",
    [
        ("train_images", _truncated_gzip, "corrupt or truncated gzip data"),
        ("test_images", _truncated_idx, "truncated"),
        ("train_labels", _bad_magic, "bad magic number"),
        ("train_labels", _labels_out_of_range, ""),
        ("test_labels", _a_directory, ""),
    ],
    ids=["gzip-cut", "idx-cut", "magic", "labels", "directory"],
)
def test_unreadable_data(env, tmp_path, name, damage, expected):
    data, path = _broken_data(env, tmp_path, name, damage)
    # --data-root: only there (an incomplete folder must not send the search on to the system's data set)
    argv = [
        "train",
        "--no-download",
        "--data-root",
        str(data),
        "--model",
        NET,
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--no-plots",
        "--quiet",
    ]
    proc = _run(env, *argv)
    line = _one_line_error(proc, "train", expected)
    assert path.name in line, line
    # --debug shows the traceback of the same error
    debug = _run(env, *argv, debug=True)
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert line.split(": error: ", 1)[1] in debug.stderr


@pytest.mark.slow
def test_bad_model_and_image_files(env, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for p in env["model"].iterdir():
        if p.is_file():
            (model / p.name).write_bytes(p.read_bytes())
    # a pickled object array passed to predict is refused (allow_pickle=False), its pickle never read
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    _one_line_error(
        _run(env, "predict", "--model", str(model), str(tmp_path / "objects.npy")), "predict", "objects.npy"
    )
    (tmp_path / "junk.npy").write_bytes(b"not an npy file")
    _one_line_error(_run(env, "predict", "--model", str(model), str(tmp_path / "junk.npy")), "predict", "junk.npy")
    np.savez(tmp_path / "archive.npz", x=np.zeros((1, 28, 28), np.uint8))
    (tmp_path / "archive.npz").rename(tmp_path / "archive.npy")
    _one_line_error(
        _run(env, "predict", "--model", str(model), str(tmp_path / "archive.npy")),
        "predict",
        "archive.npy",
        "an .npz archive",
    )
    for name, values, expected in (
        ("huge.npy", np.full((1, 28, 28), 1e300), "0-255"),
        ("negative.npy", np.full((2, 28, 28), -1, np.int16), "0-255"),
        ("nan.npy", np.full((28, 28), np.nan, np.float32), "finite"),
        ("complex.npy", np.zeros((28, 28), np.complex64), "complex64"),
    ):
        np.save(tmp_path / name, values)
        _one_line_error(_run(env, "predict", "--model", str(model), str(tmp_path / name)), "predict", name, expected)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    _one_line_error(_run(env, "predict", "--model", str(model), str(tmp_path / "junk.png")), "predict", "junk.png")
    # a corrupt model.npz, then a model.json that is not JSON
    raw = bytearray((model / "model.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (model / "model.npz").write_bytes(bytes(raw))
    _one_line_error(_run(env, "evaluate", "--model", str(model)), "evaluate", "model.npz", "SHA-256")
    (model / "model.json").write_text("{")
    _one_line_error(_run(env, "evaluate", "--model", str(model)), "evaluate", "model.json", "not a valid JSON")
    debug = _run(env, "evaluate", "--model", str(model), debug=True)
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "serve"])
def test_a_bad_kernels_setting_is_one_line(command):
    """FASTCONV_KERNELS is read when the engine is imported (with the subcommand's module): a bad
    value is one line naming the variable, as every other bad setting, not a traceback."""
    environ = dict(
        os.environ,
        FASTCONV_KERNELS="bogus",
        PYTHONPATH=checkout_pythonpath(),
    )
    proc = subprocess.run(
        python_module("fastconv", command, "--help"), env=environ, capture_output=True, text=True, timeout=60
    )
    _one_line_error(proc, command, "FASTCONV_KERNELS must be one of", "'bogus'")
