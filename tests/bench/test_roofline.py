"""The roofline of ``fastconv bench`` (fastconv/bench/roofline.py) and its peak kernel
(fastconv/kernels/peak.pxi): the kernel's arithmetic, the same in every build; FMA that
really rounds once; a measured peak that is positive and physically possible; the
fraction-of-peak arithmetic."""

import math
from fractions import Fraction

import numpy as np
import pytest

from fastconv.bench import roofline
from fastconv.kernels import picker

BUILDS = {isa: module for isa, (module, _) in picker.builds().items() if module is not None}
DTYPES = [np.float32, np.float64]


def _ids(values):
    return [np.dtype(v).name for v in values]


def reference_muladd(dtype, x, step, m, c, iters, chains):
    """peak_run(fused=False) in numpy scalars of ``dtype``: chain k starts at x + k*step; even
    chains are multiplied by m, odd ones grow by c, ``iters`` times; lane 0 summed in chain order."""
    T = np.dtype(dtype).type
    x, step, m, c = T(x), T(step), T(m), T(c)
    total = T(0)
    for k in range(chains):
        a = x + T(k) * step
        for _ in range(iters):
            a = a * m if k % 2 == 0 else a + c
        total = total + a
    return total


@pytest.mark.parametrize("isa", list(BUILDS))
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids(DTYPES))
def test_muladd_kernel_computes_what_it_says(isa, dtype):
    module = BUILDS[isa]
    info = module.peak_info()
    out = np.zeros(1, dtype=dtype)
    args = (1.5, 0.25, 1.0 - 2.0**-5, 2.0**-7, 37)
    flops = module.peak_run(out, *args, False)
    expected = reference_muladd(dtype, *args, info["chains"])
    assert out[0] == expected and out.tobytes() == np.array([expected], dtype=dtype).tobytes()
    assert flops == info["chains"] * info["lanes"][np.dtype(dtype).name] * 37


def test_the_muladd_reference_catches_a_wrong_step():
    """The check above can fail: one step fewer gives other bits."""
    args = (1.5, 0.25, 1.0 - 2.0**-5, 2.0**-7)
    assert reference_muladd(np.float32, *args, 36, 12) != reference_muladd(np.float32, *args, 37, 12)


#: Inputs where a*m + c rounded once (FMA) is 2**-24 (float32) or 2**-54 (float64) and
#: rounded twice (a multiply, then an add) is 0: the product's last bit is a tie or less.
FUSION = {
    np.float32: (1 + 2.0**-12, 1 + 2.0**-12, -(1 + 2.0**-11), 2.0**-24),
    np.float64: (1 + 2.0**-27, 1 + 2.0**-27, -(1 + 2.0**-26), 2.0**-54),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids(DTYPES))
def test_the_fusion_inputs_tell_fma_from_a_multiply_and_an_add(dtype):
    T = np.dtype(dtype).type
    a, m, c, fused = FUSION[dtype]
    assert T(a) * T(m) + T(c) == 0  # numpy rounds twice: what an unfused kernel gives
    assert Fraction(a) * Fraction(m) + Fraction(c) == fused  # the exact value, which FMA rounds once


@pytest.mark.parametrize("isa", list(BUILDS))
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids(DTYPES))
def test_fused_kernel_rounds_once(isa, dtype):
    module = BUILDS[isa]
    info = module.peak_info()
    a, m, c, fused = FUSION[dtype]
    out = np.zeros(1, dtype=dtype)
    if not info["fma_ready"]:
        with pytest.raises(ValueError, match="fused: this build"):
            module.peak_run(out, a, 0.0, m, c, 1, True)
        return
    flops = module.peak_run(out, a, 0.0, m, c, 1, True)
    assert out[0] == info["chains"] * fused  # every chain: one FMA, one rounding
    assert flops == 2 * info["chains"] * info["lanes"][np.dtype(dtype).name]


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids(DTYPES))
@pytest.mark.parametrize("fused", [False, True], ids=["muladd", "fma"])
def test_builds_give_the_same_bits(dtype, fused):
    results = {}
    for isa, module in BUILDS.items():
        if fused and not module.peak_info()["fma_ready"]:
            continue
        out = np.zeros(1, dtype=dtype)
        module.peak_run(out, 1.0, 2.0**-10, 1.0 - 2.0**-10, 2.0**-10, 1000, fused)
        results[isa] = out.tobytes()
    if len(results) < 2:
        pytest.skip(f"fewer than two builds run {'FMA' if fused else 'mul+add'} here: {sorted(results)}")
    assert len(set(results.values())) == 1, results


