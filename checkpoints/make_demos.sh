#!/usr/bin/env bash
# Re-create the demo checkpoints in checkpoints/ from configs/demo/*.yaml with the project's own
# trainer: train each demo (runs/demo-NAME), export the better of its weights and their EMA
# (higher validation PSNR) without optimizer state, and evaluate it on the held-out photos.
#
#   bash checkpoints/make_demos.sh                   # every demo, one after the other
#   bash checkpoints/make_demos.sh vq-16384 fsq-88865
#   PARALLEL=6 bash checkpoints/make_demos.sh        # side by side (one GPU trains all six at once)
#   EXTRA="train.steps=200" bash checkpoints/make_demos.sh    # overrides for every demo
#   DEST=/tmp/demos bash checkpoints/make_demos.sh   # export somewhere else
#
# Time: the committed set was trained on one NVIDIA H200, six demos side by side (bf16,
# channels_last, photos cut into crops on the GPU); see README "Demo checkpoints" for the steps and
# minutes. On this project's 2-core CPU one step of batch 256 at hidden 128 takes several seconds
# (bench/train_step.py), so the full set is a GPU job; EXTRA="train.steps=..." scales it down.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PARALLEL=${PARALLEL:-1}
DEST=${DEST:-checkpoints}
EXTRA=${EXTRA:-}

names=()
for cfg in configs/demo/*.yaml; do
  name=$(basename "$cfg" .yaml)
  if [[ $# -gt 0 && " $* " != *" $name "* ]]; then continue; fi
  names+=("$name")
done
[[ ${#names[@]} -gt 0 ]] || { echo "error: no demo named $*; choose from configs/demo/" >&2; exit 2; }

train() {  # --resume: an interrupted demo continues where it stopped
  # shellcheck disable=SC2086
  $PY -m trainer --cfg "configs/demo/$1.yaml" $EXTRA --resume > "runs/demo-$1.log" 2>&1 \
    || { echo "error: training demo $1 failed; see runs/demo-$1.log" >&2; return 1; }
}

mkdir -p runs
pids=()
for name in "${names[@]}"; do
  echo "== training $name (configs/demo/$name.yaml) -> runs/demo-$name"
  train "$name" &
  pids+=($!)
  if [[ ${#pids[@]} -ge $PARALLEL ]]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for pid in "${pids[@]}"; do wait "$pid"; done

for name in "${names[@]}"; do
  rm -rf "${DEST:?}/$name"
  $PY -m trainer export --ckpt "runs/demo-$name" --to "$DEST/$name" --weights best
  $PY -m trainer eval --ckpt "$DEST/$name" --data photos --size 64
done
du -sh "$DEST"/*/ 2>/dev/null || true
