"""Model files, run folders, checkpoints and .npz files under crashes, races and hostile files.

* the model pair: a SIGKILL at any step of a save leaves a folder that loads one consistent
  model (the old one or the new one), and the next start completes or undoes the save;
* the run folder is resolved once and held: re-pointing a ``runs/latest`` link mid-run changes
  nothing for the run, and a folder moved away mid-run is never written through its old path;
* checkpoints keep the per-iteration loss history in their .npz: the JSON stays small, so
  every checkpoint the writer makes, the reader takes;
* a deflate bomb, an .npz member larger than its manifest entry, a FIFO or a device is
  refused before it is inflated or read;
* the lock file is 0600 (another user cannot hold it) and a refusal names who holds it;
* leftovers of dead writers are removed, and output names that are folders are found before
  training.

Processes are real where the behaviour is about processes (a SIGKILL, a paused training,
another user), each bounded in time.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastconv import solver as S
from fastconv.apps import run_folder
from fastconv.io import files
from fastconv.models import Sequential, load_model

import test_crash_safety as crash
from _helpers import checkout_pythonpath, child_environ
from test_run_folders import _argv, _error, _snapshot, data_env  # noqa: F401  (a fixture)

posix_only = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def _model(seed):
    return Sequential("fc8-relu-fc", input_shape=(1, 4, 4), num_classes=3, seed=seed)


def _same_params(model, other):
    return all(np.array_equal(model.params[k], other.params[k]) for k in other.params)


# ----------------------------------------------------- the model pair survives a crash at any step
_SAVE_CHILD = r"""
import os, signal, sys
from pathlib import Path
import fastconv.io.files as F
import fastconv.training.model_state as MS
import fastconv.models as M

folder, kill_at = Path(sys.argv[1]), int(sys.argv[2])
calls = [0]

def counted(name, original):
    def wrapper(path, *args):
        if Path(path).parent.resolve() == folder.resolve():
            calls[0] += 1
            if calls[0] == kill_at:
                sys.stdout.write(f"KILLED before {name} {Path(path).name}\n")
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return original(path, *args)
    return wrapper

for name in ("atomic_write", "atomic_link", "remove_file"):
    if hasattr(F, name):
        wrapped = counted(name, getattr(F, name))
        for module in (F, MS):  # model_state (the model files) imports them by name: patch both
            if hasattr(module, name):
                setattr(module, name, wrapped)
