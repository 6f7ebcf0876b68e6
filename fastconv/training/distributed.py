"""Data-parallel training over MPI ranks: ``mpiexec -n K fastconv train ...``, or
``Solver(model, data, ..., comm=MPI.COMM_WORLD)``.

The only module of fastconv that imports mpi4py (``pip install "fastconv[mpi]"``
installs it with MPICH's wheel, whose ``mpiexec`` lands in the virtual environment),
and only when a communicator is asked for. Every rank runs the same program on the
same data; together they compute what one process computes, up to rounding:

* ``--batch-size`` is the global batch. Each step's batch comes from the Solver's
  seeded permutation, as in one process, and rank r of K takes its rows
  ``[B*r//K, B*(r+1)//K)`` (``split``); when a batch holds fewer than K images, a rank left
  without rows runs a stand-in row that counts for nothing.
* At the start of ``train`` rank 0's whole Solver state (parameters, batchnorm
  statistics, optimizer state, random generators, histories: after ``resume``, the
  checkpoint's) is broadcast. Each step, every rank's gradients, weighted by its
  share of the batch, and its loss and correct count go into one flat buffer summed
  by one Allreduce (fused, as Horovod and PyTorch's DDP do); every rank then applies
  the same update, so the ranks' states stay equal without further messages.
* Batch normalization is synchronized (``SyncBatchNorm``): per channel, each rank's
  count, mean and sum of squared deviations are gathered and combined in rank order
  (Chan et al.'s pairwise update), and in backward the sums of dout and
  dout * (x - mean) are allreduced, so the layer normalizes over the global batch.
  Dropout masks are drawn over the global batch from the model's generator, which
  every rank holds in the same state, and each rank takes its rows: the masks, and
  so the result, do not depend on K.
  Both reach the network as its ``layer_module`` for the step (``SyncedLayers``): the
  layer types call the same names as in one process.
* Only rank 0 writes checkpoints (the single-process format: a run resumes with any
  K or in one process), prints progress and, in ``fastconv train``, the model, the
  history and the plots. Accuracy checks and the test predictions are split over the
  ranks and reduced.
* Before anything is trained the ranks compare their settings, model and data
  (SHA-256): if they differ, every rank stops with a ``CollectiveError`` (rank 0's
  message names what differs). An error on one rank alone (``run_ranks``) aborts
  every rank (``MPI_Abort``) instead of leaving the others waiting; a rank that dies
  is noticed by the launcher (MPICH's and Open MPI's ``mpiexec`` stop the others).
* Threads: each rank's BLAS and OpenMP threads default to its node's cores divided
  by the ranks on that node (``default_threads``).
"""

from __future__ import annotations

import array
import json
import os
import stat
import sys
import time
import traceback

import numpy as np

from ..engine import batchnorm
from ..engine.checks import check_dout

INSTALL_HINT = 'pip install "fastconv[mpi]" (or: pip install mpi4py mpich)'
#: Variables the MPI launchers set in the processes they start (MPICH/Hydra, Intel MPI, Open MPI, PMIx).
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


class CollectiveError(ValueError):
    """Raised on every rank at the same point (the ranks found it together): they exit together."""


def mpi():
    """mpi4py's ``MPI`` module (importing it initializes MPI), or ImportError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            f"training on several processes needs mpi4py and an MPI library: {INSTALL_HINT} ({exc})"
        ) from None
    return MPI


def launched():
    """True when an MPI launcher (``mpiexec``, ``srun``) started this process."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def launcher_rank():
    """This process's rank as the launcher's variables say (0 when they do not): known without mpi4py."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def world():
    """``MPI.COMM_WORLD``."""
    return mpi().COMM_WORLD


def split(n, rank, size):
    """The rows [lo, hi) of n that rank ``rank`` of ``size`` takes: contiguous, in rank order."""
    return n * rank // size, n * (rank + 1) // size


def default_threads(comm):
    """Each rank's share of its node's cores: the cores this process may run on, divided by
    the ranks on its node (at least 1). A launcher that binds each rank to its own cores
    (``mpiexec -bind-to core``) leaves fewer cores to this process: then those are its share."""
    node = comm.Split_type(mpi().COMM_TYPE_SHARED)
    try:
        local = node.Get_size()
    finally:
        node.Free()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if usable < (os.cpu_count() or usable):  # bound by the launcher
        return max(1, usable)
    return max(1, usable // local)


# ---------------------------------------------------------------------------- small collectives
def allgather_bytes(comm, data):
    """Every rank's ``data`` (bytes), in rank order, on every rank."""
    counts = np.zeros(comm.Get_size(), dtype=np.int64)
    comm.Allgather(np.array([len(data)], dtype=np.int64), counts)
    out = np.empty(int(counts.sum()), dtype=np.uint8)
    comm.Allgatherv(np.frombuffer(data, dtype=np.uint8), [out, counts])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return [out[offsets[r] : offsets[r + 1]].tobytes() for r in range(len(counts))]


