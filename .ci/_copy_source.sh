# Sourced by the CI step scripts: copy_source DEST copies the checkout's source (what git
# tracks or would track) to DEST without build products, so that a build there compiles
# every extension afresh, with that step's settings (setuptools skips an extension whose
# built file looks newer than its sources, even when it was built with other settings).
copy_source() {
  mkdir -p "$1"
  tar -c --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude=./dist \
      --exclude='*.egg-info' --exclude='*.so' --exclude='./fastconv/*.c' --exclude=__pycache__ . \
    | tar -x -C "$1"
}
