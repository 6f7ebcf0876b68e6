"""All of fastconv's thread policy, in one place (with ``runtimes``, which must run before
numpy loads: the OpenMP and OpenBLAS settings made at import).

* **Kernel threads**: an OpenMP kernel runs on ``kernel_threads(work)`` threads: OpenMP's
  default team (``omp_get_max_threads()``, which OMP_NUM_THREADS and threadpoolctl set),
  or one for small work or when OpenMP must not run teams (``SINGLE_THREADED_KERNELS``).
  Pooling and batchnorm then split their planes over fastconv's workers instead
  (``over_planes``), so their speed does not depend on import order.
* **Workers**: a convolution's image chunks run side by side, one BLAS thread each
  (``run``); the affine layers' GEMMs too (``matmul``); partial sums are added in worker
  order (``sum_in_worker_order``).

Running a convolution's image chunks side by side, one BLAS thread each: the plain way to
use two cores is to alternate multi-threaded kernels: an
OpenMP im2col, a GEMM on OpenBLAS's threads, an OpenMP col2im, ... Every switch
is a fork and a join of a thread team, and each team's idle threads spin or
sleep while the other team works: a core often waits for the other one.

Here each worker thread takes whole chunks of images (chunk k, k + workers, ...)
and runs im2col, the GEMMs and the output pass of a chunk by itself, with the
BLAS held to one thread for the duration, so no team ever waits for another;
single-threaded GEMMs side by side are no slower than multi-threaded ones
(docs/performance.md, "Convolution threads"). numpy releases the GIL inside
BLAS calls and the Cython kernels release it too, so plain Python threads suffice.

The number of workers is the number of threads the BLAS may use when the call
starts (threadpoolctl's ``threadpool_limits`` and ``OPENBLAS_NUM_THREADS``
set it). With one worker the call runs in the caller's thread, on one BLAS
thread if the BLAS has several (the engine asks for that); when
threadpoolctl cannot see numpy's BLAS, as it is.

Each worker sums its own partial weight gradient, and the partials are added
in worker order, so dw and db depend on the worker count (as PyTorch's do on
its thread count) but never on timing or on other threads: a call made while
another thread's call holds the BLAS to one thread still uses the user's
setting. While a parallel call runs, BLAS calls made by other threads of the
process run on one thread too.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from .runtimes import RUNTIMES
from .types import FloatArray

_T = TypeVar("_T")
_Sums = TypeVar("_Sums", bound=tuple[np.ndarray[Any, Any], ...])
#: Sets one BLAS library's thread count for the whole process.
_Setter = Callable[[int], object]


class _BlasLibrary(Protocol):
    """What fastconv uses of one of threadpoolctl's library controllers (threadpoolctl has no types)."""

    internal_api: str
    num_threads: int | None

    def set_num_threads(self, num_threads: int) -> object: ...


class _BlasController(Protocol):
    """What fastconv uses of threadpoolctl's ThreadpoolController."""

    lib_controllers: list[_BlasLibrary]


_lock = threading.Lock()
# threadpoolctl controller of the loaded BLAS libraries, False if it sees none
_controller: _BlasController | Literal[False] | None = None
_setters: list[_Setter] | None = None  # per BLAS library, the function that sets its thread count process-wide
_depth = 0  # calls inside a one-BLAS-thread section right now, across all threads
# (setter, threads) per library from before the first of those calls
_saved_limits: list[tuple[_Setter, int | None]] | None = None
_saved_threads = 1  # blas_threads() from before the first of those calls
_pool: ThreadPoolExecutor | None = None

# How OpenBLAS's own functions are named in its builds (numpy's is scipy_openblas..._64_).
_OPENBLAS_AFFIXES = [(p, s) for p in ("", "scipy_") for s in ("", "64_", "_64")]


def _blas_controller() -> _BlasController | Literal[False]:
    global _controller, _setters
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController

            ctl = ThreadpoolController().select(user_api="blas")
            _controller = ctl if ctl.lib_controllers else False
        except Exception:  # noqa: BLE001  # pragma: no cover - threadpoolctl is a dependency
            _controller = False
        _setters = [_thread_setter(lib) for lib in _controller.lib_controllers] if _controller else []
    return _controller


