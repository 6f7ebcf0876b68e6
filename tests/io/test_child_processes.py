"""Python child processes import the installed fastconv, whatever the current directory.

Each test runs from a folder that holds a decoy ``fastconv/`` package (importing it
raises), as a checkout's root holds the source folder: ``python -c`` and ``python -m``
would import the decoy, the children of fastconv and of its tests must not.
"""

import ast
import importlib.util
import os
import subprocess
import sys

import pytest

import fastconv
from fastconv.bench import memory
from fastconv.bench.peer import TorchPeer
from fastconv.io.child import python_code, python_module

import _fuzz_cases as fz

HAVE_TORCH = importlib.util.find_spec("torch") is not None
REAL = os.path.dirname(fastconv.__file__)
WHERE = "import os, fastconv; print(os.path.dirname(fastconv.__file__))"


@pytest.fixture
def in_decoy_folder(tmp_path, monkeypatch):
    """The current directory holds a fastconv/ package that must never be imported."""
    decoy = tmp_path / "fastconv"
    decoy.mkdir()
    (decoy / "__init__.py").write_text('raise ImportError("the decoy fastconv/ of the current directory")\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_the_decoy_catches_a_child_started_the_plain_way(in_decoy_folder):
    """Without fastconv.io.child, a child started from this folder imports the decoy."""
    for argv in ([sys.executable, "-c", WHERE], [sys.executable, "-m", "fastconv", "config"]):
        proc = _run(argv)
        assert proc.returncode != 0 and "the decoy fastconv/" in proc.stderr, argv


def test_python_code_and_module_import_the_real_fastconv(in_decoy_folder):
    proc = _run(python_code(WHERE))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == REAL
    # no current directory on the child's path, and the folder of this fastconv there
    # (appended where no install provides it: a source tree run as it is)
    path = ast.literal_eval(_run(python_code("import sys; print(sys.path)")).stdout)
    assert "" not in path and str(in_decoy_folder) not in path and os.path.dirname(REAL) in path
    proc = _run(python_code("import sys; print(sys.argv[1:])", "a b", 3))
    assert proc.stdout.strip() == "['a b', '3']"
    proc = _run(python_module("fastconv", "config"))  # as python -m fastconv config
    assert proc.returncode == 0 and "extension" in proc.stdout, proc.stderr


def test_the_torch_peer_imports_the_real_fastconv(in_decoy_folder):
    """The bug of a benchmark run from a checkout's root: the peer imported the source folder."""
    if not HAVE_TORCH:
        # the peer got as far as its own serve() (of the real fastconv): it says torch is missing
        with pytest.raises(ImportError, match="PyTorch is not importable"):
            TorchPeer()
        return
    peer = TorchPeer()
    try:
        assert peer.info["fastconv_path"] == REAL
    finally:
        peer.close()


def test_the_memory_child_imports_the_real_fastconv(in_decoy_folder):
    r = memory._child(["peak", "--batch", "1", "--threads", "1"])
    assert r["N"] == 1 and r["arrays_bytes"] > 0


def test_the_fuzz_worker_imports_the_real_fastconv(in_decoy_folder):
    with fz.Runner(timeout=60.0) as runner:
        res = runner.run_one(["case", 1, 0, "conv"])
        assert runner.fastconv_path == REAL
    assert res["status"] in ("equal", "error"), res
