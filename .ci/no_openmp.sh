#!/usr/bin/env bash
# A build whose compiler has no OpenMP, as Apple clang: here GCC behind a stub that rejects
# -fopenmp, so that setup.py's probe fails as it does there (FASTCONV_NO_OPENMP=1 gives the
# same kernels, without the warning). In a venv of its own it checks what a user sees
# (`fastconv config`, the RuntimeWarning at import) and that pooling and batchnorm still use
# both cores: CPU time against wall time of their calls, not only their results.
# Runs alone: `bash .ci/no_openmp.sh` (PYTHON=... picks the Python).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
. .ci/_copy_source.sh
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

mkdir "$tmp/cc"
cat >"$tmp/cc/cc" <<'EOF'
#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = -fopenmp ]; then echo "cc: error: unsupported option '-fopenmp'" >&2; exit 1; fi
done
exec gcc "$@"
EOF
chmod +x "$tmp/cc/cc"

copy_source "$tmp/src"
"$PY" -m venv "$tmp/venv"
. "$tmp/venv/bin/activate"
CC="$tmp/cc/cc" pip install -q "$tmp/src[test]"
cd "$tmp"  # away from the checkout: the installed fastconv is imported

fastconv config | tee "$tmp/config.txt"
grep -q "OpenMP: no (kernels on fastconv's threads)" "$tmp/config.txt" \
  || { echo "ci: fastconv config does not say that the kernels run on fastconv's threads"; exit 1; }
python - <<'EOF'
import sys, warnings
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    import fastconv.fast
said = [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning) and "without OpenMP" in str(w.message)]
if len(said) != 1:
    sys.exit(f"ci: importing the kernels of a build without OpenMP warned {len(said)} times, not once")
print("ci: the build without OpenMP says so at import and in fastconv config")
EOF

# Both cores: CPU time / wall time of pooling and batchnorm calls (> 1.5 on 2 cores), and
# the share of that CPU time spent in fastconv's worker threads (from /proc: about half
# with 2 workers, none when the kernels run in the calling thread alone). The batched
# convolution, which splits its images over the workers in every build, is the control
# that tells a busy machine (other jobs on the cores) from single-threaded kernels: when
# the control cannot reach 1.5 either, the ratios are judged against the control's.
python "$root/.ci/no_openmp_speed.py"

mv "$tmp/src/fastconv" "$tmp/src/fastconv.source"  # the tests run against the install
cd "$tmp/src"
pytest -q -p no:cacheprovider tests/engine/test_parallel.py tests/engine/test_threads.py tests/training/test_optim.py \
  -k "openmp or pool or batchnorm or adam or worker or config"
