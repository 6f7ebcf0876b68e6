"""fastconv.fast from several Python threads at once: bitwise the results of serial calls.

What this file establishes (and what the engine, ``fastconv/engine/``, promises):

* **The kernels release the GIL.** Every Cython kernel runs its loops under
  ``nogil``; ``test_kernels_release_the_gil`` shows a Python thread keeps running
  while each kernel works (it would be frozen if the GIL were held).
* **Concurrent calls are independent.** Each thread gets its own workspaces
  (``cols``, ``y``: ``threading.local`` buffers in ``engine/workspaces.py``, reused across that
  thread's calls and grown to the largest chunk it has seen); outputs are fresh
  arrays. Six threads running conv and pooling forward and backward on
  different shapes and dtypes (so each thread's workspace is resized while the
  others use theirs) get bitwise the results of the same calls made serially,
  iteration after iteration, and an output is never changed by a later call.
  Memory: each thread that calls ``conv_forward`` (and each of fastconv's own
  worker threads) keeps up to about ``WORKSPACE_BYTES`` (2 MiB, or one image's
  im2col matrix if larger) of im2col workspace (plus the GEMM output
  workspace) for its lifetime.
* **A cache may be shared between threads.** A conv cache holds ``x``, ``w``,
  a flag and the geometry; a pooling cache holds the argmax (or the shape) and
  the geometry; backward only reads them. So a cache made in one thread can go
  to backward in another, and several threads may run backward on the same
  cache at the same time (both tested below). As in the single-threaded case,
  a conv cache refers to the caller's ``x`` and ``w`` when they are already
  C-contiguous (no copy): writing to them between forward and backward changes
  the gradients, from any thread.
* Results are bitwise reproducible because every parallel loop writes disjoint
  memory with a static schedule, the GEMMs have fixed shapes, and a convolution's
  per-worker partial sums are added in worker order, with the worker count taken
  from the user's BLAS setting even while another call holds the BLAS to one
  thread (tests/engine/test_parallel.py).
* Speed, not correctness: several Python threads each calling a multi-threaded
  OpenBLAS crawl when a core is busy elsewhere (6 threads x 12 iterations: 21 s,
  against 0.19 s with OpenBLAS limited to one thread by threadpoolctl). Code
  that runs fastconv from many threads should limit BLAS to one thread each.
"""

import contextlib
import queue
import sys
import threading
import time

import numpy as np
import pytest

import fastconv.fast as fast
from fastconv.kernels.picker import (
    kernels as _kernels,  # the kernel build fastconv.fast runs (fastconv/kernels/picker.py)
)

N_THREADS = 6
ITERATIONS = 12


# ---------------------------------------------------------------------------- tasks
def _conv_task(rng, dtype, N, C, H, W, F, k, stride, pad, dilation, groups, algorithm="im2col"):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C // groups, k, k)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    kwargs = dict(stride=stride, pad=pad, dilation=dilation, groups=groups, algorithm=algorithm)

    def run():
        out, cache = fast.conv_forward(x, w, b, **kwargs)
        dout = np.cos(out)  # a deterministic dout that depends on out
        return (out,) + fast.conv_backward(dout, cache)

    return run


def _pool_task(rng, dtype, kind, N, C, H, W, k, stride, pad):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    forward, backward = getattr(fast, f"{kind}_pool_forward"), getattr(fast, f"{kind}_pool_backward")

    def run():
        out, cache = forward(x, k, stride, pad)
        return out, backward(np.sin(out), cache)

    return run


def _tasks(seed):
    """Per thread, six tasks of different shapes, dtypes and algorithms (so workspaces change size)."""
    rng = np.random.default_rng(seed)
    f32, f64 = np.float32, np.float64
    per_thread = []
    for t in range(N_THREADS):
        dt = (f32, f64)[t % 2]
        per_thread.append(
            [
                _conv_task(rng, dt, 4 + t, 8, 20 + t, 18, 16, 3, 1, 1, 1, 1),
                _conv_task(rng, (f64, f32)[t % 2], 2, 6 + 2 * t, 15, 23 - t, 6, 5, (2, 1), 2, (1, 2), 2),
                _pool_task(rng, dt, ("max", "avg")[t % 2], 3, 8 + t, 33, 31, 3, 2, 1),
                _conv_task(rng, dt, 3 + t, 4 + t, 11 + t, 14, 6, 3, 1, (1, t % 3), 1, 1, "winograd"),
                _conv_task(rng, (f64, f32)[t % 2], 2 + t, 3 + t, 9 + t, 13, 5, 3, 1, (t % 3, 1), 1, 1, "winograd4"),
                _conv_task(rng, dt, 3 + t, 3, 12 + t, 19, 6 + t, 5, (1, 1 + t % 2), 2, 1, 1, "direct"),
            ]
        )
    return per_thread


