#!/usr/bin/env bash
# Create .venv and install the app (and, with "dev", the test tools and Debian's chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# torch/torchvision are pinned as a pair: a lone PyPI torchvision against another torch fails to
# import. Override TORCH_SPEC for another pair (e.g. a CPU-only index on a laptop).
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
# shellcheck disable=SC2086
$PIP install --quiet $TORCH_SPEC
if [ "${1:-}" = "dev" ]; then
  $PIP install --quiet -r requirements-dev.txt
else
  $PIP install --quiet -r requirements.txt
fi
$PIP install --quiet --no-deps -e .

if [ "${1:-}" = "dev" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: install Debian's chromium for the browser test (apt-get install chromium)" >&2
  fi
fi
