#!/usr/bin/env bash
# triage_figures.sh - the bundled model's triage operating points and what they do on the
# validation split (where they were chosen) and on the held-out test split: the figures of the
# model card's "Triage operating points" section. Run from anywhere; reads the data as
# retrain.sh does (../shared/data/cxr4 beside the checkout). Takes under a minute.
#
# The operating points themselves were written into the model file by
#   cxrtriage-train export --model model/weights/cxr4-default.cxrm \
#     --out model/weights/cxr4-default.cxrm --data ../shared/data/cxr4 \
#     --split-file model/weights/split.csv
# (only the metadata changes; the weights stay as they are).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=../shared/data/cxr4
[ -d "$data" ] || { echo "triage_figures.sh: no data at $data" >&2; exit 1; }
T=build/release/trainer/cxrtriage-train
[ -x "$T" ] || scripts/build.sh release >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for split in val test; do
  "$T" eval --model model/weights/cxr4-default.cxrm --data "$data" \
    --split-file model/weights/split.csv --split "$split" --out-dir "$tmp/$split" \
    --bootstrap 0 --mistakes 0 --threads 2 | grep -E '^(model|data|triage)'
done
