#!/usr/bin/env bash
# Re-create the demo checkpoints in checkpoints/ from configs/demo/*.yaml with the project's own
# trainer: train each demo (runs/demo-NAME), export the better of its weights and their EMA
# (higher validation PSNR) without optimizer state, and evaluate it on the held-out photos.
# simvq-4096-gan fine-tunes checkpoints/simvq-4096 with the VQGAN stage's discriminator, so it
# is trained after the others are exported.
#
#   PARALLEL=2 bash checkpoints/make_demos.sh        # the committed set: two demos at a time, 1 thread each
#   bash checkpoints/make_demos.sh vq-4096 fsq-75555 # some of them (trained in the order given)
#   EXTRA="train.steps=200" bash checkpoints/make_demos.sh    # overrides for every demo
#   DEST=/tmp/demos bash checkpoints/make_demos.sh   # export somewhere else
#   SET=configs/demo-gpu PARALLEL=6 bash checkpoints/make_demos.sh   # the study-size set, on one GPU
#
# Time: README "Demo checkpoints" gives the minutes each demo of the committed set (configs/demo,
# 6,000 steps each) took on this project's 2-core CPU with PARALLEL=2. An interrupted
# demo resumes from its last checkpoint (--resume) when the script is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PARALLEL=${PARALLEL:-1}
DEST=${DEST:-checkpoints}
EXTRA=${EXTRA:-}
SET=${SET:-configs/demo}

names=()
if [[ $# -gt 0 ]]; then  # in the order given
  for name in "$@"; do
    [[ -f "$SET/$name.yaml" ]] || { echo "error: no demo $name in $SET/; choose from: $(cd "$SET" && ls *.yaml | sed 's/.yaml$//' | tr '\n' ' ')" >&2; exit 2; }
    names+=("$name")
  done
else
  for cfg in "$SET"/*.yaml; do names+=("$(basename "$cfg" .yaml)"); done
fi

train() {  # --resume: an interrupted demo continues where it stopped
  # shellcheck disable=SC2086
  $PY -m trainer --cfg "$SET/$1.yaml" $EXTRA --resume > "runs/demo-$1.log" 2>&1 \
    || { echo "error: training demo $1 failed; see runs/demo-$1.log" >&2; return 1; }
}

mkdir -p runs
build() {  # train the given demos (PARALLEL at a time), then export and evaluate them
  local running=0 failed=0 name
  for name in "$@"; do
    echo "== training $name ($SET/$name.yaml) -> runs/demo-$name"
    train "$name" &
    running=$((running + 1))
    if [[ $running -ge $PARALLEL ]]; then wait -n || failed=1; running=$((running - 1)); fi
  done
  while [[ $running -gt 0 ]]; do wait -n || failed=1; running=$((running - 1)); done
  [[ $failed -eq 0 ]] || { echo "error: a demo failed to train (see runs/demo-*.log); nothing exported" >&2; exit 1; }

  for name in "$@"; do
    rm -rf "${DEST:?}/$name"
    $PY -m trainer export --ckpt "runs/demo-$name" --to "$DEST/$name" --weights best
    $PY -m trainer eval --ckpt "$DEST/$name" --data photos --size 64
  done
}

# Demos that start from another demo's weights (train.init_from, e.g. simvq-4096-gan from
# checkpoints/simvq-4096) come after the others are exported.
first=() then=()
for name in "${names[@]}"; do
  if grep -q "init_from: *checkpoints/" "$SET/$name.yaml"; then then+=("$name"); else first+=("$name"); fi
done
[[ ${#first[@]} -eq 0 ]] || build "${first[@]}"
[[ ${#then[@]} -eq 0 ]] || build "${then[@]}"
du -sh "$DEST"/*/ 2>/dev/null || true
