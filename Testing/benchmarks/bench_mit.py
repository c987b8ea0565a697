"""Forward speed of the small MiT segmentation network on one 48x192x192 patch, beside the published code.

    python Testing/benchmarks/bench_mit.py [--repeats 5] [--official PATH] [--profile] [--json out.json]

Prints, in one run, with this CPU's description (unimiss.cpu.describe): the forward time of
the paths below, timed interleaved (one call of each path per round, medians over rounds, so
that a busy machine slows them alike); the GFLOP of one forward (torch.utils.flop_counter);
the dense matmul peak in fp32 and bf16; how often each path's argmax agrees with ours in fp32
(deterministic reference weights, as in ../shared/reference/official-unimiss); and the
kernels this project writes itself beside the library calls they replace.

Paths: ours in fp32; ours as `unimiss segment` ran it before issue 16 (bf16 autocast, fp32
weights, attention by query blocks); ours under bf16 autocast with fp32 weights; ours as `unimiss segment`
runs it on this CPU (bf16 autocast, weights stored in bf16, few-channel convolutions in fp32
where unimiss.cpu says so); the same with the fp32 stem forced on and off. With --official
PATH (a checkout of github.com/YtongXie/UniMiSS-code, MIT licence; not part of this
repository) the published downstream network (UniMiSS/Downstream/BCV, MiT small) runs the
same weights in fp32 and under bf16 autocast, and ratios to its fp32 forward are printed.
--profile prints the torch.profiler table of the segment path's forward, by operator.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from testkit import deterministic_weights, official_keys  # noqa: E402

from unimiss import cpu  # noqa: E402
from unimiss.models import layers  # noqa: E402
from unimiss.models import MiTSegmentation, from_official_segmentation  # noqa: E402
from unimiss.models.layers import cast_for_inference  # noqa: E402
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


def interleaved(paths: dict, repeats: int):
    """Median and best seconds of each path, one call of each per round, and each path's last output."""
    outputs = {name: fn() for name, fn in paths.items()}  # warm-up
    times = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}, outputs