def test_cpu_build_widths():
    """On a CPU with AVX-512 the peak runs 512-bit vectors with FMA (zmm, whatever
    -mprefer-vector-width says); the AVX2 build (compiled with FMA, which the direct
    convolution kernels need) runs 256-bit ones with FMA too."""
    if "avx512" in BUILDS:
        info = BUILDS["avx512"].peak_info()
        assert info["vector_bits"] == 512 and info["fma"] == "compiled" and info["fma_ready"]
        assert info["lanes"] == {"float32": 16, "float64": 8}
    if "avx2" in BUILDS:
        info = BUILDS["avx2"].peak_info()
        assert info["vector_bits"] == 256 and info["fma"] == "compiled" and info["fma_ready"]
    assert BUILDS["baseline"].peak_info()["fma"] in (None, "compiled")


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(out=np.zeros(0, np.float32)), "out must have at least one element"),
        (dict(iters=-1), "iters must be >= 0"),
    ],
)
def test_bad_arguments_are_value_errors(bad, message):
    kwargs = dict(out=np.zeros(1, np.float32), iters=1)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=message):
        BUILDS["baseline"].peak_run(kwargs["out"], 1.0, 0.0, 1.0, 0.0, kwargs["iters"], False)


def test_measured_peak_is_positive_and_physically_possible():
    """The peak is > 0 and below what the vectors could do at 4 operations a cycle at
    6 GHz (a loop the compiler threw away, or a miscounted FLOP, would exceed it);
    the bandwidth is > 0; a fraction column comes out of it. On a busy machine two
    threads may never run side by side: that peak is then None, never a wrong number."""
    r = roofline.measure(["float32", "float64"], [1, 2], quick=True)
    isa, module = roofline.peak_build()
    assert r["build"] == isa and r["vector_bits"] == module.peak_info()["vector_bits"]
    assert r["debug_build"] == module.build_info()["debug_build"]
    for dtype, by_threads in r["peak_gflops"].items():
        lanes = module.peak_info()["lanes"][dtype]
        for n, peaks in by_threads.items():
            assert set(peaks) == ({"fma", "mul_add"} if r["uses"] == "fma" else {"mul_add"})
            for kind, gflops in peaks.items():
                if gflops is None and n != "1":
                    continue
                ceiling = lanes * (2 if kind == "fma" else 1) * 4 * 6.0 * int(n)
                assert 0 < gflops < ceiling, (dtype, n, kind, gflops, ceiling)
    assert all(0 < v < 10_000 for v in r["bandwidth_gbs"].values())
    assert r["seconds"] < 5
    result = {"dtype": "float32", "threads": 1, "flops": 1e9, "contenders": {"fast": {"median_s": 0.01}}}
    roofline.annotate([result], r)
    assert result["fraction_of_peak"]["fast"] == pytest.approx(100 / roofline.peak_of(r, "float32", 1))


def test_a_run_counts_only_when_its_threads_ran_side_by_side():
    """(start, end, CPU seconds): overlapping spans, each on a core for most of it, count;
    one thread after the other, or two taking turns on one core, do not."""
    assert roofline.side_by_side([(0.0, 2.0, 1.95)])
    assert roofline.side_by_side([(0.0, 2.0, 1.95), (0.05, 2.02, 1.9)])
    assert not roofline.side_by_side([(0.0, 2.0, 1.95), (2.0, 4.0, 1.95)])  # queued on one core
    assert not roofline.side_by_side([(0.0, 4.0, 2.0), (0.0, 4.0, 2.0)])  # taking turns on one core
    assert not roofline.side_by_side([(0.0, 2.0, 0.5)])  # preempted for most of the run


def test_fraction_arithmetic():
    # W1conv forward, 0.617 GFLOP, in 2.8 ms on a 240 GFLOP/s machine: 220 GFLOP/s, 92 %
    flops = 2 * 64 * 32 * 3 * 7 * 7 * 32 * 32
    assert flops == 616_562_688
    assert roofline.fraction(flops, 2.8e-3, 240.0) == pytest.approx(flops / 2.8e-3 / 240e9)
    assert roofline.fraction(flops, 2.8e-3, 240.0) == pytest.approx(0.9175, abs=1e-4)
    for missing in [(None, 1.0, 1.0), (flops, None, 1.0), (flops, 0.0, 1.0), (flops, 1.0, None), (flops, 1.0, 0.0)]:
        assert roofline.fraction(*missing) is None
    assert [roofline.fmt_fraction(f) for f in (None, 0.9175, 0.1, 0.0994, 0.0123, 1.5)] == [
        "",
        "92%",
        "10%",
        "9.9%",
        "1.2%",
        "150%",
    ]


