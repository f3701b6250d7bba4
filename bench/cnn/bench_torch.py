#!/usr/bin/python3
"""bench_torch.py ARCH THREADS SECONDS - PyTorch CPU on the same architecture and weights.

Builds the network from the same architecture text and the same hash-derived weights as
bench_cnn (model/golden/gen_golden.py does both) and prints the same keys: batch-1 latency
(median, eval mode, no_grad), batch-16 throughput, and training throughput at batch 32
(forward, cross-entropy, backward, Adam) in train mode.
"""
import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "model", "golden"))
import gen_golden  # noqa: E402


def main():
    arch, threads, budget = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(threads)
    path = arch if os.path.exists(arch) else os.path.join(gen_golden.ARCHS, arch + ".arch")
    size, ch, layers = gen_golden.parse(path)
    net = gen_golden.build(size, ch, layers)
    n_in = ch * size * size
    x = torch.from_numpy(gen_golden.hashed_unit(32 * n_in, 1000).reshape(32, ch, size, size))
    labels = torch.arange(32) % 4
    cap = "?"
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage:" in line:
            cap = line.split(":", 1)[1].strip()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL")
    print(f"arch={arch} threads={threads} torch={torch.__version__} aten_isa={cap} "
          f"onednn_max_isa={isa}")

    net.eval()
    with torch.no_grad():
        x1, x16 = x[:1].contiguous(), x[:16].contiguous()
        net(x1)
        times = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < budget or len(times) < 5:
            t = time.perf_counter()
            net(x1)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"b1_ms={med * 1e3:.3f} b1_ips={1.0 / med:.2f}")
        net(x16)
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < budget or n < 2:
            net(x16)
            n += 1
        print(f"b16_ips={16.0 * n / (time.perf_counter() - t0):.2f}")

    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = lossf(net(x), labels)
        loss.backward()
        opt.step()

    step()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < budget or n < 2:
        step()
        n += 1
    print(f"train_ips={32.0 * n / (time.perf_counter() - t0):.2f}")


if __name__ == "__main__":
    main()
