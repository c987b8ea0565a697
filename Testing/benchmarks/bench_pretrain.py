"""Pretraining throughput on this machine: images per second of one UniMiSS self-distillation step.

    python Testing/benchmarks/bench_pretrain.py [--iterations 3] [--batch-size 2] [--out-dim 65536]

One step is what `unimiss pretrain` does per iteration, without data loading: the
teacher forward on two views of each image (no gradients), the student forward,
the distillation loss, backward, per-parameter gradient clipping, AdamW step and
the teacher's EMA update. 2D steps freeze the 3D-only parameters, as in training.
Views at the published sizes (2D 224x224, 3D 16x96x96), fp32.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from unimiss.training.pretrain import (DistillationLoss, PretrainSettings, build_networks, clip_gradients,
                                       param_groups, set_3d_trainable)

VIEWS = {2: (3, 224, 224), 3: (1, 16, 96, 96)}


def images_per_second(config, dims, batch, out_dim, iterations):
    torch.manual_seed(0)
    s = PretrainSettings(config=config, out_dim=out_dim, view_size_2d=VIEWS[2][1:], view_size_3d=VIEWS[3][1:])
    student, teacher = build_networks(s)
    student.train()
    teacher.eval()
    optimizer = torch.optim.AdamW(param_groups(student), lr=1e-4)
    set_3d_trainable(student, dims == 3)
    loss_fn = DistillationLoss(out_dim, lambda epoch: 0.04)
    views = [torch.rand(batch, *VIEWS[dims]) for _ in range(2)]
    times = []
    for i in range(iterations + 1):
        start = time.perf_counter()
        with torch.no_grad():
            teacher_out = teacher(views)
        loss = loss_fn(student(views), teacher_out, 0, dims)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(student, 0.3)
        optimizer.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(0.996).add_(ps.detach(), alpha=0.004)
        if i:  # the first step creates the oneDNN primitives
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2, help="images per step (each gives two views)")
    parser.add_argument("--out-dim", type=int, default=65536, help="projection head output (published: 65536)")
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size} images "
          f"(x2 views), head {args.out_dim}")
    print(f"{'network':<14}{'2D img/s':>10}{'3D img/s':>10}")
    for config in args.configs:
        rates = [images_per_second(config, d, args.batch_size, args.out_dim, args.iterations) for d in (2, 3)]
        print(f"MiT-{config:<10}{rates[0]:>10.2f}{rates[1]:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
