"""Forward speed of the small MiT segmentation network on one 48x192x192 patch, on this machine.

    python Testing/benchmarks/bench_mit.py [--repeats 5] [--json out.json]

Prints, in one run: forward time in fp32, under bf16 autocast and with bf16
weights; the GFLOP of one forward (torch.utils.flop_counter) and the GFLOP/s
achieved; the dense matmul peak in fp32 and bf16 measured in the same run; how
often each reduced-precision path's argmax agrees with fp32 (deterministic
reference weights, as in ../shared/reference/official-unimiss); and the two
kernels this project writes itself beside the library calls they replace.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from testkit import deterministic_weights, official_keys  # noqa: E402

from unimiss.models import MiTSegmentation, from_official_segmentation  # noqa: E402
from unimiss.models.layers import chunked_attention  # noqa: E402
from unimiss.models.mit import upsample_linear  # noqa: E402
from unimiss.models.official import official_to_ours  # noqa: E402

PATCH = (48, 192, 192)
NUM_CLASSES = 14  # BCV, as in the published downstream network


def timed(fn, repeats):
    fn()  # warm-up: oneDNN primitive creation, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), out


def small_network():
    """The published small downstream network at the benchmark patch, with the reference's deterministic weights."""
    shapes = MiTSegmentation("small", NUM_CLASSES, 3, patch_size=PATCH).state_dict()
    keys = {k: list(shapes[official_to_ours(k[len("model."):])].shape) for k in official_keys("seg3d_keys.json")["small"]}
    return from_official_segmentation({"state_dict": deterministic_weights(keys)}, "small", patch_size=PATCH)


def matmul_peak(dtype, n=4096, repeats=3):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    _, best, _ = timed(lambda: a @ b, repeats)
    return 2 * n**3 / best / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    net = small_network()
    x = torch.randn(1, 1, *PATCH, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(x)
    gflop = counter.get_total_flops() / 1e9

    bf16_net = copy.deepcopy(net).bfloat16()

    def autocast():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x)

    paths = {"fp32": lambda: net(x), "bf16 autocast": autocast, "bf16 weights": lambda: bf16_net(x.bfloat16())}
    rows = {}
    with torch.inference_mode():
        for name, fn in paths.items():
            median, best, out = timed(fn, args.repeats)
            labels = out.argmax(1)
            rows[name] = {"median_s": median, "best_s": best, "gflops_per_s": gflop / median, "labels": labels}
        reference = rows["fp32"].pop("labels")
        for name in list(rows)[1:]:
            rows[name]["argmax_agreement"] = (rows[name].pop("labels") == reference).float().mean().item()
        rows["fp32"]["argmax_agreement"] = 1.0

        q = torch.randn(1, 1, 55296, 48, dtype=torch.bfloat16)
        k, v = torch.randn(2, 1, 1, 256, 48, dtype=torch.bfloat16)
        kernels = {
            "attention 55296x256x48 bf16: scaled_dot_product_attention": timed(
                lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)[0],
            "attention 55296x256x48 bf16: chunked_attention (ours)": timed(
                lambda: chunked_attention(q, k, v), args.repeats)[0],
        }
        logits = torch.randn(1, NUM_CLASSES, 48, 96, 96, dtype=torch.bfloat16)
        kernels["upsample (1,2,2) 14x48x96x96 bf16: F.interpolate trilinear"] = timed(
            lambda: F.interpolate(logits, scale_factor=(1, 2, 2), mode="trilinear"), args.repeats)[0]
        kernels["upsample (1,2,2) 14x48x96x96 bf16: upsample_linear (ours)"] = timed(
            lambda: upsample_linear(logits, (1, 2, 2)), args.repeats)[0]

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"MiT-small segmentation, {NUM_CLASSES} classes, one {PATCH[0]}x{PATCH[1]}x{PATCH[2]} patch; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{gflop:.1f} GFLOP per forward (torch.utils.flop_counter)")
    print(f"{'path':<16}{'median s':>10}{'best s':>9}{'GFLOP/s':>9}{'of peak':>9}{'argmax = fp32':>15}")
    for name, r in rows.items():
        peak = peaks["fp32" if name == "fp32" else "bf16"]
        print(f"{name:<16}{r['median_s']:>10.3f}{r['best_s']:>9.3f}{r['gflops_per_s']:>9.0f}"
              f"{r['gflops_per_s'] / peak:>9.0%}{r['argmax_agreement']:>15.2%}")
    print(f"dense matmul peak (4096^2, this run): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    for name, seconds in kernels.items():
        print(f"{name:<64}{seconds * 1e3:8.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"gflop": gflop, "paths": rows, "matmul_peak_gflops": peaks,
                                         "kernels_s": kernels}, indent=2))


if __name__ == "__main__":
    main()
