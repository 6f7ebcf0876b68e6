"""The type stubs of the compiled kernels (fastconv/kernels/_im2col.pyi and the builds'
re-exports) against the compiled modules, with mypy's stubtest: every function, argument
name and order, as the extension has them (Cython embeds the signatures). ``make typecheck``
runs the same check; here it runs once more against a stub with two arguments swapped,
to show that the check catches a stub that drifted from the kernels.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv.kernels
from fastconv.kernels import picker

from _helpers import ROOT

pytestmark = [
    pytest.mark.slow,  # each stubtest run takes about 10 s (a mypy build)
    pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (the [lint] extra)"),
]

KERNELS = Path(fastconv.kernels.__file__).parent


def _built_modules():
    """The kernel builds this install has and this CPU can run, as ``make stubtest`` asks
    the picker: importing a build the CPU cannot run is an illegal instruction, not an
    ImportError (the AVX-512 build on an AVX2-only CPU)."""
    return [module.__name__ for module, _ in picker.builds().values() if module is not None]


def _stubtest(modules, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(ROOT / "pyproject.toml"), *modules],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_stubs_match_the_compiled_kernels():
    modules = _built_modules()
    assert "fastconv.kernels._im2col" in modules
    result = _stubtest(modules, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stubtest_catches_a_stub_with_swapped_arguments(tmp_path):
    # A package named fastconv holding only the baseline build and a stub whose
    # gather_dout takes num_threads before want_db.
    package = tmp_path / "fastconv" / "kernels"
    package.mkdir(parents=True)
    (tmp_path / "fastconv" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    spec = importlib.util.find_spec("fastconv.kernels._im2col")
    shutil.copy(spec.origin, package / Path(spec.origin).name)
    stub = (KERNELS / "_im2col.pyi").read_text()
    right = "db: _Float64Array, want_db: bool, num_threads: int)"
    assert stub.count(right) == 1
    (package / "_im2col.pyi").write_text(stub.replace(right, "db: _Float64Array, num_threads: int, want_db: bool)"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    result = _stubtest(["fastconv.kernels._im2col"], tmp_path, env)
    assert result.returncode != 0
    assert "gather_dout is inconsistent" in result.stdout, result.stdout + result.stderr
