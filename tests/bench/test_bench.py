"""The benchmark suite (``fastconv bench``): smoke runs on tiny shapes, and its checks.

The numbers of a --quick run mean nothing; these tests check that the suite
runs end to end, writes its table, JSON and chart, and refuses to time a
wrong result.
"""

import argparse
import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest

import fastconv.apps.malloc
import fastconv.fast as fast
from fastconv.__main__ import main
from fastconv.bench import cli, contenders, roofline, torch_ops
from fastconv.bench.common import WORKLOADS, ConvSpec, MismatchError, conv_data
from fastconv.bench.suite import plan
from fastconv.bench.timing import Contender, run_interleaved
from fastconv.engine import threads as _parallel
from fastconv.io.child import python_module

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--out", str(out), *args])
    return code, out


def test_quick_run_writes_table_json_and_chart(tmp_path, capsys):
    code, out = bench(tmp_path)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(out.read_text())

    # one result per workload and pass (float32, 2 threads), every sample kept
    assert [(r["workload"], r["pass"]) for r in doc["results"]] == [
        (w, p) for w in WORKLOADS for p in ("fwd", "fwdbwd")
    ]
    for r in doc["results"]:
        expected = {"fast", "gemm", "naive"} | ({"torch"} if HAVE_TORCH else set())
        assert set(r["contenders"]) == expected
        assert set(r["checks_max_rel_error"]) == expected
        for name, t in r["contenders"].items():
            assert len(t["samples_s"]) == 1 and t["median_s"] > 0, name
        assert r["contenders"]["naive"]["label"].startswith("scaled")
        assert r["thread_settings"]["requested"] == 2
    assert doc["results"][0]["flops"] == WORKLOADS["W1conv"].quick().flops("fwd")

    # the machine, versions and thread settings
    assert doc["machine"]["cpu"]["model"]
    assert doc["versions"]["numpy"] == np.__version__
    assert "OPENBLAS_CORETYPE" in doc["threads"]["env"]
    assert any(p.get("user_api") == "blas" for p in doc["threads"]["threadpools"])
    if HAVE_TORCH:
        assert doc["settings"]["torch_process"] == "peer"
        assert doc["torch_peer"]["torch"]

    # the roofline: the peak on the suite's threads, the bandwidth, and each convolution's
    # fraction of that peak (the table's %peak columns)
    roof = doc["roofline"]
    assert list(roof["peak_gflops"]) == ["float32"] and list(roof["peak_gflops"]["float32"]) == ["2"]
    peak = roof["peak_gflops"]["float32"]["2"][roof["uses"]]
    assert (peak is None or peak > 0) and roof["bandwidth_gbs"]["2"] > 0 and roof["seconds"] < 1
    assert doc["machine"]["cpu"].get("family_model") or not sys.platform.startswith("linux")
    if peak is None:  # a busy machine: its two threads never ran side by side, no column
        assert not any("fraction_of_peak" in r for r in doc["results"])
        peak = 100.0
        roofline.annotate(doc["results"], {"uses": "x", "peak_gflops": {"float32": {"2": {"x": peak}}}})
    for r in doc["results"]:
        if r["flops"]:
            assert r["peak_gflops"] == peak
            assert r["fraction_of_peak"]["fast"] == pytest.approx(
                r["flops"] / r["contenders"]["fast"]["median_s"] / 1e9 / peak
            )
        else:
            assert "fraction_of_peak" not in r
    assert "Roofline: peak GFLOP/s (" in captured.out and "Copy bandwidth GB/s" in captured.out

    # the table: a header and one row per result
    table = [line for line in captured.out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| workload | dtype | threads | pass | fast ms |")
    head = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert head[head.index("torch GFLOP/s") + 1 :][:3] == ["fast %peak", "gemm %peak", "torch %peak"]
    w1 = next(line for line in table if line.startswith("| W1conv | float32 | 2 | fwd |"))
    w1 = [cell.strip() for cell in w1.strip("|").split("|")]
    assert w1[head.index("fast %peak")].endswith("%") or "never ran side by side" in captured.out
    pool = next(line for line in table if line.startswith("| W4max2x2s2 |"))
    assert [cell.strip() for cell in pool.strip("|").split("|")][head.index("fast %peak")] == ""
    assert len(table) == 2 + len(doc["results"])
    assert "| W1conv | float32 | 2 | fwdbwd |" in captured.out
    assert f"[1/{2 * len(WORKLOADS)}] W1conv float32 2 threads fwd" in captured.err  # progress on stderr

    chart = tmp_path / "bench.png"
    if HAVE_MPL:
        assert doc["chart"] == str(chart) and chart.read_bytes()[:4] == b"\x89PNG"
    else:
        assert doc["chart"] is None and any("matplotlib" in n for n in doc["notes"])


def _scaled(fn, factor):
    def wrong(*args, **kwargs):
        out, cache = fn(*args, **kwargs)
        return out * factor, cache

    return wrong


@pytest.mark.parametrize(
    "workload, patch",
    [
        ("W1conv", lambda mp: mp.setattr(fast, "conv_forward", _scaled(fast.conv_forward, 1.001))),
        (
            "W1conv",
            lambda mp: mp.setattr(
                fast,
                "conv_backward",
                lambda dout, cache, f=fast.conv_backward: tuple(
                    g if i != 1 else g * 1.001 for i, g in enumerate(f(dout, cache))
                ),
            ),
        ),
        (
            "W4max2x2s2",
            lambda mp: mp.setattr(
                fast, "max_pool_backward", lambda dout, cache, f=fast.max_pool_backward: f(dout, cache)[:, :, ::-1]
            ),
        ),
        ("W1step", lambda mp: mp.setattr(fast, "relu_forward", lambda x: (np.abs(x), np.abs(x)))),
    ],
    ids=["conv-out", "conv-dw", "maxpool-dx", "step-relu"],
)
def test_a_wrong_fast_result_stops_the_run(tmp_path, capsys, monkeypatch, workload, patch):
    patch(monkeypatch)
    code, out = bench(tmp_path, "--workload", workload, "--contenders", "fast,gemm")
    err = capsys.readouterr().err
    assert code == cli.MISMATCH_EXIT
    assert "MISMATCH" in err and f"fast {workload}" in err and "against naive" in err
    doc = json.loads(out.read_text())
    assert doc["failure"].startswith("MISMATCH") and doc["results"] == []


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")
def test_a_wrong_torch_result_stops_the_run(tmp_path, capsys, monkeypatch):
    def wrong_conv(torch, spec, data, pass_):
        fn = torch_ops.torch_conv(torch, spec, data, pass_)
        return lambda: tuple(t * 1.001 for t in fn()) if pass_ == "fwdbwd" else fn() * 1.001

    monkeypatch.setitem(torch_ops.BUILDERS, "conv", wrong_conv)
    code, _ = bench(tmp_path, "--workload", "W3conv5x5", "--torch-in-process", "--contenders", "fast,torch")
    err = capsys.readouterr().err
    assert code == cli.MISMATCH_EXIT and "torch W3conv5x5 float32 against fast" in err


def test_without_torch_the_column_is_skipped_with_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        contenders,
        "load_torch",
        lambda in_process=False, extra_env=None: (None, None, "torch skipped: PyTorch is not importable (test)"),
    )
    code, out = bench(tmp_path, "--workload", "W3conv5x5", "--pass", "fwd", "--no-chart")
    captured = capsys.readouterr()
    assert code == 0
    doc = json.loads(out.read_text())
    assert "torch" not in doc["results"][0]["contenders"]
    assert "Note: torch skipped: PyTorch is not importable (test)" in captured.out


