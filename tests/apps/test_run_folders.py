"""Run folders and resume: nothing lost, nothing overwritten, no run continued with other settings.

What ``fastconv train --out DIR`` promises:

* temporary files are created exclusively: a symlink planted at a temporary name is
  neither followed nor replaced (``files.atomic_write``);
* a folder holding a saved model or checkpoints is never replaced without
  ``--overwrite``, and ``--resume`` never "starts afresh" over a saved model;
* one training owns the folder (an exclusive flock, checked with two real processes);
* ``--out`` problems are found before any data is loaded;
* ``--resume`` refuses every setting that shapes the result other than the run's own,
  naming the option, and history.json records the settings that were used;
* a tampered checkpoint gives one error line naming the file, never a traceback;
* an empty test split is reported, not divided by.

Most cases run the command in process (``fastconv.__main__.main``): an exception that
escapes it (a traceback for a user) fails the test. Locking needs real processes.
"""

import errno
import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fastconv import datasets as D
from fastconv.__main__ import main
from fastconv.apps import plots, train_cli
from fastconv.io import files
from fastconv.io.child import python_module
from fastconv.models import load_model
from fastconv.solver import checkpoints

import test_crash_safety as crash
from _helpers import checkout_pythonpath
from test_datasets import write_idx_arrays, write_learnable_set

NET = "conv4x3-relu-maxpool2-fc"


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    """$FASTCONV_DATA with a small learnable fashion-mnist; no other data, no network."""
    write_learnable_set(tmp_path / "data" / "fashion-mnist", np.random.default_rng(0), 300, 100)
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FASTCONV_MALLOC_TUNING", "0")
    monkeypatch.setattr(D.registry, "SYSTEM_DIRS", {})
    monkeypatch.setattr(D.download, "_urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("no network in tests")))
    return tmp_path


def _argv(out, *extra, epochs=1, plots=False):
    return [
        "train",
        "--dataset",
        "fashion-mnist",
        "--no-download",
        "--model",
        NET,
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
        "--quiet",
        *(() if plots else ("--no-plots",)),
        *extra,
    ]


def _train(out, *extra, epochs=1):
    return main(_argv(out, *extra, epochs=epochs))


def _error(capsys, argv, *expected):
    """``main(argv)`` exits 1 with one stderr line holding each of ``expected``; returns it."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------- temporary files are exclusive
def test_planted_symlinks_at_temporary_names_are_not_followed(data_env, capsys):
    """Symlinks at the temporary names a writer in this process would have used before
    (``.NAME.tmp<pid>``) point at a precious file: training writes neither through them
    nor leaves its outputs as links to it."""
    out = data_env / "run"
    (out / "checkpoints").mkdir(parents=True)
    victim = data_env / "victim"
    victim.write_text("precious")
    pid = os.getpid()
    planted = [out / f".{name}.tmp{pid}" for name in ("model.npz", "model.json", "history.json")]
    planted += [out / "checkpoints" / f".checkpoint_epoch0001.{ext}.tmp{pid}" for ext in ("npz", "json")]
    for link in planted:
        link.symlink_to(victim)
    assert _train(out) == 0, capsys.readouterr().err
    assert victim.read_text() == "precious"
    for name in (
        "model.npz",
        "model.json",
        "history.json",
        "checkpoints/checkpoint_epoch0001.npz",
        "checkpoints/checkpoint_epoch0001.json",
    ):
        assert not (out / name).is_symlink() and (out / name).is_file(), name
    load_model(out)
    assert all(link.is_symlink() for link in planted)  # left alone, not used


def test_atomic_write_creates_its_temporary_exclusively(tmp_path, monkeypatch):
    """Even when the temporary name it draws is taken by a symlink (to a file, or dangling),
    atomic_write neither follows nor replaces it: it draws another name."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "out.json"
    taken = [tmp_path / f".out.json.tmp{os.getpid()}.0000000a", tmp_path / f".out.json.tmp{os.getpid()}.0000000b"]
    taken[0].symlink_to(victim)
    taken[1].symlink_to(tmp_path / "created-through-a-dangling-link")
    draws = iter(taken)
    original = files._temporary_name
    monkeypatch.setattr(files, "_temporary_name", lambda path: next(draws, None) or original(path))
    files.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1} and not target.is_symlink()
    assert victim.read_text() == "precious" and not (tmp_path / "created-through-a-dangling-link").exists()
    assert all(p.is_symlink() for p in taken)
    # a failed write removes its own temporary file and nothing else
    with pytest.raises(ZeroDivisionError):
        files.atomic_write(target, lambda f: 1 / 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["victim", "out.json", *(p.name for p in taken)])


