"""Fuzzing the public conv and pooling API, every case in a crash-isolated worker process.

Every conv and pooling function of ``fastconv.fast``, ``fastconv.naive``,
``fastconv.compat.cs231n`` and ``fastconv.compat.sichkar`` gets random shapes
(zero-size included), dtypes (integers, float16, complex, object, bool,
byte-swapped), memory layouts (Fortran, steps, read-only, negative and zero
strides, unaligned) and argument values (0, negative, 2**31 - 1 .. 2**100,
floats, None, str, bool, tuples of the wrong length, numpy scalars), and
backward passes get bad ``dout``. Each call must return the reference answer
(``fastconv.naive``; tolerance table of fastconv.testing) or raise ValueError/TypeError
whose message names one of the call's arguments; fast and naive must raise the
same error. A segfault, an abort or a hang fails only the case that caused it
(see ``tests/_fuzz_cases.py`` for the generator, the oracle and the runner).

The run here is bounded (a fixed seed, a few thousand cases, about 15 s);
``python tests/fuzz_long.py --seconds 600`` runs for a set time with fresh
seeds. CI runs this file twice: against the release build
(``FASTCONV_EXPECT_DEBUG_BUILD=0``) and against the build with bounds checks on
(``FASTCONV_EXPECT_DEBUG_BUILD=1``); ``test_worker_runs_the_expected_build``
proves the workers loaded that build, and skips when the variable is unset.
"""

import os
import signal

import numpy as np
import pytest

import fastconv

import _fuzz_cases as fz

SEED = 20250611
GROUPS = {
    "core": ("conv", "max_pool", "avg_pool"),
    "compat": (
        "cs231n_conv",
        "cs231n_conv_relu",
        "cs231n_conv_relu_pool",
        "cs231n_conv_bn_relu",
        "cs231n_max_pool",
        "sichkar_conv",
        "sichkar_max_pool",
    ),
}
CASES = {"core": 2500, "compat": 2100}
TIMEOUT = 5.0  # seconds per case; the slowest real case takes well under one, even bounds-checked

EXPECTED_FUNCTIONS = {
    "core": {
        f"fastconv.{m}.{kind}_{d}"
        for m in ("fast", "naive")
        for kind in ("conv", "max_pool", "avg_pool")
        for d in ("forward", "backward")
    },
    "compat": {
        f"fastconv.compat.cs231n.{name}_{d}"
        for d in ("forward", "backward")
        for name in ("conv", "conv_relu", "conv_relu_pool", "conv_bn_relu")
    }
    | {
        f"fastconv.compat.cs231n.{kind}_{d}_{variant}"
        for kind in ("conv", "max_pool")
        for d in ("forward", "backward")
        for variant in (
            ("naive", "fast", "im2col", "strides") if kind == "conv" else ("naive", "fast", "reshape", "im2col")
        )
    }
    | {
        f"fastconv.compat.sichkar.{name}"
        for name in (
            "cnn_forward_naive",
            "cnn_backward_naive",
            "max_pooling_forward_naive",
            "max_pooling_backward_naive",
        )
    },
}
# conv_forward_naive etc. are reported under the name the case called
EXPECTED_FUNCTIONS["compat"] -= {f"fastconv.compat.cs231n.conv_{d}" for d in ("forward", "backward")}


def _specs(group, n, seed=SEED):
    families = GROUPS[group]
    return [["case", seed, i, families[i % len(families)]] for i in range(n)]


# ---------------------------------------------------------------------------- the harness itself
def test_runner_survives_a_segfault_an_abort_and_a_null_read():
    """A worker killed by a signal fails that one case; the runner restarts it for the next."""
    ok = _specs("core", 3)
    specs = [ok[0], ["special", "segv"], ok[1], ["special", "null-read"], ["special", "abort"], ok[2]]
    with fz.Runner(timeout=TIMEOUT) as runner:
        results = [runner.run_one(spec) for spec in specs]
        restarts = runner.restarts
    status = [r["status"] for r in results]
    assert status[1] == status[3] == status[4] == "crash", status
    assert results[1]["signal"] == results[3]["signal"] == signal.SIGSEGV
    assert results[4]["signal"] == signal.SIGABRT
    assert "Segmentation fault" in results[1]["failures"][0]  # faulthandler's report reaches the parent
    assert "string_at" in results[3]["failures"][0]  # with the Python stack of the crash
    for r in (results[0], results[2], results[5]):
        assert r["status"] in ("equal", "error"), r
    assert restarts == 3


def test_runner_times_out_a_hang():
    with fz.Runner(timeout=1.0) as runner:
        hung = runner.run_one(["special", "hang"])
        after = runner.run_one(_specs("core", 1)[0])
    assert hung["status"] == "hang" and "exceeded 1.0 s" in hung["failures"][0]
    assert after["status"] in ("equal", "error")


def test_runner_reports_a_failure_and_an_exit():
    with fz.Runner(timeout=TIMEOUT) as runner:
        wrong = runner.run_one(["special", "wrong-answer"])
        died = runner.run_one(["special", "exit"])
    assert wrong["status"] == "fail" and wrong["failures"] == ["deliberate"]
    assert died["status"] == "crash" and died["returncode"] == 3


