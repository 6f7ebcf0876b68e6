"""benchmarks/idle_pause.py (the first call after an idle pause against steady state) runs end
to end on tiny shapes, and refuses bad arguments. Its numbers are not checked: they need an
idle machine (docs/performance.md, "After an idle pause")."""

import subprocess
import sys

import pytest

from _helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "idle_pause.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)


def test_quick_run_prints_one_row_per_workload():
    proc = _run("--quick", "--rounds", 3, "--pause", 0.01, "--burst", 0, "--workloads", "W1conv,W1step")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| W")]
    assert [row[0] for row in rows] == ["| W1conv", "| W1step"]
    for row in rows:
        assert float(row[1].split()[0]) > 0 and float(row[2].split()[0]) > 0 and float(row[3]) > 0
        if sys.platform.startswith("linux"):  # n/a elsewhere
            steady, paused = row[4].rstrip(" |").split(" / ")
            assert all(int(a) <= int(b) for a, b in (steady.split("/"), paused.split("/")))


@pytest.mark.parametrize(
    "args, message",
    [
        (("--workloads", "W9nope"), "--workloads: unknown W9nope"),
        (("--rounds", 2), "need --rounds >= 3"),
        (("--pause", -1), "need --rounds >= 3, --pause >= 0"),
    ],
)
def test_bad_arguments_are_errors(args, message):
    proc = _run(*args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
