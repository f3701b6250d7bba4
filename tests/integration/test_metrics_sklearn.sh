#!/usr/bin/env bash
# Our metrics against scikit-learn (Debian's, via /usr/bin/python3) on seeded random
# predictions: accuracy, confusion matrix, per-class/macro/weighted precision, recall and F1,
# one-vs-rest ROC AUC and average precision, to 1e-9. Several shapes: ties, 2..6 classes.
. "$(dirname "$0")/lib.sh"
/usr/bin/python3 -c 'import sklearn, numpy' 2>/dev/null || skip "needs python3-sklearn (scripts/deps.sh test)"
DUMP="$CXR_BUILD_DIR/trainer/metrics_dump"
[ -x "$DUMP" ] || fail "missing $DUMP"
for spec in "1 500 4 0" "2 97 2 0" "3 300 3 1" "4 1000 6 0" "5 200 4 2"; do
  read -r seed n k ties <<<"$spec"
  /usr/bin/python3 "$CXR_SOURCE_DIR/tests/tools/sklearn_metrics.py" gen "$seed" "$n" "$k" "$ties" >"$T/p$seed.csv"
  "$DUMP" "$T/p$seed.csv" >"$T/ours$seed.json" || fail "metrics_dump failed on case $seed"
  /usr/bin/python3 "$CXR_SOURCE_DIR/tests/tools/sklearn_metrics.py" check "$T/p$seed.csv" "$T/ours$seed.json" ||
    fail "metrics differ from scikit-learn (seed $seed, n $n, k $k, ties $ties)"
  ok "seed $seed: n=$n k=$k ties=$ties matches scikit-learn"
done
