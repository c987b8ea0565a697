"""UniMiSS pretraining against training from scratch: the built-in CT recipe, held-out patient, same budget.

    python Testing/benchmarks/compare_pretraining.py CHECKPOINT [--minutes 30] [--arms ...] [--work DIR] [--out DIR]

CHECKPOINT is an official-layout pretraining checkpoint of MiT-compact, made by `unimiss pretrain` on
unlabelled images that do not include the held-out patient (the command this project ran is in --out's
README). Both runs are step 4 of scripts/train_builtin_models.sh (the held-out report model): LIDC-IDRI-0001
and ts-dicom, each in three contrast phases, at 2.5 mm with 32x128x128 patches, the same seed and minutes,
side by side on one thread each, so their minutes compare. Each keeps its last weights (no validation case:
choosing the epoch on the held-out patient would flatter both), and is then scored on the held-out patient
(ts-abdomen, native and simulated arterial) on its own grid, each organ's largest part kept, as the shipped
models segment (scripts/evaluate_builtin.py). Writes OUT/pretraining.json and prints a table. A third arm,
scratch-no-contrast-phases, trains as the built-in recipe did before `unimiss finetune` simulated contrast phases
on each patch (its cases are still in three phases each).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CT_ARGS = ["--config", "compact", "--spacing", "2.5", "2.5", "2.5", "--patch-size", "32", "128", "128", "--seed", "0",
           "--patience", "1000", "--progress", "jsonl", "--validation", "0"]
ARMS = {"scratch": [], "pretrained": ["--base", "CHECKPOINT"], "scratch-no-contrast-phases": ["--no-contrast-phases"],
        "scratch-tiny": ["--config", "tiny"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, nargs="?", help="needed by the pretrained arm")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--epochs", type=int,
                        help="instead of --minutes: this many epochs of 50 steps, so that arms run at different "
                             "times (or under different load) compare")
    parser.add_argument("--work", type=Path, default=Path("/tmp/unimiss-compare"))
    parser.add_argument("--arms", nargs="+", default=["scratch", "pretrained"], choices=list(ARMS),
                        help="scratch-no-contrast-phases: from scratch as the recipe was before it simulated phases; "
                             "scratch-tiny: from scratch with MiT-tiny instead of MiT-compact")
    parser.add_argument("--threads", type=int, default=1, help="per run")
    parser.add_argument("--tag", default="", help="appended to the arms' names (e.g. which pretraining run)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "pretraining")
    args = parser.parse_args()
    if "pretrained" in args.arms and not args.checkpoint:
        parser.error("the pretrained arm needs CHECKPOINT")
    data = args.work / "data"
    if not (data / "heldout.csv").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_demo_data.py"), str(data)], check=True)
    held_out = {row for phase in ("native", "arterial")
                for row in (data / f"heldout-{phase}.csv").read_text().splitlines()[1:]}
    train = [row for row in (data / "heldout.csv").read_text().splitlines() if row not in held_out]
    (data / "compare-train.csv").write_text("\n".join(train) + "\n")
    env = {**os.environ, "UNIMISS_HOME": str(args.work / "home"), "OMP_NUM_THREADS": str(args.threads)}
    runs = {arm + (f"-{args.tag}" if args.tag else ""): [str(args.checkpoint) if a == "CHECKPOINT" else a
                                                         for a in ARMS[arm]] for arm in args.arms}
    procs = {}
    for name, extra in runs.items():
        log = open(args.work / f"{name}.jsonl", "w")
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "unimiss", "finetune", "--csv", str(data / "compare-train.csv"), *CT_ARGS, *extra,
             *(["--epochs", str(args.epochs)] if args.epochs else ["--minutes", str(args.minutes)]),
             "--name", f"compare-{name}", "--workdir", str(args.work / name)],
            env=env, stdout=log)
    for name, proc in procs.items():
        if proc.wait():
            raise SystemExit(f"the {name} run failed (its log: {args.work / f'{name}.jsonl'})")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "pretraining.json"
    results = json.loads(path.read_text()) if path.is_file() else {}  # arms run earlier stay
    for name in runs:
        figures = args.work / f"{name}-heldout.json"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate_builtin.py"), f"compare-{name}",
                        str(figures), "--largest-component",
                        "--set", "native", str(data / "heldout-native.csv"),
                        "--set", "arterial", str(data / "heldout-arterial.csv")], env=env, check=True)
        meta = json.loads(next((args.work / "home" / "models").glob(f"compare-{name}-[0-9]*/model.json")).read_text())
        results[name] = {"held_out": json.loads(figures.read_text()), "budget": f"{args.epochs} epochs" if args.epochs
                         else f"{args.minutes} minutes", "load_average_end": round(os.getloadavg()[0], 1),
                         "iterations": meta["provenance"]["iterations"], "minutes": meta["provenance"]["minutes"],
                         "base": meta["provenance"].get("base_model")}
    path.write_text(json.dumps(results, indent=1) + "\n")
    classes = [c for c in results[next(iter(runs))]["held_out"]["native"] if not c.startswith("_")]
    print("| run | set | iterations | " + " | ".join(classes) + " |")
    print("|---|---|---|" + "---|" * len(classes))
    for name in results:
        for phase, figures in results[name]["held_out"].items():
            print(f"| {name} | {phase} | {results[name]['iterations']} | "
                  + " | ".join(f"{figures.get(c, float('nan')):.3f}" for c in classes) + " |")


if __name__ == "__main__":
    main()