def test_oracle_rejects_wrong_answers():
    ref = np.array([[1.0, 2.0, np.nan, np.inf]])
    assert fz.compare_arrays(ref.copy(), ref, np.float64, 1e-9) is None
    assert "relative error" in fz.compare_arrays(ref + [[0, 1e-6, 0, 0]], ref, np.float64, 1e-9)
    assert "NaN" in fz.compare_arrays(np.array([[1.0, 2.0, 0.0, np.inf]]), ref, np.float64, 1e-9)
    assert "Inf" in fz.compare_arrays(np.array([[1.0, 2.0, np.nan, -np.inf]]), ref, np.float64, 1e-9)
    assert "dtype" in fz.compare_arrays(ref.astype(np.float32), ref, np.float64, 1e-9)
    assert "shape" in fz.compare_arrays(ref.T, ref, np.float64, 1e-9)
    # a sum that cancels (terms of size 100, result 1e-3) is judged against its terms, not itself
    small, terms = np.array([1e-3]), np.array([100.0])
    assert fz.compare_arrays(small + 1e-6, small, np.float64, 1e-4) is not None
    assert fz.compare_arrays(small + 1e-6, small, np.float64, 1e-4, magnitudes=terms) is None
    assert fz.compare_arrays(small + 1e-1, small, np.float64, 1e-4, magnitudes=terms) is not None


def test_oracle_rejects_errors_that_name_no_argument():
    names = ("x", "w", "b", "stride", "pad", "dilation", "groups")
    assert fz.names_argument("stride must be >= 1, got 0", names)
    assert fz.names_argument("conv_param['pad'] must be >= 0, got -1", ("x", "conv_param"))
    assert not fz.names_argument("array is too big; `arr.size * arr.dtype.itemsize` is larger", names)
    assert not fz.names_argument("Maximum allowed dimension exceeded", names)
    assert not fz.names_argument("pad_width must be of integral type", names)  # a word, not a part of one

    case = fz.make_case(SEED, 0, "conv")
    impls = case.impls
    unnamed = [fz.Outcome(exc=ValueError("array is too big")), fz.Outcome(exc=ValueError("array is too big"))]
    assert any("naming no argument" in f for f in fz._judge(case, "forward", unnamed, impls, impls[0].forward_names))
    overflow = [fz.Outcome(value=None), fz.Outcome(exc=OverflowError("Python int too large"))]
    fails = fz._judge(case, "forward", overflow, impls, impls[0].forward_names)
    assert any("unexpected OverflowError" in f for f in fails)
    assert any("raised where naive returned" in f for f in fails)


def test_cases_are_reproducible_from_their_id():
    a, b = fz.make_case(SEED, 17), fz.make_case(SEED, 17)
    assert a.describe() == b.describe()
    assert fz.check_case(a)["status"] == fz.check_case(b)["status"]


def test_error_messages_are_counted_as_templates():
    one = fz.normalize_message("ValueError", "stride must be >= 1, got (0, 1)")
    two = fz.normalize_message("ValueError", "stride must be >= 1, got -1099511627776")
    assert one == two == "ValueError: stride must be >= #, got <value>"


def test_worker_runs_the_expected_build():
    """CI's passes must fuzz the build they name (FASTCONV_EXPECT_DEBUG_BUILD=1: bounds checks
    on, 0: the release build), not a stale one; the workers import this process's fastconv."""
    expected = os.environ.get("FASTCONV_EXPECT_DEBUG_BUILD", "")
    if expected == "":
        pytest.skip("FASTCONV_EXPECT_DEBUG_BUILD is unset (1: expect the bounds-checked build, 0: the release build)")
    assert expected in ("0", "1"), f"FASTCONV_EXPECT_DEBUG_BUILD must be 0 or 1, got {expected!r}"
    with fz.Runner(timeout=TIMEOUT) as runner:
        runner.run_one(_specs("core", 1)[0])
        build, fastconv_path = runner.build, runner.fastconv_path
    assert fastconv_path == os.path.dirname(fastconv.__file__)
    assert build["debug_build"] is (expected == "1"), build


# ---------------------------------------------------------------------------- the fuzz run
@pytest.mark.slow
@pytest.mark.parametrize("group", list(GROUPS))
def test_fuzz(group):
    summary = fz.run_cases(_specs(group, CASES[group]), timeout=TIMEOUT)
    print(f"\n[{group}] build {summary.build}\n{summary.report()}")
    assert not summary.failures, summary.report()
    assert summary.cases == CASES[group]
    # the run is not vacuous: every function called, every kind of mutation made, both outcomes common
    missing = EXPECTED_FUNCTIONS[group] - summary.functions
    assert not missing, f"never called: {sorted(missing)}"
    kinds = {"dtype", "layout", "shape", "type", "value"} | ({"dict"} if group == "compat" else set())
    assert kinds <= set(summary.kinds), summary.kinds
    assert summary.status.get("equal", 0) > 0.3 * summary.cases, summary.status
    assert summary.status.get("error", 0) > 0.3 * summary.cases, summary.status
    assert len(summary.messages) >= 25, sorted(summary.messages)