def bcast_json(comm, value, root=0):
    """``value`` (JSON values) of rank ``root``, on every rank: sent as JSON text, no pickle."""
    data = json.dumps(value, allow_nan=True).encode() if comm.Get_rank() == root else b""
    size = np.array([len(data)], dtype=np.int64)
    comm.Bcast(size, root=root)
    buf = np.frombuffer(data, dtype=np.uint8).copy() if comm.Get_rank() == root else np.empty(int(size[0]), np.uint8)
    comm.Bcast(buf, root=root)
    return json.loads(buf.tobytes())


def agree(comm, what, values):
    """Check that every rank holds the same ``values`` ({name: JSON value}); else CollectiveError
    on every rank, rank 0's naming the first names that differ and on which ranks."""
    flat = {}
    for name, value in values.items():  # one level of dicts apart, so that the message names the field
        items = value.items() if isinstance(value, dict) and value else [(None, value)]
        flat.update({name if sub is None else f"{name} {sub}": v for sub, v in items})
    mine = {k: json.dumps(v, sort_keys=True) for k, v in flat.items()}
    ranks = [json.loads(b) for b in allgather_bytes(comm, json.dumps(mine).encode())]  # in the order given
    differ = []
    for name, text in ranks[0].items():
        others = [r for r, theirs in enumerate(ranks) if theirs.get(name) != text]
        if others:
            r = others[0]
            differ.append(
                f"{name} is {_short(text)} on rank 0 but {_short(ranks[r].get(name))} on rank "
                f"{r}" + (f" (and {len(others) - 1} more ranks)" if len(others) > 1 else "")
            )
    differ += [
        f"rank {r} has {sorted(set(theirs) - set(ranks[0]))}, rank 0 has not"
        for r, theirs in enumerate(ranks)
        if set(theirs) - set(ranks[0])
    ]
    if not differ:
        return
    size = comm.Get_size()
    if comm.Get_rank() == 0:
        raise CollectiveError(
            f"the {size} MPI ranks disagree on {what}: "
            + "; ".join(differ[:3])
            + (f"; and {len(differ) - 3} more" if len(differ) > 3 else "")
            + ". Every rank must run the same command on the same data"
        )
    raise CollectiveError(f"rank {comm.Get_rank()} of {size}: stopping, the ranks disagree on {what} (rank 0 says how)")


def _short(text, limit=120):
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def on_root(comm, work):
    """``work()`` on rank 0 only; its result (JSON values) on every rank. If it raises, every
    rank raises a CollectiveError (rank 0's with the error's message)."""
    outcome = None
    if comm.Get_rank() == 0:
        try:
            outcome = {"ok": True, "value": work()}
        except Exception as exc:  # noqa: BLE001  (sent to the other ranks, so that all of them stop here)
            outcome = {"ok": False, "error": str(exc)}
    outcome = bcast_json(comm, outcome)
    if outcome["ok"]:
        return outcome["value"]
    if comm.Get_rank() == 0:
        raise CollectiveError(outcome["error"])
    raise CollectiveError(
        f"rank {comm.Get_rank()} of {comm.Get_size()}: stopping, rank 0 failed ({_short(outcome['error'])})"
    )