def _same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


# ---------------------------------------------------------------------------- tests
@contextlib.contextmanager
def _blas_threads(setting):
    """'default': BLAS as configured; 'one': OpenBLAS limited to one thread (threadpoolctl)."""
    if setting == "default":
        yield
        return
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        yield


@pytest.mark.parametrize("blas, iterations", [("one", 30), ("default", 4)], ids=["blas-1-thread", "blas-default"])
def test_concurrent_calls_equal_serial_calls_bitwise(blas, iterations):
    """With OpenBLAS multi-threaded, six threads of GEMMs are very slow when a core is busy
    elsewhere (docs/performance.md, "Concurrent calls"), hence fewer iterations."""
    with _blas_threads(blas):
        _run_concurrently(iterations)


def _run_concurrently(iterations):
    tasks = _tasks(0)
    serial = [[task() for task in mine] for mine in tasks]
    errors = []
    start = threading.Barrier(N_THREADS)

    def worker(t):
        kept = []
        try:
            start.wait()
            for it in range(iterations):
                for j, task in enumerate(tasks[t]):
                    got = task()
                    for a, b in zip(got, serial[t][j]):
                        if not _same(a, b):
                            errors.append(f"thread {t} iteration {it} task {j}: result differs from serial")
                    kept.append((j, got))
            for j, got in kept:  # no later call (of this or another thread) touched an earlier output
                if not all(_same(a, b) for a, b in zip(got, serial[t][j])):
                    errors.append(f"thread {t} task {j}: an earlier output changed afterwards")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:10]


def test_cache_from_one_thread_backward_in_another():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 6, 17, 19)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    out, cache = fast.conv_forward(x, w, None, 1, 1, 1, 2)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    want_conv = fast.conv_backward(dout, cache)
    pool_out, pool_cache = fast.max_pool_forward(x, 3, 2, 1)
    pool_dout = rng.standard_normal(pool_out.shape).astype(np.float32)
    want_pool = fast.max_pool_backward(pool_dout, pool_cache)

    caches = queue.Queue()
    results, errors = [], []

    def producer():
        for _ in range(ITERATIONS):
            caches.put((fast.conv_forward(x, w, None, 1, 1, 1, 2)[1], fast.max_pool_forward(x, 3, 2, 1)[1]))
        caches.put(None)

    def consumer():
        try:
            while (item := caches.get()) is not None:
                conv_cache, p_cache = item
                results.append((fast.conv_backward(dout, conv_cache), fast.max_pool_backward(pool_dout, p_cache)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(results) == ITERATIONS
    for conv_grads, pool_dx in results:
        assert _same(conv_grads[0], want_conv[0]) and _same(conv_grads[1], want_conv[1]) and conv_grads[2] is None
        assert _same(pool_dx, want_pool)


def test_one_cache_shared_by_concurrent_backward_calls():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4, 21, 21))
    w = rng.standard_normal((10, 4, 3, 3))
    b = rng.standard_normal(10)
    out, cache = fast.conv_forward(x, w, b, stride=2, pad=1)
    pool_out, pool_cache = fast.avg_pool_forward(x, 3, 2, 1)
    douts = [rng.standard_normal(out.shape) for _ in range(N_THREADS)]
    pool_douts = [rng.standard_normal(pool_out.shape) for _ in range(N_THREADS)]
    want = [fast.conv_backward(d, cache) for d in douts]
    want_pool = [fast.avg_pool_backward(d, pool_cache) for d in pool_douts]
    errors = []
    start = threading.Barrier(N_THREADS)

    def worker(t):
        start.wait()
        for _ in range(ITERATIONS):
            got = fast.conv_backward(douts[t], cache)
            if not all(_same(a, b) for a, b in zip(got, want[t])):
                errors.append(f"thread {t}: conv gradients differ")
            if not _same(fast.avg_pool_backward(pool_douts[t], pool_cache), want_pool[t]):
                errors.append(f"thread {t}: pooling gradient differs")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:10]


