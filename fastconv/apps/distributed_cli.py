"""``mpiexec -n K fastconv train ...``: what the command line does differently on MPI ranks.

``fastconv train`` asks ``launched()`` (an MPI launcher's variables in the environment);
then every rank runs the same training (``fastconv.training.distributed``), and:

* without mpi4py, rank 0 says how to install it and every rank exits with 1;
* the ranks first compare their command lines: any difference stops every rank, rank 0
  naming the option;
* rank 0 alone claims and locks the run folder, resumes from its checkpoint, prints, and
  writes the model, checkpoints, history and plots; a refusal there stops every rank;
* ``--threads`` defaults to each rank's share of its node's cores;
* the test set is predicted by all ranks, each taking a slice;
* an error on one rank alone aborts them all (``distributed.run_ranks``).
"""

from __future__ import annotations

import contextlib

from ..training import distributed
from ..training.distributed import launched  # noqa: F401  (train_cli asks it)


class _OneProcess:
    """The single-process answers to what ``Ranks`` decides (no MPI)."""

    comm = None
    root = True
    threads = None

    @staticmethod
    def on_root(work):
        return work()

    @staticmethod
    def predict(model, X):
        return model.predict(X, batch_size=500, prepare=True)


ONE_PROCESS = _OneProcess()


class Ranks:
    """This rank's view of an MPI run of ``fastconv train``."""

    def __init__(self, comm):
        self.comm = comm
        self.root = comm.Get_rank() == 0
        self.threads = distributed.default_threads(comm)

    def on_root(self, work):
        """``work()`` on rank 0 (its result there; a no-op context elsewhere); a failure stops every rank."""
        result = [contextlib.nullcontext()]

        def run():
            result[0] = work()

        distributed.on_root(self.comm, run)
        return result[0]

    def predict(self, model, X):
        return distributed.predict(self.comm, model, X, batch_size=500, prepare=True)


def run(args, work):
    """``work(args, ranks)`` on this rank of an MPI launch (see the module docstring)."""
    try:
        comm = distributed.world()
    except ImportError:
        rank = distributed.launcher_rank()
        if rank == 0:
            raise ImportError(
                f"started by an MPI launcher (mpiexec), but mpi4py is not installed: {distributed.INSTALL_HINT}"
            ) from None
        raise ImportError(f"rank {rank}: mpi4py is not installed (rank 0 says how to install it)") from None
    options = {k: v for k, v in vars(args).items() if k != "func"}

    def main():
        distributed.agree(comm, "the command line", {f"--{k.replace('_', '-')}": v for k, v in options.items()})
        return work(args, Ranks(comm))

    return distributed.run_ranks(comm, main, debug=getattr(args, "debug", False), name=f"fastconv {args.command}")
