#!/usr/bin/python3
"""torch_train.py DUMP ARCH [--epochs N] [--threads N] [--no-augment] [--lr X] [--seed N] [recipe options]

The PyTorch CPU reference for `cxrtriage-train train`: the same architecture (built from the
same .arch text by model/golden/gen_golden.py), the same decoded inputs (DUMP, written by
`cxrtriage-train train --dump-inputs`, i.e. the daemon's own pixel path), the same split and
the same recipe: Adam with L2 weight decay on conv/dense weights, class-weighted label-smoothed
cross-entropy, linear warm-up then cosine learning rate, batch 32, normalisation measured on the
training images, the same augmentation ranges (rotation, shift, zoom, brightness, contrast,
gamma). Prints one line per epoch (train loss/accuracy, validation macro-F1, images/s) and a
final `torch_train_ips=` line: training images over the wall time from loading the data to the
last validation, the same span `cxrtriage-train train` is timed over. Used by bench/train/run to compare training throughput and as
evidence that our engine learns like PyTorch does on the same data.

Recipe exploration (all off by default, so the default output is unchanged): --test scores the
TEST split once, with the weights of the best-validation epoch (and of the weights' EMA when
--ema is given, if its validation macro-F1 is higher), and prints per-class F1 and COVID-19 (class 0)
recall/precision; --names SPLIT_CSV (the --split-file the dump was made with, same order) adds
accuracy per source (file-name prefix before '__') and the NIH Normal/Lung Opacity confusion;
--ema DECAY keeps an exponential moving average of the weights and BN statistics, validated each
epoch beside the raw weights; --mixup ALPHA; --label-smoothing, --weight-decay,
--no-class-weights, --aug-scale (multiplies every augmentation range), --min-lr-frac, --patience
(stop after N epochs without a better validation macro-F1, as the C trainer does), --save-preds
FILE (.npz of the selected model's test softmax, labels and names).
"""
import argparse
import copy
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "model", "golden"))
import gen_golden  # noqa: E402


def load_dump(path):
    head = np.fromfile(path, dtype=np.int32, count=2)
    n, size = int(head[0]), int(head[1])
    rec = 2 + size * size
    raw = np.fromfile(path, dtype=np.float32, offset=8, count=n * rec)
    raw = raw.reshape(n, rec)
    meta = raw[:, :2].copy().view(np.int32)
    return raw[:, 2:].reshape(n, 1, size, size), meta[:, 0].astype(np.int64), meta[:, 1], size


def class_stats(pred, y, k):
    """Per class (precision, recall, F1)."""
    out = []
    for c in range(k):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        out.append((p, r, 2 * p * r / (p + r) if p + r else 0.0))
    return out


def macro_f1(pred, y, k):
    return sum(f for _, _, f in class_stats(pred, y, k)) / k


