"""Inference throughput of MiT+ (UniMiSS+) beside MiT (UniMiSS) segmentation networks, fp32, CPU.

    python Testing/benchmarks/bench_plus.py [--threads 2] [--repeats 5]

Each network segments one published-size patch (3D 16x96x96, 2D 224x224); the networks are timed
interleaved, round by round, so that load from other work spreads over all of them; the median
per network is printed with the CPU's name.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import torch

from unimiss.models import MiTPlusSegmentation, MiTSegmentation


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = {
        "MiT-tiny 3D": (MiTSegmentation("tiny", 14, 3, in_channels=1, patch_size=(16, 96, 96)), (1, 1, 16, 96, 96)),
        "MiT-small 3D": (MiTSegmentation("small", 14, 3, in_channels=1, patch_size=(16, 96, 96)), (1, 1, 16, 96, 96)),
        "MiT+ 3D": (MiTPlusSegmentation(None, 14, 3, in_channels=1, patch_size=(16, 96, 96)), (1, 1, 16, 96, 96)),
        "MiT-tiny 2D": (MiTSegmentation("tiny", 3, 2, in_channels=3, patch_size=(224, 224)), (1, 3, 224, 224)),
        "MiT+ 2D": (MiTPlusSegmentation(None, 3, 2, in_channels=3, patch_size=(224, 224)), (1, 3, 224, 224)),
    }
    times = {name: [] for name in nets}
    with torch.inference_mode():
        for name, (net, shape) in nets.items():
            net.eval()(torch.randn(shape))  # warm-up
        for _ in range(args.repeats):
            for name, (net, shape) in nets.items():
                x = torch.randn(shape)
                start = time.perf_counter()
                net(x)
                times[name].append(time.perf_counter() - start)
    print(f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}, fp32, median of {args.repeats}")
    for name, (net, shape) in nets.items():
        params = sum(p.numel() for p in net.parameters()) / 1e6
        t = statistics.median(times[name])
        print(f"  {name:13s} {params:5.1f} M parameters  {t * 1000:7.0f} ms per patch {list(shape[2:])}  "
              f"{1 / t:5.2f} patches/s")


if __name__ == "__main__":
    main()
