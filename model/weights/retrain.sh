#!/usr/bin/env bash
# retrain.sh - retrains the bundled model exactly as it was made, then evaluates it.
# Run from anywhere; the data is read from ../shared/data/cxr4 beside the checkout (or
# $CXR_DATA_DIR/cxr4). The split is model/weights/split.csv (patient-grouped, seed 1); its paths
# are relative to the checkout's root, which is where the commands run.
# Takes about 7-10 minutes on a 2-core machine (423 s measured for the training). Writes model/weights/new/ and leaves the
# shipped files alone; compare, then copy by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=../shared/data/cxr4
if [ -n "${CXR_DATA_DIR:-}" ]; then
  mkdir -p build && ln -sfn "$CXR_DATA_DIR" build/shared-data && data=build/shared-data/cxr4
fi
[ -d "$data" ] || { echo "retrain.sh: no data at $data" >&2; exit 1; }
scripts/build.sh release >/dev/null
T=build/release/trainer/cxrtriage-train
out=model/weights/new
mkdir -p "$out"
# The split file lists ../shared/data/cxr4/...; a different data path gets a new split.
split=model/weights/split.csv
[ "$data" = ../shared/data/cxr4 ] || split=$out/split.csv
$T train --data "$data" --arch compact --out "$out/trained.cxrm" --split-file "$split" \
  --group-regex '^(nih__[0-9]+|kermanyA__person[0-9]+|kermanyA__IM-[0-9]+|ieee__1-s2\.0-S[0-9X]+)' \
  --epochs 36 --patience 12 --batch 32 --lr 0.003 --warmup 2 --seed 1 --threads 2
# train chose the triage operating points on the validation split; export keeps them (add
# --data "$data" --split-file "$split" to recompute them, see triage_figures.sh).
$T export --model "$out/trained.cxrm" --out "$out/cxr4-default.cxrm"
cp "$out/trained.cxrm.history.json" "$out/cxr4-default.cxrm.history.json"
$T eval --model "$out/cxr4-default.cxrm" --data "$data" --split-file "$split" --split test \
  --out-dir "$out/eval" --threshold COVID-19:0.95 --subgroup-regex '^([a-zA-Z0-9]+)__' \
  --errors "$out/eval/errors"
/usr/bin/python3 model/weights/card_figures.py "$out/eval/report.json"
