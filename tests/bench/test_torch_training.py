"""benchmarks/torch_training.py (epoch time against PyTorch) runs end to end on a few images.

The script is a developer tool run as ``python benchmarks/torch_training.py``; here it
runs the same way, on tiny Fashion-MNIST files in the official IDX format, with its
default models (ConvNet1, whose conv - relu - maxpool fastconv fuses, and the
README's recipe) and one whose conv - maxpool - relu is fused too.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _helpers import ROOT
from test_datasets import write_idx_set

SCRIPT = ROOT / "benchmarks" / "torch_training.py"
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _run(*args, env=None):
    # the script by its absolute path: its own folder, not the current directory, is sys.path[0]
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.mark.torch
@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")
def test_epoch_times_on_a_few_images(tmp_path):
    write_idx_set(tmp_path / "fashion-mnist", np.random.default_rng(0), n_train=64, n_test=8)
    models = [
        "convnet1",
        "conv32x3-bn-maxpool2-relu-conv64x3-bn-maxpool2-relu-fc256-relu-dropout0.3-fc",
        "conv4x5-maxpool2-relu-fc16-relu-fc",
    ]
    out = tmp_path / "epochs.json"
    proc = _run(
        "--data",
        tmp_path,
        "--models",
        ",".join(models),
        "--images",
        64,
        "--batch-size",
        32,
        "--threads",
        1,
        "--repeats",
        1,
        "--naive",
        "--naive-images",
        2,
        "--json",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"data: 64 images from Fashion-MNIST ({tmp_path / 'fashion-mnist'})" in proc.stdout
    assert proc.stdout.count("fastconv/torch") == len(models)
    doc = json.loads(out.read_text())
    assert doc["images"] == 64 and len(doc["results"]) == len(models)
    for row in doc["results"]:
        assert row["scores_rel_error"] < 1e-4  # the torch twin computes the same network
        assert row["fastconv_s_per_epoch"] > 0 and row["torch_s_per_epoch"] > 0 and row["naive_s_per_epoch"] > 0
    assert doc["results"][0]["model"].startswith("ConvNet1 ")
    assert doc["keep_freed_memory"] is False


@pytest.mark.torch
@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_is_applied_and_recorded(tmp_path):
    write_idx_set(tmp_path / "fashion-mnist", np.random.default_rng(0), n_train=32, n_test=8)
    out = tmp_path / "epochs.json"
    proc = _run(
        "--data",
        tmp_path,
        "--models",
        "convnet1",
        "--images",
        32,
        "--batch-size",
        32,
        "--threads",
        1,
        "--repeats",
        1,
        "--keep-freed-memory",
        "--json",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    assert "freed memory kept: True" in proc.stdout
    assert json.loads(out.read_text())["keep_freed_memory"] is True


def test_a_missing_data_folder_is_an_error(tmp_path):
    proc = _run("--data", tmp_path / "nothing-here", "--images", 64, "--batch-size", 32)
    if not HAVE_TORCH:
        assert proc.returncode == 0 and "torch is not installed" in proc.stdout
        return
    assert proc.returncode == 1 and proc.stderr.startswith("torch_training: error:"), proc.stderr
    assert "fashion-mnist" in proc.stderr


def test_without_torch_it_says_so_and_exits_cleanly(tmp_path):
    """A torch that cannot be imported (a stand-in first on PYTHONPATH): status 0, one line."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text('raise ImportError("no torch here")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    proc = _run("--images", 64, "--batch-size", 32, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("torch is not installed")
