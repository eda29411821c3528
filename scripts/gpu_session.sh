#!/usr/bin/env bash
# What a session with a lent GPU runs there (issue #10's measurements), every log under $OUT (it
# comes back) as well as on the screen. A task now gets 15 minutes of device time in all, machine
# start included, so `once` is the call to make: the essentials in one call of under ten minutes,
# each command with a time limit. The other parts are the longer runs, for a larger budget. Here first:
#   bash scripts/gpu_carry.sh                        # .whl/ (and `lite12` → .whl12/ for those tests)
# Then device `run` with carry [".whl"], timeout_s 600, command `bash scripts/gpu_session.sh PART`:
#   once     the suite without tests/zoo and e2e, the freeze-last and probe benches, loading 2,000
#            small JPEGs (the cold load's steps; decoding by GPU, Pillow, both; 4 and 16 Pillow
#            threads) and 300 at 1024 and 2048 px, each against the PIL loop; about 9 minutes
#   lite12   at once after `once` (warm machine: its packages stay installed), with carry [".whl12"]
#            from `bash scripts/gpu_carry.sh lite12`, timeout_s 180: tests/zoo and the tests that list
#            all three Lite models (both folders in one call would pass the 64 MiB a call may carry)
#   tests    the whole suite (e2e skips itself: no Chromium there)
#   trials   bench/finetune_speed.py --images 2000, --freeze last (automatic batch, and 16) and --freeze all;
#            bench/score_speed.py
#   rest     bench/first_call.py (what each new batch shape costs the first time; also on a new
#            thread and with CUDA_MODULE_LOADING=EAGER), bench/data_speed.py, bench/zoo_sweep.py (all, then resnet + mobilenet_v3 against measure()),
#            bench/vis_speed.py, bench/layout_speed.py
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  once|lite12|tests|trials|rest) ;;
  *) echo "usage: bash scripts/gpu_session.sh once|lite12|tests|trials|rest" >&2; exit 2 ;;
esac
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TLCORE_HOME=/tmp/tlcore-home PYTHONPATH=/tmp/site:$PWD
wheels=(.whl/*.whl)
[ "${1:-}" = "lite12" ] && wheels=(.whl12/*.whl)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  "${wheels[@]}" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
  | tee -a "$OUT/gpu.txt"

log() {  # log NAME COMMAND…: run it, keep its output in $OUT/NAME.log, go on whatever it returns
  local name=$1
  shift
  echo "== $*" | tee "$OUT/$name.log"
  "$@" 2>&1 | tee -a "$OUT/$name.log"
  echo "== exit ${PIPESTATUS[0]}" | tee -a "$OUT/$name.log"
}

case "${1:-}" in
  once)  # each command under `timeout`, sized from the H200 runs of 2026-12-04 (suite 166 s for
    # about 380 tests, now about 600 run here; each trial bench about 55 s with the tutorial's
    # 27–32 s); about 9 minutes in all. The limits add up to more than a call's 600 s: the
    # decoding benches come last, the first to be cut.
    log pytest timeout -k 5 270 python3 -m pytest -q -p no:cacheprovider -rfE --durations=20 \
      --ignore=tests/zoo --ignore=tests/e2e
    log finetune-last timeout -k 5 90 python3 bench/finetune_speed.py --images 2000 --freeze last --again
    log finetune-all timeout -k 5 90 python3 bench/finetune_speed.py --images 2000 --freeze all --again
    log data timeout -k 5 75 python3 bench/data_speed.py --images 2000 --widths 224 --repeat 1 --threads 4 16
    log data-large timeout -k 5 90 python3 bench/data_speed.py --images 300 --widths 1024 2048 --repeat 1 ;;
  lite12)
    log pytest-lite12 timeout -k 5 150 python3 -m pytest -q -p no:cacheprovider -rfE tests/zoo \
      tests/app/test_pages.py tests/test_cli.py tests/test_recommend.py ;;
  tests)
    log pytest python3 -m pytest -q -p no:cacheprovider -rfE ;;
  trials)
    log finetune-last python3 bench/finetune_speed.py --images 2000 --freeze last
    log finetune-last-b16 python3 bench/finetune_speed.py --images 2000 --freeze last --batch 16  # the first run's batch
    log finetune-all python3 bench/finetune_speed.py --images 2000 --freeze all
    log score python3 bench/score_speed.py --models efficientnet_lite0 --size 224 --per-class 200 --epochs 10 ;;
  rest)
    log first-call python3 bench/first_call.py --env CUDA_MODULE_LOADING=EAGER
    log data python3 bench/data_speed.py --widths 1024 2048
    log zoo python3 bench/zoo_sweep.py --batch 1 64 --dtype float32 bfloat16
    log zoo-compare python3 bench/zoo_sweep.py --family resnet mobilenet_v3 --batch 1 64 --dtype float32 bfloat16 --compare
    log vis python3 bench/vis_speed.py --device cuda
    log layout python3 bench/layout_speed.py ;;
esac
