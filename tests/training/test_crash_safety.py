"""Crash-safe training: a real ``fastconv train`` process killed with SIGKILL resumes exactly.

Each test trains a small network in a subprocess on tiny Fashion-MNIST files
written in the official IDX format (``$FASTCONV_DATA``), is killed with
SIGKILL at a chosen moment, and is then continued with ``fastconv train
--resume`` in a fresh process. The last complete checkpoint must load
cleanly, and the resumed run must end with exactly (bitwise) the parameters,
batchnorm statistics, optimizer state and loss history of a run that was never
interrupted.

The crash moments are made deterministic without any hook in fastconv
itself: the child is a small script (``_CHILD``) that patches the solver or
``fastconv.io.files.atomic_write`` in its own process and then runs the real
command line (``fastconv.__main__.main``):

* ``step``: after a given training step (in the middle of an epoch) the child
  says so on stdout and sleeps; the test sends it SIGKILL from outside;
* ``write``: when the file with a given name is written (a checkpoint's .npz
  or .json, or the final model's arrays, model.next.npz), the child puts the first half of its
  bytes into the temporary file, fsyncs, and sends itself SIGKILL before the
  rename (a torn write, as when the machine dies);
* SIGINT (Ctrl-C) mid-epoch, from outside.

What the torn-write cases can catch: a writer that is not atomic makes the
torn JSON count as a complete checkpoint (the ``json`` case fails); a torn
.npz alone is also covered by the JSON being written last (``npz`` case).
The files' validation against tampering (object arrays with a pickle payload,
wrong shapes and dtypes, missing arrays) is tested at the end of this file.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastconv.io.child import python_module
from fastconv.models import load_model
from fastconv.solver import checkpoints, load_checkpoint_model

from _helpers import child_environ, popen_taking_ctrl_c
from test_datasets import write_learnable_set

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

EPOCHS = 3
STEPS_PER_EPOCH = 5  # 120 images - 20 for validation = 100, in batches of 20
NET = "conv4x3-bn-relu-maxpool2-fc16-relu-fc"  # batchnorm: its running statistics must survive too

_CHILD = r"""
import io, os, signal, sys, time
from pathlib import Path

mode, arg, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
import fastconv.io.files as M
from fastconv import solver as S
from fastconv.__main__ import main

if mode == "step":  # after step number `arg` (counted over the whole run), wait to be killed
    original_step, count = S.Solver._step, [0]

    def step(self, idx):
        out = original_step(self, idx)
        count[0] += 1
        if count[0] == int(arg):
            sys.stdout.write(f"KILL ME at epoch {self.epoch + 1}\n")
            sys.stdout.flush()
            time.sleep(120)
        return out

    S.Solver._step = step
