"""Fine-tuning on a CPU budget: this project's recipe against MONAI's SegResNet, leave one patient out.

    python Testing/benchmarks/bench_finetune.py run  --arms scratch base monai --folds ts-abdomen --minutes 15
    python Testing/benchmarks/bench_finetune.py run  --arms drr --minutes 10
    python Testing/benchmarks/bench_finetune.py report      # table (markdown) and plot from all results so far

3D: each labelled CT of the test kit (data/ct/*/labels.json) is one patient, with the eight classes of
the built-in CT model (scripts/demo_labels.json; lung lobes merged). For each held-out patient (a fold),
the other patients train for --minutes:
  scratch  `unimiss finetune` from scratch (its planned spacing, patch and batch);
  base     `unimiss finetune --base ct-organs-compact`, the user having labelled only USER_LABELS on the
           training cases (the others are kept through the base model's own predictions);
  monai    MONAI SegResNet with MONAI's transforms (RandCropByLabelClassesd, RandAffined, intensity) and
           DiceCELoss, AdamW with warm-up and cosine decay over the same minutes, on the same working grid.
The held-out patient is scored during training on the working grid (the clock paused meanwhile), and at
the end on its own grid through `unimiss segment` for the two unimiss arms. 2D (`drr`): from scratch on
--drr-count DRRs (`unimiss drr`) of the kit's one labelled chest CT, scored on 24 DRRs of other poses.
Results go to --out as one JSON per run; `report` writes the table and the plot (Dice against minutes).
Each figure comes with this CPU's description (unimiss.cpu.describe) and the load average during the run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "Testing"), str(REPO / "scripts")]
from testkit import DATA  # noqa: E402

CLASSES = ["liver", "spleen", "kidney_left", "kidney_right", "aorta", "heart", "lung_left", "lung_right"]
USER_LABELS = ["spleen", "kidney_left", "kidney_right", "aorta"]  # what the base model misses most
CHEST = ["lung_left", "lung_right", "heart", "clavicula_left", "clavicula_right"]
BASE = "ct-organs-compact"


def cpu_line() -> str:
    from unimiss.cpu import describe

    return describe()


def patients() -> list[str]:
    return sorted(p.name for p in (DATA / "ct").iterdir() if (p / "labels.json").is_file())


def write_cases(root: Path) -> dict[str, tuple[Path, Path]]:
    """Each labelled CT as NRRD + .seg.nrrd with the built-in model's classes; a user-labelled copy too."""
    from prepare_demo_data import TABLE, merged_labels
    from unimiss.data import Label, read_image, write_labelmap

    classes = [next(c for c in TABLE if c["name"] == n) for n in CLASSES]
    out = {}
    for name in patients():
        folder = DATA / "ct" / name
        image = read_image(folder / "dicom" if (folder / "dicom").is_dir() else folder / "image.nii.gz")
        labels = merged_labels(folder, read_image(folder / "labels.nii.gz"), classes)
        sitk.WriteImage(image.to_sitk(), str(root / f"{name}.nrrd"), True)
        table = [Label(v, c["name"], tuple(c["color"]), c["terminology"]) for v, c in enumerate(classes, 1)]
        write_labelmap(image.with_array(labels), root / f"{name}.seg.nrrd", table)
        # What a user who drew only USER_LABELS hands over: those segments alone.
        keep = [l for l in table if l.name in USER_LABELS]
        lut = np.zeros(len(table) + 1, np.uint8)
        for i, l in enumerate(keep, 1):
            lut[l.value] = i
        write_labelmap(image.with_array(lut[labels]), root / f"{name}-user.seg.nrrd",
                       [Label(i, l.name, l.color, l.terminology) for i, l in enumerate(keep, 1)])
        out[name] = (root / f"{name}.nrrd", root / f"{name}.seg.nrrd")
        present = [c for v, c in enumerate(CLASSES, 1) if (labels == v).any()]
        print(f"{name}: {', '.join(present)}", file=sys.stderr)
    return out


