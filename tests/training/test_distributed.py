"""Data-parallel training over MPI (``fastconv.training.distributed``), with real ``mpiexec`` ranks on this machine.

Every run trains a tiny network for an epoch or two on tiny Fashion-MNIST files written
in the official IDX format. K = 1, 2, 3 ranks must end where one process ends, within
``DIST_TOL`` (float64 1e-10, float32 1e-5 relative); a checkpoint of K ranks resumes with
K' ranks or in one process to the same end; a rank killed with SIGKILL stops the others
(no hang), leaves the last checkpoint intact, and ``--resume`` completes the run; ranks that
disagree on their command line or data, or miss mpi4py, stop with an error on rank 0 and
a non-zero exit on every rank; batches smaller than the rank count train as in one process.
Skipped without mpi4py or ``mpiexec`` (``pip install "fastconv[mpi]"``).

The runs use momentum SGD: Adam divides each gradient by its own running size, so a
parameter whose gradient is zero in exact arithmetic (a bias feeding straight into
batchnorm) moves by its rounding noise, magnified to lr-sized steps, in one process as
in K; comparing such parameters across different roundings says nothing.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastconv.io.child import python_code, python_module
from fastconv.models import load_model
from fastconv.solver import checkpoints, load_checkpoint_model
from fastconv.testing import rel_error
from fastconv.training import distributed

from _helpers import child_environ
from test_datasets import write_learnable_set

DIST_TOL = {np.float32: 1e-5, np.float64: 1e-10}
# conv - relu - batchnorm: every kind of layer the recipe model has, batchnorm synchronized, dropout on
NET = "conv4x3-relu-bn-maxpool2-fc16-relu-dropout0.3-fc"
STEPS_PER_EPOCH = 5  # 120 images - 20 for validation = 100, in batches of 20


def _mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), else on PATH; None without mpi4py."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
_skip_without_mpi = pytest.mark.skipif(MPIEXEC is None, reason='needs mpi4py and mpiexec: pip install "fastconv[mpi]"')


def needs_mpi(test):
    """A test that runs real mpiexec ranks: marked ``mpi``, skipped without mpi4py and mpiexec."""
    return pytest.mark.mpi(_skip_without_mpi(test))


_CHILD = r"""
import os, signal, sys
mode, arg, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
from fastconv import solver as S
from fastconv.__main__ import main

if mode == "kill":  # rank `rank` sends itself SIGKILL after step `step` (counted over the run)
    rank, step = map(int, arg.split(":"))
    original_step, count = S.Solver._step, [0]

    def step_then_die(self, idx):
        out = original_step(self, idx)
        count[0] += 1
        if count[0] == step and int(os.environ["PMI_RANK"]) == rank:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    S.Solver._step = step_then_die
code = main(argv)
with open(f"{arg}.rc.{os.environ.get('PMI_RANK', 'single')}" if mode == "rc" else os.devnull, "w") as f:
    f.write(str(code))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpi")
    write_learnable_set(root / "data" / "fashion-mnist", np.random.default_rng(0), 120, 30)
    write_learnable_set(root / "other" / "fashion-mnist", np.random.default_rng(1), 120, 30)
    (root / "child.py").write_text(_CHILD)
    environ = child_environ(root / "data", root / "home")
    for name in distributed.LAUNCHER_VARIABLES:  # the test process itself may run under a launcher
        environ.pop(name, None)
    return {"root": root, "env": environ}


def _argv(out, dtype="float64", epochs=1, resume=False, extra=()):
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
        "20",
        "--val-size",
        "20",
        "--optimizer",
        "momentum",
        "--lr",
        "1e-2",
        "--seed",
        "7",
        "--dtype",
        dtype,
        "--out",
        str(out),
        "--no-plots",
        "--quiet",
        *extra,
    ] + (["--resume"] if resume else [])