def wait_until_read(stream, timeout=2.0):
    """Wait, at most ``timeout`` seconds, until whoever reads the pipe behind ``stream`` has
    read all of it; True once it has (or when ``stream`` is not a pipe).

    ``mpiexec`` forwards a rank's stderr through a pipe, and the kill of ``MPI_Abort`` can
    beat that forwarding: the error that caused the abort was then lost (MPICH, seen on a
    loaded machine). Waiting for the pipe to empty keeps the message ahead of the abort."""
    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return True
        import fcntl
        import termios
    except (AttributeError, OSError, ValueError, ImportError):  # no descriptor (a test's capture) or not POSIX
        return True
    unread = array.array("i", [0])
    deadline = time.monotonic() + timeout
    while True:
        fcntl.ioctl(fd, termios.FIONREAD, unread)
        if unread[0] == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def run_ranks(comm, work, debug=False, name="fastconv"):
    """``work()`` on this rank. A CollectiveError (every rank has it) propagates; any other
    error, found by this rank alone, is printed and ends every rank with ``MPI_Abort``, since
    the others would wait for this one forever."""
    try:
        return work()
    except CollectiveError:
        raise
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"error: {exc}"
        print(
            f"{name}: {what} (on rank {comm.Get_rank()} of {comm.Get_size()}; stopping every rank)",
            file=sys.stderr,
            flush=True,
        )
        if debug:
            traceback.print_exc()
        sys.stderr.flush()
        wait_until_read(sys.stderr)
        comm.Abort(130 if isinstance(exc, KeyboardInterrupt) else 1)
        raise  # pragma: no cover - Abort does not return


def predict(comm, model, X, batch_size=500, prepare=True):
    """``model.predict(X)`` with the rows split over the ranks: the whole prediction on every rank."""
    size, rank = comm.Get_size(), comm.Get_rank()
    lo, hi = split(len(X), rank, size)
    mine = model.predict(X[lo:hi], batch_size, prepare).astype(np.int64)
    counts = np.array([split(len(X), r, size)[1] - split(len(X), r, size)[0] for r in range(size)])
    out = np.empty(len(X), dtype=np.int64)
    comm.Allgatherv(mine, [out, counts])
    return out