model = M.Sequential("fc8-relu-fc", input_shape=(1, 4, 4), num_classes=3, seed=2)
model.save(folder)
print("SAVED")
"""


@posix_only
@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5])
def test_a_sigkill_during_a_save_leaves_one_consistent_model(tmp_path, kill_at):
    """A model saved over another is killed before its k-th file operation in the folder (a
    real SIGKILL): the folder still loads a whole model, the old or the new one, and the next
    start (``recover_model_files``, which ``fastconv train`` runs when it claims the folder)
    leaves exactly model.json + model.npz of one of them."""
    folder = tmp_path / "run"
    old, new = _model(1), _model(2)
    old.save(folder)
    (tmp_path / "child.py").write_text(_SAVE_CHILD)
    child = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(folder), str(kill_at)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=checkout_pythonpath()),
    )
    killed = child.returncode == -signal.SIGKILL
    assert killed or child.stdout.strip() == "SAVED", child.stderr
    loaded = load_model(folder)  # what predict, evaluate and serve do
    assert _same_params(loaded, old) or _same_params(loaded, new)
    from fastconv.models import recover_model_files

    recover_model_files(folder)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["model.json", "model.npz"], names
    assert _same_params(load_model(folder), old) or _same_params(load_model(folder), new)


def test_a_save_interrupted_after_its_switch_is_finished_by_the_next_claim(tmp_path):
    """The new arrays pointed at, not yet linked as model.npz (a crash after step 2):
    claiming the folder finishes the save; the new model is the one kept."""
    from fastconv.training.model_state import MODEL_NPZ_NEXT, _write_pointer

    folder = tmp_path / "run"
    _model(1).save(folder)
    new = _model(2)
    spec = dict(new.spec(), arrays=files.array_manifest(new.state_arrays()))
    digest = files.save_arrays(folder / MODEL_NPZ_NEXT, new.state_arrays())
    _write_pointer(folder, spec, MODEL_NPZ_NEXT, digest)
    assert _same_params(load_model(folder), new)
    with pytest.raises(FileExistsError, match="already holds a training run"):
        run_folder.claim(folder)  # refused (no --resume or --overwrite), after its recovery ran
    assert sorted(p.name for p in folder.iterdir() if p.name != ".fastconv.lock") == ["model.json", "model.npz"]
    assert json.loads((folder / "model.json").read_text())["npz"] == "model.npz"
    assert _same_params(load_model(folder), new)


def test_a_reader_that_meets_a_save_half_way_reads_the_new_model(tmp_path, monkeypatch):
    """A reader (serve reloading, say) reads model.json, and a save replaces the model before the
    reader opens the arrays: the digest no longer matches, so the reader reads model.json again
    and loads the new model whole, instead of failing."""
    import fastconv.training.model_state as MS

    folder = tmp_path / "run"
    _model(1).save(folder)
    new, real, calls = _model(2), MS.load_saved_model, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            new.save(folder)  # between the reader's read of model.json and of the arrays
        return real(*args, **kwargs)

    monkeypatch.setattr(MS, "load_saved_model", racing)
    assert _same_params(load_model(folder), new) and len(calls) == 2


# ------------------------------------------------------------ the folder is resolved once and held
_PAUSE_CHILD = r"""
import sys
from fastconv import solver as S
from fastconv.__main__ import main

pause_at, argv = int(sys.argv[1]), sys.argv[2:]
original_step, count = S.Solver._step, [0]

def step(self, idx):
    out = original_step(self, idx)
    count[0] += 1
    if count[0] == pause_at:
        sys.stdout.write("PAUSED\n")
        sys.stdout.flush()
        sys.stdin.readline()
    return out

