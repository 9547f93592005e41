#!/usr/bin/env bash
# Accuracy benchmark of issue 3 ("Accuracy on real data"): trains the two committed
# configs on ../shared/data/solafune-s2-pv (default split: seed 42, val 0.1, test 0.2),
# one after the other (never in parallel: 2-core machine), then prints each run's
# test metrics at the threshold chosen on val. About 2 x 30 minutes on 2 vCPU.
# Results and commands: docs/benchmarks_accuracy.md.
#
#   bash bench/accuracy.sh [OUT_DIR]       # OUT_DIR defaults to /tmp/acc-runs
#   BASELINES=1 bash bench/accuracy.sh     # also the per-pixel baselines (~3 min)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-/tmp/acc-runs}
DATA=../shared/data/solafune-s2-pv
mkdir -p "$OUT"

echo "machine: $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(date -u +%F)"
runs=()
for cfg in rgbn all12; do
    start=$(date +%s)
    # The run folder is the last line on stdout; progress goes to stderr.
    run=$("$PY" -m core train --config "configs/$cfg.yaml" "out_dir=$OUT" 2>"$OUT/$cfg.log" | tail -n 1)
    echo "$cfg: $run ($(( ($(date +%s) - start) / 60 )) min wall, training + final evaluation)"
    runs+=("$run")
done

if [[ "${BASELINES:-0}" == 1 ]]; then
    "$PY" -m core baseline "$DATA" --bands 4,3,2,8
    "$PY" -m core baseline "$DATA"
fi

"$PY" - "${runs[@]}" <<'PYEOF'
import csv, json, sys
from pathlib import Path

print(f"{'run':<8} {'split':<5} {'IoU':>6} {'F1':>6} {'prec':>6} {'recall':>6} {'thr':>5} "
      f"{'epochs':>6} {'best':>4} {'train min':>9} status")
for run in map(Path, sys.argv[1:]):
    m = json.loads((run / "metrics.json").read_text())
    hist = list(csv.DictReader(open(run / "history.csv")))
    minutes = sum(float(h["seconds"]) for h in hist) / 60
    for split in ("val", "test"):
        s = m["splits"][split]
        print(f"{run.name.split('-')[0]:<8} {split:<5} {s['iou']:6.4f} {s['f1']:6.4f} "
              f"{s['precision']:6.4f} {s['recall']:6.4f} {m['threshold']:5.2f} "
              f"{len(hist):6d} {m['best_epoch']:4d} {minutes:9.1f} {m['status']}")
PYEOF
