"""benchmarks/kernel_builds.py (the kernel builds side by side) runs end to end.

The script is a developer tool run as ``python benchmarks/kernel_builds.py``; here it runs
the same way (by its absolute path, so that its own folder, not the current directory,
is first on its sys.path) with ``--quick``: tiny shapes, every kernel on every build this
CPU and install can run.
"""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from fastconv.kernels import picker as _kernels

from _helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "kernel_builds.py"
KERNELS_PER_DTYPE = 18  # 3 pooling workloads x 2 passes, 4 batchnorm passes, 2 x (im2col, col2im), 4 Winograd


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)


def _script():
    spec = importlib.util.spec_from_file_location("kernel_builds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_times_every_kernel_on_every_build():
    proc = _run("--quick")
    assert proc.returncode == 0, proc.stderr
    builds = [isa for isa, (module, _) in _kernels.builds().items() if module is not None]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("CPU: ") and "SIMD flags: " in lines[0]
    header = next(line for line in lines if line.startswith("| kernel |"))
    assert header == (
        "| kernel | dtype | threads | " + " | ".join(f"{isa} ms" for isa in builds) + " | avx512/avx2 | avx2/baseline |"
    )
    rows = [line.split(" | ") for line in lines if line.startswith("| W") or line.startswith("| batchnorm")]
    assert len(rows) == 2 * KERNELS_PER_DTYPE
    assert sorted({row[1] for row in rows}) == ["float32", "float64"]
    for row in rows:
        times = [float(cell) for cell in row[3 : 3 + len(builds)]]
        assert all(t > 0 for t in times), row
        ratios = row[3 + len(builds) :]
        assert (ratios[0] != "-") == ("avx512" in builds and "avx2" in builds), row


@pytest.mark.parametrize(
    "args, message",
    [
        (("--repeats", 3), "--repeats must be >= 7"),
        (("--warmup", 0), "--warmup must be >= 1"),
        (("--dtypes", "float16"), "--dtypes takes float32 and/or float64, got 'float16'"),
    ],
)
def test_bad_arguments_are_errors(args, message):
    proc = _run(*args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_build_whose_bytes_differ_is_an_error():
    """The byte check before timing fires: a stand-in build that moves one output by one ulp."""
    script = _script()
    baseline = script.BASELINE

    class OneUlpOff:
        def __getattr__(self, name):
            return getattr(baseline, name)

        def bn_affine(self, x, shift, scale, offset, out, lo, hi, threads):
            baseline.bn_affine(x, shift, scale, offset, out, lo, hi, threads)
            out[0, 0, 0] = np.nextafter(out[0, 0, 0], np.inf)

    case = next(c for c in script.cases(True, np.dtype(np.float32)) if c.name.endswith("bn_affine"))
    script.time_case(case, {"baseline": baseline, "same": baseline}, 1, 1)  # passes with equal bytes
    with pytest.raises(RuntimeError, match="bn_affine: output 0 of the off build differs from the baseline build's"):
        script.time_case(case, {"baseline": baseline, "off": OneUlpOff()}, 1, 1)