elif mode == "write":  # a torn write of the file named `arg`, then SIGKILL before the rename
    original_write = M.atomic_write

    def atomic_write(path, write):
        if Path(path).name != arg:
            return original_write(path, write)

        def half(f):
            buf = io.BytesIO()
            write(buf)
            data = buf.getvalue()
            f.write(data[:len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        return original_write(path, half)

    M.atomic_write = atomic_write
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Data in the official format, the child script, and an environment with no network or other data."""
    root = tmp_path_factory.mktemp("crash")
    rng = np.random.default_rng(0)
    write_learnable_set(root / "data" / "fashion-mnist", rng, 120, 30)
    (root / "child.py").write_text(_CHILD)
    environ = child_environ(root / "data", root / "home")
    return {"root": root, "env": environ}


def _argv(out, resume=False):
    return [
        "train",
        "--dataset",
        "fashion-mnist",
        "--no-download",
        "--model",
        NET,
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "20",
        "--val-size",
        "20",
        "--lr",
        "3e-3",
        "--seed",
        "7",
        "--out",
        str(out),
        "--no-plots",
        "--no-progress",
        "--quiet",
        "--threads",
        "1",
    ] + (["--resume"] if resume else [])


def _fastconv(env, out, resume=False):
    proc = subprocess.run(
        python_module("fastconv", *_argv(out, resume)), env=env["env"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def uninterrupted(env):
    out = env["root"] / "uninterrupted"
    _fastconv(env, out)
    return out


def _child(env, out, mode, arg, argv=None):
    """The child script (``_CHILD``) running ``mode``/``arg`` and the command line ``argv``
    (default: the run of ``_argv(out)``), its stdout and stderr piped."""
    return popen_taking_ctrl_c(
        [sys.executable, str(env["root"] / "child.py"), mode, str(arg), *(_argv(out) if argv is None else argv)],
        env=env["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def reaped(child):
    """``child`` (a Popen), killed if it still runs at the end of the block, and its pipes closed."""
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()


def _checkpoint_arrays(json_path):
    state = json.loads(Path(json_path).read_text())
    with np.load(Path(json_path).with_name(state["npz"]), allow_pickle=False) as npz:
        return state, {k: npz[k] for k in npz.files}


def _check_after_crash(out, last_complete):
    """The newest complete checkpoint is the expected one, and every complete checkpoint loads cleanly."""
    found = checkpoints(out / "checkpoints")
    assert found and found[-1][0] == last_complete, found
    for _, path in found:
        load_checkpoint_model(path)  # digest, manifest, names, shapes and dtypes checked
    assert not (out / "model.json").exists()  # the run never finished


def _check_resume(env, out, last_complete, uninterrupted):
    proc = _fastconv(env, out, resume=True)
    assert proc.stdout.count("test accuracy:") == 1
    # the same final model, bit for bit (params and batchnorm buffers)
    a, b = load_model(uninterrupted), load_model(out)
    assert a.params.keys() == b.params.keys() and a.buffers.keys() == b.buffers.keys()
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    for k in a.buffers:
        assert np.array_equal(a.buffers[k], b.buffers[k]), k
    # the same last checkpoint: current and best parameters, optimizer state, random generators, histories
    name = f"checkpoint_epoch{EPOCHS:04d}.json"
    sa, arrays_a = _checkpoint_arrays(uninterrupted / "checkpoints" / name)
    sb, arrays_b = _checkpoint_arrays(out / "checkpoints" / name)
    assert arrays_a.keys() == arrays_b.keys() and any(k.startswith("optim/") for k in arrays_a)
    for k in arrays_a:
        assert arrays_a[k].dtype == arrays_b[k].dtype and np.array_equal(arrays_a[k], arrays_b[k]), k
    assert sa["rng"] == sb["rng"] and sa["optim_scalars"] == sb["optim_scalars"]
    for key in ("train_acc", "val_acc"):  # the loss history is an array of the .npz, compared above
        assert sa["history"][key] == sb["history"][key], key
    ha = json.loads((uninterrupted / "history.json").read_text())
    hb = json.loads((out / "history.json").read_text())
    assert len(hb["loss"]) == EPOCHS * STEPS_PER_EPOCH and ha["loss"] == hb["loss"]
    assert ha["test_accuracy"] == hb["test_accuracy"]
    # the torn temporary file of the killed writer was cleaned up by the resumed run's saves
    assert not list((out / "checkpoints").glob(".checkpoint_epoch*.tmp*"))


def test_sigkill_in_the_middle_of_an_epoch(env, uninterrupted):
    out = env["root"] / "killed-mid-epoch"
    step = STEPS_PER_EPOCH + 3  # the third step of epoch 2
    with reaped(_child(env, out, "step", step)) as child:
        line = child.stdout.readline()
        assert line.strip() == "KILL ME at epoch 2", (line, child.stderr.read() if child.poll() is not None else "")
        # checkpoint 1 was written before epoch 2 began
        assert [e for e, _ in checkpoints(out / "checkpoints")] == [1]
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    _check_after_crash(out, 1)
    _check_resume(env, out, 1, uninterrupted)


def test_ctrl_c_in_the_middle_of_an_epoch(env, uninterrupted):
    """SIGINT (Ctrl-C): exit status 130, no traceback, a hint to resume; the resumed run is exact too."""
    out = env["root"] / "interrupted"
    with reaped(_child(env, out, "step", 2 * STEPS_PER_EPOCH + 2)) as child:  # the second step of epoch 3
        assert child.stdout.readline().strip() == "KILL ME at epoch 3"
        os.kill(child.pid, signal.SIGINT)
        _, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "--resume` continues from the last complete epoch" in err
    assert err.strip().splitlines()[-1] == "fastconv: interrupted"
    _check_after_crash(out, 2)
    _check_resume(env, out, 2, uninterrupted)


_PRINT_SIGINT = "import signal; print(signal.getsignal(signal.SIGINT))"


@pytest.mark.parametrize("popen", [popen_taking_ctrl_c, subprocess.Popen], ids=["helper", "plain-popen"])
def test_children_take_ctrl_c_even_when_pytest_was_started_ignoring_it(popen):
    """The Ctrl-C tests' children get Python's KeyboardInterrupt handler even when this
    process ignores SIGINT (pytest as a background job of a script); a plain Popen's child
    would not, which is what made those tests hang until their timeouts."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = popen([sys.executable, "-c", _PRINT_SIGINT], stdout=subprocess.PIPE, text=True)
        out, _ = child.communicate(timeout=60)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # the helper restored it
    finally:
        signal.signal(signal.SIGINT, before)
    takes_ctrl_c = "default_int_handler" in out
    assert takes_ctrl_c == (popen is popen_taking_ctrl_c), out


@pytest.mark.parametrize(
    "torn, last_complete",
    [
        ("checkpoint_epoch0002.npz", 1),  # the arrays of epoch 2 half written
        ("checkpoint_epoch0003.json", 2),  # epoch 3's arrays complete, its JSON half written
        ("model.next.npz", EPOCHS),  # training done, the final model's arrays half written: resume saves it
    ],
    ids=["npz", "json", "final-model"],
)
def test_sigkill_while_writing_a_checkpoint(env, uninterrupted, torn, last_complete):
    out = env["root"] / f"killed-writing-{torn}"
    with reaped(_child(env, out, "write", torn)) as child:
        _, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err
    ckpt = out / "checkpoints"
    folder = out if torn.startswith("model") else ckpt
    # the crash happened where intended: a torn temporary file, never renamed into place
    tmp = list(folder.glob(f".{torn}.tmp*"))
    assert len(tmp) == 1 and tmp[0].stat().st_size > 0
    assert not (folder / torn).exists()
    if torn.endswith(".json"):  # the .npz beside the torn JSON is complete but not part of a checkpoint
        assert (ckpt / torn).with_suffix(".npz").is_file()
    _check_after_crash(out, last_complete)
    _check_resume(env, out, last_complete, uninterrupted)


@pytest.mark.skipif(os.name != "posix", reason="liveness of a pid is checked on POSIX only")
def test_stale_temporary_files_removed_only_when_their_writer_is_dead(tmp_path):
    from fastconv import solver as S
    from fastconv.models import Sequential

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid no longer runs
    alive = os.getppid()
    stale = tmp_path / f".checkpoint_epoch0002.npz.tmp{dead.pid}"
    stale_random = tmp_path / f".checkpoint_epoch0002.json.tmp{dead.pid}.0123abcd"  # atomic_write's names now
    live = tmp_path / f".checkpoint_epoch0002.json.tmp{alive}"
    live_random = tmp_path / f".checkpoint_epoch0002.npz.tmp{alive}.89abcdef"
    other = tmp_path / f".model.npz.tmp{dead.pid}.0123abcd"  # not a checkpoint file: not the solver's business
    for p in (stale, stale_random, live, live_random, other):
        p.write_bytes(b"torn")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 8)
    model = Sequential("fc", input_shape=(1, 6, 6), num_classes=3, seed=0)
    S.Solver(
        model, {"X_train": X, "y_train": y}, batch_size=4, num_epochs=1, checkpoint_dir=tmp_path, seed=0, verbose=False
    ).train()
    assert [e for e, _ in checkpoints(tmp_path)] == [1]
    assert not stale.exists() and not stale_random.exists()
    assert live.exists() and live_random.exists() and other.exists()


# ---------------------------------------------------------------- checkpoint and model files are validated
class _Payload:
    """Unpickling this runs code (creates a file): what a malicious object array inside an .npz would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _small_run(tmp_path):
    from fastconv import solver as S
    from fastconv.models import Sequential

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 12)
    data = {"X_train": X[:8], "y_train": y[:8], "X_val": X[8:], "y_val": y[8:]}

    def solver():
        model = Sequential("conv2x3-bn-relu-fc", input_shape=(1, 6, 6), num_classes=3, seed=0)
        return S.Solver(
            model, data, update_rule="adam", batch_size=4, num_epochs=1, checkpoint_dir=tmp_path, seed=0, verbose=False
        )

    solver().train()
    model = solver().model
    model.save(tmp_path / "model")
    return solver, tmp_path / "checkpoint_epoch0001.json", tmp_path / "model" / "model.json"


def _tampered(arrays, case, marker):
    arrays = dict(arrays)
    if case == "object-payload":
        arrays["params/W1"] = np.array([_Payload(marker)], dtype=object)
    elif case == "wrong-dtype":
        arrays["params/W1"] = arrays["params/W1"].astype(np.float64)
    elif case == "wrong-shape":
        arrays["params/b1"] = np.zeros(arrays["params/b1"].size + 1, arrays["params/b1"].dtype)
    elif case == "missing-key":
        del arrays["params/W2"]
    elif case == "complex-dtype":
        arrays["params/W2"] = arrays["params/W2"].astype(np.complex64)
    return arrays


@pytest.mark.parametrize("manifest_too", [False, True], ids=["digest-only", "digest-and-manifest"])
@pytest.mark.parametrize("case", ["object-payload", "wrong-dtype", "wrong-shape", "missing-key", "complex-dtype"])
@pytest.mark.parametrize("kind", ["checkpoint", "model"])
def test_tampered_files_rejected_naming_the_file(tmp_path, kind, case, manifest_too):
    """An .npz rewritten by someone who also fixed the recorded SHA-256 (and maybe the manifest) is still
    refused, with a ValueError naming the file, and an object array's pickle is never run."""
    from fastconv.models import array_manifest, load_model, sha256_of

    solver, ckpt_json, model_json = _small_run(tmp_path)
    json_path = ckpt_json if kind == "checkpoint" else model_json
    state = json.loads(json_path.read_text())
    npz_path = json_path.with_name(state["npz"])
    with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    marker = tmp_path / "payload-ran"
    bad = _tampered(arrays, case, marker)
    np.savez(npz_path, **bad)
    state["npz_sha256"] = sha256_of(npz_path)
    if manifest_too:
        state["arrays"] = {
            k: ({"shape": [1], "dtype": "object"} if v.dtype == object else array_manifest({k: v})[k])
            for k, v in bad.items()
        }
    json_path.write_text(json.dumps(state))

    loaders = (
        [lambda: load_model(json_path)]
        if kind == "model"
        else [lambda: solver().resume(), lambda: load_checkpoint_model(json_path)]
    )
    for load in loaders:
        with pytest.raises(ValueError) as info:
            load()
        message = str(info.value)
        assert str(npz_path) in message or str(json_path) in message, message
        assert "\n" not in message
    assert not marker.exists()