def test_atomic_write_gives_new_files_the_umask_mode(tmp_path):
    """The exclusive temporary file does not narrow a saved file's mode (as mkstemp's 0o600 would)."""
    old = os.umask(0o027)
    try:
        files.write_json(tmp_path / "x.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o640


def test_temporary_names_carry_the_writer_pid(tmp_path, monkeypatch):
    seen = []
    original = files._create_temporary

    def spy(path):
        tmp, f = original(path)
        seen.append(tmp.name)
        return tmp, f

    monkeypatch.setattr(files, "_create_temporary", spy)
    files.write_json(tmp_path / "checkpoint_epoch0001.json", {})
    assert files.temporary_of(seen[0]) == ("checkpoint_epoch0001.json", os.getpid())
    assert files.temporary_of(f".model.npz.tmp{os.getpid()}") == ("model.npz", os.getpid())  # older writers' names
    assert files.temporary_of("model.npz") is None


# ----------------------------------------------------------------------------- no silent overwrite
def test_a_saved_model_is_never_overwritten_silently(data_env, capsys):
    out = data_env / "run"
    assert _train(out) == 0
    for p in (out / "checkpoints").iterdir():  # a folder with a saved model and no checkpoints
        p.unlink()
    before = _snapshot(out)
    _error(capsys, _argv(out), str(out), "already holds a training run", "--overwrite", "another --out")
    assert _snapshot(out) == before
    _error(capsys, _argv(out, "--resume"), str(out), "no checkpoint to resume from", "--overwrite", "another --out")
    assert _snapshot(out) == before
    assert _train(out, "--overwrite", "--seed", "1") == 0
    assert _snapshot(out)["model.npz"] != before["model.npz"]
    assert json.loads((out / "history.json").read_text())["settings"]["seed"] == 1


def test_overwrite_removes_the_previous_runs_files(data_env, capsys):
    out = data_env / "run"
    assert _train(out, epochs=3) == 0
    (out / "notes.txt").write_text("mine")
    pictures = ("loss.png", "dataset.png", "feature_maps.png", "filters.gif")
    for name in pictures:
        (out / name).write_bytes(b"an old picture")
    _error(capsys, _argv(out), "already holds a training run", "checkpoints/")
    assert _train(out, "--overwrite") == 0
    # the old epochs 2 and 3 would otherwise outlive the new epoch 1 (the two newest are kept)
    assert [e for e, _ in checkpoints(out / "checkpoints")] == [1]
    assert (out / "notes.txt").read_text() == "mine"
    assert not any((out / name).exists() for name in pictures)
    with pytest.raises(SystemExit) as info:
        main(_argv(out, "--overwrite", "--resume"))
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


# ------------------------------------------------------------------------------ one run per folder
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals and fcntl")
def test_second_run_into_a_locked_folder_fails_at_once(data_env):
    """A run paused after its first step holds the folder: another run into it (fresh,
    --resume or --overwrite) fails at once naming the folder and the holder's pid; once the
    holder is killed with SIGKILL the operating system has released the lock."""
    env = {
        "root": data_env,
        "env": dict(
            os.environ,
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            PYTHONPATH=checkout_pythonpath(),
        ),
    }
    (data_env / "child.py").write_text(crash._CHILD)
    out = data_env / "run"
    with crash.reaped(crash._child(env, out, "step", 1, _argv(out, "--seed", "1"))) as first:
        assert first.stdout.readline().strip() == "KILL ME at epoch 1", first.stderr.read() if first.poll() else ""
        for extra in ((), ("--resume",), ("--overwrite",)):
            second = subprocess.run(
                python_module("fastconv", *_argv(out, "--seed", "2", *extra)),
                env=env["env"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 1 and len(lines) == 1, second.stderr
            assert str(out) in lines[0] and f"pid {first.pid}" in lines[0] and "in use" in lines[0], lines[0]
        assert first.poll() is None  # the first run was not disturbed
        assert not checkpoints(out / "checkpoints") and not (out / "model.json").exists()
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    third = subprocess.run(
        python_module("fastconv", *_argv(out, "--seed", "1", "--resume")),
        env=env["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert third.returncode == 0, third.stderr
    assert [e for e, _ in checkpoints(out / "checkpoints")] == [1] and (out / "model.json").is_file()


def test_lock_names_the_folder_and_the_holder_in_process(data_env, capsys):
    from fastconv.apps import run_folder

    out = data_env / "run"
    with run_folder.claim(out):
        _error(capsys, _argv(out), str(out), f"pid {os.getpid()}")
    assert _train(out) == 0  # released


# ---------------------------------------------------------- --out is checked before the data loads
def _make_file(root):
    (root / "run").write_text("not a folder")
    return root / "run", "is a file, not a folder"


def _make_checkpoints_file(root):
    (root / "run").mkdir()
    (root / "run" / "checkpoints").write_text("not a folder")
    return root / "run", "checkpoints is not a folder"


def _make_parent_file(root):
    (root / "file").write_text("")
    return root / "file" / "run", "cannot create the folder"


def _make_read_only(root):
    (root / "run").mkdir()
    (root / "run").chmod(0o555)
    return root / "run", "cannot write into"


@pytest.mark.parametrize(
    "make",
    [_make_file, _make_checkpoints_file, _make_parent_file, _make_read_only],
    ids=["a-file", "checkpoints-a-file", "parent-a-file", "read-only"],
)
def test_out_problems_are_found_before_training(data_env, capsys, monkeypatch, make):
    out, expected = make(data_env)
    if make is _make_read_only and os.geteuid() == 0:
        # root writes into a 0o555 folder: emulate the kernel's refusal for everyone else
        real_open = os.open

        def guarded_open(path, flags, *args, **kwargs):
            p = Path(os.fsdecode(path))
            if p.parent == out and flags & os.O_CREAT and not p.exists():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(p))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded_open)

    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded before --out was checked")

    monkeypatch.setattr(train_cli, "_load_data", no_loading)
    try:
        _error(capsys, _argv(out), str(out), expected)
    finally:
        if out.is_dir():
            out.chmod(0o755)


# ------------------------------------------------------------------- resume refuses other settings
def _rewrite_data(root):
    write_learnable_set(root / "data" / "fashion-mnist", np.random.default_rng(1), 300, 100)
    return ()


@pytest.mark.parametrize(
    "change, named",
    [
        (("--preprocess", "scale"), "--preprocess"),
        (("--seed", "1"), "--seed"),
        (("--lr", "1e-2"), "--lr"),
        (("--lr-decay", "0.5"), "--lr-decay"),
        (("--batch-size", "16"), "--batch-size"),
        (("--optimizer", "sgd"), "--optimizer"),
        (("--val-size", "40"), "--val-size"),
        (("--limit-train", "200"), "--limit-train"),
        (("--reg", "0.01"), "--reg"),
        (("--dtype", "float64"), "--dtype"),
        (("--model", "conv2x3-relu-maxpool2-fc"), "--model"),
        (_rewrite_data, "other training or validation data"),
    ],
    ids=[
        "preprocess",
        "seed",
        "lr",
        "lr-decay",
        "batch-size",
        "optimizer",
        "val-size",
        "limit-train",
        "reg",
        "dtype",
        "model",
        "data",
    ],
)
def test_resume_refuses_other_settings(data_env, capsys, change, named):
    out = data_env / "run"
    assert _train(out) == 0
    before = _snapshot(out)
    extra = change(data_env) if callable(change) else change
    line = _error(capsys, _argv(out, "--resume", *extra, epochs=2), named, "checkpoint_epoch0001.json")
    assert "resume needs the settings the run was started with" in line
    assert _snapshot(out) == before


def test_resume_records_the_settings_it_used(data_env, capsys):
    """What may differ on resume is applied and recorded; --epochs below the epochs done is refused."""
    out = data_env / "run"
    assert _train(out, "--limit-test", "50", "--lr-decay", "0.9", epochs=2) == 0
    _error(capsys, _argv(out, "--resume", "--lr-decay", "0.9", epochs=1), "done 2 epochs", "--epochs 2")
    assert main(_argv(out, "--resume", "--lr-decay", "0.9", "--limit-test", "80", "--threads", "2", epochs=3)) == 0
    history = json.loads((out / "history.json").read_text())
    settings = history["settings"]
    assert (settings["epochs"], settings["limit_test"], settings["lr_decay"], settings["lr"]) == (3, 80, 0.9, 3e-3)
    assert settings["val_size"] == 30 and settings["threads"] == 2
    assert history["num_test"] == 80 and len(history["train_acc"]) == 3 + 1  # epoch 0 first
    state = json.loads(checkpoints(out / "checkpoints")[-1][1].read_text())
    assert state["solver"]["lr_decay"] == 0.9 and state["solver"]["num_epochs"] == 3
    assert state["run_settings"]["--lr"] == 3e-3 and state["run_settings"]["--val-size"] == 30
    # the learning rate the optimizer holds is the one recorded, decayed once per epoch
    assert state["optim_scalars"]["W1"]["learning_rate"] == pytest.approx(3e-3 * 0.9**3)


def test_help_says_which_settings_resume_refuses(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--resume refuses" in text and "--overwrite" in text and "history.json records the settings" in text
    for option in (
        "--preprocess",
        "--seed",
        "--batch-size",
        "--optimizer",
        "--lr",
        "--lr-decay",
        "--val-size",
        "--limit-train",
        "--model",
        "--reg",
        "--loss",
        "--dtype",
        "--dataset",
    ):
        assert option in text.split("--resume refuses", 1)[1], option


# --------------------------------------------------------- a tampered checkpoint is one error line
def _rng_state(key, value):
    def tamper(state):
        state["rng"]["solver"]["state"][key] = value

    return tamper


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def tamper(state):
        node = state
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return tamper


@pytest.mark.parametrize(
    "tamper, expected",
    [
        (_set("history", [1]), "'history' must be a JSON object"),
        (_set("model", [1]), "'model' must be a JSON object"),
        (_set("solver", [1]), "'solver' must be a JSON object"),
        (_set("run_settings", [1]), "'run_settings' must be a JSON object"),
        (_set("optim_scalars", [1]), "'optim_scalars' must be a JSON object"),
        (_rng_state("state", -5), "invalid random generator state"),
        (_rng_state("inc", 2**130), "invalid random generator state"),
        (_rng_state("state", 1.5), "invalid random generator state"),
        (_set("best_val_acc", "abc"), "bad best_val_acc"),
        (_set("best_val_acc", float("nan")), "bad best_val_acc"),
        (_set("solver", "lr_decay", 0.0), "lr_decay"),
        (_set("solver", "batch_size", "32"), "batch_size"),
        (_set("solver", "data_sha256", "abc"), "data_sha256"),
        (_set("history", "train_acc", ["x"]), "history['train_acc']"),
        (_set("history", "val_acc", [float("nan")]), "history['val_acc']"),
        (_set("history", "epoch_seconds", [None]), "history['epoch_seconds']"),
        (_set("arrays", "history/loss", {"shape": [1], "dtype": "float64"}), "the array manifest does not match"),
        (_set("optim_scalars", "W1", "learning_rate", "x"), "optimizer state of W1"),
        (_set("optim_scalars", "W1", "t", -3), "optimizer state of W1"),
        (_set("epoch", 0), "bad epoch"),
        (_set("version", 1), "version 1 checkpoint"),
    ],
    ids=[
        "history",
        "model",
        "solver",
        "run_settings",
        "optim_scalars",
        "pcg64-negative",
        "pcg64-huge",
        "pcg64-float",
        "best_val_acc-abc",
        "best_val_acc-nan",
        "lr_decay-0",
        "batch_size-str",
        "data_sha256",
        "train_acc",
        "val_acc-nan",
        "epoch_seconds-null",
        "loss-length",
        "learning_rate",
        "t-negative",
        "epoch-0",
        "version-1",
    ],
)
def test_tampered_checkpoint_fields_give_one_line_errors(data_env, capsys, tamper, expected):
    out = data_env / "run"
    assert _train(out) == 0
    path = out / "checkpoints" / "checkpoint_epoch0001.json"
    state = json.loads(path.read_text())
    tamper(state)
    path.write_text(json.dumps(state))  # NaN written as the NaN literal Python's json reads back
    before = _snapshot(out)
    _error(capsys, _argv(out, "--resume", epochs=2), str(path), expected)
    assert _snapshot(out) == before


# ----------------------------------------------------------------- an empty test split is reported
def test_empty_test_split(data_env, capsys):
    rng = np.random.default_rng(2)
    arrays = write_learnable_set(data_env / "data" / "fashion-mnist", rng, 300, 1)
    write_idx_arrays(
        data_env / "data" / "fashion-mnist",
        dict(arrays, test_images=np.zeros((0, 28, 28), np.uint8), test_labels=np.zeros(0, np.uint8)),
    )
    out = data_env / "run"
    assert main(_argv(out, plots=True)) == 0, capsys.readouterr().err
    assert "no test images: test accuracy not measured" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert history["test_accuracy"] is None and history["num_test"] == 0
    if plots.have_matplotlib():
        assert (out / "loss.png").is_file() and not (out / "confusion.png").exists()
    _error(capsys, ["evaluate", "--model", str(out), "--no-download"], "test set", "holds no images")