class Recorder:
    """Collects the metric events of a run (a stand-in Progress that prints plain lines)."""

    def __init__(self):
        self.metrics, self.messages = [], []

    def progress(self, stage, done, total):
        pass

    def message(self, text):
        self.messages.append(text)
        print(f"  {text}", file=sys.stderr, flush=True)

    def metric(self, **fields):
        self.metrics.append(fields)
        print(f"  {json.dumps(fields)}", file=sys.stderr, flush=True)


def run_unimiss(arm, train, held_out, minutes, work: Path, dims: int, spacing=None, patch=None, base=BASE,
                contrast_phases=True, intensity=None, lr=None, seed=0):
    """One `unimiss finetune` run through its Python API; the held-out cases are monitored."""
    from unimiss.training import CaseFiles, FinetuneSettings, finetune

    os.environ["UNIMISS_HOME"] = str(work / "home")
    settings = FinetuneSettings(name=f"bench-{arm}", base=base if arm == "base" else None, minutes=minutes,
                                iterations_per_epoch=25 if dims == 3 else 50, validation=0,
                                intensity=intensity, workdir=work / f"w-{arm}",
                                patience=10_000, command=f"bench_finetune.py {arm}", spacing=spacing,
                                patch_size=patch, contrast_phases=contrast_phases, lr=lr, seed=seed)
    recorder = Recorder()
    package = finetune(settings, [CaseFiles(*c) for c in train], recorder,
                       monitor_files=[CaseFiles(*c) for c in held_out])
    curve = [{"minutes": m["minutes"], "dice": m["monitor_dice"]} for m in recorder.metrics if m.get("monitor_dice")]
    final, every_part = {}, {}
    if dims == 3:  # on the held-out patient's own grid, as `unimiss segment` + `unimiss evaluate` would: keeping
        # every part, and as the package segments (the largest part of each class its cases drew as one piece)
        from unimiss.data import read_image, write_labelmap
        from unimiss.evaluation import evaluate_files
        from unimiss.inference import Predictor, keep_parts

        predictor = Predictor(package, largest_component=False)
        for image, labels in held_out:
            every = predictor.predict(read_image(image))
            for scores, segmented, suffix in ((every_part, every, "-every-part"),
                                              (final, keep_parts(every, package, package.largest_component_classes), "")):
                out = work / f"{arm}-{image.stem}{suffix}.seg.nrrd"
                write_labelmap(segmented, out, package.labels)
                report = evaluate_files(out, labels)
                scores.update({k: v["dice"] for k, v in report["labels"].items() if v["voxels_ref"] or v["voxels_pred"]})
    return {"curve": curve, "final_input_grid": final, "final_every_part": every_part,
            "postprocessing": package.meta.get("postprocessing", {}), "minutes": package.meta["provenance"]["minutes"],
            "iterations": package.meta["provenance"]["iterations"], "messages": recorder.messages,
            "base_dice": None}


