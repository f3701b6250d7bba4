#!/usr/bin/python3
"""card_figures.py REPORT.json [REPORT.json ...] [--budget PREDICTIONS.csv] - the model card's
tables from `eval` output.

Each REPORT.json comes from `cxrtriage-train eval ... --subgroup-regex '^([a-zA-Z0-9]+)__'`
(subgroups = the source repository of each image, from its file-name prefix). Prints Markdown:
the headline with 95 % intervals, per class figures, per source, and adults only (every source
but Kermany, which is paediatric) with the rate at which adult Normal images are called
COVID-19. Only figures computed by `eval` (or sums of its confusion matrices) are printed.

--budget PREDICTIONS.csv (eval's per-image file) prints the error budget by source: the
macro-F1 the same predictions would have if only the errors on some sources were kept (every
other image counted as right). It shows how much of the shortfall each source's errors cost.
"""
import csv
import os
import json
import sys

PAEDIATRIC = {"kermanyA"}


def ci(d, key):
    c = d.get(key + "_ci95") or {}
    lo, hi = c.get("lo"), c.get("hi")
    return f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""


def from_confusion(conf, names):
    k = len(names)
    n = sum(sum(r) for r in conf)
    tp = [conf[c][c] for c in range(k)]
    rows = [sum(conf[c]) for c in range(k)]
    cols = [sum(conf[r][c] for r in range(k)) for c in range(k)]
    rec = [tp[c] / rows[c] if rows[c] else None for c in range(k)]
    pre = [tp[c] / cols[c] if cols[c] else None for c in range(k)]
    f1 = []
    for c in range(k):
        p, r = pre[c] or 0.0, rec[c] or 0.0
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    present = [c for c in range(k) if rows[c]]
    return {"n": n, "acc": sum(tp) / n if n else 0.0, "rec": rec, "pre": pre,
            "macro_f1_present": sum(f1[c] for c in present) / len(present) if present else 0.0}


def fmt(v):
    return "-" if v is None else f"{v:.3f}"


def one(path):
    j = json.load(open(path))
    names = j["class_names"]
    m = j["metrics"]
    print(f"### {j['model']} on {j['dataset']} ({j.get('split', '?')} split, {m['samples']} images)\n")
    print(f"model digest `{j['model_digest']}`\n")
    print("| figure | value [95 % CI] |\n|---|---|")
    print(f"| accuracy | {m['accuracy']:.3f}{ci(m, 'accuracy')} |")
    print(f"| macro-F1 | {m['macro']['f1']:.3f}{ci(m['macro'], 'f1')} |")
    print(f"| macro AUC | {m['macro']['auc']:.3f}{ci(m['macro'], 'auc')} |")
    if "ece" in m.get("calibration", {}):
        print(f"| expected calibration error | {m['calibration']['ece']:.3f} |")
    print("\n| class | precision | recall | specificity | F1 | AUC | support |\n|---|---|---|---|---|---|---|")
    for c in m["classes"]:
        print(f"| {c['name']} | {c['precision']:.3f}{ci(c, 'precision')} | {c['recall']:.3f}"
              f"{ci(c, 'recall')} | {c['specificity']:.3f} | {c['f1']:.3f} | {c['auc']:.3f} | {c['support']} |")
    for op in j.get("operating_points") or []:
        cls = op["class"] if isinstance(op["class"], str) else names[op["class"]]
        print(f"\nOperating point for {cls} at recall >= {op['target_recall']:.2f}: threshold "
              f"{op['threshold']:.4f} gives recall {op['recall']:.3f}, specificity "
              f"{op['specificity']:.3f}, precision {op['precision']:.3f} (TP {op['tp']}, FP "
              f"{op['fp']}, FN {op['fn']}, TN {op['tn']}).")
    subs = j.get("subgroups") or {}
    if not subs:
        return
    print("\nPer source (recall per class; '-' where the source has no image of that class):\n")
    print("| source | images | accuracy | " + " | ".join(f"recall {n}" for n in names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    adult = [[0] * len(names) for _ in names]
    for key, s in sorted(subs.items()):
        f = from_confusion(s["confusion"], names)
        print(f"| {key} | {f['n']} | {f['acc']:.3f} | " + " | ".join(fmt(r) for r in f["rec"]) + " |")
        if key not in PAEDIATRIC:
            for r in range(len(names)):
                for c in range(len(names)):
                    adult[r][c] += s["confusion"][r][c]
    f = from_confusion(adult, names)
    print(f"\nAdults only (every source but {', '.join(sorted(PAEDIATRIC))}): {f['n']} images, "
          f"accuracy {f['acc']:.3f}, macro-F1 over the classes present {f['macro_f1_present']:.3f}\n")
    print("| class | precision | recall |\n|---|---|---|")
    for c, n in enumerate(names):
        print(f"| {n} | {fmt(f['pre'][c])} | {fmt(f['rec'][c])} |")
    if "Normal" in names and "COVID-19" in names:
        nr, cv = names.index("Normal"), names.index("COVID-19")
        row = adult[nr]
        print(f"\nAdult Normal images called COVID-19: {row[cv]} of {sum(row)} "
              f"({row[cv] / sum(row):.1%})" if sum(row) else "\nNo adult Normal images.")
    print()


def macro_f1(truth, pred, names):
    f1 = []
    for c in names:
        tp = sum(1 for t, p in zip(truth, pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(truth, pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(truth, pred) if t == c and p != c)
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(f1) / len(f1)


def budget(path):
    rows = list(csv.DictReader(open(path)))
    names = sorted({r["truth"] for r in rows})
    src = [os.path.basename(r["path"]).split("__")[0] for r in rows]
    truth = [r["truth"] for r in rows]
    groups = {"NIH (adult Normal vs Pneumonia)": {"nih"},
              "Kermany (children: normal, bacterial, viral)": {"kermanyA"},
              "ieee8023 + Actualmed + Figure1 (COVID-19 and other adult cases)":
                  {"ieee", "actualmed", "figure1"}}
    print("| errors kept only on | macro-F1 |\n|---|---|")
    print(f"| every source (as measured) | {macro_f1(truth, [r['predicted'] for r in rows], names):.3f} |")
    keys = list(groups)
    for k in keys + [None]:
        keep = groups[k] if k else groups[keys[0]] | groups[keys[1]]
        label = k if k else f"{keys[0].split(' (')[0]} and {keys[1].split(' (')[0]}"
        pred = [r["predicted"] if s in keep else r["truth"] for r, s in zip(rows, src)]
        print(f"| {label} | {macro_f1(truth, pred, names):.3f} |")
    print()


args = sys.argv[1:]
if "--budget" in args:
    i = args.index("--budget")
    budget(args[i + 1])
    del args[i:i + 2]
for p in args:
    one(p)
