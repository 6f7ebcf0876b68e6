"""examples/test_my_layer.py passes under pytest, and its planted-bug twin fails, naming the
configurations that expose the bugs: the test that shows fastconv.testing's checks catch
what a notebook's single shape lets through."""

import difflib
import os
import re
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _pytest(name):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "--tb=short", "-p", "no:cacheprovider", os.path.join(EXAMPLES, name)],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=600,
    )
    outcomes = dict(re.findall(r"::(\S+) (PASSED|FAILED)", proc.stdout))
    return proc, outcomes


def test_the_example_passes():
    proc, outcomes = _pytest("test_my_layer.py")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(outcomes) >= 60 and set(outcomes.values()) == {"PASSED"}


def test_the_planted_bugs_are_caught_by_the_grid_not_by_the_notebook_shapes():
    proc, outcomes = _pytest("test_my_layer_planted_bug.py")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    failed = {k for k, v in outcomes.items() if v == "FAILED"}
    # the max pool that assigns instead of adding: right on the classic 2x2/2, wrong on overlapping windows
    assert "test_max_pool_matches_the_reference[maxpool-k2x2-s2-p0-n2-c3-x4x4-float64]" not in failed
    assert "test_max_pool_matches_the_reference[maxpool-k3x3-s2-p0-n1-c1-x5x7-float64]" in failed
    assert re.search(
        r"maxpool-k3x3-s2-p0-n1-c1-x5x7-float64\s+dx\s+relative error \S+ >= 1e-09, worst element", proc.stdout
    )
    assert "test_max_pool_gradients_are_numerical_gradients[maxpool-k3x3-s2-p0-n1-c1-x5x7-float64]" in failed
    # the conv backward that crops dx with the height on both axes: right on square images only
    sizes = {
        k: tuple(map(int, re.search(r"-x(\d+)x(\d+)-", k).groups()))
        for k in outcomes
        if k.startswith("test_conv_matches")
    }
    square = {k for k, (H, W) in sizes.items() if H == W}
    wide = {k for k, (H, W) in sizes.items() if W > H}
    assert square and wide and not square & failed and wide <= failed
    assert re.search(
        r"conv-k3x5-s2-p1-d1-g1-n2-c4f2-x7x9-float32\s+dx\s+shape \(2, 4, 7, 7\) != \(2, 4, 7, 9\)", proc.stdout
    )
    assert "FAIL" in proc.stdout and "GradientCheckError" in proc.stdout


def test_the_twin_differs_only_in_its_docstring_and_the_planted_lines():
    with open(os.path.join(EXAMPLES, "test_my_layer.py")) as f:
        good = f.read()
    with open(os.path.join(EXAMPLES, "test_my_layer_planted_bug.py")) as f:
        bad = f.read()
    good, bad = (text[text.index('"""', 3) + 3 :] for text in (good, bad))  # after the module docstrings
    changed = [
        line
        for line in difflib.unified_diff(good.splitlines(), bad.splitlines(), lineterm="", n=0)
        if line.startswith("+") and not line.startswith("+++")
    ]
    assert changed and all(line.endswith("# PLANTED BUG") for line in changed), changed