def _thread_setter(lib: _BlasLibrary) -> _Setter:
    """The function that sets ``lib``'s thread count for the whole process.

    threadpoolctl (>= 3.8) lets only one Python thread change a pthreads OpenBLAS (the
    first one that set a limit, until its ``with`` block ends) and ignores the others
    without a word; a convolution holds the BLAS from whichever thread starts first, so
    for that OpenBLAS it calls the library's own function."""
    dynlib = getattr(lib, "dynlib", None)
    if lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) != "openmp" and dynlib:
        for prefix, suffix in _OPENBLAS_AFFIXES:
            setter: _Setter | None = getattr(dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if setter is not None:
                return setter
    set_num_threads: _Setter = lib.set_num_threads
    return set_num_threads


def _current_blas_threads() -> int:
    ctl = _blas_controller()
    if not ctl:
        return 1
    try:
        counts = (int(lib.num_threads) for lib in ctl.lib_controllers)  # type: ignore[arg-type]  # None: caught below
        return max(1, min(counts))
    except Exception:  # noqa: BLE001  # pragma: no cover - a BLAS that cannot report its threads
        return 1


def blas_threads() -> int:
    """Threads the user lets the BLAS use: the fewest over the loaded BLAS libraries
    (1 if unknown). While a parallel call holds the BLAS to one thread, this is the
    setting from before, so that concurrent calls get the same worker count (and
    so bitwise the same results) as calls made one at a time."""
    with _lock:  # read under the lock: a call starting meanwhile would show its "1"
        return _saved_threads if _depth > 0 else _current_blas_threads()


class _OneBlasThread:
    """Hold every BLAS to one thread while at least one parallel call runs.

    Reference-counted across threads: two overlapping calls must not restore
    each other's limits (the second would otherwise save "1" and restore it)."""

    def __enter__(self) -> None:
        global _depth, _saved_limits, _saved_threads
        with _lock:
            if _depth == 0:
                _saved_threads = _current_blas_threads()
                ctl = _blas_controller()
                libs = ctl.lib_controllers if ctl else []  # False: threadpoolctl sees no BLAS
                _saved_limits = [(setter, lib.num_threads) for setter, lib in zip(_setters or (), libs)]
                for setter, _ in _saved_limits:
                    setter(1)
            _depth += 1

    def __exit__(self, *exc: object) -> None:
        global _depth, _saved_limits
        with _lock:
            _depth -= 1
            if _depth == 0:
                saved, _saved_limits = _saved_limits, None
                for setter, threads in saved or ():
                    if threads is not None:
                        setter(threads)


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="fastconv")
        return _pool


def _after_fork_in_child() -> None:
    # The parent's worker threads do not exist in a forked child.
    global _pool, _lock, _depth, _saved_limits
    _pool, _lock, _depth, _saved_limits = None, threading.Lock(), 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run(workers: int, one_blas_thread: bool, work: Callable[[int], _T]) -> list[_T]:
    """``[work(0), ..., work(workers - 1)]``, side by side when ``workers > 1``, on one
    BLAS thread each when ``one_blas_thread`` (a convolution's GEMMs);
    ``work(0)`` runs in the calling thread, the others in copies of its context
    (numpy's error state included). Exceptions propagate after every worker has
    finished (they all write into the caller's arrays)."""
    with _OneBlasThread() if one_blas_thread else contextlib.nullcontext():
        if workers <= 1:
            return [work(0)]
        pool = _get_pool()
        # Each worker runs in a copy of the caller's context, so that numpy's error
        # state (np.errstate / np.seterr live in a context variable) applies there too.
        futures = [pool.submit(contextvars.copy_context().run, work, k) for k in range(1, workers)]
        try:
            first = work(0)
        finally:
            wait(futures)
        return [first] + [f.result() for f in futures]


#: Multiply-adds below which matmul runs whole in the calling thread (a hand-off to a
#: worker costs tens of microseconds).
_SPLIT_MIN = 1 << 22


