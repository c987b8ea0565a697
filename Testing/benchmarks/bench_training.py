"""Training throughput of MiT segmentation networks on this machine: iterations per second.

    python Testing/benchmarks/bench_training.py [--iterations 6]

One iteration is what `unimiss finetune` does per step: forward with deep supervision,
Dice + cross-entropy over all outputs, backward, gradient clipping, AdamW step, on a
batch at the finetune default patch size (3D: 2 x 32x128x128; 2D: 8 x 256x256), in
fp32 and under bf16 autocast, alternating (a busy machine slows both alike), with this
CPU's description and the precision `unimiss finetune --precision auto` picks on it.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from unimiss.models import MiTSegmentation
from unimiss.training.losses import DeepSupervisionLoss

CASES = {3: ((32, 128, 128), 2), 2: ((256, 256), 8)}


def rates(config, dims, iterations):
    """Iterations per second in fp32 and under bf16 autocast, iterations of the two alternating."""
    patch, batch = CASES[dims]
    steps = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        net = MiTSegmentation(config, 9, dims, in_channels=1, patch_size=patch, deep_supervision=True).train()
        steps[precision] = (net, torch.optim.AdamW(net.parameters(), lr=3e-4))
    loss_fn = DeepSupervisionLoss()
    x, y = torch.randn(batch, 1, *patch), torch.randint(0, 9, (batch, *patch))
    times = {p: [] for p in steps}
    for i in range(iterations + 1):
        for precision, (net, optimizer) in steps.items():
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                outputs = net(x)
            loss = loss_fn(outputs, y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
            optimizer.step()
            if i:  # the first iteration creates the oneDNN primitives
                times[precision].append(time.perf_counter() - start)
    return [1 / statistics.median(times[p]) for p in ("fp32", "bf16")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--configs", nargs="+", default=["compact", "tiny"])
    args = parser.parse_args()
    from unimiss import cpu

    auto = "bf16" if cpu.bf16_training() else "fp32"
    print(f"CPU: {cpu.describe()}; `--precision auto` trains in {auto} here "
          f"(few-channel convolutions in fp32 under bf16: {cpu.fp32_few_channel_convs()})")
    print(f"{'network':<14}{'input':<22}{'fp32 it/s':>10}{'bf16 it/s':>10}{'bf16/fp32':>10}")
    for config in args.configs:
        for dims in (3, 2):
            patch, batch = CASES[dims]
            fp32, bf16 = rates(config, dims, args.iterations)
            shape = f"{batch} x {'x'.join(map(str, patch))}"
            print(f"MiT-{config:<10}{shape:<22}{fp32:>10.2f}{bf16:>10.2f}{bf16 / fp32:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