def test_without_matplotlib_the_chart_is_skipped_with_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code, out = bench(tmp_path, "--workload", "W4avg2x2s2", "--contenders", "fast")
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["chart"] is None and not (tmp_path / "bench.png").exists()
    assert "Note: chart skipped: matplotlib is not installed" in capsys.readouterr().out


def test_sweep_quick(tmp_path, capsys):
    code, out = bench(tmp_path, "--sweep", "--contenders", "fast,gemm")
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert [(p["series"], p["N"], p["C"]) for p in doc["results"]] == [
        ("batch", 1, 8),
        ("batch", 2, 8),
        ("channels", 2, 4),
        ("channels", 2, 8),
    ]
    assert all(set(p["contenders"]) == {"fast", "gemm"} for p in doc["results"])
    out_text = capsys.readouterr().out
    assert "| series | N | C=F | fast ms/img |" in out_text and "| fast %peak | gemm %peak |" in out_text
    assert (
        all(p.get("fraction_of_peak", {}).get("fast", 0) > 0 for p in doc["results"])
        or "never ran side by side" in out_text
    )


def test_memory_quick(tmp_path, capsys):
    code, out = bench(tmp_path, "--memory")
    assert code == 0, capsys.readouterr().err
    r = json.loads(out.read_text())["results"]
    d = r["default"]
    assert d["N"] == 8 and d["chunk_images"] < 8 and r["big_workspace"]["chunk_images"] == 8
    # the arrays alone: x, dout, out, dx (8 x 64 x 32 x 32 float32 each), w, b, dw, db
    assert d["arrays_bytes"] == 4 * 8 * 64 * 32 * 32 * 4 + 2 * 64 * 64 * 9 * 4 + 2 * 64 * 4
    assert d["peak_growth_bytes"] >= d["arrays_bytes"]
    assert r["extra_mib"] == pytest.approx(d["extra_bytes"] / 2**20)
    assert "| workspace | images per chunk |" in capsys.readouterr().out
    assert json.loads(out.read_text())["roofline"] is None  # no convolution rows, no peak to measure