def run_monai(train, held_out, minutes, work: Path, dims: int):
    """MONAI SegResNet, MONAI transforms and DiceCE on the working grid unimiss plans for the same cases."""
    from monai.data import DataLoader, Dataset
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import SegResNet
    from monai import transforms as T
    from unimiss.training.cases import prepare_case, read_pair
    from unimiss.training import CaseFiles
    from unimiss.training.finetune import FinetuneSettings, _plan
    from unimiss.training.losses import dice_per_class
    from unimiss.training.recipe import plan_batch

    files = [CaseFiles(*c) for c in train]
    pairs = [read_pair(f) for f in files]
    settings = FinetuneSettings()  # the intensity unimiss picks for the data (ct for CT, percentile for radiographs)
    preprocessing, patch, _ = _plan(settings, None, dims, pairs)
    classes = CHEST if dims == 2 else CLASSES
    cases = [prepare_case(f, *p, classes, preprocessing) for f, p in zip(files, pairs)]
    tests = [prepare_case(CaseFiles(*c), *read_pair(CaseFiles(*c)), classes, preprocessing) for c in held_out]
    n = len(classes) + 1
    keys = ["image", "label"]
    pipeline = T.Compose([
        T.RandCropByLabelClassesd(keys, "label", spatial_size=patch, num_classes=n, num_samples=1,
                                  ratios=[1] * n, allow_smaller=True),
        T.SpatialPadd(keys, spatial_size=patch),
        T.RandAffined(keys, prob=0.5, rotate_range=[0.35] + [0.14] * (dims - 1), scale_range=[0.2] * dims,
                      mode=("bilinear", "nearest"), padding_mode="border"),
        T.RandScaleIntensityd("image", factors=0.1, prob=1.0), T.RandShiftIntensityd("image", offsets=0.1, prob=1.0),
        T.RandGaussianNoised("image", prob=0.3, std=0.05),
    ])
    data = [{"image": c.image[None], "label": c.label[None].astype(np.int64)} for c in cases]
    batch = plan_batch(patch)
    loader = DataLoader(Dataset(data * 1000, pipeline), batch_size=batch, shuffle=True, num_workers=0)
    torch.manual_seed(0)
    net = SegResNet(spatial_dims=dims, in_channels=1, out_channels=n, init_filters=16)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    budget, start, paused = minutes * 60, time.monotonic(), 0.0
    curve, step_s, next_eval = [], [], 0.0

    def score():
        net.eval()
        scores = {c: [] for c in classes}
        with torch.no_grad():
            for case in tests:
                x = torch.from_numpy(case.image)[None, None]
                pred = sliding_window_inference(x, patch, batch, net, overlap=0.0, mode="gaussian").argmax(1)[0]
                for c, d in zip(classes, dice_per_class(pred, torch.from_numpy(case.label), n)):
                    if d is not None:
                        scores[c].append(d)
        net.train()
        return {c: float(np.mean(v)) for c, v in scores.items() if v}

    elapsed = lambda: time.monotonic() - start - paused  # noqa: E731
    tick = time.monotonic()
    for item in loader:  # a step's time includes loading and transforming its batch
        if elapsed() + (max(step_s[-5:]) if step_s else 0) > budget:
            break
        t = elapsed() / budget
        for g in optimizer.param_groups:
            g["lr"] = 1e-3 * (t / 0.05 if t < 0.05 else 0.5 * (1 + np.cos(np.pi * (t - 0.05) / 0.95)))
        loss = loss_fn(net(item["image"]), item["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_s.append(time.monotonic() - tick)
        if elapsed() >= next_eval:
            pause = time.monotonic()
            curve.append({"minutes": elapsed() / 60, "dice": score()})
            paused += time.monotonic() - pause
            next_eval = elapsed() + budget / 8
            print(f"  monai {curve[-1]}", file=sys.stderr, flush=True)
        tick = time.monotonic()
    curve.append({"minutes": elapsed() / 60, "dice": score()})
    return {"curve": curve, "final_input_grid": {}, "minutes": elapsed() / 60, "iterations": len(step_s),
            "messages": [f"SegResNet patch {patch}, batch {batch}"]}


def base_dice(held_out, work: Path, base=BASE):
    """The built-in model alone on the held-out patient, on its own grid."""
    from unimiss.data import read_image, write_labelmap
    from unimiss.evaluation import evaluate_files
    from unimiss.inference.predictor import Predictor
    from unimiss.zoo import resolve_model

    package = resolve_model(base)
    image, labels = held_out[0]
    out = work / f"base-{image.stem}.seg.nrrd"
    write_labelmap(Predictor(package).predict(read_image(image)), out, package.labels)
    report = evaluate_files(out, labels)
    return {k: v["dice"] for k, v in report["labels"].items() if v["voxels_ref"] or v["voxels_pred"]}


def drr_cases(work: Path, count: int):
    """DRRs of the kit's labelled chest CT (LIDC-IDRI-0001): `count` for training, 24 other poses to score."""
    import subprocess

    chest = work / "data" / "chest"
    if not (chest / "lidc.seg.nrrd").is_file():
        subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_demo_data.py"), str(work / "data")],
                       check=True, stdout=subprocess.DEVNULL)
    sets = {}
    for name, n, seed in (("train", count, 1), ("test", 24, 2)):
        folder = work / f"drr-{name}"
        if not (folder / "cases.csv").is_file():
            subprocess.run([sys.executable, "-m", "unimiss", "drr", str(chest / "lidc.nrrd"),
                            str(chest / "lidc.seg.nrrd"), "-o", str(folder), "--count", str(n), "--size", "256",
                            "--seed", str(seed)], check=True, stderr=subprocess.DEVNULL)
        rows = (folder / "cases.csv").read_text().splitlines()[1:]
        sets[name] = [tuple(folder / p for p in r.split(",")) for r in rows]
    return sets["train"], sets["test"]


def run(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-finetune-"))
    (work / "cases").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    cpu = cpu_line()
    for arm in args.arms:
        if arm in ("drr", "monai-drr"):
            train, test = drr_cases(work, args.drr_count)
            folds = [("lidc-drr", train, test)]
        else:
            cases = write_cases(work / "cases")
            user = {k: (v[0], v[1].with_name(f"{k}-user.seg.nrrd")) for k, v in cases.items()}
            extra = [tuple(Path(f) for f in pair) for pair in args.add_case or []]
            folds = [(p, [(user if arm == "base" else cases)[q] for q in cases if q != p] + extra, [cases[p]])
                     for p in (args.folds or patients())]
        for fold, train, held_out in folds:
            minutes = args.minutes_2d if fold == "lidc-drr" else args.minutes
            load = os.getloadavg()[0]
            print(f"{arm} / held out {fold}: {minutes} min, {cpu}", file=sys.stderr, flush=True)
            dims = 2 if fold == "lidc-drr" else 3
            result = (run_monai(train, held_out, minutes, work / f"{arm}-{fold}", dims) if arm.startswith("monai")
                      else run_unimiss(arm, train, held_out, minutes, work / f"{arm}-{fold}", dims,
                                       args.spacing, args.patch_size, args.base, not args.no_contrast_phases,
                                       args.intensity, args.lr, args.seed))
            if arm == "base":
                result["base_dice"] = base_dice(held_out, work, args.base)
                result["base"] = str(args.base)
            result.update(arm=arm, fold=fold, budget_minutes=minutes, cpu=cpu, seed=args.seed,
                          load_average=[round(load, 1), round(os.getloadavg()[0], 1)],
                          train=[Path(t[0]).stem for t in train][:4] + (["..."] if len(train) > 4 else []))
            if args.tag:
                result["arm"] = f"{arm}-{args.tag}"
            (out / f"{result['arm']}-{fold}.json").write_text(json.dumps(result, indent=1))
    report(args)


def mean(d, names):
    v = [d[n] for n in names if n in d]
    return float(np.mean(v)) if v else float("nan")


def report(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    if not results:
        print("no results yet", file=sys.stderr)
        return
    lines = ["| held out | arm | minutes (budget) | iterations | " + " | ".join(CLASSES) + " | mean |",
             "|---|---|---|---|" + "---|" * (len(CLASSES) + 1)]
    for r in results:
        names = CHEST[:3] if r["fold"] == "lidc-drr" else CLASSES
        rows = [("working grid", r["curve"][-1]["dice"] if r["curve"] else {})]
        if r.get("final_input_grid"):
            rows.append(("its own grid", r["final_input_grid"]))
        if r.get("final_every_part") and r["final_every_part"] != r["final_input_grid"]:
            rows.append(("its own grid, every part", r["final_every_part"]))
        if r.get("base_dice"):
            rows.append(("base model alone, its own grid", r["base_dice"]))
        for where, d in rows:
            cells = [f"{d[n]:.3f}" if n in d else "–" for n in (CLASSES if r["fold"] != "lidc-drr" else CLASSES)]
            if r["fold"] == "lidc-drr":
                cells = [f"{n} {d[n]:.3f}" for n in names if n in d] + [""] * (len(CLASSES) - len(names))
            lines.append(f"| {r['fold']} | {r['arm']} ({where}) | {r['minutes']:.1f} ({r['budget_minutes']}) | "
                         f"{r['iterations']} | " + " | ".join(cells) + f" | {mean(d, names):.3f} |")
    cpus = sorted({r["cpu"] for r in results})
    if len(cpus) == 1:
        runs = ", ".join(f"{r['arm']}/{r['fold']} {r['load_average']}" for r in results)
        footer = f"CPU: {cpus[0]}. Load average (start, end) per run: {runs}."
    else:  # runs from several machines: each names its own
        footer = "CPU and load average (start, end) per run: " + "; ".join(
            f"{r['arm']}/{r['fold']}: {r['cpu']}, {r['load_average']}" for r in results) + "."
    text = "\n".join(lines) + f"\n\n{footer}\n"
    (out / "finetune_benchmark.md").write_text(text)
    print(text)
    folds = sorted({r["fold"] for r in results})
    fig, axes = plt.subplots(1, len(folds), figsize=(5 * len(folds), 4), squeeze=False)
    # One colour per recipe on every panel: unimiss blue, from the base model green, MONAI orange;
    # variants (--tag) purple, brown, pink... one each.
    colours = {"scratch": "C0", "drr": "C0", "base": "C2", "monai": "C1", "monai-drr": "C1"}
    for i, arm in enumerate(sorted({r["arm"] for r in results} - set(colours))):
        colours[arm] = f"C{4 + i % 6}"
    for ax, fold in zip(axes[0], folds):
        for r in (r for r in results if r["fold"] == fold):
            names = CHEST[:3] if fold == "lidc-drr" else CLASSES
            xs = [p["minutes"] for p in r["curve"]]
            line, = ax.plot(xs, [mean(p["dice"], names) for p in r["curve"]], marker="o", label=f"{r['arm']} mean",
                            color=colours[r["arm"]])
            organs = ("lung_left", "heart") if fold == "lidc-drr" else ("liver", "spleen")
            for organ, style in zip(organs, (":", "-.")):
                ax.plot(xs, [p["dice"].get(organ, np.nan) for p in r["curve"]], ls=style, color=line.get_color(),
                        label=f"{r['arm']} {organ}")
            if r.get("base_dice"):
                ax.axhline(mean(r["base_dice"], names), color="grey", ls="--", label="base model alone")
        ax.set(title=f"held out: {fold}", xlabel="minutes", ylabel="Dice (working grid)", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.suptitle("; ".join(cpus)[:220], fontsize=8)
    fig.tight_layout()
    plot = args.plot or out / "plot.png"
    fig.savefig(plot)
    print(f"wrote {out / 'finetune_benchmark.md'} and {plot}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["run", "report"])
    parser.add_argument("--arms", nargs="+", default=["scratch", "base", "monai", "drr"],
                        choices=["scratch", "base", "monai", "drr", "monai-drr"])
    parser.add_argument("--folds", nargs="+", help="held-out patients (default: every labelled CT)")
    parser.add_argument("--minutes", type=float, default=15.0, help="3D budget per run")
    parser.add_argument("--minutes-2d", type=float, default=10.0, help="2D budget per run")
    parser.add_argument("--drr-count", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "finetune"))
    parser.add_argument("--plot", help="the plot's file (default: plot.png in --out; the README's is "
                        "docs/finetune-benchmark.png)")
    parser.add_argument("--base", default=BASE, help="base arm: the model to start from, a name or a package folder "
                        "(for an honest fold, one trained without the held-out patient)")
    parser.add_argument("--spacing", type=float, nargs="+", help="unimiss arms: working spacing (default: planned)")
    parser.add_argument("--patch-size", type=int, nargs="+", help="unimiss arms: patch (default: planned)")
    parser.add_argument("--no-contrast-phases", action="store_true",
                        help="unimiss arms: without simulated contrast phases (as before they were part of the recipe)")
    parser.add_argument("--intensity", help="unimiss arms from scratch: intensity preset (default: unimiss's for the data)")
    parser.add_argument("--lr", type=float, help="unimiss arms: peak learning rate (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="unimiss arms: seed of sampling, augmentation and "
                        "initialisation (a run's spread between seeds: tag each seed's runs apart)")
    parser.add_argument("--add-case", nargs=2, action="append", metavar=("IMAGE", "LABELS"),
                        help="3D arms: a labelled case (the built-in model's class names) added to every fold's training "
                             "cases, e.g. RICORD-1B with its atlas labels (scripts/ricord_atlas_labels.py)")
    parser.add_argument("--tag", help="appended to the arm's name in the results (a variant of the recipe)")
    parser.add_argument("--work", help="work folder (default: a new temporary folder)")
    args = parser.parse_args()
    run(args) if args.mode == "run" else report(args)


if __name__ == "__main__":
    main()
