#!/usr/bin/env bash
# The oldest and newest supported Pythons (pyproject's requires-python and classifiers):
# each builds fastconv from a clean copy of the source in a venv of its own and runs a
# representative subset of the suite (MATRIX_TESTS below: the layers against the naive
# reference, the kernels' edge cases, the worker threads, the optimizers, models and
# checkpoints; the full suite runs on the default Python in .ci/run). An interpreter that
# is not on this machine is skipped with a line that says so: neither PyPI nor Debian 12's
# archive, the registries this project reaches, offers CPython 3.10 or 3.13 to install.
# Runs alone: `bash .ci/pythons.sh` (both), or `bash .ci/pythons.sh 3.13`.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/_copy_source.sh
export PIP_DISABLE_PIP_VERSION_CHECK=1
MATRIX_TESTS=(tests/engine/test_equivalence.py tests/engine/test_edges.py tests/kernels/test_im2col.py
              tests/engine/test_parallel.py tests/training/test_optim.py tests/training/test_models.py
              tests/engine/test_caches.py)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

find_python() {  # the newest pythonX.Y on PATH or under pyenv's versions, or nothing
  local v="$1" p
  for p in $(command -v "python$v" 2>/dev/null) \
           $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$v".*/bin/"python$v" 2>/dev/null | sort -V -r); do
    if "$p" -c "import sys, venv; sys.exit(sys.version_info[:2] != tuple(map(int, '$v'.split('.'))))" 2>/dev/null; then
      echo "$p"; return
    fi
  done
}

copy_source "$tmp/src"
ran=0
for v in ${@:-3.10 3.13}; do
  py="$(find_python "$v")"
  if [ -z "$py" ]; then
    echo "ci: Python $v not found (python$v on PATH, ~/.pyenv/versions/$v.*); its matrix step is skipped"
    continue
  fi
  start=$SECONDS
  "$py" -m venv "$tmp/venv$v"
  "$tmp/venv$v/bin/pip" install -q "$tmp/src" pytest hypothesis
  # The tests import the install, never the copied source folder: moved out of reach meanwhile.
  mv "$tmp/src/fastconv" "$tmp/src/fastconv.package"
  rc=0
  (
    cd "$tmp/src" && . "$tmp/venv$v/bin/activate"
    echo "ci: $(python -VV | head -1): $(python -I -c 'import fastconv.fast; from fastconv.kernels.picker import kernels; print(kernels.__name__)')"
    pytest -q -p no:cacheprovider "${MATRIX_TESTS[@]}"
  ) || rc=$?
  mv "$tmp/src/fastconv.package" "$tmp/src/fastconv"
  [ "$rc" = 0 ] || exit "$rc"
  echo "ci: Python $v: built and tested in $((SECONDS - start)) s"
  ran=$((ran + 1))
done
echo "ci: the Python matrix ran on $ran interpreter(s)"
