"""Make Testing/reference/official-unimissplus/ from the full UniMiSS+ reference files.

    python scripts/compact_reference_plus.py ../shared/reference/official-unimissplus

The full files (12 MB) hold the random inputs as well; they are `torch.randn` draws in a fixed
order after `torch.manual_seed(config["input_seed"])`, so only their names and shapes are kept
and the tests draw them again (checked here). The largest outputs are subsampled further.
The keys JSONs are copied unchanged.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "Testing" / "reference" / "official-unimissplus"
INPUTS = {"pretrain": ("x2", "x2b", "x2c", "x3", "x3b"), "seg2d": ("x",), "seg3d": ("x",), "cls2d": ("x", "xb")}
# Outputs thinned along the last two axes (name -> step), on top of what the full file already did.
THIN = {("pretrain", "r2"): 2, ("seg3d", "y_sub"): 2, ("seg3d", "yp_sub"): 2}


def main(src: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    compact = {}
    for net, names in INPUTS.items():
        full = torch.load(src / f"{net}_tiny_vectors.pt", weights_only=True)
        torch.manual_seed(full["config"]["input_seed"])
        for name in names:
            if not torch.equal(torch.randn(full[name].shape), full[name]):
                raise SystemExit(f"{net}: input {name} is not the expected torch.randn draw")
        entry = {k: v for k, v in full.items() if k not in names}
        entry["inputs"] = [(name, list(full[name].shape)) for name in names]
        for (n, key), step in THIN.items():
            if n == net:
                entry[key] = entry[key][..., ::step, ::step].clone()
                entry["outputs"] += f" [compact copy: {key} thinned by {step} more along its last two axes]"
        compact[net] = entry
        shutil.copyfile(src / f"{net}_keys.json", OUT / f"{net}_keys.json")
    torch.save(compact, OUT / "vectors.pt")
    print(f"wrote {OUT / 'vectors.pt'} ({(OUT / 'vectors.pt').stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference/official-unimissplus"))