# ---------------------------------------------------------------------------- the Solver's side
class DataParallel:
    """The ranks' part of a Solver made with ``comm=`` (``Solver.distributed``): checks that
    the ranks agree, broadcasts rank 0's state, runs a step on this rank's rows, reduces."""

    def __init__(self, solver, comm):
        self.MPI = mpi()
        self.solver, self.comm = solver, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.root = self.rank == 0
        self.seconds = {"compute": 0.0, "allreduce": 0.0, "batchnorm_sync": 0.0}
        self.steps = 0
        model = solver.model
        settings = solver.recorded_settings()
        agree(
            comm,
            "the training settings, the model or the data",
            {
                "the training data's SHA-256": settings.pop("data_sha256"),
                "solver": settings,
                "run_settings": solver.run_settings,
                "model": model.spec() if hasattr(model, "spec") else None,
                "parameters": {k: [list(v.shape), v.dtype.name] for k, v in model.params.items()},
            },
        )
        if not self.root:
            solver.verbose = False  # progress on rank 0 only

    # ------------------------------------------------------------ state
    def start(self):
        """Give every rank rank 0's whole Solver state (after its resume, the checkpoint's)."""
        solver = self.solver
        state, arrays = _solver_state(solver) if self.root else (None, {})
        state = bcast_json(self.comm, state)
        arrays = _bcast_arrays(self.comm, state["arrays"], arrays)
        if not self.root:
            _set_solver_state(solver, state, arrays)

    def resume(self, path=None):
        """Rank 0 restores its checkpoint (the others need not see the files); the epoch on all."""
        from . import checkpoints

        epoch = on_root(self.comm, lambda: checkpoints.resume(self.solver, path))
        self.solver.epoch = epoch
        return epoch

    @property
    def writes(self):
        """Whether this rank writes the Solver's files (rank 0)."""
        return self.root

    # ------------------------------------------------------------ a step
    def loss_and_grads(self, idx):
        """(loss, grads, correct) of the global batch ``idx``, from this rank's rows: the same
        on every rank after one Allreduce of a flat buffer (correct is None for a model that
        keeps no scores)."""
        solver, model = self.solver, self.solver.model
        B = len(idx)
        lo, hi = split(B, self.rank, self.size)
        # A batch smaller than the rank count leaves some ranks no rows: such a rank runs the batch's
        # first row as a stand-in that counts for nothing (weight 0, in batchnorm too), so that it
        # still takes part in every collective and draws the same dropout masks.
        mine = idx[lo:hi] if hi > lo else idx[:1]
        t0 = time.perf_counter()
        sync_before = self.seconds["batchnorm_sync"]
        # A fastconv network runs its layers from ``layer_module``: for this step, batchnorm and
        # dropout over the global batch (a tutorial model has none: it runs as it is).
        own_layers = getattr(model, "layer_module", None)
        if own_layers is not None:
            model.layer_module = SyncedLayers(own_layers, self, lo, hi, B)
        try:
            prepare = getattr(model, "prepare", None)  # a model without preprocessing takes its arrays as they are
            X = solver.train_images(idx, slice(lo, hi) if hi > lo else slice(0, 1))  # augmented as one process
            loss, grads = model.loss(X if prepare is None else prepare(X), solver.y_train[mine])
        finally:
            if own_layers is not None:
                model.layer_module = own_layers
        scores = getattr(model, "last_scores", None)
        known = scores is not None  # a model that keeps no scores has no correct count (every rank alike)
        correct = int(np.sum(scores.argmax(axis=1) == solver.y_train[mine])) if known and hi > lo else 0
        names = list(model.params)
        dtype = model.params[names[0]].dtype
        sizes = [model.params[k].size for k in names]
        flat = np.empty(sum(sizes) + 2, dtype=dtype)
        weight = (hi - lo) / B  # this rank's share: grads and loss are means over its rows
        offset = 0
        for name, n in zip(names, sizes):
            np.multiply(grads[name].ravel(), dtype.type(weight), out=flat[offset : offset + n])
            offset += n
        flat[-2], flat[-1] = loss * weight, correct  # weight 0 for a stand-in row
        t1 = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, flat)
        t2 = time.perf_counter()
        self.seconds["compute"] += (t1 - t0) - (self.seconds["batchnorm_sync"] - sync_before)
        self.seconds["allreduce"] += t2 - t1
        self.steps += 1
        out, offset = {}, 0
        for name, n in zip(names, sizes):
            out[name] = flat[offset : offset + n].reshape(model.params[name].shape)
            offset += n
        return float(flat[-2]), out, int(round(float(flat[-1]))) if known else None

    def accuracy(self, X, y, batch_size):
        """The fraction of X classified as y, each rank predicting its rows."""
        if len(X) == 0:
            return float("nan")
        lo, hi = split(len(X), self.rank, self.size)
        # the count of right answers back from the fraction (exact: far below 2**52 images)
        share = self.solver.model.check_accuracy(X[lo:hi], y[lo:hi], batch_size, prepare=True) if hi > lo else 0
        right = np.array([round(share * (hi - lo))], dtype=np.int64)
        self.comm.Allreduce(self.MPI.IN_PLACE, right)
        return float(right[0] / len(X))


def _solver_state(solver):
    """(JSON state, {key: array}) of everything in a Solver that changes while it trains."""
    model = solver.model
    arrays = {f"params/{k}": v for k, v in model.params.items()}
    arrays.update({f"buffers/{k}": v for k, v in getattr(model, "buffers", {}).items()})
    arrays.update({f"best_params/{k}": v for k, v in solver.best_params.items()})
    arrays.update({f"best_buffers/{k}": v for k, v in solver.best_buffers.items()})
    scalars = {}
    for name, config in solver.optim_configs.items():
        scalars[name] = {
            k: v.item() if isinstance(v, np.generic) else v for k, v in config.items() if not isinstance(v, np.ndarray)
        }
        arrays.update({f"optim/{name}/{k}": v for k, v in config.items() if isinstance(v, np.ndarray)})
    state = {
        "epoch": solver.epoch,
        "best_val_acc": solver.best_val_acc,
        "best_epoch": solver.best_epoch,
        "loss": solver.loss_history,
        "train_acc": solver.train_acc_history,
        "val_acc": solver.val_acc_history,
        "epoch_seconds": solver.epoch_times,
        "optim_scalars": scalars,
        "rng": {
            "solver": solver.rng.bit_generator.state,
            "model": model.rng.bit_generator.state if hasattr(model, "rng") else None,
        },
        "arrays": {k: [list(v.shape), v.dtype.name] for k, v in arrays.items()},
    }
    return state, arrays


