"""Make a trained model package a built-in one: fp16 weights, the demo disclaimers, label definitions.

    python scripts/package_builtin.py SOURCE NAME --dimension 3 [--default] [--notes TEXT]

SOURCE is a model package (as `unimiss finetune` leaves it in the user registry).
The result goes to UniMiSSCore/unimiss/zoo/builtin/NAME-1.0.0/.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file

from unimiss.zoo import ModelPackage, save_package

ROOT = Path(__file__).resolve().parents[1]
TABLE = {e["name"]: e for e in json.loads((Path(__file__).with_name("demo_labels.json")).read_text())["labels"]}
DISCLAIMER = ("Demonstration model, not for clinical use. Trained on automatic TotalSegmentator outputs (not manual "
              "annotations) of a handful of public scans; it learns to copy TotalSegmentator, and its metrics say "
              "nothing about accuracy on real patients.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("name")
    parser.add_argument("--default", action="store_true")
    parser.add_argument("--description", required=True)
    parser.add_argument("--training-data", required=True, help="a sentence on the data, for provenance")
    parser.add_argument("--command", required=True, help="the command that reproduces the model")
    args = parser.parse_args()
    source = ModelPackage.load(args.source)
    meta = json.loads(json.dumps(source.meta))
    meta.update(name=args.name, version="1.0.0", default=args.default,
                description=f"{args.description} {DISCLAIMER}")
    for label in meta["labels"]:
        entry = TABLE[label["name"]]
        label["color"], label["terminology"] = entry["color"], entry["terminology"]
        merged = " + ".join(entry["from"])
        label["description"] = (f"TotalSegmentator '{merged}'" + (" (merged)" if len(entry["from"]) > 1 else ""))
    provenance = meta["provenance"]
    provenance.update(cases=provenance.pop("training_data"), training_data=args.training_data,
                      command=args.command, notes=DISCLAIMER)
    meta.pop("weights", None)
    out = ROOT / "UniMiSSCore" / "unimiss" / "zoo" / "builtin" / f"{args.name}-1.0.0"
    if out.exists():
        shutil.rmtree(out)
    package = save_package(out, meta, load_file(source.weights_path), dtype="float16")
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"{package.reference}: {out} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