S.Solver._step = step
sys.exit(main(argv))
"""


@posix_only
def test_repointing_the_out_link_mid_run_changes_nothing_for_the_run(crash_env):
    """``--out runs/latest`` -> runs/a; mid-run the link is re-pointed to runs/b (another run's
    folder): the run keeps writing its checkpoints and model into runs/a, and runs/b is not
    touched (a real training process, paused at a step while the link changes)."""
    root = Path(tempfile.mkdtemp(dir=crash_env["root"]))
    runs = root / "runs"
    (runs / "a").mkdir(parents=True)
    _model(1).save(runs / "b")
    (runs / "b" / "history.json").write_text("{}\n")
    before = _snapshot(runs / "b")
    (runs / "latest").symlink_to("a")
    (root / "child.py").write_text(_PAUSE_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(root / "child.py"), "2", *crash._argv(runs / "latest")],
        env=crash_env["env"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with crash.reaped(child):
        assert child.stdout.readline().strip() == "PAUSED", child.stderr.read() if child.poll() is not None else ""
        (runs / "next").symlink_to("b")
        os.replace(runs / "next", runs / "latest")  # atomically re-pointed, as `ln -sfn` does
        _, err = child.communicate("go\n", timeout=120)
    assert child.returncode == 0, err
    assert _snapshot(runs / "b") == before
    assert (runs / "a" / "model.json").is_file() and (runs / "a" / "history.json").is_file()
    assert [e for e, _ in S.checkpoints(runs / "a" / "checkpoints")] == [crash.EPOCHS - 1, crash.EPOCHS]


def test_a_folder_moved_away_mid_run_is_not_written_through_its_old_path(tmp_path):
    """The locked folder is renamed and a new one made at its path: a write through the path
    fails, naming the folder, and the new folder stays empty."""
    out = tmp_path / "run"
    with run_folder.claim(out) as lock:
        folder = lock.folder
        _model(1).save(folder)
        out.rename(tmp_path / "moved")
        out.mkdir()
        with pytest.raises(OSError, match="no longer the folder this run locked"):
            _model(2).save(folder)
        with pytest.raises(OSError, match="no longer the folder this run locked"):
            files.write_json(folder / "history.json", {})
    assert list(out.iterdir()) == []
    assert _same_params(load_model(tmp_path / "moved"), _model(1))


@pytest.fixture(scope="module")
def crash_env(tmp_path_factory):
    """Tiny fashion-mnist files (120 training images: 5 steps per epoch), no network or other data."""
    root = tmp_path_factory.mktemp("folders")
    crash.write_learnable_set(root / "data" / "fashion-mnist", np.random.default_rng(0), 120, 30)
    environ = child_environ(root / "data", root / "home")
    return {"root": root, "env": environ}


# -------------------------------------------------------------- the loss history lives in the .npz
def _solver(tmp_path, epochs, seed=0, batch_size=2):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 64)
    data = {"X_train": X[:48], "y_train": y[:48], "X_val": X[48:], "y_val": y[48:]}
    return S.Solver(
        _model(seed),
        data,
        update_rule="adam",
        batch_size=batch_size,
        num_epochs=epochs,
        checkpoint_dir=tmp_path,
        seed=0,
        verbose=False,
    )


def test_every_checkpoint_the_writer_makes_the_reader_takes(tmp_path, monkeypatch):
    """The checkpoint JSON does not grow with the iterations (the loss history is an array in the
    .npz, sized by the manifest): with the JSON reader's limit lowered to just above one epoch's
    JSON, a run of 24 iterations per epoch still resumes from its third epoch's checkpoint
    (the JSON used to hold about 23 bytes per iteration and would pass the limit)."""
    _solver(tmp_path / "one", 1).train()
    one = (tmp_path / "one" / "checkpoint_epoch0001.json").stat().st_size
    full = _solver(tmp_path / "three", 3)
    full.train()
    three = (tmp_path / "three" / "checkpoint_epoch0003.json").stat().st_size
    assert three - one < 200, (one, three)  # two more epochs: a few numbers per epoch, none per iteration
    monkeypatch.setattr(files, "MAX_JSON_BYTES", one + 512)
    resumed = _solver(tmp_path / "three", 4, seed=5)
    assert resumed.resume() == 3
    assert resumed.loss_history == full.loss_history and len(full.loss_history) == 3 * 24
    state = json.loads((tmp_path / "three" / "checkpoint_epoch0003.json").read_text())
    assert state["version"] == 3 and "loss" not in state["history"]
    assert state["arrays"]["history/loss"] == {"shape": [72], "dtype": "float64"}


def test_a_non_finite_loss_in_the_npz_is_refused(tmp_path):
    _solver(tmp_path, 1).train()
    path = tmp_path / "checkpoint_epoch0001.json"
    state = json.loads(path.read_text())
    with np.load(tmp_path / state["npz"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["history/loss"][3] = np.nan
    state["npz_sha256"] = files.save_arrays(tmp_path / state["npz"], arrays)
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="bad loss history"):
        _solver(tmp_path, 2, seed=5).resume()


# ------------------------------------------------------------ inflation is bounded by the manifest
def _compressed_model(folder, tamper=None):
    """A model whose model.npz is deflated (np.savez_compressed) and whose model.json records its
    digest: the arrays are ``tamper(arrays)`` (default: the model's, its weights zeroed)."""
    model = Sequential("fc2048-fc", input_shape=(1, 64, 64), num_classes=3, seed=0, initialize=False)
    arrays = {k: np.zeros(v["shape"], dtype=v["dtype"]) for k, v in model.state_manifest().items()}
    if tamper is not None:
        arrays = tamper(arrays)
    folder.mkdir()
    np.savez_compressed(folder / "model.npz", **arrays)
    spec = dict(
        model.spec(), arrays=model.state_manifest(), npz="model.npz", npz_sha256=files.sha256_of(folder / "model.npz")
    )
    (folder / "model.json").write_text(json.dumps(spec))
    return folder


def test_a_deflate_bomb_is_refused_before_it_is_inflated(tmp_path):
    """32 MiB of zeros deflated into a 33 KB model.npz with a valid digest: refused from the zip
    directory's sizes, before any member is inflated (tracemalloc sees no large allocation)."""
    folder = _compressed_model(tmp_path / "bomb")
    assert (folder / "model.npz").stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="inflate"):
            load_model(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_an_npz_member_larger_than_its_manifest_entry_is_refused(tmp_path):
    """An array member with bytes beyond its shape's data (numpy would ignore them): the member's
    size in the zip directory must be the header and the manifest's bytes, and the file no larger
    than the manifest allows."""
    arrays = {"a": np.arange(6, dtype=np.float32)}
    manifest = files.array_manifest(arrays)
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as zf, zf.open("a.npy", "w") as member:
        np.lib.format.write_array(member, arrays["a"])
        member.write(b"\0" * 1000)
    with pytest.raises(ValueError, match="holds 1,024 bytes of data, its shape and dtype say 24"):
        files.load_arrays(path, manifest)
    big = tmp_path / "big.npz"
    with zipfile.ZipFile(big, "w") as zf, zf.open("a.npy", "w") as member:
        np.lib.format.write_array(member, arrays["a"])
        member.write(b"\0" * (1 << 20))
    with pytest.raises(ValueError, match="more than the .* its array manifest allows"):
        files.load_arrays(big, manifest)


def test_unicode_arrays_load_only_where_text_names_them(tmp_path):
    """A model's manifest comes from a JSON file a user may load: a string array is refused there,
    and read only for the names given in ``text`` (an .npz data set's class_names)."""
    path = tmp_path / "names.npz"
    np.savez(path, names=np.array(["cat", "dog"]))
    manifest = {"names": {"shape": [2], "dtype": "str96"}}
    with pytest.raises(ValueError, match="a bool, integer or float dtype, got \\[2\\] and 'str96'"):
        files.load_arrays(path, manifest)
    assert list(files.load_arrays(path, manifest, text=("names",))["names"]) == ["cat", "dog"]
    with pytest.raises(ValueError, match="array 'names' is str96 \\(2,\\), expected str64"):
        files.load_arrays(path, {"names": {"shape": [2], "dtype": "str64"}}, text=("names",))
    for bad in ("str", "str33", "str0", "object"):
        with pytest.raises(ValueError, match="a bool, integer or float dtype"):
            files.load_arrays(path, {"names": {"shape": [2], "dtype": bad}}, text=("names",))


# ------------------------------------------------------------------- devices and FIFOs are refused
class _Deadline:
    """SIGALRM after ``seconds``: a call that would hang raises TimeoutError instead."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def expire(signum, frame):
            raise TimeoutError(f"still running after {self.seconds} s")

        self.previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
        return False


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs FIFOs and /dev/zero")
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_npz_that_is_a_fifo_or_a_device_is_refused_at_once(tmp_path, kind):
    folder = tmp_path / "model"
    _model(1).save(folder)
    (folder / "model.npz").unlink()
    if kind == "fifo":
        os.mkfifo(folder / "model.npz")
    else:
        (folder / "model.npz").symlink_to("/dev/zero")
    with _Deadline(5), pytest.raises(ValueError, match="not a regular file"):
        load_model(folder)


# --------------------------------------------------- the lock file is private and names its holder
def test_the_lock_file_is_private(tmp_path):
    with run_folder.claim(tmp_path / "run"):
        assert stat.S_IMODE(os.stat(tmp_path / "run" / ".fastconv.lock").st_mode) == 0o600


_HOLD_CHILD = r"""
import fcntl, os, sys, time
lock, uid = sys.argv[1], int(sys.argv[2])
if uid >= 0:
    os.setgid(uid); os.setuid(uid)
try:
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
except OSError as exc:
    print("DENIED", exc.errno, flush=True)
    sys.exit(0)
print("HOLDING", flush=True)
time.sleep(30)
"""


def _holder(tmp_path, lock, uid):
    (tmp_path / "hold.py").write_text(_HOLD_CHILD)
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "hold.py"), str(lock), str(uid)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_hold_the_lock(tmp_path):
    """A folder another user can read (0755, as runs/ usually is): a process of user ``nobody``
    cannot open the lock file to hold it, and the owner's next run takes the folder."""
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    base = Path(tempfile.mkdtemp())  # /tmp: other users may pass through, unlike tmp_path's parents
    try:
        os.chmod(base, 0o755)
        out = base / "run"
        with run_folder.claim(out):
            pass  # a finished run: its lock file stays
        os.chmod(out, 0o755)
        with crash.reaped(_holder(tmp_path, out / ".fastconv.lock", nobody.pw_uid)) as child:
            said = child.stdout.readline().strip()
            assert said.startswith("DENIED"), (said, child.stderr.read() if child.poll() is not None else "")
            with run_folder.claim(out):
                pass
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="names the holder from /proc/locks (Linux)")
def test_a_refusal_names_the_process_that_holds_the_lock(tmp_path):
    """The lock file records a pid that is gone (an earlier run's); another process holds the lock
    without writing its pid: the refusal names that process, not the dead pid."""
    out = tmp_path / "run"
    with run_folder.claim(out):
        pass
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".fastconv.lock").write_text(f"{dead.pid}\n")
    with crash.reaped(_holder(tmp_path, out / ".fastconv.lock", -1)) as child:
        assert child.stdout.readline().strip() == "HOLDING"
        with pytest.raises(BlockingIOError) as info:
            run_folder.claim(out)
    message = str(info.value)
    assert f"pid {child.pid}" in message and f"not the pid {dead.pid} recorded" in message, message


