"""The convolution's worker threads (fastconv/engine/threads.py): same results, BLAS limits restored.

``fast.conv_forward`` / ``conv_backward`` cut the batch into chunks and, when
the BLAS may use several threads, run the chunks on that many worker threads
with the BLAS held to one thread. These tests force several chunks (a small
``WORKSPACE_BYTES``) and a chosen worker count, whatever the machine has, and
check what the design promises:

* every worker count gives naive's results (forward, dx, dw, db; groups,
  strides, a remainder chunk, more workers than chunks);
* the same worker count gives bitwise the same results, call after call;
  different counts differ only in the order dw and db are summed;
* the BLAS thread counts are back to the user's after every call: after an
  exception in a worker, and after overlapping calls from several threads,
  which also keep the user's worker count;
* numpy's error state (``np.errstate``) applies inside the workers;
* a child process can still convolve: forked (the parent's pool is not inherited), or
  started by spawn or forkserver.
"""

import multiprocessing
import os
import subprocess
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastconv.fast as fast
import fastconv.naive as naive
from fastconv.engine import conv
from fastconv.engine import threads as _parallel
from fastconv.engine.geometry import conv_geometry
from fastconv.io.child import python_code
from fastconv.kernels.picker import (
    kernels as _kernels,  # the kernel build fastconv.fast runs (fastconv/kernels/picker.py)
)
from fastconv.testing import DTYPES, assert_close

# (N, C, H, W, F, (kh, kw), stride, pad, groups)
CASES = [
    (7, 3, 9, 8, 4, (3, 3), 1, 1, 1),  # 7 chunks of one image
    (5, 4, 7, 9, 6, (3, 2), (2, 1), (1, 2), 2),  # groups, non-square, stride 2
    (3, 2, 6, 6, 3, (5, 5), 1, 0, 1),  # fewer chunks than some worker counts
]


def _id(case):
    N, C, H, W, F, k, s, p, g = case
    return f"n{N}-c{C}-x{H}x{W}-f{F}-k{k[0]}x{k[1]}-s{s}-p{p}-g{g}"


def _blas_thread_counts():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def one_image_chunks(monkeypatch):
    """Chunks of one image: a 1-byte workspace bound (the chunk never goes below one image)."""
    monkeypatch.setattr(fast, "WORKSPACE_BYTES", 1)


@pytest.fixture
def im2col_calls(monkeypatch):
    """The list of (thread name, BLAS threads in effect) of every im2col call from now on."""
    seen = []
    real = _kernels.im2col

    def recording_im2col(*args):
        seen.append((threading.current_thread().name, _parallel._current_blas_threads()))
        return real(*args)

    monkeypatch.setattr(_kernels, "im2col", recording_im2col)
    return seen


@pytest.fixture
def workers(monkeypatch):
    """``workers(n)``: make the engine see n BLAS threads, so that it runs n workers."""

    def set_workers(n):
        monkeypatch.setattr(_parallel, "blas_threads", lambda: n)

    return set_workers


def _data(case, dtype, seed=0):
    N, C, H, W, F, k, s, p, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C // g) + k).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b, dict(stride=s, pad=p, groups=g)


def _fwdbwd(layers, x, w, b, kwargs):
    out, cache = layers.conv_forward(x, w, b, **kwargs)
    dout = np.cos(out)
    return (out,) + layers.conv_backward(dout, cache)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n_workers", [1, 2, 3, 8])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_every_worker_count_equals_naive(one_image_chunks, workers, case, n_workers, dtype):
    workers(n_workers)
    x, w, b, kwargs = _data(case, dtype)
    plan = conv.ConvPlan(conv_geometry(x, w, b, kwargs["stride"], kwargs["pad"], 1, kwargs["groups"]), dtype)
    assert plan.chunk == 1 and plan.workers == min(n_workers, case[0])
    got = _fwdbwd(fast, x, w, b, kwargs)
    want = _fwdbwd(naive, x, w, b, kwargs)
    for name, g, r in zip(("out", "dx", "dw", "db"), got, want):
        assert_close(g, r, dtype, name)


def _balanced(chunks_of_workers, chunk_limit):
    """What ConvPlan promises of its chunks: together they are [0, N) in order, none over the
    workspace's limit, and no worker has more than one image per chunk over another."""
    flat = sorted(c for per_worker in chunks_of_workers for c in per_worker)
    ends = [n0 + n for n0, n in flat]
    covered = [n0 for n0, _ in flat] == [0] + ends[:-1] and all(n >= 1 for _, n in flat)
    images = [sum(n for _, n in per_worker) for per_worker in chunks_of_workers]
    per_worker = max(len(c) for c in chunks_of_workers)
    return covered, max(n for _, n in flat) <= chunk_limit, max(images) - min(images) <= per_worker