def _single(env, argv):
    proc = subprocess.run(python_module("fastconv", *argv), env=env["env"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def _ranks(env, k, argv, timeout=120, child=None, check=True):
    """``mpiexec -n k`` of the fastconv command line ``argv`` (or of the child script: mode, arg)."""
    command = (
        python_module("fastconv", *argv)
        if child is None
        else [sys.executable, str(env["root"] / "child.py"), *child, *argv]
    )
    proc = subprocess.run(
        [MPIEXEC, "-n", str(k), *command], env=env["env"], capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _assert_same_model(a_dir, b_dir, dtype):
    a, b = load_model(a_dir), load_model(b_dir)
    tolerance = DIST_TOL[np.dtype(dtype).type]
    assert a.params.keys() == b.params.keys() and a.buffers.keys() == b.buffers.keys()
    for group in ("params", "buffers"):
        for name, value in getattr(a, group).items():
            err = rel_error(getattr(b, group)[name], value)
            assert err < tolerance, f"{group}/{name}: relative error {err:.3g} >= {tolerance:g}"


# ---------------------------------------------------------------------------- without mpiexec
def test_mpi_is_installed_where_ci_expects_it():
    if os.environ.get("FASTCONV_EXPECT_MPI") == "1":  # .ci/run installs the [mpi] extra
        assert MPIEXEC is not None, "FASTCONV_EXPECT_MPI=1 but mpi4py or mpiexec is missing"


def test_split_covers_the_batch_in_rank_order():
    for n in (3, 7, 20, 128):
        for size in (1, 2, 3):
            parts = [distributed.split(n, r, size) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


def test_combined_statistics_equal_the_two_pass_ones(rng):
    x = rng.standard_normal((11, 5)) * 3 + 100  # a large mean: a one-pass formula would cancel
    parts = [x[:2], x[2:7], x[7:]]
    every = np.stack([np.stack([p.mean(axis=0), p.var(axis=0) * len(p)]) for p in parts])
    mean, m2 = distributed._combine([len(p) for p in parts], every)
    assert rel_error(mean, x.mean(axis=0)) < 1e-14
    assert rel_error(m2 / len(x), x.var(axis=0)) < 1e-12


def test_the_abort_waits_until_the_launcher_has_read_the_error(tmp_path):
    """``run_ranks`` waits for the pipe to stderr to empty before ``MPI_Abort``, so the
    launcher forwards the error before the kill: with a reader it returns once the pipe
    is read, without one it gives up at the timeout and says so."""
    import io
    import threading

    read_fd, write_fd = os.pipe()
    with open(write_fd, "w") as stream, open(read_fd, "rb", buffering=0) as reader:
        stream.write("the error\n")
        stream.flush()
        t0 = time.monotonic()
        assert distributed.wait_until_read(stream, timeout=0.1) is False  # nobody has read it
        assert 0.1 <= time.monotonic() - t0 < 2
        later = threading.Timer(0.2, reader.read, args=(10,))
        later.start()
        t0 = time.monotonic()
        assert distributed.wait_until_read(stream, timeout=10) is True
        assert 0.15 <= time.monotonic() - t0 < 5
        later.join()
    with open(tmp_path / "log", "w") as stream:  # a file is written when write returns
        assert distributed.wait_until_read(stream, timeout=0) is True
    assert distributed.wait_until_read(io.StringIO(), timeout=0) is True


def test_launch_is_detected_from_the_launchers_variables(monkeypatch):
    for name in distributed.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched()
    monkeypatch.setenv("PMI_RANK", "2")
    assert distributed.launched() and distributed.launcher_rank() == 2


def test_a_communicator_without_mpi4py_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "fastconv\[mpi\]"'):
        distributed.world()


def test_nothing_but_the_distributed_module_imports_mpi4py():
    code = (
        "import sys\nimport fastconv.apps.train_cli, fastconv.solver, fastconv.models, fastconv.apps.distributed_cli\n"
        "print('mpi4py' in sys.modules)\n"
    )
    out = subprocess.run(python_code(code), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------------------- ranks
@needs_mpi
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_k_ranks_end_the_epoch_where_one_process_does(env, dtype):
    root = env["root"]
    _single(env, _argv(root / f"one-{dtype}", dtype))
    for k in (1, 2, 3):
        out = root / f"k{k}-{dtype}"
        _ranks(env, k, _argv(out, dtype))
        _assert_same_model(root / f"one-{dtype}", out, dtype)
        a = json.loads((root / f"one-{dtype}" / "history.json").read_text())
        b = json.loads((out / "history.json").read_text())
        assert len(b["loss"]) == STEPS_PER_EPOCH
        assert rel_error(b["loss"], a["loss"]) < DIST_TOL[np.dtype(dtype).type] * 10
        assert b["test_accuracy"] == a["test_accuracy"] and b["train_acc"] == a["train_acc"]
        assert b["val_acc"] == a["val_acc"]
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (root / f"one-{dtype}").iterdir())
    # progress and the result on rank 0 only
    proc = _ranks(env, 2, [a for a in _argv(root / f"k2-{dtype}-loud", dtype) if a != "--quiet"])
    assert proc.stdout.count("epoch 1/1:") == 1 and proc.stdout.count("test accuracy:") == 1, proc.stdout


_GRADS = r"""
import sys, numpy as np
from mpi4py import MPI
from fastconv.models import build_model
from fastconv.solver import Solver

comm, out, batch = MPI.COMM_WORLD, sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
X, y = rng.standard_normal((39, 1, 8, 8)), rng.integers(0, 4, 39)
idx = rng.permutation(39)[:batch]
result = {}
for dtype in ("float64", "float32"):
    def make():  # batchnorm on conv and on fc outputs (no bias straight into it: its gradient is 0), dropout, L2
        return build_model("conv4x3-relu-bn-maxpool2-fc16-relu-bn-dropout0.4-fc", (1, 8, 8), 4, dtype=dtype,
                           seed=3, reg=1e-2)
    one = make()
    loss, grads = one.loss(X[idx].astype(dtype), y[idx])
    model = make()
    solver = Solver(model, {"X_train": X, "y_train": y}, batch_size=13, verbose=False, comm=comm)
    loss_k, grads_k, _ = solver.distributed.loss_and_grads(idx)
    for name in grads:
        result[f"{dtype}/grad/{name}"] = np.stack([grads[name], grads_k[name]])
    for name in model.buffers:
        result[f"{dtype}/buffer/{name}"] = np.stack([one.buffers[name], model.buffers[name]])
    result[f"{dtype}/loss"] = np.array([loss, loss_k])
    result[f"{dtype}/rng"] = np.array([one.rng.random(), model.rng.random()])
if comm.rank == 0:
    np.savez(out, **result)
"""


@needs_mpi
@pytest.mark.parametrize("k, batch", [(2, 13), (3, 13), (3, 2)], ids=["2-ranks", "3-ranks", "3-ranks-2-images"])
def test_one_step_gradients_batchnorm_and_dropout_equal_one_process(env, k, batch):
    """The tight check: one step's loss, gradients and batchnorm statistics (conv and fc batchnorm,
    dropout, L2) on 13 images split 6/7 or 4/4/5, or 2 images on 3 ranks (rank 0 without rows),
    equal one process's, and the dropout generator ends in the same state."""
    out = env["root"] / f"grads{k}-{batch}.npz"
    script = env["root"] / "grads.py"
    script.write_text(_GRADS)
    proc = subprocess.run(
        [MPIEXEC, "-n", str(k), sys.executable, str(script), str(out), str(batch)],
        env=env["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as saved:
        for key in saved.files:
            # Batchnorm over 2 values is ill-conditioned (entries that are 0 in exact arithmetic get
            # rounding noise): there only float64 is compared, and less tightly.
            if batch <= 2 and key.startswith("float32"):
                continue
            tolerance = {"float64": 1e-12 if batch > 2 else 1e-10, "float32": 1e-5}[key.split("/")[0]]
            one, ranks = saved[key]
            assert rel_error(ranks, one) < tolerance, key
        assert saved["float64/rng"][0] == saved["float64/rng"][1]


@needs_mpi
def test_resume_with_other_rank_counts_equals_an_uninterrupted_run(env):
    root = env["root"]
    _single(env, _argv(root / "whole", epochs=2))
    _ranks(env, 2, _argv(root / "by2", epochs=1))  # the first epoch on 2 ranks
    shutil.copytree(root / "by2", root / "by2-then-1")
    _ranks(env, 3, _argv(root / "by2", epochs=2, resume=True))  # the second on 3
    _single(env, _argv(root / "by2-then-1", epochs=2, resume=True))  # or in one process
    for out in ("by2", "by2-then-1"):
        _assert_same_model(root / "whole", root / out, "float64")
        assert len(json.loads((root / out / "history.json").read_text())["loss"]) == 2 * STEPS_PER_EPOCH


def _processes_of(marker, within=10.0):
    """Pids of the processes whose command line mentions ``marker`` still there after ``within``
    seconds (ranks killed by the launcher may take a moment to go)."""
    deadline = time.monotonic() + within
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@needs_mpi
@pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not os.path.isdir("/proc"), reason="needs POSIX and /proc")
def test_a_rank_killed_mid_epoch_stops_the_others_and_the_run_resumes(env):
    root = env["root"]
    whole = root / "whole-kill"
    _single(env, _argv(whole, epochs=2))
    out = root / "killed"
    t0 = time.monotonic()
    proc = _ranks(env, 3, _argv(out, epochs=2), timeout=60, child=("kill", f"1:{STEPS_PER_EPOCH + 3}"), check=False)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 30  # the whole run, start-up included: the others stop at once
    assert not _processes_of(str(out)), "ranks outlived the killed one"
    found = checkpoints(out / "checkpoints")
    assert [epoch for epoch, _ in found] == [1]
    load_checkpoint_model(found[-1][1])  # complete and valid
    assert not (out / "model.json").exists()
    _ranks(env, 2, _argv(out, epochs=2, resume=True))
    _assert_same_model(whole, out, "float64")


def _mpmd(env, segments, timeout=60):
    """``mpiexec -n 1 A : -n 1 B ...``: one rank per (argv, extra environment) segment, each
    recording its exit code beside ``rc`` (the first argv's --out)."""
    command = [MPIEXEC]
    rc = env["root"] / f"rc-{len(list(env['root'].glob('rc-*')))}"
    rc.mkdir()
    for i, (argv, extra_env) in enumerate(segments):
        if i:
            command.append(":")
        command += ["-n", "1"]
        for name, value in extra_env.items():
            command += ["-env", name, value]
        command += [sys.executable, str(env["root"] / "child.py"), "rc", str(rc / "rank"), *argv]
    proc = subprocess.run(command, env=env["env"], capture_output=True, text=True, timeout=timeout)
    codes = {p.name: p.read_text() for p in rc.glob("rank.rc.*")}
    return proc, codes


@needs_mpi
def test_ranks_that_disagree_on_an_argument_all_stop_rank_0_says_which(env):
    out = env["root"] / "disagree-args"
    proc, codes = _mpmd(env, [(_argv(out, extra=("--seed", "1")), {}), (_argv(out, extra=("--seed", "2")), {})])
    assert proc.returncode != 0
    assert codes == {"rank.rc.0": "1", "rank.rc.1": "1"}, proc.stderr
    assert "disagree on the command line: --seed is 1 on rank 0 but 2 on rank 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints").exists()


@needs_mpi
def test_ranks_that_disagree_on_the_data_all_stop_rank_0_says_which(env):
    out = env["root"] / "disagree-data"
    other = {"FASTCONV_DATA": str(env["root"] / "other")}
    proc, codes = _mpmd(env, [(_argv(out), {}), (_argv(out), other)])
    assert codes == {"rank.rc.0": "1", "rank.rc.1": "1"}, proc.stderr
    assert (
        "the 2 MPI ranks disagree on the training settings, the model or the data: the training data's SHA-256 is"
        in proc.stderr
    )
    assert "rank 1 of 2: stopping" in proc.stderr
    assert not checkpoints(out / "checkpoints")


@needs_mpi
def test_an_error_on_one_rank_alone_aborts_every_rank(env):
    out = env["root"] / "one-fails"
    broken = env["root"] / "broken" / "fashion-mnist"
    shutil.copytree(env["root"] / "data" / "fashion-mnist", broken)
    images = broken / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100])  # a truncated file: rank 1 alone fails to load it
    t0 = time.monotonic()
    proc, _ = _mpmd(env, [(_argv(out), {}), (_argv(out), {"FASTCONV_DATA": str(broken.parent)})])
    assert proc.returncode != 0 and time.monotonic() - t0 < 60
    assert "on rank 1 of 2; stopping every rank" in proc.stderr
    assert not _processes_of(str(out))


@needs_mpi
@pytest.mark.parametrize(
    "options",
    [("--val-size", "18"), ("--batch-size", "2", "--limit-train", "30", "--val-size", "10")],
    ids=["last-batch-of-2", "every-batch-of-2"],
)
def test_batches_smaller_than_the_rank_count_train_as_in_one_process(env, options):
    """3 ranks on batches of 2 images: a rank without rows (rank 0 first) takes part with a stand-in
    row that counts for nothing. (120 - 18 = 102 images in batches of 20 end with a batch of 2;
    30 - 10 = 20 images in batches of 2.)"""
    name = "-".join(options).replace("--", "")
    _single(env, _argv(env["root"] / f"small-one-{name}", extra=options))
    _ranks(env, 3, _argv(env["root"] / f"small-k3-{name}", extra=options))
    _assert_same_model(env["root"] / f"small-one-{name}", env["root"] / f"small-k3-{name}", "float64")
    a, b = (json.loads((env["root"] / f"small-{k}-{name}" / "history.json").read_text()) for k in ("one", "k3"))
    assert rel_error(b["loss"], a["loss"]) < 1e-9 and b["train_acc"] == a["train_acc"]


@needs_mpi
def test_a_launch_without_mpi4py_says_how_to_install_it_on_rank_0(env, tmp_path):
    blocker = tmp_path / "block"
    (blocker / "mpi4py").mkdir(parents=True)
    (blocker / "mpi4py" / "__init__.py").write_text("raise ImportError('no mpi4py here')\n")
    path = os.pathsep.join([str(blocker), env["env"]["PYTHONPATH"]])
    out = env["root"] / "no-mpi4py"
    proc, codes = _mpmd(env, [(_argv(out), {"PYTHONPATH": path}), (_argv(out), {"PYTHONPATH": path})])
    assert codes == {"rank.rc.0": "1", "rank.rc.1": "1"}, proc.stderr
    assert proc.stderr.count('pip install "fastconv[mpi]"') == 1
    assert "rank 1: mpi4py is not installed" in proc.stderr


# ---------------------------------------------------------------------------- the scaling benchmark
def test_the_ring_allreduce_model():
    from fastconv.bench import scaling

    assert scaling.ring_allreduce_seconds(1e6, 1, 1e9, 1e-4) == 0
    assert scaling.ring_allreduce_seconds(1e6, 2, 1e9, 1e-4) == pytest.approx(1e-3 + 2e-4)
    assert scaling.ring_allreduce_seconds(1e6, 10, 1e9, 0) == pytest.approx(2 * 9 / 10 * 1e-3)
    rows = scaling.project(0.1, 128, 4e6, ks=(1, 2), gbits=(1,), latency=0)
    assert rows[0]["images_s"] == pytest.approx(1280) and rows[0]["comm_share"] == 0
    assert rows[1]["step_s"] == pytest.approx(0.05 + 4e6 / scaling.GBIT)
    k = scaling.crossover(0.1, 4e6, 1, latency=0)  # the first K whose Allreduce is at least compute / K
    assert scaling.ring_allreduce_seconds(4e6, k, scaling.GBIT, 0) >= 0.1 / k
    assert scaling.ring_allreduce_seconds(4e6, k - 1, scaling.GBIT, 0) < 0.1 / (k - 1)


@needs_mpi
def test_the_scaling_benchmark_runs_on_tiny_sizes(tmp_path, capsys):
    from fastconv.bench import scaling

    out = tmp_path / "scaling.json"
    assert (
        scaling.main(
            [
                "--quick",
                "--models",
                "recipe",
                "--ranks",
                "1,2",
                "--batch",
                "8",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--out",
                str(out),
                "--mpiexec",
                MPIEXEC,
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert [(r["ranks"], r["threads_per_rank"]) for r in doc["results"]] == [(0, 1), (0, 2), (1, 1), (2, 1)]
    for r in doc["results"]:
        assert r["images_s"] > 0 and r["compute_s_per_step"] > 0 and r["gradient_bytes"] == 4 * r["parameters"]
    assert doc["results"][-1]["allreduce_s_per_step"] > 0 and doc["results"][-1]["batchnorm_sync_s_per_step"] > 0
    assert "| recipe | 2 | 1 |" in capsys.readouterr().out
    assert scaling.main(["--project", str(out)]) == 0
    assert "communication takes half the step from K =" in capsys.readouterr().out


@needs_mpi
def test_each_rank_takes_its_share_of_the_cores(env):
    code = (
        "import os, sys\nfrom fastconv import distributed\ncomm = distributed.world()\n"
        "sys.stdout.write(f'rank {comm.Get_rank()}: {distributed.default_threads(comm)} of "
        "{len(os.sched_getaffinity(0))}\\n')\n"
    )
    for k in (1, 2):
        proc = subprocess.run(
            [MPIEXEC, "-n", str(k), *python_code(code)], env=env["env"], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        lines = sorted(proc.stdout.splitlines())
        usable = [int(line.split(" of ")[1]) for line in lines]
        # a rank bound to fewer cores than the machine's (by the launcher) takes those, else its share
        expected = [n if n < os.cpu_count() else max(1, n // k) for n in usable]
        assert lines == [f"rank {r}: {t} of {n}" for r, (t, n) in enumerate(zip(expected, usable))], proc.stdout
