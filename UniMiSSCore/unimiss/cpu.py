"""What this CPU computes fast, detected in one place, and the precision policy that follows from it.

The policy (figures: Testing/benchmarks/bench_mit.py and bench_training.py, which print
this CPU's description with every figure):

- Inference runs in bf16 where the CPU has native bf16 dot products (AVX-512 BF16 or AMX):
  matrix products and most convolutions are 2-3x faster than fp32, and the argmax agrees
  with fp32 on about 99 % of voxels. Linear and convolution weights are then stored in bf16
  once (`cast_for_inference`), so autocast does not copy them again at every call.
- Convolutions with one or a few input channels (the CT stem) are the exception on CPUs
  with AMX: oneDNN pads the channel axis to the tile width, and the 7x7x7 one-channel stem
  ran 4x slower in bf16 than in fp32 on a Xeon with AMX (issue 16: 461 vs 117 ms). On
  AVX-512 BF16 without AMX (AMD EPYC) bf16 is as fast or faster there (256 vs 317 ms in one
  bench_mit run), so the stem stays in bf16. `fp32_few_channel_convs()` decides.
- Training: fp32 master weights always; bf16 autocast only where it is faster for the
  whole step. With AVX-512 BF16 alone it is not for the default 3D network (MiT-compact,
  2 x 32x128x128: 0.91-0.93x of fp32, bench_training.py on an AMD EPYC); with AMX the
  matrix units make the products 2.7x+ faster (issue 16), so `auto` trains under bf16
  autocast there, the stem in fp32. The AMX choices are reasoned from issue 16's
  measurements; no AMX machine was at hand to time them.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_amx() -> bool:
    """Intel AMX tile units with bf16 (Sapphire Rapids and later)."""
    return "amx_bf16" in cpu_flags()


@functools.lru_cache(maxsize=None)
def has_native_bf16() -> bool:
    """bf16 dot products in hardware (AVX-512 BF16, AMX, or what oneDNN reports on other architectures)."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fp32_few_channel_convs() -> bool:
    """Run convolutions with few input channels in fp32 under bf16 autocast (true on AMX CPUs)."""
    return has_amx()


def bf16_training() -> bool:
    """Whether `--precision auto` trains under bf16 autocast on this CPU."""
    return has_amx()


def describe() -> str:
    """One line naming the CPU and what it computes natively, printed beside every benchmark figure."""
    import torch

    flags = cpu_flags()
    units = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags] or ["no bf16 units"]
    return (f"{cpu_model()}; torch {torch.__version__}, ISA {torch.backends.cpu.get_cpu_capability()}, "
            f"{' '.join(units)}, {torch.get_num_threads()} threads")
