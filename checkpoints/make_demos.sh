#!/usr/bin/env bash
# Re-create the demo checkpoints in checkpoints/ with the project's own trainer (CPU, ~35 min on
# 2 busy cores; the 16384-code and entropy demos take most of it: a step costs 4-10x more).
# Each demo is a configs/cpu row with the overrides below, trained, evaluated on the whole
# built-in validation split, and exported without its optimizer state.
#
#   bash checkpoints/make_demos.sh            # all demos
#   bash checkpoints/make_demos.sh vq-512     # one
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

# name            config row                          steps   extra overrides
DEMOS=(
  "vq-512          configs/cpu/vq-512.yaml             1000"
  "vq-16384        configs/cpu/vq-16384.yaml           1000"
  "vq-l2-2048      configs/cpu/vq-l2-2048.yaml         1000"
  "vq-entropy-2048 configs/cpu/vq-entropy-2048.yaml    1000"
  "vq-ema-512      configs/cpu/vq-ema-512.yaml         1000"
  "fsq-8555        configs/cpu/fsq-8555.yaml           1000"
  "simvq-2048      configs/cpu/simvq-2048.yaml         1000"
)
# Common to every demo: batch 16 (the sweep rows use 8), one CPU thread, validation every 200 steps,
# a checkpoint every 100 steps.
COMMON="train.batch_size=16 train.threads=1 train.log_every=50 train.val_every=200 train.ckpt_every=100 train.keep_last=1"

for row in "${DEMOS[@]}"; do
  read -r name cfg steps extra <<<"$row"
  if [[ $# -gt 0 && " $* " != *" $name "* ]]; then continue; fi
  run="runs/demo-$name"
  echo "== $name: $cfg, $steps steps -> checkpoints/$name"
  # --resume: an interrupted demo continues where it stopped.
  $PY -m trainer --cfg "$cfg" name="demo-$name" train.steps="$steps" $COMMON ${extra:-} --resume
  $PY -m trainer eval --ckpt "$run"
  rm -rf "checkpoints/$name"
  $PY -m trainer export --ckpt "$run" --to "checkpoints/$name"
done
du -sh checkpoints/*/ 2>/dev/null || true
