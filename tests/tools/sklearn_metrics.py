"""sklearn_metrics.py - reference figures from scikit-learn for test_metrics_sklearn.sh.

  sklearn_metrics.py gen DIR SEED:N:K:TIES...  -> DIR/pSEED.csv, lines "truth,p0..pk-1" (seeded)
  sklearn_metrics.py check CSV OURS.json...   -> exit 1 and print every mismatch beyond 1e-9
TIES=1 rounds probabilities to 1 decimal (many ties); TIES=2 to 2 decimals.
"""
import json
import sys

import numpy as np
from sklearn import metrics as skm


def gen(out, seed, n, k, ties):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), truth] += 1.2  # some signal, plenty of mistakes
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    if ties:
        p = np.round(p, ties)
    with open(out, "w") as f:
        for t, row in zip(truth, p):
            f.write(",".join([str(int(t))] + [repr(float(v)) for v in row]) + "\n")


def check(csv, ours_path):
    data = np.loadtxt(csv, delimiter=",", ndmin=2)
    y = data[:, 0].astype(int)
    p = data[:, 1:]
    k = p.shape[1]
    labels = list(range(k))
    pred = p.argmax(axis=1)
    ours = json.load(open(ours_path))
    bad = []

    def cmp(name, a, b):
        if a is None or b is None or abs(a - b) > 1e-9:
            bad.append(f"{name}: ours {a} sklearn {b}")

    cmp("accuracy", ours["accuracy"], skm.accuracy_score(y, pred))
    cm = skm.confusion_matrix(y, pred, labels=labels)
    if ours["confusion"] != cm.tolist():
        bad.append(f"confusion: ours {ours['confusion']} sklearn {cm.tolist()}")
    pr, rc, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for avg in ("macro", "weighted"):
        P, R, F, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg,
                                                         zero_division=0)
        cmp(f"{avg} precision", ours[avg]["precision"], P)
        cmp(f"{avg} recall", ours[avg]["recall"], R)
        cmp(f"{avg} f1", ours[avg]["f1"], F)
    for c in range(k):
        oc = ours["classes"][c]
        cmp(f"class {c} precision", oc["precision"], pr[c])
        cmp(f"class {c} recall", oc["recall"], rc[c])
        cmp(f"class {c} f1", oc["f1"], f1[c])
        if oc["support"] != int(sup[c]):
            bad.append(f"class {c} support: ours {oc['support']} sklearn {sup[c]}")
        yc = (y == c).astype(int)
        cmp(f"class {c} auc", oc["auc"], skm.roc_auc_score(yc, p[:, c]))
        cmp(f"class {c} ap", oc["average_precision"], skm.average_precision_score(yc, p[:, c]))
        fpr, tpr, thr = skm.roc_curve(yc, p[:, c])
        if len(fpr) != len(oc["roc"]["x"]) or np.max(np.abs(fpr - oc["roc"]["x"])) > 1e-9 \
                or np.max(np.abs(tpr - oc["roc"]["y"])) > 1e-9 \
                or np.max(np.abs(thr - oc["roc"]["threshold"])) > 1e-9:
            bad.append(f"class {c} roc curve differs ({len(fpr)} vs {len(oc['roc']['x'])} points)")
        prec, rec, _ = skm.precision_recall_curve(yc, p[:, c])
        if len(prec) != len(oc["pr"]["x"]) or np.max(np.abs(rec - oc["pr"]["x"])) > 1e-9 \
                or np.max(np.abs(prec - oc["pr"]["y"])) > 1e-9:
            bad.append(f"class {c} pr curve differs")
    per_class = [skm.roc_auc_score((y == c).astype(int), p[:, c]) for c in range(k)]
    if k > 2 and np.allclose(p.sum(axis=1), 1, atol=1e-12):
        ref = skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels)
    else:
        ref = float(np.mean(per_class))
    cmp("macro auc (ovr)", ours["macro"]["auc"], ref)
    cmp("log loss", ours["log_loss"],
        float(np.mean(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-15)))))
    for b in bad:
        print("MISMATCH", csv, b)
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        for spec in sys.argv[3:]:
            seed, n, k, ties = (int(x) for x in spec.split(":"))
            gen(f"{sys.argv[2]}/p{seed}.csv", seed, n, k, ties)
    else:
        args = sys.argv[2:]
        sys.exit(max(check(args[i], args[i + 1]) for i in range(0, len(args), 2)))