# ---------------------------------------------------------------------------- the GIL
def _kernel_calls():
    """One call of each kernel, sized to take tens of milliseconds on one thread."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 16, 64, 64))
    kh = kw = 3
    P = 64 * 64
    cols = np.empty((16 * kh * kw, 8 * P))
    args = (kh, kw, 1, 1, 1, 1, 1, 1, 64, 64)
    planes = x.reshape(128, 64, 64)
    pooled = np.empty((128, 32, 32))
    argmax = np.zeros((128, 32, 32), dtype=np.int32)  # valid indices: max_pool_backward checks them
    overlapped, argmax_3x3 = np.empty((128, 31, 31)), np.empty((128, 31, 31), dtype=np.int32)
    phased = _kernels.max_pool_phased_scratch(64, 64, 31, 3, 2)
    rows_3x3 = _kernels.max_pool_rows_scratch(64, 31)[0]
    y = rng.standard_normal((16, 8 * P))
    out = np.empty((8, 16, P))
    return {
        "im2col": lambda: _kernels.im2col(x, cols, *args, 1),
        "col2im": lambda: _kernels.col2im(cols, np.empty_like(x), *args, 1),
        "scatter_output": lambda: _kernels.scatter_output(y, out, np.zeros(16), True, False, 1),
        "gather_dout": lambda: _kernels.gather_dout(out, y, np.zeros(16), True, 1),
        "max_pool_direct": lambda: _kernels.max_pool_direct(
            planes, pooled, argmax, 2, 2, 2, 2, 0, 0, np.empty((2, 2), dtype=np.intp), 1
        ),
        "max_pool2": lambda: _kernels.max_pool2(planes, pooled, argmax, 1),
        "max_pool3s2": lambda: _kernels.max_pool3s2(planes, overlapped, argmax_3x3, 3, 2, 0, 1),
        "max_pool_phased": lambda: _kernels.max_pool_phased(
            planes,
            overlapped,
            argmax_3x3,
            3,
            3,
            2,
            2,
            0,
            0,
            np.empty((1, phased[0])),
            np.empty((1, phased[1]), np.int32),
            1,
        ),
        "max_pool_rows": lambda: _kernels.max_pool_rows(
            planes,
            overlapped,
            argmax_3x3,
            3,
            2,
            0,
            0,
            np.empty((1, rows_3x3)),
            np.empty((1, rows_3x3), np.int32),
            1,
        ),
        "max_pool2_backward": lambda: _kernels.max_pool2_backward(pooled, argmax, np.empty_like(planes), 1),
        "max_pool_backward": lambda: _kernels.max_pool_backward(
            pooled.reshape(128, -1), argmax.reshape(128, -1), np.empty((128, 64 * 64)), 1
        ),
        "avg_pool_forward": lambda: _kernels.avg_pool_forward(planes, pooled, 2, 2, 2, 2, 0, 0, 1),
        "avg_pool2": lambda: _kernels.avg_pool2(planes, pooled, 1),
        "avg_pool_backward": lambda: _kernels.avg_pool_backward(pooled, np.empty_like(planes), 2, 2, 2, 2, 0, 0, 1),
    }


def _progress_while(call):
    """(count of a Python counting thread while ``call`` runs, repeated for at least 50 ms, five
    times; count during sleeps of the same lengths), interleaved so that load from elsewhere hits
    both alike. A short switch interval keeps the counter from counting much in the gaps between
    calls (where the GIL is passed around anyway)."""
    count = [0]
    stop = threading.Event()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)

    def counter():
        while not stop.is_set():
            count[0] += 1

    th = threading.Thread(target=counter)
    th.start()
    try:
        during_call = during_sleep = 0
        for _ in range(5):
            c0, t0 = count[0], time.perf_counter()
            while time.perf_counter() - t0 < 0.05:
                call()
            elapsed = time.perf_counter() - t0
            c1 = count[0]
            time.sleep(elapsed)
            c2 = count[0]
            during_call += c1 - c0
            during_sleep += c2 - c1
    finally:
        stop.set()
        th.join()
        sys.setswitchinterval(interval)
    return during_call, during_sleep


@pytest.mark.parametrize("name", list(_kernel_calls()))
def test_kernels_release_the_gil(name):
    """The counting thread keeps counting while the kernel runs (on one OpenMP thread, in this
    thread); held, the GIL would stop it for the whole call."""
    call = _kernel_calls()[name]
    call()  # warm-up
    during_kernel, during_sleep = _progress_while(call)
    assert during_sleep > 0
    assert during_kernel > 0.1 * during_sleep, (name, during_kernel, during_sleep)


def test_gil_measurement_detects_a_held_gil():
    """The control: a C loop that holds the GIL (sum over a range) all but stops the counter."""
    during_call, during_sleep = _progress_while(lambda: sum(range(3_000_000)))
    assert during_call < 0.1 * during_sleep, (during_call, during_sleep)
