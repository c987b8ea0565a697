"""Make a trained model package a built-in one: fp16 weights, the demo disclaimers, label definitions.

    python scripts/package_builtin.py SOURCE NAME --version 1.1.1 [--default] --description TEXT \
        --training-data TEXT --command TEXT [--held-out FILE.json] [--largest-component] [--join-gaps CLASS=MM]

SOURCE is a model package (as `unimiss finetune` leaves it in the user registry).
The result replaces every version of NAME in UniMiSSCore/unimiss/zoo/builtin/ with NAME-VERSION/.
--held-out adds figures measured on data the model did not train on to its metrics
({"<what was held out>": {"<class>": dice, ...}, ...}, as scripts/evaluate_builtin.py writes).
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
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--held-out", type=Path, help="JSON of Dice figures on held-out data")
    parser.add_argument("--largest-component", action="store_true",
                        help="segmenting keeps each label's largest connected part by default")
    parser.add_argument("--not-below", nargs="+", default=[], metavar="CLASS=LIMIT[,LIMIT]",
                        help="2D: CLASS is removed below the lowest image row its LIMIT classes reach")
    parser.add_argument("--join-gaps", nargs="+", default=[], metavar="CLASS=MM",
                        help="with --largest-component: parts of CLASS less than MM apart count as one part")
    parser.add_argument("--test-time-zoom-shift", action="store_true",
                        help="segmenting averages over the image zoomed and shifted a little")
    args = parser.parse_args()
    source = ModelPackage.load(args.source)
    meta = json.loads(json.dumps(source.meta))
    meta.update(name=args.name, version=args.version, default=args.default,
                description=f"{args.description} {DISCLAIMER}")
    for label in meta["labels"]:
        entry = TABLE[label["name"]]
        label["color"], label["terminology"] = entry["color"], entry["terminology"]
        merged = " + ".join(entry["from"])
        label["description"] = (f"TotalSegmentator '{merged}'" + (" (merged)" if len(entry["from"]) > 1 else ""))
    provenance = meta["provenance"]
    provenance.update(cases=provenance.pop("training_data"), training_data=args.training_data,
                      command=args.command, notes=DISCLAIMER)
    if args.held_out:
        meta["metrics"]["held_out_dice"] = json.loads(args.held_out.read_text())
    if args.largest_component:
        meta["postprocessing"] = {"largest_component": True}
    if args.test_time_zoom_shift:
        meta.setdefault("postprocessing", {})["test_time_zoom_shift"] = True
    if args.not_below:
        rules = [rule.split("=", 1) for rule in args.not_below]
        meta.setdefault("postprocessing", {})["not_below"] = {name: limits.split(",") for name, limits in rules}
    if args.join_gaps:
        rules = [rule.split("=", 1) for rule in args.join_gaps]
        meta.setdefault("postprocessing", {})["join_gaps_mm"] = {name: float(mm) for name, mm in rules}
    meta.pop("weights", None)
    builtin = ROOT / "UniMiSSCore" / "unimiss" / "zoo" / "builtin"
    for old in builtin.glob(f"{args.name}-*"):
        shutil.rmtree(old)
    out = builtin / f"{args.name}-{args.version}"
    package = save_package(out, meta, load_file(source.weights_path), dtype="float16")
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"{package.reference}: {out} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
