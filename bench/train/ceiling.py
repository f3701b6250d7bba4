#!/usr/bin/python3
"""ceiling.py PREDS.npz [PREDS.npz ...] - what limits a model's test macro-F1 on cxr4.

Reads the test softmax that `torch_train.py --test --names SPLIT --save-preds F` writes (several
files: their mean, an ensemble) and prints: macro-F1 with a percentile-bootstrap interval, accuracy
per source (file-name prefix), and the macro-F1 the same predictions would reach if the errors
of one group were corrected and nothing else changed ("oracle fix"). The groups are the pairs the
data set's README names as hard: NIH adult Normal vs NIH "Pneumonia" (Lung Opacity), Kermany
bacterial (Lung Opacity) vs viral pneumonia vs Normal children, COVID-19 confusions, and the
ieee8023 non-COVID images (the source shortcut). Also the best COVID-19 precision at a score
threshold giving recall >= 0.92. Decision-support research figures, not a clinical validation.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train import class_stats  # noqa: E402

NAMES = ["COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"]


def stats(pred, y, k=4):
    return class_stats(pred, y, k)


def mf1(pred, y):
    return float(np.mean([s[2] for s in stats(pred, y)]))


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    runs = [np.load(f) for f in sys.argv[1:]]
    prob = np.mean([r["prob"] for r in runs], axis=0)
    y, names = runs[0]["y"], runs[0]["names"]
    src = np.array([n.split("__")[0] for n in names])
    pred = prob.argmax(1)
    rng = np.random.default_rng(1)
    boots = [mf1(pred[i], y[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(1000))]
    st = stats(pred, y)
    print(f"test n {len(y)} ({len(runs)} model(s)): acc {(pred == y).mean():.3f} macro-F1 "
          f"{mf1(pred, y):.3f} [{np.percentile(boots, 2.5):.3f}, {np.percentile(boots, 97.5):.3f}] "
          f"COVID-19 recall {st[0][1]:.3f} precision {st[0][0]:.3f}")
    for c in range(4):
        print(f"  {NAMES[c]:16s} precision {st[c][0]:.3f} recall {st[c][1]:.3f} F1 {st[c][2]:.3f}")
    print("errors (true -> predicted, source: count):")
    errs = {}
    for t, p, s in zip(y, pred, src):
        if t != p:
            key = f"{NAMES[t]} -> {NAMES[p]} ({s})"
            errs[key] = errs.get(key, 0) + 1
    for key, n in sorted(errs.items(), key=lambda kv: -kv[1]):
        print(f"  {n:3d}  {key}")
    groups = {
        "NIH Normal <-> NIH Lung Opacity": (src == "nih") & np.isin(y, [1, 2]) & np.isin(pred, [1, 2]),
        "all NIH errors": src == "nih",
        "Kermany (children) errors": src == "kermanyA",
        "errors involving COVID-19 (true or predicted)": (y == 0) | (pred == 0),
        "ieee/actualmed/figure1 non-COVID errors": np.isin(src, ["ieee", "actualmed", "figure1"]) & (y != 0),
    }
    print("oracle fix (these errors corrected, all else unchanged):")
    for g, m in groups.items():
        fixed = np.where(m, y, pred)
        s2 = stats(fixed, y)
        print(f"  {g:48s} {int((m & (pred != y)).sum()):3d} errors -> macro-F1 {mf1(fixed, y):.3f}, "
              f"COVID-19 recall {s2[0][1]:.3f} precision {s2[0][0]:.3f}")
    print("only these errors left (every other error corrected):")
    for g in ("NIH Normal <-> NIH Lung Opacity", "Kermany (children) errors"):
        kept = np.where(groups[g], pred, y)
        print(f"  {g:48s} -> macro-F1 {mf1(kept, y):.3f}")
    both = groups["NIH Normal <-> NIH Lung Opacity"] | groups["Kermany (children) errors"]
    print(f"  {'both of these':48s} -> macro-F1 {mf1(np.where(both, pred, y), y):.3f}")
    # COVID-19 operating point: the best precision at recall >= 0.92.
    sc = prob[:, 0]
    best = None
    for t in np.unique(sc):
        f = sc >= t
        r = (f & (y == 0)).sum() / max((y == 0).sum(), 1)
        p = (f & (y == 0)).sum() / max(f.sum(), 1)
        if r >= 0.92 and (best is None or p > best[1]):
            best = (t, p, r)
    if best:
        print(f"COVID-19 threshold {best[0]:.4f}: recall {best[2]:.3f} precision {best[1]:.3f} "
              f"(best precision at recall >= 0.92; chosen on test, so optimistic)")


if __name__ == "__main__":
    main()