def matmul(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a @ b`` for 2-D arrays, split over as many workers as the BLAS may use, each on
    one BLAS thread (small products: whole, in the caller, on one BLAS thread): by rows
    of ``a``, or by columns of ``b`` when those are more (an affine layer's dx: 64 rows,
    8192 columns; 8192 rows of 32 were 30 % slower there).

    fastconv's own GEMMs outside a convolution (the affine layers) go through here, so
    that they never wake OpenBLAS's thread pool: when numpy loaded OpenBLAS before
    fastconv could set OPENBLAS_THREAD_TIMEOUT, each woken pool thread spins for about
    0.1 s afterwards, on a core the next convolution's workers need."""
    M, N = a.shape[0], b.shape[1]
    out = np.empty((M, N), dtype=np.result_type(a, b))
    workers = max(1, min(blas_threads(), max(M, N))) if M * a.shape[1] * N >= _SPLIT_MIN else 1
    if M >= N:
        bounds = [M * k // workers for k in range(workers + 1)]
        run(workers, True, lambda k: np.matmul(a[bounds[k] : bounds[k + 1]], b, out=out[bounds[k] : bounds[k + 1]]))
    else:
        bounds = [N * k // workers for k in range(workers + 1)]
        run(
            workers,
            True,
            lambda k: np.matmul(a, b[:, bounds[k] : bounds[k + 1]], out=out[:, bounds[k] : bounds[k + 1]]),
        )
    return out


def sum_in_worker_order(parts: Sequence[_Sums]) -> _Sums:
    """The workers' partial sums (each a tuple of arrays), added in worker order: the
    result never depends on timing."""
    total = parts[0]
    for part in parts[1:]:
        for acc, p in zip(total, part):
            acc += p
    return total


# ---------------------------------------------------------------------------- kernel threads
#: True when each kernel call runs on one thread and the parallel layers split their work
#: over fastconv's own worker threads instead (``over_planes``): the kernels have no OpenMP
#: (a compiler without it, as Apple clang, or FASTCONV_NO_OPENMP=1), or the process's libgomp
#: was loaded before fastconv could ask it to let idle threads sleep (``runtimes``), and its
#: spinning workers would slow every GEMM after a parallel kernel (several times over with
#: torch imported first: docs/performance.md). None until the kernels load
#: (``single_threaded_kernels``); setting it forces either way.
SINGLE_THREADED_KERNELS: bool | None = None


def single_threaded_kernels() -> bool:
    """SINGLE_THREADED_KERNELS, decided when first asked (the kernels load then)."""
    global SINGLE_THREADED_KERNELS
    if SINGLE_THREADED_KERNELS is None:
        from ..kernels.picker import kernels

        SINGLE_THREADED_KERNELS = RUNTIMES.openmp_wait_policy != "PASSIVE" or not kernels.build_info()["openmp"]
    return SINGLE_THREADED_KERNELS


#: Below this many elements of work, kernels run on one thread (the OpenMP start-up
#: would cost more than it saves).
PARALLEL_MIN = 1 << 15


def kernel_threads(work: int) -> int:
    """Thread count for a kernel: OpenMP's default (``omp_get_max_threads()``, which
    OMP_NUM_THREADS and threadpoolctl set), or 1 for small or unsafe cases."""
    if work < PARALLEL_MIN or single_threaded_kernels():
        return 1
    from ..kernels.picker import kernels  # here, not at import: the affine layers need no extension

    return kernels.omp_max_threads()


def over_planes(planes: int, size: int, kernel: Callable[[int, int, int], object]) -> None:
    """``kernel(lo, hi, threads)`` over the planes [0, planes) of a pooling layer, or the
    channels or images of a batchnorm (``size`` elements in all). Normally one call on OpenMP
    threads. When OpenMP must run on one thread or is not there (SINGLE_THREADED_KERNELS: a
    spinning libgomp was loaded first, as PyTorch's is when torch is imported before fastconv,
    or a build without OpenMP), blocks of planes go to fastconv's own worker threads instead,
    one kernel thread each, as many as the BLAS may use: the same bits (planes are
    independent), and the speed depends neither on import order nor on the compiler."""
    threads = kernel_threads(size)
    workers = min(blas_threads(), planes) if size >= PARALLEL_MIN and single_threaded_kernels() else 1
    if workers <= 1:
        kernel(0, planes, threads)
        return
    bounds = [planes * k // workers for k in range(workers + 1)]
    run(workers, False, lambda k: kernel(bounds[k], bounds[k + 1], 1))