def official_network(code: Path, weights: dict):
    """The published downstream MiT (small encoder, as MiTnet builds it) from a checkout of UniMiSS-code."""
    folder = code / "UniMiSS" / "Downstream" / "BCV" / "MiTnnu" / "network_architecture "  # sic, trailing space
    # MiTnet's base class is nnU-Net v1's SegmentationNetwork: the inner MiT needs only nn.Module from it.
    stub = types.ModuleType("nnunet.network_architecture.neural_network")
    stub.SegmentationNetwork = torch.nn.Module
    for name in ("nnunet", "nnunet.network_architecture"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules[stub.__name__] = stub
    for name in ("MiTnnu", "MiTnnu.network_architecture"):
        sys.modules.setdefault(name, types.ModuleType(name))
    modules = {}
    for name in ("utils", "MiT_encoder", "MiT"):
        spec = importlib.util.spec_from_file_location(f"MiTnnu.network_architecture.{name}", folder / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = modules[name]
        setattr(sys.modules["MiTnnu.network_architecture"], name, modules[name])
        spec.loader.exec_module(modules[name])
    with contextlib.redirect_stdout(io.StringIO()):  # it prints parameter counts
        net = modules["MiT"].MiT("IN", "LeakyReLU", False, list(PATCH), NUM_CLASSES, 1, embed_dims=[256, 128, 48, 32],
                                 num_heads=[8, 4, 2], depths=[3, 4, 3], mlp_ratios=[4, 4, 4], sr_ratios=[2, 4, 6],
                                 encoder="small")
    net.load_state_dict({k[len("model."):]: v for k, v in weights.items()})
    return net.eval()


def small_weights():
    """The reference's deterministic weights for the published small downstream network at the benchmark patch."""
    shapes = MiTSegmentation("small", NUM_CLASSES, 3, patch_size=PATCH).state_dict()
    keys = {k: list(shapes[official_to_ours(k[len("model."):])].shape) for k in official_keys("seg3d_keys.json")["small"]}
    return deterministic_weights(keys)


def small_network(weights=None):
    return from_official_segmentation({"state_dict": weights or small_weights()}, "small", patch_size=PATCH)


def matmul_peak(dtype, n=4096, repeats=3):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    _, best, _ = timed(lambda: a @ b, repeats)
    return 2 * n**3 / best / 1e9


def blocked_attention(q, k, v, max_scores: int = 1 << 21):
    """What MiT used before for CPU bf16 inference: softmax attention by blocks of queries, plain matmuls."""
    chunk = max(1, max_scores // (k.shape[-2] * q.shape[0] * q.shape[1]))
    kt = k.transpose(-1, -2) * q.shape[-1] ** -0.5
    out = torch.empty_like(q)
    for start in range(0, q.shape[-2], chunk):
        scores = torch.matmul(q[..., start:start + chunk, :], kt)
        torch.matmul(scores.softmax(dim=-1), v, out=out[..., start:start + chunk, :])
    return out


@contextlib.contextmanager
def fp32_stem(enabled: bool):
    """Force unimiss.cpu's few-channel-convolution choice either way, to time both on this CPU."""
    saved = cpu.fp32_few_channel_convs
    cpu.fp32_few_channel_convs = lambda: enabled
    try:
        yield
    finally:
        cpu.fp32_few_channel_convs = saved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--official", type=Path, help="a checkout of github.com/YtongXie/UniMiSS-code")
    parser.add_argument("--profile", action="store_true", help="print the per-operator profile of the segment path")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    weights = small_weights()
    net = small_network(weights)
    x = torch.randn(1, 1, *PATCH, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(x)
    gflop = counter.get_total_flops() / 1e9

    segment_net = cast_for_inference(copy.deepcopy(net), torch.bfloat16)
    with fp32_stem(True):
        stem_fp32_net = cast_for_inference(copy.deepcopy(net), torch.bfloat16)
    with fp32_stem(False):
        stem_bf16_net = cast_for_inference(copy.deepcopy(net), torch.bfloat16)

    def bf16(network, stem=None):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16), (fp32_stem(stem) if stem is not None
                                                               else contextlib.nullcontext()):
                out = network(x)
            return out[0] if isinstance(out, list) else out  # the published network returns its deep supervision
        return run

    def before(run):
        """As `unimiss segment` ran before issue 16: bf16 autocast, fp32 weights, attention by query blocks."""
        def patched():
            saved = layers.F
            layers.F = types.SimpleNamespace(**{**vars(F), "scaled_dot_product_attention": blocked_attention})
            try:
                return run()
            finally:
                layers.F = saved
        return patched

    paths = {"ours fp32": lambda: net(x), "ours before (issue 16)": before(bf16(net)),
             "ours bf16 autocast": bf16(net), "ours, segment path": bf16(segment_net),
             "  same, stem fp32": bf16(stem_fp32_net, True), "  same, stem bf16": bf16(stem_bf16_net, False)}
    if args.official:
        official = official_network(args.official, weights)
        paths = {"official fp32": lambda: official(x)[0], "official bf16 autocast": bf16(official), **paths}
    with torch.inference_mode():
        times, outputs = interleaved(paths, args.repeats)
        reference = outputs["ours fp32"].argmax(1)
        rows = {name: {"median_s": times[name][0], "best_s": times[name][1], "gflops_per_s": gflop / times[name][0],
                       "argmax_agreement": (outputs[name].argmax(1) == reference).float().mean().item()}
                for name in paths}
        if args.official:
            out, ref = outputs["ours fp32"], outputs["official fp32"]
            official_rel_err = ((out - ref).norm() / ref.norm()).item()
        exact = torch.equal(outputs["ours bf16 autocast"], outputs["ours, segment path"]) or not cpu.fp32_few_channel_convs()
        same_as_autocast = torch.equal(outputs["ours bf16 autocast"], outputs["  same, stem bf16"])

        q = torch.randn(1, 1, 55296, 48, dtype=torch.bfloat16)
        k, v = torch.randn(2, 1, 1, 256, 48, dtype=torch.bfloat16)
        kernels = {
            "attention 55296x256x48 bf16: scaled_dot_product_attention": timed(
                lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)[0],
            "attention 55296x256x48 bf16: softmax of matmuls by query blocks": timed(
                lambda: blocked_attention(q, k, v), args.repeats)[0],
        }
        logits = torch.randn(1, NUM_CLASSES, 48, 96, 96, dtype=torch.bfloat16)
        kernels["upsample (1,2,2) 14x48x96x96 bf16: F.interpolate trilinear"] = timed(
            lambda: F.interpolate(logits, scale_factor=(1, 2, 2), mode="trilinear"), args.repeats)[0]
        kernels["upsample (1,2,2) 14x48x96x96 bf16: upsample_linear (ours)"] = timed(
            lambda: upsample_linear(logits, (1, 2, 2)), args.repeats)[0]
        stem_x = torch.empty_like(x, memory_format=torch.channels_last_3d).copy_(x)
        stem_w = net.encoder.stem.branch(3).conv.weight
        kernels["stem conv 7x7x7, 1->32 channels, fp32"] = timed(
            lambda: F.conv3d(stem_x, stem_w, None, (1, 2, 2), 3), args.repeats)[0]
        kernels["stem conv 7x7x7, 1->32 channels, bf16"] = timed(
            lambda: F.conv3d(stem_x.bfloat16(), stem_w.bfloat16(), None, (1, 2, 2), 3), args.repeats)[0]

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"MiT-small segmentation, {NUM_CLASSES} classes, one {PATCH[0]}x{PATCH[1]}x{PATCH[2]} patch")
    print(f"CPU: {cpu.describe()}; policy: few-channel convs in fp32 under bf16 = {cpu.fp32_few_channel_convs()}")
    print(f"{gflop:.1f} GFLOP per forward (torch.utils.flop_counter); {args.repeats} interleaved rounds")
    base = rows.get("official fp32", rows["ours fp32"])
    print(f"{'path':<24}{'median s':>10}{'best s':>9}{'GFLOP/s':>9}{'of peak':>9}{'argmax = fp32':>15}"
          f"{'vs ' + ('official' if args.official else 'ours') + ' fp32':>20}")
    for name, r in rows.items():
        peak = peaks["fp32" if "fp32" in name and "stem" not in name else "bf16"]
        print(f"{name:<24}{r['median_s']:>10.3f}{r['best_s']:>9.3f}{r['gflops_per_s']:>9.0f}"
              f"{r['gflops_per_s'] / peak:>9.0%}{r['argmax_agreement']:>15.2%}{base['median_s'] / r['median_s']:>19.2f}x")
    if args.official:
        print(f"ours fp32 vs official fp32 logits: relative error {official_rel_err:.1e}")
    print(f"segment path equals bf16 autocast with fp32 weights: {exact} (bf16 stem: {same_as_autocast})")
    print(f"dense matmul peak (4096^2, this run): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    for name, seconds in kernels.items():
        print(f"{name:<64}{seconds * 1e3:8.1f} ms")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            paths["ours, segment path"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.describe(), "gflop": gflop, "paths": rows,
                                         "matmul_peak_gflops": peaks, "kernels_s": kernels}, indent=2))


if __name__ == "__main__":
    main()