def augment(x, gen, scale=1.0):
    """The ranges of trainer/augment.c: rotation 7 deg, shift 6 %, zoom 10 %, brightness 0.08,
    contrast 0.15, gamma exp(+-0.2); padding 0. SCALE multiplies every range."""
    b = x.shape[0]
    u = lambda r: (torch.rand(b, generator=gen) * 2 - 1) * r * scale  # noqa: E731
    th = u(7.0) * math.pi / 180
    s = 1 + u(0.10)
    tx, ty = u(0.06) * 2, u(0.06) * 2  # affine_grid works in [-1, 1]
    c, si = torch.cos(th) / s, torch.sin(th) / s
    theta = torch.stack([torch.stack([c, si, -tx], 1), torch.stack([-si, c, -ty], 1)], 1)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    inside = F.grid_sample(torch.ones_like(x), grid, align_corners=False) > 0.999
    y = F.grid_sample(x, grid, align_corners=False)
    y = (y - 0.5) * (1 + u(0.15)).view(b, 1, 1, 1) + 0.5 + u(0.08).view(b, 1, 1, 1)
    y = y.clamp(0, 1) ** torch.exp(u(0.2)).view(b, 1, 1, 1)
    return torch.where(inside, y, torch.zeros_like(y))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("arch")
    ap.add_argument("--epochs", type=int, default=36)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--test", action="store_true", help="score the test split at the best epoch")
    ap.add_argument("--names", help="split CSV the dump was made with: per-source test figures")
    ap.add_argument("--ema", type=float, default=0.0, help="EMA decay per step (0: off)")
    ap.add_argument("--mixup", type=float, default=0.0, help="mixup Beta(a, a) (0: off)")
    ap.add_argument("--label-smoothing", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--no-class-weights", action="store_true")
    ap.add_argument("--aug-scale", type=float, default=1.0)
    ap.add_argument("--min-lr-frac", type=float, default=0.01)
    ap.add_argument("--patience", type=int, default=0, help="early stop (0: never)")
    ap.add_argument("--save-preds", help="write the selected model's test softmax (.npz)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    t_load = time.perf_counter()
    x, y, split, size = load_dump(a.dump)
    k = int(y.max()) + 1
    tr, va, te = np.where(split == 0)[0], np.where(split == 1)[0], np.where(split == 2)[0]
    mean, std = float(x[tr].mean()), float(x[tr].std())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    load_s = time.perf_counter() - t_load
    path = a.arch if os.path.isfile(a.arch) else os.path.join(gen_golden.ARCHS, a.arch + ".arch")
    _, ch, layers = gen_golden.parse(path)
    gen_golden.CLASSES = k
    net = gen_golden.build(size, ch, layers)
    # Fresh weights as our trainer makes them: He-uniform conv/dense, zero bias, BN 1/0.
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.reset_parameters()
    counts = np.bincount(y[tr], minlength=k)
    weights = torch.tensor(len(tr) / (k * counts), dtype=torch.float32)
    if a.no_class_weights:
        weights = torch.ones(k)
    decay = [p for n_, p in net.named_parameters() if p.dim() > 1]
    no_decay = [p for n_, p in net.named_parameters() if p.dim() <= 1]
    opt = torch.optim.Adam([{"params": decay, "weight_decay": 1e-4},
                            {"params": no_decay, "weight_decay": 0.0}], lr=a.lr)
    lossf = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=a.label_smoothing)
    steps = math.ceil(len(tr) / a.batch)
    total_imgs, total_s = 0, load_s
    ema = copy.deepcopy(net) if a.ema > 0 else None
    mgen = np.random.default_rng(a.seed)
    best = {"f1": -1.0, "epoch": 0, "state": None, "which": "raw"}
    stale = 0

    def predict(model, idx):
        model.eval()
        with torch.no_grad():
            xv = (xt[idx] - mean) / std
            if ch == 3:
                xv = xv.expand(-1, 3, -1, -1)
            return torch.cat([model(xv[i:i + 64]) for i in range(0, len(idx), 64)]).softmax(1).numpy()
    for epoch in range(a.epochs):
        net.train()
        perm = tr[torch.randperm(len(tr), generator=gen).numpy()]
        t0 = time.perf_counter()
        loss_sum, correct = 0.0, 0
        for b in range(steps):
            e = epoch + b / steps
            if e < a.warmup:
                lr = a.lr * (0.1 + 0.9 * e / a.warmup)
            else:
                t = min(max((e - a.warmup) / max(a.epochs - a.warmup, 1), 0), 1)
                lo = a.lr * a.min_lr_frac
                lr = lo + 0.5 * (a.lr - lo) * (1 + math.cos(math.pi * t))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[b * a.batch:(b + 1) * a.batch]
            xb = xt[idx]
            if not a.no_augment:
                xb = augment(xb, gen, a.aug_scale)
            xb = (xb - mean) / std
            if ch == 3:
                xb = xb.expand(-1, 3, -1, -1)
            yb = yt[idx]
            if a.mixup > 0:
                lam = float(mgen.beta(a.mixup, a.mixup))
                j = torch.from_numpy(mgen.permutation(len(idx)))
                out = net(lam * xb + (1 - lam) * xb[j])
                loss = lam * lossf(out, yb) + (1 - lam) * lossf(out, yb[j])
            else:
                out = net(xb)
                loss = lossf(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema is not None:
                with torch.no_grad():
                    for pe, pn in zip(ema.state_dict().values(), net.state_dict().values()):
                        if pe.dtype.is_floating_point:
                            pe.mul_(a.ema).add_(pn, alpha=1 - a.ema)
                        else:
                            pe.copy_(pn)
            loss_sum += float(loss) * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
        secs = time.perf_counter() - t0
        total_imgs += len(tr)
        total_s += secs
        net.eval()
        with torch.no_grad():
            xv = (xt[va] - mean) / std
            if ch == 3:
                xv = xv.expand(-1, 3, -1, -1)
            pv = torch.cat([net(xv[i:i + 64]) for i in range(0, len(va), 64)]).argmax(1).numpy()
        vf1 = macro_f1(pv, y[va], k)
        extra = ""
        improved = False
        if vf1 > best["f1"]:
            best.update(f1=vf1, epoch=epoch + 1, which="raw",
                        state=copy.deepcopy(net.state_dict()) if a.test else None)
            improved = True
        if ema is not None:
            pe = predict(ema, va).argmax(1)
            ef1 = macro_f1(pe, y[va], k)
            extra = f" | ema val macro-F1 {ef1:.4f}"
            if ef1 > best["f1"]:
                best.update(f1=ef1, epoch=epoch + 1, which="ema",
                            state=copy.deepcopy(ema.state_dict()) if a.test else None)
                improved = True
        print(f"epoch {epoch + 1}/{a.epochs}: train loss {loss_sum / len(tr):.4f} acc "
              f"{correct / len(tr):.3f} | val acc {(pv == y[va]).mean():.3f} macro-F1 "
              f"{vf1:.4f} | {secs:.0f} s ({len(tr) / secs:.1f} img/s){extra}",
              flush=True)
        stale = 0 if improved else stale + 1
        if a.patience and stale >= a.patience:
            print(f"early stop: no better validation macro-F1 for {a.patience} epochs", flush=True)
            break
    wall = time.perf_counter() - t_load
    if a.test:
        report_test(a, net, best, predict, te, y, k)
    print(f"torch_train_ips={total_imgs / wall:.2f} load_s={load_s:.1f} train_only_ips={total_imgs / total_s:.2f}")


def report_test(a, net, best, predict, te, y, k):
    """Scores the test split once with the best-validation weights; per source with --names."""
    names = ["class%d" % c for c in range(k)]
    if k == 4:
        names = ["COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"]
    net.load_state_dict(best["state"])
    prob = predict(net, te)
    pred, yt = prob.argmax(1), y[te]
    st = class_stats(pred, yt, k)
    print(f"best: epoch {best['epoch']} ({best['which']} weights) val macro-F1 {best['f1']:.4f}")
    print(f"test: n {len(te)} acc {(pred == yt).mean():.4f} macro-F1 {macro_f1(pred, yt, k):.4f} "
          f"covid recall {st[0][1]:.4f} precision {st[0][0]:.4f}")
    for c in range(k):
        print(f"test class {names[c]}: precision {st[c][0]:.3f} recall {st[c][1]:.3f} "
              f"F1 {st[c][2]:.3f} support {int((yt == c).sum())}")
    files = None
    if a.names:
        import csv
        with open(a.names) as f:
            files = [os.path.basename(r["path"]) for r in csv.DictReader(f)]
        if len(files) != len(y):
            raise SystemExit(f"{a.names}: {len(files)} rows, the dump has {len(y)} images")
        files = [files[i] for i in te]
        src = np.array([f.split("__")[0] for f in files])
        for s in sorted(set(src)):
            m = src == s
            rec = " ".join(f"{names[c]} {((pred == c) & m & (yt == c)).sum()}/{(m & (yt == c)).sum()}"
                           for c in range(k) if (m & (yt == c)).any())
            print(f"test source {s}: n {m.sum()} acc {(pred[m] == yt[m]).mean():.3f} | correct per class: {rec}")
        m = src == "nih"
        conf = np.zeros((k, k), dtype=int)
        for t, p in zip(yt[m], pred[m]):
            conf[t, p] += 1
        print("test nih confusion (rows true, cols predicted " + ", ".join(names) + "): "
              + " ; ".join(" ".join(str(v) for v in row) for row in conf))
        adult = src != "kermanyA"
        print(f"test adults (not kermanyA): n {adult.sum()} acc {(pred[adult] == yt[adult]).mean():.3f}")
    if a.save_preds:
        np.savez(a.save_preds, prob=prob, y=yt, names=np.array(files if files else []))


if __name__ == "__main__":
    main()