def test_annotate_uses_the_peak_of_the_row_dtype_and_threads():
    fake = {
        "uses": "fma",
        "peak_gflops": {
            "float32": {"1": {"fma": 100.0, "mul_add": 50.0}, "2": {"fma": 200.0, "mul_add": 100.0}},
            "float64": {"2": {"fma": 80.0, "mul_add": 40.0}},
        },
    }
    rows = [
        {
            "dtype": "float32",
            "threads": 1,
            "flops": 2e9,
            "contenders": {"fast": {"median_s": 0.04}, "torch": {"median_s": 0.02}},
        },
        {"dtype": "float32", "threads": 2, "flops": 2e9, "contenders": {"fast": {"median_s": 0.04}}},
        {"dtype": "float64", "threads": 2, "flops": 2e9, "contenders": {"gemm": {"median_s": 0.05}}},
        {"dtype": "float64", "threads": 1, "flops": 2e9, "contenders": {"fast": {"median_s": 0.05}}},  # not measured
        {"dtype": "float32", "threads": 2, "flops": None, "contenders": {"fast": {"median_s": 0.01}}},  # pooling
    ]
    roofline.annotate(rows, fake)
    assert rows[0]["fraction_of_peak"] == {"fast": pytest.approx(0.5), "torch": pytest.approx(1.0)}
    assert rows[1]["fraction_of_peak"] == {"fast": pytest.approx(0.25)} and rows[1]["peak_gflops"] == 200.0
    assert rows[2]["fraction_of_peak"] == {"gemm": pytest.approx(0.5)}
    assert "fraction_of_peak" not in rows[3] and "fraction_of_peak" not in rows[4]
    fake["uses"] = "mul_add"
    assert roofline.peak_of(fake, "float32", 2) == 100.0
    assert roofline.peak_of(None, "float32", 2) is None and not math.isnan(roofline.peak_of(fake, "float64", 2))


def test_describe_names_the_peak_and_the_bandwidth():
    fake = {
        "build": "avx512",
        "vector_bits": 512,
        "chains": 12,
        "uses": "fma",
        "copy_bytes": 256 << 20,
        "seconds": 0.4,
        "peak_gflops": {"float32": {"1": {"fma": 180.4, "mul_add": 92.0}}},
        "bandwidth_gbs": {"1": 12.34},
    }
    text = roofline.describe(fake)
    assert "float32 1 thread 180 (mul+add 92)" in text and "avx512 build, 512-bit vectors" in text
    assert "1 thread 12.3" in text and "256 MiB" in text and "use the FMA peak" in text
    assert roofline.describe(None) == "Roofline: not measured."
    assert "DEBUG" not in text and "DEBUG build at -O0" in roofline.describe({**fake, "debug_build": True})
    fake["peak_gflops"]["float32"]["2"] = {"fma": None, "mul_add": None}
    assert "2 threads n/a (its threads never ran side by side)." in roofline.describe(fake)


def test_measured_again_each_peak_is_the_larger_and_both_runs_are_kept(monkeypatch):
    """A peak measured while a neighbour loaded the host is low; the second measurement
    (after the cases) replaces it where it is larger, a missing one (None) never wins."""
    before = {"float32": {"2": {"fma": 121.0, "mul_add": 90.0}}, "float64": {"2": {"fma": None, "mul_add": 50.0}}}
    after = {"float32": {"2": {"fma": 200.0, "mul_add": 80.0}}, "float64": {"2": {"fma": 99.0, "mul_add": None}}}
    seen = {}

    def fake_peaks(module, dtypes, counts, fused, opts):
        seen.update(dtypes=dtypes, counts=counts)
        return after

    monkeypatch.setattr(roofline, "_peaks", fake_peaks)
    first = {"uses": "fma", "peak_gflops": before, "build": "x"}
    again = roofline.measure_again(first, quick=True)
    assert seen == {"dtypes": ["float32", "float64"], "counts": [2]}
    assert again["peak_gflops"] == {
        "float32": {"2": {"fma": 200.0, "mul_add": 90.0}},
        "float64": {"2": {"fma": 99.0, "mul_add": 50.0}},
    }
    assert again["peak_runs"] == [before, after] and first["peak_gflops"] is before  # not changed in place
    assert roofline.measure_again(None) is None
    text = roofline.describe(
        {**again, "vector_bits": 256, "chains": 12, "copy_bytes": 1 << 20, "seconds": 1.0, "bandwidth_gbs": {"2": 17.4}}
    )
    assert "before the cases / after them: float32 2 threads 121 / 200, float64 2 threads n/a / 99" in text


def test_measured_again_on_this_machine_is_never_below_the_first():
    first = roofline.measure(["float32"], [1], quick=True)
    again = roofline.measure_again(first, quick=True)
    for kind, v in first["peak_gflops"]["float32"]["1"].items():
        assert v is None or again["peak_gflops"]["float32"]["1"][kind] >= v


def test_rows_above_the_peak_are_named():
    rows = [
        {"workload": "W1conv", "pass": "fwd", "fraction_of_peak": {"fast": 1.1, "gemm": 0.9, "torch": None}},
        {"series": "C", "N": 8, "C": 64, "pass": "fwdbwd", "fraction_of_peak": {"fast": 1.01}},
        {"workload": "W4max2x2s2", "pass": "fwd"},
    ]
    assert roofline.above_peak(rows) == [("W1conv", "fwd", "fast"), ("sweep C N=8 C=64", "fwdbwd", "fast")]
    rows[0]["fraction_of_peak"]["fast"] = 1.0
    assert roofline.above_peak(rows[:1]) == []