def test_bad_selection_is_a_one_line_error(tmp_path, capsys):
    code, _ = bench(tmp_path, "--workload", "W9nope")
    assert code == 1
    assert "--workload: unknown 'W9nope'" in capsys.readouterr().err


def _plan(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    sel = cli._selection(parser.parse_args(list(argv)))
    return plan(sel["workloads"], sel["dtypes"], sel["threads"], sel["passes"], sel["contenders"], sel["naive"])


def test_default_and_full_selections():
    default = _plan()
    assert len(default) == len(WORKLOADS)
    assert {(c.dtype, c.threads, c.pass_) for c in default} == {("float32", 2, "fwdbwd")}
    assert [c.workload for c in default if "naive" in c.contenders] == ["W1conv"]
    full = _plan("--full")
    assert len(full) == len(WORKLOADS) * 2 * 2 * 2
    # naive: W1conv fwd+bwd, once per dtype
    assert sorted((c.workload, c.dtype, c.pass_) for c in full if "naive" in c.contenders) == [
        ("W1conv", "float32", "fwdbwd"),
        ("W1conv", "float64", "fwdbwd"),
    ]


@pytest.mark.parametrize("blas_threads", [1, 2], ids=["1worker", "2workers"])
def test_gemm_limit_computes_the_convolution_over_several_chunks(monkeypatch, blas_threads):
    """The GEMM limit's GEMMs, fed real operands, give fast's out and dw, chunk by chunk
    (chunks of unequal sizes included), on one worker or two side by side; fed its own
    outputs again and again, it stays finite."""
    monkeypatch.setattr(fast, "WORKSPACE_BYTES", 3 * 27 * 36 * 8)  # at most 3 images per chunk, 7 images
    monkeypatch.setattr(_parallel, "blas_threads", lambda: blas_threads)
    spec = ConvSpec(N=7, C=3, H=6, W=6, F=4, k=3, stride=1, pad=1)
    d = conv_data(spec, np.float64)
    ops = contenders.prepare_conv_gemm(d["x"], d["w"], d["b"], spec)
    # 1 worker: chunks of 2, 2 and 3 images; 2 workers: 1, 2, 2 and 2
    assert [n for k in range(blas_threads) for _, n in ops.plan.chunks(k)] == (
        [2, 2, 3] if blas_threads == 1 else [1, 2, 2, 2]
    )
    assert ops.chunk == (3 if blas_threads == 1 else 2) and ops.plan.workers == blas_threads
    out, grads = contenders.conv_fwdbwd(fast, d["x"], d["w"], d["b"], d["dout"], spec)
    assert contenders.check_conv_gemm(ops, d["x"], d["b"], d["dout"], (out, *grads), "gemm", np.float64) == 0
    with pytest.raises(MismatchError, match="dw differs"):
        contenders.check_conv_gemm(
            ops, d["x"], d["b"], d["dout"], (out, grads[0], grads[1] * 1.001, grads[2]), "gemm", np.float64
        )
    for _ in range(100):
        dw2 = contenders.conv_gemm_limit(ops, "fwdbwd")
    assert np.isfinite(dw2).all() and all(np.isfinite(cols).all() for cols in ops.cols)


def test_keep_freed_memory_applies_to_both_processes(tmp_path):
    """--keep-freed-memory tunes glibc in the benchmark's process (a subprocess here, so
    that this test process is left alone) and hands the same setting to torch's peer."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        python_module(
            "fastconv",
            "bench",
            "--quick",
            "--keep-freed-memory",
            "--workload",
            "W3conv5x5",
            "--pass",
            "fwd",
            "--no-chart",
            "--out",
            out,
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    if not sys.platform.startswith("linux"):
        assert doc["settings"]["keep_freed_memory"] is False
        return
    assert doc["settings"]["keep_freed_memory"] is True
    assert any(n.startswith("--keep-freed-memory: glibc keeps freed memory") for n in doc["notes"])
    if HAVE_TORCH:
        assert doc["torch_peer"]["malloc_env"] == fastconv.apps.malloc.KEEP_FREED_MEMORY_ENV


def test_interleaving_order_and_scaling():
    calls = []
    a = Contender("a", lambda: calls.append("a"))
    b = Contender("b", lambda: calls.append("b"), scale=10.0, max_repeats=2, label="scaled")
    timings = run_interleaved([a, b], repeats=3, warmup=1, pause=0, extra_rounds=0)
    assert calls == ["a", "b", "a", "b", "a", "b", "a"]
    assert timings["a"].repeats == 3 and timings["b"].repeats == 2 and len(timings["b"].warmup) == 1
    assert all(math.isfinite(t) for t in timings["b"].samples)


def test_noisy_samples_get_extra_rounds_slow_contenders_do_not():
    durations = iter([0.001, 0.004] * 50)  # self-timed: every other run four times slower
    noisy = Contender("noisy", lambda: next(durations), self_timed=True)
    slow = Contender("slow", lambda: 3.0, self_timed=True)  # 3 s a run: a slow contender
    timings = run_interleaved([noisy, slow], repeats=4, warmup=0, pause=0, budget_s=9.0)
    assert timings["noisy"].repeats == 8  # 4, then 4 extra rounds while the spread stays high
    assert timings["slow"].repeats == 3  # max(min_repeats, 9 s / 3 s): never extended
    assert timings["slow"].median == 3.0


def test_compare_blas_runs_the_suite_under_both_openblas_settings(tmp_path, capsys, monkeypatch):
    # Started from an environment that forces the kernels, as on these machines: the "cpu"
    # child must run without the variables, the "haswell" child with them.
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    out = tmp_path / "cmp.json"
    code = main(
        [
            "bench",
            "--quick",
            "--compare-blas",
            "--workload",
            "W4max2x2s2",
            "--pass",
            "fwdbwd",
            "--contenders",
            "fast,gemm",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(out.read_text())
    runs = doc["runs"]
    assert list(runs) == ["cpu", "haswell"]
    assert runs["cpu"]["threads"]["env"]["OPENBLAS_CORETYPE"] is None
    assert runs["haswell"]["threads"]["env"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert "Haswell" in runs["haswell"]["threads"]["openblas_kernels"]
    for run in runs.values():
        assert [(r["workload"], r["pass"]) for r in run["results"]] == [("W4max2x2s2", "fwdbwd")]
    rows = [line for line in captured.out.splitlines() if line.startswith("| W4max2x2s2 ")]
    assert len(rows) == 1 and rows[0].count("|") == 15  # 4 key cells + 5 cells per setting
    roofline_lines = ("cpu: Roofline: peak", "haswell: Roofline: peak")
    assert sum(line.startswith(roofline_lines) for line in captured.out.splitlines()) == 2


def test_compare_blas_refuses_the_other_modes(tmp_path, capsys):
    assert main(["bench", "--quick", "--compare-blas", "--memory", "--out", str(tmp_path / "m.json")]) == 1
    assert "--compare-blas" in capsys.readouterr().err
