#!/usr/bin/env bash
# Per-pixel LightGBM on bands + spectral indices (issue 11, lever 3), on the seed-42
# split of the full Solafune dataset (1,155 train / 165 val / 330 test tiles), the
# split of configs/rgbn.yaml and configs/all12.yaml. Each run is a complete run folder:
# threshold chosen on val, exact val/test counts in metrics.json, training seconds in
# run.json (train_seconds: the boosting only) and model.pt's model_params.
#
#   bash bench/pixel_gbm.sh [OUT_DIR]            # four runs, then the table
#   NET_RGBN=runs/rgbn-... NET_ALL12=runs/all12-... bash bench/pixel_gbm.sh
#       ... also blends each LightGBM model with a network run of the same split
#       (weight and threshold chosen on val; evaluate --blend)
#
# The blend figure reported for issue 11 used a short network on the same split (12
# minutes, one thread, on a loaded machine: val IoU 0.703, test 0.621):
#   .venv/bin/python -m core train --config configs/all12.yaml train.threads=1 \
#       train.max_minutes=12 train.epochs=15 name=net-all12-short out_dir=$OUT
#   NET_ALL12=$OUT/net-all12-short-... (with the runs above)
#
# From the repository root. THREADS (default 1) sets LightGBM's threads: on a shared
# machine, OpenMP threads that wait for a busy core slow LightGBM down a lot.
set -euo pipefail
OUT=${1:-/tmp/gbm-runs}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/solafune-s2-pv}
THREADS=${THREADS:-1}
mkdir -p "$OUT"
common=("data.path=$DATA" "out_dir=$OUT" "train.threads=$THREADS")

run() {  # NAME CONFIG [OVERRIDES...] -> prints the run folder
    local name=$1 config=$2
    shift 2
    $PY -m core train --config "$config" "${common[@]}" "name=$name" "$@" 2>"$OUT/$name.log" | tail -1
}

rgbn=$(run gbm-rgbn configs/gbm_rgbn.yaml "data.indices=[]")
rgbn_idx=$(run gbm-rgbn-idx configs/gbm_rgbn.yaml)
all12=$(run gbm-all12 configs/gbm_all12.yaml "data.indices=[]")
all12_idx=$(run gbm-all12-idx configs/gbm_all12.yaml)

$PY - "$rgbn" "$rgbn_idx" "$all12" "$all12_idx" <<'PYEOF'
import json, sys
from pathlib import Path
print(f"{'run':<16} {'bands':<9} {'indices':<34} {'val IoU':>8} {'test IoU':>8} {'test F1':>8} "
      f"{'thr':>5} {'rounds':>6} {'pixels':>8} {'train s':>8}")
for run in map(Path, sys.argv[1:]):
    m = json.loads((run / "metrics.json").read_text())
    r = json.loads((run / "run.json").read_text())
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
    bands = "all 12" if cfg["data"]["bands"] is None else ",".join(map(str, cfg["data"]["bands"]))
    idx = ",".join(cfg["data"]["indices"]) or "-"
    v, t = m["splits"]["val"], m["splits"]["test"]
    print(f"{run.name.rsplit('-', 2)[0]:<16} {bands:<9} {idx:<34} {v['iou']:>8.4f} {t['iou']:>8.4f} "
          f"{t['f1']:>8.4f} {m['threshold']:>5.2f} {r['best_epoch']:>6} {r['training_pixels']:>8} "
          f"{r['train_seconds']:>8.1f}")
PYEOF

# What the indices add, paired over the same test tiles (bootstrap over tiles)
echo "R,G,B,NIR: bands only (A) vs + ndvi, ndwi (B)"
$PY bench/paired_bootstrap.py "$rgbn" "$rgbn_idx"
echo "all 12: bands only (A) vs + 5 indices (B)"
$PY bench/paired_bootstrap.py "$all12" "$all12_idx"

blend() {  # NETWORK_RUN GBM_RUN: the blend's test metrics, then network (A) vs blend (B)
    local csv="$OUT/blend_$(basename "$2")_per_image.csv"
    $PY -m core evaluate "$1" --blend "$2" --split test --json --csv "$csv" \
        --plants-csv "$OUT/blend_$(basename "$2")_plants.csv"
    $PY bench/paired_bootstrap.py "$1/per_image_test.csv" "$csv"
}
if [ -n "${NET_RGBN:-}" ]; then blend "$NET_RGBN" "$rgbn_idx"; fi
if [ -n "${NET_ALL12:-}" ]; then blend "$NET_ALL12" "$all12_idx"; fi
