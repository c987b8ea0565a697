"""Fine-tuning from our UniMiSS pretraining against from scratch, same budget, on the labelled CTs.

    python Testing/benchmarks/compare_pretraining.py CHECKPOINT [--minutes 8] [--work DIR]

CHECKPOINT is an official-layout pretraining checkpoint (e.g. from `unimiss pretrain`
on ../shared/data without the validation case). Both runs train on LIDC-IDRI-0001 and
the ts-dicom series and validate on ts-abdomen (another patient), with the eight classes
of scripts/demo_labels.json, the same seed, patch, spacing and time budget, side by side
(one core each, so their minutes compare). Prints validation Dice against minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--config", default="compact")
    parser.add_argument("--minutes", type=float, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/unimiss-compare"))
    args = parser.parse_args()
    data = args.work / "data"
    if not (data / "cases.csv").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_demo_data.py"), str(data)], check=True)
    # Train on the whole LIDC (its three parts) and ts-dicom; validate on ts-abdomen alone.
    (data / "compare.csv").write_text("image,label\n" + "".join(
        f"{c}.nrrd,{c}.seg.nrrd\n" for c in ("lidc-inferior", "lidc-slab", "lidc-superior", "ts-dicom", "ts-abdomen")))
    common = ["--csv", str(data / "compare.csv"), "--validation", "1", "--config", args.config, "--spacing", "2.5",
              "2.5", "2.5", "--patch-size", "32", "128", "128", "--minutes", str(args.minutes), "--iterations", "50",
              "--batch-size", "2", "--seed", "0", "--patience", "1000", "--progress", "none"]
    runs = {"scratch": [], "pretrained": ["--base", str(args.checkpoint)]}
    env = {**os.environ, "UNIMISS_HOME": str(args.work / "home"), "OMP_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "unimiss", "finetune", *common, *extra, "--name",
                                     f"compare-{name}", "--workdir", str(args.work / name)], env=env)
             for name, extra in runs.items()}
    for name, proc in procs.items():
        if proc.wait():
            raise SystemExit(f"the {name} run failed")
    print(f"validation Dice on ts-abdomen against minutes, MiT-{args.config}, {args.minutes} min each, one core each")
    for name in runs:
        meta = json.loads(next((args.work / "home" / "models").glob(f"compare-{name}-*/model.json")).read_text())
        print(f"\n{name}:")
        for h in meta["metrics"]["history"]:
            dice = h["val_dice"]
            mean = sum(dice.values()) / len(dice) if dice else float("nan")
            print(f"  {h['minutes']:5.1f} min  epoch {h['epoch']:3d}  mean {mean:.3f}  "
                  + " ".join(f"{k} {v:.2f}" for k, v in dice.items()))


if __name__ == "__main__":
    main()