# ----------------------------------------------------------- leftovers of dead writers are removed
@posix_only
@pytest.mark.parametrize("how", ["resume", "overwrite"])
def test_claiming_a_folder_removes_the_temporary_files_of_dead_writers(tmp_path, how):
    """``.model.npz.tmp<pid>.<hex>`` and the like, left by a crash while the model, the history or a
    plot was written, are removed when the next run claims the folder (not while their writer runs)."""
    out = tmp_path / "run"
    _solver(out / "checkpoints", 1).train()
    _model(1).save(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [
        out / f".{name}.tmp{dead.pid}.0123abcd"
        for name in ("model.npz", "model.json", "history.json", "loss.png", "model.next.npz")
    ]
    live = out / f".model.npz.tmp{os.getppid()}.89abcdef"
    for p in (*stale, live):
        p.write_bytes(b"torn")
    with run_folder.claim(out, **{how: True}):
        pass
    assert [p.name for p in stale if p.exists()] == []
    assert live.exists()


# --------------------------------------------------- output names that are folders are found first
@pytest.mark.parametrize("name", ["history.json", "loss.png", "model.npz"])
def test_an_output_name_that_is_a_folder_is_refused_before_training(data_env, capsys, monkeypatch, name):  # noqa: F811
    """Found when the folder is claimed, before any data is loaded (loading would fail the test)."""
    from fastconv.apps import train_cli

    out = data_env / "run"
    (out / name).mkdir(parents=True)
    monkeypatch.setattr(train_cli, "_load_split", lambda *a: pytest.fail("data loaded before the check"))
    _error(capsys, _argv(out, plots=True), str(out / name), "a folder", "choose another --out")