@pytest.mark.parametrize("n_workers", [1, 2, 3, 4])
@pytest.mark.parametrize("N", [1, 2, 5, 7, 10, 64, 65, 100])
@pytest.mark.parametrize("chunk_limit", [1, 2, 3, 9])
def test_chunks_cover_the_batch_and_share_it_evenly(workers, monkeypatch, N, n_workers, chunk_limit):
    workers(n_workers)
    g = conv_geometry(np.empty((N, 32, 14, 14), np.float32), np.empty((64, 32, 3, 3), np.float32), None, 1, 1, 1, 1)
    monkeypatch.setattr(fast, "WORKSPACE_BYTES", chunk_limit * 32 * 9 * 14 * 14 * 4)
    plan = conv.ConvPlan(g, np.float32)
    chunks = [list(plan.chunks(k)) for k in range(plan.workers)]
    assert _balanced(chunks, min(chunk_limit, -(-N // n_workers))) == (True, True, True)
    assert plan.workers == min(n_workers, N)
    # the fused layer's backward rebuilds the same chunks from n_chunks, on any worker count
    workers(1)
    again = conv.ConvPlan(g, np.float32, n_chunks=plan.n_chunks)
    assert sorted(c for per_worker in chunks for c in per_worker) == list(again.chunks(0))


def test_uneven_chunks_fail_the_balance_check():
    # 64 images in chunks of 9 taken in turn by 2 workers (as before 2026-12-07): 36 and 28
    old = [[(n0, min(9, 64 - n0)) for n0 in range(k * 9, 64, 18)] for k in range(2)]
    assert _balanced(old, 9) == (True, True, False)
    gap = [[(0, 4)], [(5, 4)]]  # image 4 in no chunk
    assert _balanced(gap, 9)[0] is False


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_same_worker_count_is_bitwise_reproducible(one_image_chunks, workers, case):
    x, w, b, kwargs = _data(case, np.float32)
    results = {}
    for n in (1, 2, 3):
        workers(n)
        first = _fwdbwd(fast, x, w, b, kwargs)
        for _ in range(5):
            again = _fwdbwd(fast, x, w, b, kwargs)
            for a, c in zip(first, again):
                assert a.tobytes() == c.tobytes()
        results[n] = first
    for n in (2, 3):  # out and dx never depend on the worker count, only the summed dw and db may
        for a, c in zip(results[1][:2], results[n][:2]):
            assert a.tobytes() == c.tobytes()


@pytest.mark.parametrize("algorithm", ["winograd2", "winograd4"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_winograd_worker_counts_equal_naive_and_repeat_bitwise(one_image_chunks, workers, algorithm, dtype):
    """The Winograd chunk loops on 1, 2, 3 and 8 workers: naive's results, the same bits call
    after call, and out and dx the same bits whatever the worker count."""
    x, w, b, kwargs = _data((7, 3, 10, 9, 4, (3, 3), 1, (1, 2), 1), dtype)
    kwargs["algorithm"] = algorithm
    want = _fwdbwd(naive, x, w, b, {k: v for k, v in kwargs.items() if k != "algorithm"})
    results = {}
    for n in (1, 2, 3, 8):
        workers(n)
        results[n] = _fwdbwd(fast, x, w, b, kwargs)
        assert all(a.tobytes() == c.tobytes() for a, c in zip(results[n], _fwdbwd(fast, x, w, b, kwargs)))
        for name, g, r in zip(("out", "dx", "dw", "db"), results[n], want):
            assert_close(g, r, dtype, name)
    for n in (2, 3, 8):
        for a, c in zip(results[1][:2], results[n][:2]):
            assert a.tobytes() == c.tobytes()


def test_workers_run_with_one_blas_thread_and_limits_come_back(one_image_chunks, workers, im2col_calls):
    workers(2)
    before = _blas_thread_counts()
    seen = im2col_calls
    x, w, b, kwargs = _data(CASES[0], np.float64)
    _fwdbwd(fast, x, w, b, kwargs)
    assert {blas for _, blas in seen} == {1}
    names = {name for name, _ in seen}
    assert "MainThread" in names and any(n.startswith("fastconv") for n in names)  # caller and pool
    assert _blas_thread_counts() == before


def test_the_blas_is_held_to_one_thread_from_any_python_thread(one_image_chunks, workers, im2col_calls):
    """threadpoolctl >= 3.8 ignores limits set from any Python thread but the one that set
    one first (here the main thread, which keeps that role while its limit lasts); a
    convolution started in another thread must still run its workers on one BLAS thread."""
    from threadpoolctl import ThreadpoolController

    ctl = ThreadpoolController().select(user_api="blas")
    if not ctl.lib_controllers or min(_blas_thread_counts()) < 2:
        pytest.skip("needs a BLAS that threadpoolctl sees, with 2 or more threads")
    workers(2)
    before = _blas_thread_counts()
    seen = im2col_calls
    x, w, b, kwargs = _data(CASES[0], np.float64)
    main_holds = ctl.limit(limits=min(before))  # the main thread now controls OpenBLAS for threadpoolctl
    try:
        other = threading.Thread(target=_fwdbwd, args=(fast, x, w, b, kwargs))
        other.start()
        other.join()
    finally:
        main_holds.restore_original_limits()
    assert seen and {blas for _, blas in seen} == {1}
    assert _blas_thread_counts() == before


@pytest.mark.parametrize("N", [1, 2, 3])
def test_small_batches_also_run_on_one_blas_thread(workers, im2col_calls, N):
    """A batch that fits one workspace is still cut into a chunk per worker (N = 1: one
    worker), so its GEMMs never run on however many BLAS threads another thread's call
    left in place: results depend on the user's setting alone."""
    workers(2)
    seen = im2col_calls
    x, w, b, kwargs = _data((N, 2, 6, 5, 3, (3, 3), 1, 1, 1), np.float64)
    _fwdbwd(fast, x, w, b, kwargs)
    assert {blas for _, blas in seen} == {1}
    names = {name for name, _ in seen}
    assert "MainThread" in names  # the caller runs worker 0, and a pool thread the others if N > 1
    assert any(name.startswith("fastconv") for name in names) == (N > 1)


def test_an_error_in_a_worker_propagates_and_limits_come_back(one_image_chunks, workers, monkeypatch):
    workers(2)
    before = _blas_thread_counts()
    real = _kernels.im2col

    def failing_in_a_worker(x, *args):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("im2col failed in a worker")
        return real(x, *args)

    monkeypatch.setattr(_kernels, "im2col", failing_in_a_worker)
    x, w, b, kwargs = _data(CASES[0], np.float64)
    with pytest.raises(RuntimeError, match="failed in a worker"):
        fast.conv_forward(x, w, b, **kwargs)
    assert _blas_thread_counts() == before
    monkeypatch.setattr(_kernels, "im2col", real)
    assert_close(_fwdbwd(fast, x, w, b, kwargs)[0], _fwdbwd(naive, x, w, b, kwargs)[0], np.float64, "out")


def test_overlapping_calls_keep_the_user_setting_and_restore_it(one_image_chunks):
    """Real BLAS thread counts (no monkeypatch): six threads convolving at once all
    use the user's worker count (bitwise the serial result) and leave the limits as found."""
    before = _blas_thread_counts()
    x, w, b, kwargs = _data(CASES[0], np.float32)
    serial = _fwdbwd(fast, x, w, b, kwargs)
    errors, barrier = [], threading.Barrier(6)

    def run():
        try:
            barrier.wait()
            for _ in range(10):
                for a, c in zip(_fwdbwd(fast, x, w, b, kwargs), serial):
                    assert a.tobytes() == c.tobytes()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert _blas_thread_counts() == before


@pytest.mark.parametrize("n_workers", [1, 2])
def test_numpy_error_state_reaches_the_workers(one_image_chunks, workers, n_workers):
    """inf * 0 only in image 1, which worker 1 convolves: np.errstate must make it raise there."""
    workers(n_workers)
    x, w, b, kwargs = _data(CASES[0], np.float64)
    x[1, 0, 4, 4] = np.inf
    w[0, 0, 1, 1] = 0.0
    with np.errstate(invalid="raise"):
        with pytest.raises(FloatingPointError):
            fast.conv_forward(x, w, b, **kwargs)
    with np.errstate(invalid="ignore"):
        out, _ = fast.conv_forward(x, w, b, **kwargs)
    assert np.isnan(out[1, 0, 4, 4]) and np.isfinite(np.delete(out, 1, axis=0)).all()


def _child_convolves(queue):
    x, w, b, kwargs = _data(CASES[0], np.float64)
    out = _fwdbwd(fast, x, w, b, kwargs)[0]
    queue.put(float(np.abs(out - _fwdbwd(naive, x, w, b, kwargs)[0]).max()))


def _convolve_in_a_child(method):
    x, w, b, kwargs = _data(CASES[0], np.float64)
    _fwdbwd(fast, x, w, b, kwargs)  # the parent's pool exists now
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    child = ctx.Process(target=_child_convolves, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) < 1e-9


@pytest.mark.parametrize("method", [m for m in ("spawn", "forkserver") if m in multiprocessing.get_all_start_methods()])
def test_a_child_started_safely_can_convolve(one_image_chunks, method):
    """The start methods that are safe beside a thread pool (Python 3.14's default on Linux
    is forkserver): the child imports fastconv afresh and convolves."""
    _convolve_in_a_child(method)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
# Forking with the pool's threads alive is what this test is for (Python <= 3.13 forks by
# default on Linux): 3.12+ warns that it may deadlock, which is the hazard the after-fork
# handler of fastconv/_parallel.py removes for fastconv's own lock and pool.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_a_forked_child_can_convolve(one_image_chunks):
    _convolve_in_a_child("fork")


@pytest.mark.parametrize("n_workers, text", [(1, "in the calling thread"), (3, "chunks of images on 3 worker threads")])
def test_show_config_says_how_convolutions_run(workers, capsys, n_workers, text):
    import fastconv

    workers(n_workers)
    fastconv.show_config()
    assert f"convolution: {text}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kind, kernel_size, stride",
    [("max", 2, 2), ("max", 3, 2), ("avg", 2, 2), ("avg", 3, 1)],
    ids=["max2s2", "max3s2", "avg2s2", "avg3s1"],
)
def test_pooling_runs_on_fastconvs_threads_when_openmp_cannot(workers, monkeypatch, kind, kernel_size, stride):
    """With a spinning libgomp loaded first (torch imported before fastconv), the OpenMP
    kernels run on one thread; pooling then splits its planes over fastconv's own worker
    threads instead: the same bits as the normal path, on as many threads as the BLAS may use."""
    x = np.random.default_rng(3).standard_normal((4, 9, 40, 38))  # above PARALLEL_MIN elements
    forward, backward = getattr(fast, f"{kind}_pool_forward"), getattr(fast, f"{kind}_pool_backward")
    out, cache = forward(x, kernel_size, stride)
    expected = out.tobytes(), backward(np.cos(out), cache).tobytes()
    workers(2)
    monkeypatch.setattr(_parallel, "SINGLE_THREADED_KERNELS", True)
    seen = []
    for name in (
        "max_pool2",
        "max_pool3s2",
        "max_pool_rows",
        "max_pool_phased",
        "max_pool_direct",
        "max_pool2_backward",
        "max_pool_backward",
        "avg_pool2",
        "avg_pool_forward",
        "avg_pool_backward",
    ):
        real = getattr(_kernels, name)

        def recording(*args, real=real):
            seen.append((threading.current_thread().name, args[-1]))  # the thread count is the last argument
            return real(*args)

        monkeypatch.setattr(_kernels, name, recording)
    out, cache = forward(x, kernel_size, stride)
    assert (out.tobytes(), backward(np.cos(out), cache).tobytes()) == expected
    assert {threads for _, threads in seen} == {1}
    assert "MainThread" in {n for n, _ in seen} and any(n.startswith("fastconv") for n, _ in seen)


def test_batchnorm_runs_on_fastconvs_threads_when_openmp_cannot(workers, monkeypatch):
    """The same for spatial batchnorm: blocks of channels on fastconv's worker threads,
    one kernel thread each, the same bits as one call over every channel."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 9, 40, 38))  # above PARALLEL_MIN elements
    gamma, beta, dout = rng.standard_normal(9), rng.standard_normal(9), rng.standard_normal(x.shape)

    def run():
        out, cache = fast.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})
        return [a.tobytes() for a in (out, *fast.spatial_batchnorm_backward(dout, cache))]

    expected = run()
    workers(2)
    monkeypatch.setattr(_parallel, "SINGLE_THREADED_KERNELS", True)
    seen = []
    for name in ("bn_channel_stats", "bn_affine", "bn_backward_sums", "bn_backward_dx"):
        real = getattr(_kernels, name)

        def recording(*args, real=real, name=name):
            seen.append((name, threading.current_thread().name, args[-1]))
            return real(*args)

        monkeypatch.setattr(_kernels, name, recording)
    assert run() == expected
    assert {threads for *_, threads in seen} == {1}
    for name in ("bn_channel_stats", "bn_affine", "bn_backward_sums", "bn_backward_dx"):
        threads = {t for n, t, _ in seen if n == name}
        assert "MainThread" in threads and any(t.startswith("fastconv") for t in threads), name


@pytest.mark.parametrize("c_lo, c_hi", [(-1, 2), (2, 1), (0, 4)], ids=["negative", "reversed", "past-C"])
def test_batchnorm_kernels_refuse_a_bad_channel_range(c_lo, c_hi):
    x = np.zeros((2, 3, 5))
    stats = np.empty(3), np.empty(3)
    with pytest.raises(ValueError, match="c_lo"):
        _kernels.bn_channel_stats(x, *stats, c_lo, c_hi, 1)
    with pytest.raises(ValueError, match="c_lo"):
        _kernels.bn_affine(x, np.zeros(3), np.ones(3), np.zeros(3), np.empty_like(x), c_lo, c_hi, 1)
    with pytest.raises(ValueError, match="c_lo"):
        _kernels.bn_backward_sums(x, x, np.zeros(3), *stats, c_lo, c_hi, 1)
    with pytest.raises(ValueError, match="c_lo"):
        _kernels.bn_backward_dx(x, x, np.zeros(3), np.ones(3), np.ones(3), np.zeros(3), np.empty_like(x), c_lo, c_hi, 1)


# ------------------------------------------------------------ GEMMs outside a convolution
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n_workers", [1, 2, 3])
@pytest.mark.parametrize(
    "shape", [(64, 700, 90), (5, 2000, 600), (1, 5000, 900), (0, 3, 4), (7, 0, 3)], ids=lambda s: "x".join(map(str, s))
)
def test_split_matmul_equals_a_plain_product(workers, monkeypatch, n_workers, shape, dtype):
    monkeypatch.setattr(_parallel, "_SPLIT_MIN", 1)  # split even the small ones
    workers(n_workers)
    M, K, N = shape
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((N, K)).astype(dtype).T
    got = _parallel.matmul(a, b)  # b a transposed view, as affine_backward passes w.T
    assert got.shape == (M, N) and got.dtype == dtype
    assert_close(got, a.astype(np.float64) @ b.astype(np.float64), dtype, "split matmul")


def test_matmul_runs_where_threadpoolctl_sees_no_blas(monkeypatch):
    """Where threadpoolctl finds no BLAS library (its controller is False: a BLAS it does not
    know, or no threadpoolctl), the engine holds nothing to one thread and its GEMMs still run
    (found by mypy: holding the BLAS read ``lib_controllers`` of False, an AttributeError in
    every affine layer)."""
    monkeypatch.setattr(_parallel, "_controller", False)
    monkeypatch.setattr(_parallel, "_setters", [])
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((5, 4))
    assert _parallel.blas_threads() == 1
    assert_close(_parallel.matmul(a, b), a @ b, np.float64, "matmul without a visible BLAS")
    x, w = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    out, cache = fast.affine_forward(x, rng.standard_normal((50, 4)), np.zeros(4))
    assert out.shape == (2, 4)
    fast.affine_backward(np.ones_like(out), cache)
    out, cache = fast.conv_forward(x, w, None, pad=1)
    assert_close(out, naive.conv_forward(x, w, None, pad=1)[0], np.float64, "conv without a visible BLAS")


_BLAS_POOL_CPU = """
import os, sys, time
import numpy as np  # first: OpenBLAS starts with its own thread timeout (threads spin ~0.1 s)
pool = [int(t) for t in os.listdir("/proc/self/task") if int(t) != os.getpid()]  # OpenBLAS's threads

def pool_cpu_ns():
    return sum(int(open(f"/proc/self/task/{t}/schedstat").read().split()[0]) for t in pool)

from fastconv import layers
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 8192)).astype(np.float32)
w = rng.standard_normal((8192, 100)).astype(np.float32)
b = np.zeros(100, np.float32)
def fastconv_layers():
    out, cache = layers.affine_forward(x, w, b)
    layers.affine_backward(out, cache)
def plain_numpy():
    (x @ w).T @ x
step = {"fastconv": fastconv_layers, "numpy": plain_numpy}[sys.argv[1]]
step()
time.sleep(0.3)  # past the spin of the warm-up's threads
before = pool_cpu_ns()
for _ in range(4):
    step()
    time.sleep(0.12)
print(len(pool), (pool_cpu_ns() - before) / 1e6)
"""


@pytest.mark.skipif(
    not os.path.exists("/proc/self/task") or (os.cpu_count() or 1) < 2,
    reason="needs Linux's /proc/self/task and at least 2 CPUs",
)
@pytest.mark.parametrize("who", ["fastconv", "numpy"])
def test_affine_layers_never_wake_openblas_threads(who):
    """With numpy imported before fastconv, OpenBLAS's pool threads spin for about 0.1 s
    after each GEMM they take part in, on a core that the next convolution's workers need
    (W1step about 1.6x slower, docs/performance.md). fastconv's affine layers run their
    GEMMs on its own workers, one BLAS thread each: the pool's CPU time stays near zero.
    The plain numpy product beside it shows that the measurement sees the spinning."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env["OPENBLAS_NUM_THREADS"] = "2"
    run = subprocess.run(python_code(_BLAS_POOL_CPU, who), env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    threads, cpu_ms = run.stdout.split()
    if int(threads) < 1:
        pytest.skip("this numpy's BLAS started no thread pool")
    if who == "fastconv":
        assert float(cpu_ms) < 20, f"OpenBLAS's threads ran {cpu_ms} ms during fastconv's affine layers"
    else:
        assert float(cpu_ms) > 100, f"plain numpy GEMMs woke OpenBLAS's threads for only {cpu_ms} ms"


def test_adam_runs_on_fastconvs_threads_when_openmp_cannot(workers, monkeypatch):
    """Adam's update is elementwise: without OpenMP (or with a spinning libgomp loaded first)
    blocks of elements go to fastconv's workers, one kernel thread each, the same bits."""
    from fastconv import optim

    rng = np.random.default_rng(5)
    w, dw = rng.standard_normal((64, 1200)), rng.standard_normal((64, 1200))  # above _PARALLEL_MIN

    def run():
        config = {"m": rng.standard_normal(w.shape) * 0, "v": np.zeros(w.shape), "t": 3}
        out, config = optim.adam(w, dw, config)
        return [a.tobytes() for a in (out, config["m"], config["v"])]

    expected = run()
    workers(2)
    monkeypatch.setattr(_parallel, "SINGLE_THREADED_KERNELS", True)
    seen = []
    real = _kernels.adam_update

    def recording(*args):
        seen.append((threading.current_thread().name, args[-1], args[0].size))
        return real(*args)

    monkeypatch.setattr(_kernels, "adam_update", recording)
    assert run() == expected
    assert {threads for _, threads, _ in seen} == {1} and sum(size for *_, size in seen) == w.size
    assert "MainThread" in {n for n, *_ in seen} and any(n.startswith("fastconv") for n, *_ in seen)


@pytest.mark.skipif(
    _kernels.build_info()["openmp"], reason="this build has OpenMP (CI builds one without: .ci/no_openmp.sh)"
)
@pytest.mark.parametrize("layer", ["max_pool", "avg_pool", "batchnorm"])
def test_a_build_without_openmp_runs_the_layers_on_fastconvs_threads(workers, monkeypatch, layer):
    """Without OpenMP, as built: pooling and batchnorm split over fastconv's workers with no
    setting changed (before the fix only the torch-first import order did that)."""
    assert _parallel.single_threaded_kernels()
    x = np.random.default_rng(6).standard_normal((4, 9, 40, 38))  # above _PARALLEL_MIN elements
    workers(2)
    names = {
        "max_pool": ("max_pool2", "max_pool3s2", "max_pool_rows", "max_pool_phased", "max_pool_direct"),
        "avg_pool": ("avg_pool2", "avg_pool_forward"),
        "batchnorm": ("bn_channel_stats", "bn_affine"),
    }[layer]
    seen = []
    for name in names:
        real = getattr(_kernels, name)

        def recording(*args, real=real):
            seen.append(threading.current_thread().name)
            return real(*args)

        monkeypatch.setattr(_kernels, name, recording)
    if layer == "batchnorm":
        fast.spatial_batchnorm_forward(x, np.ones(9), np.zeros(9), {"mode": "train"})
    else:
        getattr(fast, f"{layer}_forward")(x, 3, 2)
    assert "MainThread" in seen and any(n.startswith("fastconv") for n in seen), seen