def _set_solver_state(solver, state, arrays):
    model = solver.model
    groups = {"params": {}, "buffers": {}, "best_params": {}, "best_buffers": {}}
    optim = {name: dict(scalars) for name, scalars in state["optim_scalars"].items()}
    for key, a in arrays.items():
        head, _, rest = key.partition("/")
        if head == "optim":
            name, _, field = rest.rpartition("/")
            optim[name][field] = a
        else:
            groups[head][rest] = a
    model.params = groups["params"]
    if hasattr(model, "buffers"):
        model.buffers = groups["buffers"]
    solver.best_params, solver.best_buffers = groups["best_params"], groups["best_buffers"]
    solver.optim_configs = optim
    solver.epoch, solver.best_val_acc, solver.best_epoch = state["epoch"], state["best_val_acc"], state["best_epoch"]
    solver.loss_history, solver.train_acc_history = list(state["loss"]), list(state["train_acc"])
    solver.val_acc_history, solver.epoch_times = list(state["val_acc"]), list(state["epoch_seconds"])
    solver.rng.bit_generator.state = state["rng"]["solver"]
    if state["rng"]["model"] is not None:
        model.rng.bit_generator.state = state["rng"]["model"]


def _bcast_arrays(comm, manifest, arrays):
    """Rank 0's ``arrays`` ({key: array}, described by ``manifest`` {key: [shape, dtype]}) on every
    rank: one Bcast per dtype of a flat buffer."""
    out = {}
    for dtype in sorted({d for _, d in manifest.values()}):
        keys = [k for k, (_, d) in manifest.items() if d == dtype]
        sizes = [int(np.prod(manifest[k][0], dtype=np.int64)) for k in keys]
        if comm.Get_rank() == 0:
            flat = np.concatenate([np.ravel(arrays[k]) for k in keys]) if keys else np.empty(0, dtype)
        else:
            flat = np.empty(sum(sizes), dtype=dtype)
        comm.Bcast(flat, root=0)
        offset = 0
        for key, n in zip(keys, sizes):
            out[key] = flat[offset : offset + n].reshape(manifest[key][0]).copy()
            offset += n
    return out


