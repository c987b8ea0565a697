"""The `unimiss` command line."""
from __future__ import annotations

import argparse
import sys

from . import __version__


def _mit_summary(args) -> int:
    import torch

    from .models import CONFIGS, MiT, MiTSegmentation

    names = [args.config] if args.config else list(CONFIGS)
    for name in names:
        cfg = CONFIGS[name]
        backbone = sum(p.numel() for p in MiT(cfg).parameters())
        seg = {d: sum(p.numel() for p in MiTSegmentation(cfg, 2, d).parameters()) for d in (2, 3)}
        print(f"MiT-{name}: encoder widths {list(cfg.embed_dims)}, depths {list(cfg.depths)}, "
              f"decoder widths {list(cfg.decoder_dims)}, depths {list(cfg.decoder_depths)}")
        print(f"  backbone (2D+3D, class token): {backbone / 1e6:.2f} M parameters")
        print(f"  segmentation: 2D {seg[2] / 1e6:.2f} M, 3D {seg[3] / 1e6:.2f} M parameters "
              f"at patch {list(cfg.img_size_2d)} / {list(cfg.img_size_3d)}")
        if args.forward:
            net = MiTSegmentation(cfg, 2, 3).eval()
            with torch.inference_mode():
                out = net(torch.zeros(1, 1, *cfg.img_size_3d))
            print(f"  3D forward on {list(cfg.img_size_3d)}: logits {list(out.shape)}")
    return 0


def _mit_inspect(args) -> int:
    from .models import from_official_pretrain, from_official_segmentation, load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    if "state_dict" in ckpt:
        net = from_official_segmentation(ckpt, args.arch, patch_size=args.patch_size)
        print(f"official downstream segmentation checkpoint: MiT-{args.arch}, 3D, {net.num_classes} classes, "
              f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters; loads exactly")
    else:
        net = from_official_pretrain(ckpt, args.arch, args.which)
        epoch = ckpt.get("epoch", "?")
        print(f"official pretraining checkpoint: MiT-{args.arch} {args.which}, 2D+3D, epoch {epoch}, "
              f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters; loads exactly")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unimiss", description="UniMiSS (MiT) for 2D radiographs and 3D CT.")
    parser.add_argument("--version", action="version", version=f"unimiss {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    mit = commands.add_parser("mit", help="the MiT network family").add_subparsers(dest="mit_command", required=True)
    summary = mit.add_parser("summary", help="configurations and parameter counts")
    summary.add_argument("config", nargs="?", choices=["tiny", "small", "compact"])
    summary.add_argument("--forward", action="store_true", help="also run one 3D forward pass")
    summary.set_defaults(func=_mit_summary)

    inspect = mit.add_parser("inspect", help="check that an official UniMiSS checkpoint loads")
    inspect.add_argument("checkpoint")
    inspect.add_argument("--arch", default="tiny", choices=["tiny", "small"])
    inspect.add_argument("--which", default="teacher", choices=["teacher", "student"])
    inspect.add_argument("--patch-size", type=int, nargs=3, default=[16, 96, 96], metavar=("D", "H", "W"),
                         help="training patch size of a segmentation checkpoint (from its plans)")
    inspect.set_defaults(func=_mit_inspect)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # CheckpointError is a ValueError
        print(f"unimiss: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unimiss: interrupted", file=sys.stderr)
        return 130
