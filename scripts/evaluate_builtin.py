"""Dice of a model on held-out cases, per class, averaged over each set's cases: the figures of model.json.

    python scripts/evaluate_builtin.py MODEL OUT.json --set "NAME" CASES.csv [--set "NAME" CASES.csv ...]

MODEL is a model package (name or path); each CASES.csv has 'image' and 'label' columns (paths relative
to it), as `unimiss drr` and scripts/prepare_demo_data.py write them. Every case is segmented with
`unimiss segment` and scored with `unimiss evaluate` (classes matched by name; only the classes a
case's reference holds are scored there). OUT.json: {"NAME": {"<class>": mean Dice, ...}, ...}, with the number of
cases in "NAME" -> "_cases".
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def score(model: str, image: Path, label: Path, work: Path, options: list[str]) -> dict[str, float]:
    out = work / (image.name.split(".")[0] + ".seg.nrrd")
    subprocess.run([sys.executable, "-m", "unimiss", "segment", str(image), "-o", str(out), "--model", model,
                    "--progress", "none", *options], check=True)
    result = subprocess.run([sys.executable, "-m", "unimiss", "evaluate", str(out), str(label)], check=True,
                            capture_output=True, text=True)
    return {name: entry["dice"] for name, entry in json.loads(result.stdout)["labels"].items()
            if entry["voxels_ref"] > 0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", nargs=2, action="append", metavar=("NAME", "CSV"), required=True)
    parser.add_argument("--largest-component", action="store_true",
                        help="segment keeping each label's largest part (as the shipped model will)")
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as work:
        for name, table in args.set:
            table = Path(table)
            with open(table, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            per_class: dict[str, list[float]] = {}
            for row in rows:
                for cls, dice in score(args.model, table.parent / row["image"], table.parent / row["label"],
                                       Path(work), ["--largest-component"] if args.largest_component else []).items():
                    per_class.setdefault(cls, []).append(dice)
            figures[name] = {cls: round(sum(v) / len(v), 4) for cls, v in per_class.items()}
            figures[name]["_cases"] = len(rows)
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in figures[name].items()), file=sys.stderr)
    args.out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
