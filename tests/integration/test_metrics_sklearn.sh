#!/usr/bin/env bash
# Our metrics against scikit-learn (Debian's, via /usr/bin/python3) on seeded random
# predictions: accuracy, confusion matrix, per-class/macro/weighted precision, recall and F1,
# one-vs-rest ROC AUC, ROC and PR curves, average precision and log loss, to 1e-9.
# Cases (SEED:N:K:TIES): 2..6 classes; TIES=1 or 2 rounds probabilities to that many decimals,
# which makes many tied scores.
. "$(dirname "$0")/lib.sh"
/usr/bin/python3 -c 'import sklearn, numpy' 2>/dev/null || skip "needs python3-sklearn (scripts/deps.sh test)"
DUMP="$CXR_BUILD_DIR/trainer/metrics_dump"
PY="$CXR_SOURCE_DIR/tests/tools/sklearn_metrics.py"
[ -x "$DUMP" ] || fail "missing $DUMP"
cases=(1:500:4:0 2:97:2:0 3:300:3:1 4:1000:6:0 5:200:4:2 6:60:2:1)
/usr/bin/python3 "$PY" gen "$T" "${cases[@]}"
pairs=()
for c in "${cases[@]}"; do
  seed=${c%%:*}
  "$DUMP" "$T/p$seed.csv" >"$T/ours$seed.json" || fail "metrics_dump failed on case $c"
  pairs+=("$T/p$seed.csv" "$T/ours$seed.json")
done
/usr/bin/python3 "$PY" check "${pairs[@]}" || fail "metrics differ from scikit-learn"
ok "${#cases[@]} cases (${cases[*]}) match scikit-learn to 1e-9"
