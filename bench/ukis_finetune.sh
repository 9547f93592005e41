#!/usr/bin/env bash
# Paired check of issue 11, lever 2: Unet efficientnet-b4 from random init vs from the
# ukis-csmask-4b-l2a encoder (its own normalisation, or the data's), and resnet18 from
# random init for the time ratio. Same split (seed 42), bands B2,B3,B4,B8 (2,3,4,8),
# data.limit tiles, upscale 4 + 96 px crops, bf16/channels-last as auto decides, no TTA,
# no early stopping (the model of the best val IoU is kept), threshold chosen on val.
# Every arm is configs/rgbn_ukis.yaml (bn_momentum 0.1) with the overrides given:
#   bench/ukis_finetune.sh [EPOCHS] [LIMIT] [OUT] [override ...]
# e.g. bench/ukis_finetune.sh 4 400 runs/ukis_m001 model.bn_momentum=null (smp's 0.01)
#      PAIRS=b4_ukis_model,b4_random bench/ukis_finetune.sh 4 400 runs/ukis_s7 train.seed=7
# Two arms run at once (1 thread each), so that the two of a pair see the same machine
# load: (ukis, ukis normalisation | random init), then (ukis, data normalisation |
# resnet18 random init). Compare seconds per epoch only within a pair.
# PAIRS="b4_ukis_model,b4_random b4_ukis_data" picks the pairs (default: both above).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-4}
LIMIT=${2:-400}
OUT=${3:-runs/ukis_check}
shift $(( $# < 3 ? $# : 3 ))
PY=${PY:-.venv/bin/python}
PAIRS=${PAIRS:-"b4_ukis_model,b4_random b4_ukis_data,r18_random"}
mkdir -p "$OUT"
common=(data.limit="$LIMIT" train.epochs="$EPOCHS" train.tta=false train.max_minutes=null
        train.early_stop.enabled=false train.eval_test_each_epoch=false train.threads=1
        out_dir="$OUT" "$@")
declare -A ARM=(
  [b4_ukis_model]="model.init_normalisation=model"
  [b4_random]="model.encoder_weights=null"
  [b4_ukis_data]="model.init_normalisation=data"
  [r18_random]="model.encoder=resnet18 model.encoder_weights=null"
)
run() { local name=$1
        # shellcheck disable=SC2086
        "$PY" -m core train --config configs/rgbn_ukis.yaml "${common[@]}" name="$name" \
          ${ARM[$name]} > "$OUT/$name.log" 2>&1; }
names=()
for pair in $PAIRS; do
  echo "== ${pair/,/ | } (load $(cut -d' ' -f1-3 /proc/loadavg))"
  pids=()
  for name in ${pair//,/ }; do run "$name" & pids+=($!); names+=("$name"); done
  wait "${pids[@]}"
done
for name in "${names[@]}"; do
  echo "== $name"; grep -E "^(status|train|val|test) " "$OUT/$name.log" || tail -3 "$OUT/$name.log"
done