# ---------------------------------------------------------------------------- the layers' side
class SyncedLayers:
    """The layer functions a network runs during one step of MPI training, handed to it as its
    ``layer_module`` (``fastconv.models.Sequential``): those of ``layers`` (``fastconv.fast`` or
    ``fastconv.naive``), but batchnorm and dropout in training work over the global batch, of
    which this rank holds rows [lo, hi) of ``total``. Same signatures as the layer functions."""

    def __init__(self, layers, parallel, lo, hi, total):
        self.layers = layers
        self.parallel, self.comm, self.MPI = parallel, parallel.comm, parallel.MPI
        self.lo, self.hi, self.total = lo, hi, total
        self.weight = (hi - lo) / total

    def __getattr__(self, name):  # every other layer function: the network's own
        if name == "layers":  # not set yet
            raise AttributeError(name)
        return getattr(self.layers, name)

    def dropout_forward(self, x, p, train=True, rng=None):
        """layers.dropout_forward with the mask of the global batch's rows [lo, hi): the same
        draws from ``rng`` as one process makes for the whole batch."""
        if not train or p == 0:  # p was checked by the Dropout layer that calls this
            return self.layers.dropout_forward(x, p, train, rng)
        u = rng.random((self.total,) + x.shape[1:])[self.lo : self.hi]
        if self.hi == self.lo:  # a stand-in row (see loss_and_grads): any mask, it counts for nothing
            return x.copy(), np.ones_like(x)
        mask = (u >= p).astype(x.dtype) / x.dtype.type(1 - p)  # as layers.dropout_forward makes it
        return x * mask, mask

    def _channels(self, x):
        """x as (N, C, HW): (N, C, H, W) or (N, D) seen as (N, D, 1); C-contiguous."""
        x = np.ascontiguousarray(x)
        return x, x.reshape(x.shape[0], x.shape[1], -1)

    def batchnorm_forward(self, x, gamma, beta, bn_param):
        """Training-mode batchnorm (spatial for 4-d x) normalized over every rank's rows; test
        mode is the network's own."""
        if not isinstance(x, np.ndarray) or x.ndim not in (2, 4):
            raise ValueError(f"x must be an array (N, D) or (N, C, H, W), got {getattr(x, 'shape', x)!r}")
        name = "x (N, C, H, W)" if x.ndim == 4 else "x (N, D)"
        s = batchnorm.settings(x, gamma, beta, bn_param, x.shape[1], name)
        if s.mode != "train":
            forward = self.layers.spatial_batchnorm_forward if x.ndim == 4 else self.layers.batchnorm_forward
            return forward(x, gamma, beta, bn_param)
        x, x3 = self._channels(x)
        N, C, HW = x3.shape
        mean, var = batchnorm.channel_stats(x3)
        t0 = time.perf_counter()
        every = np.empty((self.comm.Get_size(), 2, C))
        mine = np.stack([mean, var * (N * HW)]) if self.hi > self.lo else np.zeros((2, C))  # a stand-in: nothing
        self.comm.Allgather(mine, every)
        self.parallel.seconds["batchnorm_sync"] += time.perf_counter() - t0
        size = self.comm.Get_size()
        counts = [(split(self.total, r, size)[1] - split(self.total, r, size)[0]) * HW for r in range(size)]
        mean, m2 = _combine(counts, every)
        var = m2 / (self.total * HW)
        inv_std = 1.0 / np.sqrt(var + s.eps)
        out = batchnorm.normalize(x3, mean, gamma.astype(np.float64) * inv_std, beta.astype(np.float64)).reshape(
            x.shape
        )
        batchnorm.store_running(bn_param, s, x.dtype, mean, var)
        return out, (x3, x.shape, np.ascontiguousarray(gamma), mean, inv_std)

    spatial_batchnorm_forward = batchnorm_forward

    def batchnorm_backward(self, dout, cache):
        """(dx, dgamma, dbeta) of this rank's rows; dgamma and dbeta are this rank's sums (the
        step's Allreduce adds them up), dx uses the sums over every rank's rows."""
        x3, shape, gamma, mean, inv_std = batchnorm.train_cache(cache, "batchnorm_backward")
        check_dout(dout, shape, x3.dtype)
        dout3 = np.ascontiguousarray(dout).reshape(x3.shape)
        sums = np.stack(batchnorm.backward_sums(dout3, x3, mean))
        # dout is this rank's loss's gradient (a mean over its rows): weighted, the sums are the batch's
        total = sums * self.weight
        if self.weight == 0:  # a stand-in row: it adds nothing and gets no gradient
            sums[:] = 0
        t0 = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, total)
        self.parallel.seconds["batchnorm_sync"] += time.perf_counter() - t0
        M = self.total * x3.shape[2]
        scale = gamma.astype(np.float64) * inv_std
        # as the engine's spatial_batchnorm_backward, with the batch's sums brought back to this rank's scale
        dx = np.zeros_like(x3)
        if self.weight > 0:
            xc_scale = -scale * inv_std * inv_std * total[1] / (M * self.weight)
            offset = -scale * total[0] / (M * self.weight)
            dx = batchnorm.backward_dx(dout3, x3, mean, scale, xc_scale, offset)
        return dx.reshape(shape), (inv_std * sums[1]).astype(x3.dtype), sums[0].astype(x3.dtype)

    spatial_batchnorm_backward = batchnorm_backward


def _combine(counts, every):
    """The mean and the sum of squared deviations of the union of the ranks' values, from each
    rank's count, mean and sum of squared deviations (``every`` (K, 2, C)), in rank order."""
    n, mean, m2 = counts[0], every[0, 0].copy(), every[0, 1].copy()
    for count, (mean_b, m2_b) in zip(counts[1:], every[1:]):
        if count == 0:  # a rank without rows (its values are zeros)
            continue
        total = n + count
        delta = mean_b - mean
        mean += delta * (count / total)
        m2 += m2_b + delta * delta * (n * count / total)
        n = total
    return mean, m2
