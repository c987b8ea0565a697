"""The `unimiss` command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__

SAMPLES = {"ct": "ct-abdomen.nii.gz", "xray": "chest-xray.png"}
PROGRESS_CHOICES = ["auto", "tqdm", "lines", "jsonl", "none"]
PROGRESS_HELP = ("auto: bars on a terminal, else plain lines (stage, percent) on stdout; lines: those lines always; "
                 "jsonl: one JSON event per line on stdout, for GUIs; none: nothing but errors (errors go to stderr "
                 "in every mode)")
PRECISION_HELP = "auto: bf16 autocast where the CPU or GPU computes it natively, else fp32"


def _segment(args) -> int:
    from .data.inputs import find_cases, plan_outputs, preview_path, refuse_single_slice_volume
    from .data.io import check_labelmap_output, read_image, write_labelmap
    from .errors import check_writable, describe
    from .inference import Predictor, preflight
    from .progress import Progress, Stopwatch
    from .zoo import default_model, model_origin, resolve_model

    progress = Progress(args.progress, args.command)
    inputs = list(args.inputs)
    if args.sample:
        inputs.append(Path(__file__).with_name("samples") / SAMPLES[args.sample])
    if not inputs:
        raise ValueError("give images to segment, or --sample ct|xray")
    found = find_cases(inputs, progress.message)
    cases = [case.path for case in found]
    outputs = plan_outputs(found, args.output, args.format, args.labels_out, args.preview or bool(args.sample),
                           progress.message)
    preview = args.preview or bool(args.sample)
    explicit = resolve_model(args.model) if args.model else None
    for out in dict.fromkeys(outputs):  # before any inference: an unwritable output fails now, not after it
        check_writable(out)
    predictors, failures, preview_failures = {}, 0, 0
    for case, out in zip(cases, outputs):
        clock = Stopwatch()
        try:
            preflight.check_file(case, explicit, args.batch_size, args.overlap, args.max_memory_gb)
            image = read_image(case, on_message=progress.message)
            if explicit is None:
                refuse_single_slice_volume(case, image.dimension)
            package = explicit or default_model(image.dimension)
            check_labelmap_output(out, package.labels)
            if package.reference not in predictors:
                predictors[package.reference] = Predictor(
                    package, device=args.device, overlap=args.overlap, tta=args.tta, precision=args.precision,
                    batch_size=args.batch_size, largest_component=args.largest_component, progress=progress,
                    max_memory_gb=args.max_memory_gb)
                progress.start(model=package.reference, **model_origin(package))
            labels = predictors[package.reference].predict(image, source=case)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_labelmap(labels, out, package.labels, table=args.labels_out)
        except (ValueError, OSError, MemoryError) as exc:
            if len(cases) == 1:
                raise
            failures += 1
            progress.error(f"{case}: {describe(exc)}")
            continue
        progress.result(out, input=str(case), model=package.reference, **model_origin(package),
                        seconds=round(clock(), 2))
        if preview:
            from .preview import write_preview

            picture = preview_path(out)
            try:
                write_preview(picture, image, labels, package.labels, modality_ct=package.dimension == 3)
            except (ValueError, OSError, MemoryError) as exc:  # the labelmap is written; the batch goes on
                preview_failures += 1
                progress.error(f"{picture}: the preview could not be written ({describe(exc)})")
                continue
            progress.result(picture, input=str(case), kind="preview")
    progress.close()
    if failures or preview_failures:
        print(f"unimiss: {failures} of {len(cases)} cases failed" if failures
              else f"unimiss: {preview_failures} of {len(cases)} previews could not be written", file=sys.stderr)
        return 1
    return 0


def _finetune(args) -> int:
    from .progress import Progress
    from .training import FinetuneSettings, finetune, pairs_from_args

    progress = Progress(args.progress, args.command)
    settings = FinetuneSettings(
        name=args.name, base=args.base, config=args.config, new_head=args.new_head,
        patch_size=tuple(args.patch_size) if args.patch_size else None,
        spacing=tuple(args.spacing) if args.spacing else None, intensity=args.intensity, epochs=args.epochs,
        minutes=args.minutes, iterations_per_epoch=args.iterations, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, schedule=args.schedule, seed=args.seed, validation=args.validation,
        patience=args.patience, contrast_phases=not args.no_contrast_phases,
        deformation=args.deformation, precision=args.precision,
        device=args.device, workdir=Path(args.workdir) if args.workdir else None,
        resume=args.resume, command="unimiss " + " ".join(sys.argv[1:]))
    files = pairs_from_args(args.images or (), args.labels or (), args.data, args.csv)
    package = finetune(settings, files, progress)
    progress.close()
    if package is not None:
        progress.result(package.root, model=package.reference, metrics=package.meta.get("metrics", {}).get("val_dice"))
    return 0


def _pretrain(args) -> int:
    from .progress import Progress
    from .training.pretrain import PretrainSettings, pretrain

    progress = Progress(args.progress, args.command)
    settings = PretrainSettings(
        images2d=args.images2d or [], images3d=args.images3d or [], config=args.config,
        view_size_2d=tuple(args.view_size_2d), view_size_3d=tuple(args.view_size_3d), spacing=args.spacing,
        epochs=args.epochs, interval=args.interval, batch_size=args.batch_size,
        samples_per_epoch=args.samples_per_epoch, lr=args.lr, warmup_epochs=args.warmup_epochs,
        out_dim=args.out_dim, teacher_temp=args.teacher_temp, momentum_teacher=args.momentum_teacher,
        seed=args.seed, save_every=args.save_every, device=args.device, output=Path(args.output),
        resume=args.resume, plus=args.plus, weight_drr=args.weight_drr, weight_slices=args.weight_slices,
        weight_recon=args.weight_recon)
    try:
        path = pretrain(settings, progress)
    except KeyboardInterrupt:
        checkpoint = settings.output / "checkpoint.pth"
        progress.message(f"stopped: the last checkpoint is {checkpoint}; run the same command with --resume to "
                         "continue from it" if checkpoint.is_file() else "stopped before the first checkpoint")
        raise
    progress.close()
    if path is not None:
        progress.result(path)
    return 0


def _drr(args) -> int:
    import csv

    import numpy as np
    import SimpleITK as sitk

    from .data.drr import Projector
    from .data.inputs import case_name
    from .data.io import atomic_output, read_image, read_labelmap, write_labelmap

    ct = read_image(args.ct)
    if ct.dimension != 3:
        raise ValueError(f"{args.ct}: a DRR needs a CT volume, this is a 2D image")
    labelmap, labels = read_labelmap(args.labels) if args.labels else (None, [])
    if labelmap is not None and not labelmap.same_grid(ct):
        raise ValueError(f"{args.labels}: the labelmap is not on the grid of the CT")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    stem = case_name(args.ct)
    rows = []
    references = [_grey_levels(p, args.size) for p in _radiograph_files(args.match)]
    rotations = (0.0,) if args.plain else (-8.0, -4.0, 0.0, 4.0, 8.0)
    unknown = sorted(set(args.hide or ()) - {label.name for label in labels})
    if unknown:
        raise ValueError(f"--hide {unknown[0]}: no such label in {args.labels or 'the (absent) labelmap'}")
    hidden = [label for label in labels if label.name in set(args.hide or ())]
    labels = [label for label in labels if label not in hidden]
    projector = Projector(ct, labelmap, labels, rotations=rotations, hidden=hidden)
    for i in range(args.count):
        image, masks = projector.radiograph(rng, size=args.size, randomise=not args.plain, references=references)
        name = f"{stem}-drr{i:03d}"
        with atomic_output(out / f"{name}.nrrd") as tmp:
            sitk.WriteImage(image.to_sitk(), str(tmp), True)
        if labelmap is not None:
            write_labelmap(masks, out / f"{name}.seg.nrrd", labels)
            rows.append((f"{name}.nrrd", f"{name}.seg.nrrd"))
    if rows:
        with atomic_output(out / "cases.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as table:
            csv.writer(table, lineterminator="\n").writerows([("image", "label"), *rows])  # quotes what needs it
    print(f"wrote {args.count} radiographs to {out}", file=sys.stderr)
    return 0


def _radiograph_files(paths) -> list[Path]:
    from .data.inputs import expand_inputs

    return [Path(p) for p in expand_inputs(paths)] if paths else []


def _grey_levels(path: Path, size: int):
    """A radiograph's pixels as uint8 on a size x size grid: the grey levels DRRs are matched to."""
    import numpy as np
    import SimpleITK as sitk

    from .data.io import read_image

    image = read_image(path)
    if image.dimension != 2:
        raise ValueError(f"{path}: --match takes radiographs (2D images), this is a volume")
    array = sitk.GetArrayFromImage(sitk.Resample(sitk.GetImageFromArray(image.array.astype(np.float32)),
                                                 [size, size], sitk.Transform(), sitk.sitkLinear,
                                                 (0.0, 0.0), [image.array.shape[1] / size, image.array.shape[0] / size]))
    low, high = np.percentile(array, (0.5, 99.5))
    return np.clip((array - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)


def _evaluate(args) -> int:
    from .evaluation import evaluate_files

    report = evaluate_files(args.prediction, args.reference, args.match_by_value,
                            say=lambda message: print(f"unimiss: {message}", file=sys.stderr))
    print(json.dumps(report, indent=2))
    return 0


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
    from .models import from_official_pretrain, from_official_segmentation
    from .models.official_plus import from_official_plus_pretrain, is_plus_pretrain, load_plus_checkpoint

    ckpt, skipped = load_plus_checkpoint(args.checkpoint)  # objects outside the allow-list in args: never built
    if is_plus_pretrain(ckpt):
        net = from_official_plus_pretrain(ckpt, args.which, source=args.checkpoint)
        print(f"official UniMiSS+ pretraining checkpoint: MiT+ {args.which}, 2D+3D, epoch {ckpt.get('epoch', '?')}, "
              f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters; loads exactly"
              + (f"; not read from its args: {', '.join(skipped)}" if skipped else ""))
    elif "state_dict" in ckpt:
        net = from_official_segmentation(ckpt, args.arch, patch_size=args.patch_size, source=args.checkpoint)
        print(f"official downstream segmentation checkpoint: MiT-{args.arch}, 3D, {net.num_classes} classes, "
              f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters; loads exactly")
    else:
        net = from_official_pretrain(ckpt, args.arch, args.which, source=args.checkpoint)
        epoch = ckpt.get("epoch", "?")
        print(f"official pretraining checkpoint: MiT-{args.arch} {args.which}, 2D+3D, epoch {epoch}, "
              f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters; loads exactly")
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written; every option's default appended to its help, unless the help states it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and "default" not in text and not any(
                action.default is nothing for nothing in (None, False, argparse.SUPPRESS)):
            default = " ".join(map(str, action.default)) if isinstance(action.default, list) else action.default
            text += f" (default: {default})"
        return text


SEGMENT_EPILOG = """\
inputs and outputs:
  one image, -o a labelmap file    unimiss segment CT.nii.gz -o CT.seg.nrrd
  one image, -o a folder           out/CT.seg.nrrd (the input's name without its extension)
  a DICOM series folder            read as one volume (the largest series if there are several);
                                   the output is named after the folder: dicom/ -> out/dicom.seg.nrrd
  a folder of image files          each file is a case (PNG, JPEG, NIfTI, NRRD, single DICOM files
                                   alike; other files are named and left out):
                                   cases/a.png, cases/b.dcm -> out/a.seg.nrrd, out/b.seg.nrrd
  a folder of case folders         each subfolder is a case, a DICOM series or a single image
                                   (labelmaps beside it not counted), named after the subfolder:
                                   cases/p1/image.nii.gz, cases/p2/ (DICOM) -> out/p1..., out/p2...
  Each folder given is reported in one line (what it was read as, what was left out).
  --format nii.gz or nrrd          a labelmap plus a table beside it (out/a.ctbl, or with --labels-out
                                   json out/a.json) naming the values
  --preview                        also out/a-preview.png: the segments outlined, with a legend

Results are named after their case; cases that would share a name (letter case ignored) get their
parent folder's name in front (a/image.nii.gz, b/image.nii.gz -> a_image, b_image), then their
extension (a.png, a.jpg -> a_png, a_jpg), then a number (-2). An output that would replace an input,
or -o with an image extension (out.png), is refused before any work.

The model is the built-in one for the input's dimension (3D CT or 2D radiograph) unless --model names
another (`unimiss models list`); a single slice of a CT volume needs --model. A case that fails in a
batch is reported and the others go on; the exit status is then 1.
"""

EVALUATE_EPILOG = """\
Both files are labelmaps on the same grid: .seg.nrrd (segment names inside), or NRRD / NIfTI with a
label table beside it that names the values (CASE.ctbl, CASE.json as TotalSegmentator's labels.json,
or a Decathlon / nnU-Net dataset.json in its folder or the folder above). Classes are matched by
name (letter case, spaces, '_' and '-' ignored), so the two may number them differently. A labelmap
with unnamed values is refused, unless --match-by-value pairs equal values (and says so).
Prints JSON: per label its Dice and mean surface distance (mm), and the mean Dice; a label that neither side
holds has Dice null and is left out of the mean (as fine-tuning scores its validation cases).

  unimiss evaluate out/case.seg.nrrd reference/case.seg.nrrd > scores.json
"""

FINETUNE_EPILOG = """\
Cases come from --images/--labels (pairs, in order), a Decathlon / nnU-Net folder (--data) or a CSV (--csv).
Classes are matched by name across cases (segment names of a .seg.nrrd, or the label table beside a
NIfTI/NRRD labelmap: CASE.ctbl, CASE.json, dataset.json). The last --validation cases are held out and
scored (Dice per class) after each epoch; the best epoch's weights become a new user model package,
NAME@VERSION (`unimiss models list`), usable with `unimiss segment --model NAME`.
Without --epochs or --minutes it trains 50 epochs; with --minutes alone, until the budget is spent.
From a base model package, classes a case does not label are learnt from the base model's own
predictions on it, so fine-tuning on a few classes keeps the others.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unimiss", description="UniMiSS (MiT) for 2D radiographs and 3D CT.",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"unimiss {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    seg = commands.add_parser("segment", help="segment CT volumes or radiographs", formatter_class=_HelpFormatter,
                              description="Segment CT volumes or radiographs with a model package; each result "
                                          "lies on its input's grid.", epilog=SEGMENT_EPILOG)
    seg.add_argument("inputs", nargs="*", metavar="INPUT",
                     help="image files (NIfTI, NRRD, MHA, PNG, JPEG, DICOM), DICOM series folders, or folders of cases")
    seg.add_argument("--sample", choices=sorted(SAMPLES), help="segment a bundled sample: a CT or a chest radiograph")
    seg.add_argument("--preview", action="store_true",
                     help="also write <output>-preview.png: the segments over three planes (always with --sample)")
    seg.add_argument("-o", "--output", required=True,
                     help="labelmap file (.seg.nrrd, .nrrd, .nii.gz) for one case, or a folder (see below)")
    seg.add_argument("--model", help="name, name@version or path of a model package (default: the built-in model "
                                     "for the input's dimension)")
    seg.add_argument("--device", default="auto",
                     help="auto (a CUDA GPU if PyTorch sees one, else the CPU), cpu, cuda or cuda:N")
    seg.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap, 0..1")
    seg.add_argument("--tta", action="store_true", help="also average over mirrored inputs (up to 8x slower in 3D), "
                     "for models that learnt from mirrored images (model.json postprocessing.test_time_mirroring)")
    seg.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help=PRECISION_HELP)
    seg.add_argument("--batch-size", type=int, default=2, help="windows per forward pass (more: faster on a GPU)")
    seg.add_argument("--max-memory-gb", type=float,
                     help="refuse images whose segmentation would need more memory than this (default: 80%% of "
                          "the machine's memory); the estimate is checked before any work")
    parts = seg.add_mutually_exclusive_group()
    parts.add_argument("--largest-component", action="store_true", default=None,
                       help="keep each label's largest connected part (default: as the model says; the built-in "
                            "models do, since each of their organs is one piece, and a model from `unimiss finetune` "
                            "does for each class its training cases drew as one piece)")
    parts.add_argument("--all-components", dest="largest_component", action="store_false", default=argparse.SUPPRESS,
                       help="keep every part of each label, even where the model says to keep the largest")
    seg.add_argument("--format", default="seg.nrrd", choices=["seg.nrrd", "nrrd", "nii.gz"],
                     help="file format when -o is a folder")
    seg.add_argument("--labels-out", default="ctbl", choices=["ctbl", "json"],
                     help="the table naming the values beside a .nii.gz/.nrrd result: CASE.ctbl (3D Slicer colour "
                          "table) or CASE.json ({\"labels\": {\"1\": \"liver\"}}, as TotalSegmentator)")
    seg.add_argument("--progress", default="auto", choices=PROGRESS_CHOICES, help=PROGRESS_HELP)
    seg.set_defaults(func=_segment)

    ft = commands.add_parser("finetune", help="train a segmentation model on labelled cases",
                             formatter_class=_HelpFormatter, epilog=FINETUNE_EPILOG,
                             description="Train (or fine-tune) a segmentation model on labelled cases and register "
                                         "it as a new model package.")
    ft.add_argument("--images", nargs="+", metavar="IMAGE", help="training images (with --labels, in the same order)")
    ft.add_argument("--labels", nargs="+", metavar="LABELMAP",
                    help="their labelmaps: .seg.nrrd with segment names, or .nrrd/.nii.gz with a .ctbl colour table")
    ft.add_argument("--data", metavar="FOLDER", help="a Decathlon / nnU-Net folder (imagesTr, labelsTr, dataset.json)")
    ft.add_argument("--csv", help="a CSV with 'image' and 'label' columns (paths relative to it)")
    ft.add_argument("--base", help="start from a model package (name, name@version, path) or an official "
                                   "UniMiSS or UniMiSS+ pretraining checkpoint (.pth, e.g. UniMissPlus.pth: "
                                   "MiT+, whatever --config says); default: from scratch")
    ft.add_argument("--config", default="compact", choices=["compact", "tiny", "small"],
                    help="the network when training from scratch, or the arch of an official checkpoint")
    ft.add_argument("--new-head", action="store_true", help="train the base model on a new label set")
    ft.add_argument("--name", help="name of the new model package (default: BASE-finetuned, or custom-3d / custom-2d)")
    ft.add_argument("--patch-size", type=int, nargs="+",
                    help="network input, (z y x) or (y x) (default: the base package's, else planned from the "
                         "median case in 3D, 256 256 in 2D)")
    ft.add_argument("--spacing", type=float, nargs="+",
                    help="3D working spacing in mm, (x y z) (default: the base package's, else the cases' median, "
                         "coarsened until the median case spans about six patches); "
                         "radiographs are resized to the patch instead")
    ft.add_argument("--intensity", choices=["ct", "ct-wide", "zscore", "percentile"],
                    help="intensity normalisation without a base package: ct is the soft-tissue window -200..400 HU "
                         "(organs), ct-wide -1000..1000 HU (inner structure of the lungs, bone), zscore per image, "
                         "percentile scales the 0.5-99.5 percentiles (default: ct for CT, ct-wide from a pretraining "
                         "checkpoint as pretraining sees CT, percentile for radiographs)")
    ft.add_argument("--epochs", type=int, help="at most this many epochs (default: 50, or unlimited with --minutes)")
    ft.add_argument("--minutes", type=float,
                    help="time budget for the whole run (preparation, training, validation): the learning-rate "
                         "schedule spans it and the run stops on time, within an epoch (default: no budget)")
    ft.add_argument("--iterations", type=int, default=50, help="training iterations (batches) per epoch")
    ft.add_argument("--batch-size", type=int,
                    help="patches per iteration, per process under torchrun (default: from the patch size, "
                         "2 for 3D patches of 64x96x96, 8 for 2D patches of 256x256)")
    ft.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"],
                    help="adamw (weight decay 0.01) or sgd (Nesterov momentum 0.99, as nnU-Net)")
    ft.add_argument("--lr", type=float, help="peak learning rate (default: adamw 3e-3 from scratch, 3e-4 from a "
                                             "base, pretrained layers lower; sgd 1e-2)")
    ft.add_argument("--schedule", default="poly", choices=["poly", "cosine"],
                    help="learning-rate decay over the planned iterations")
    ft.add_argument("--seed", type=int, default=0, help="random seed of sampling, augmentation and initialisation")
    ft.add_argument("--validation", type=int,
                    help="how many cases (the last ones) are held out for validation "
                         "(default: a fifth, at least one; none with fewer than three cases: all train)")
    ft.add_argument("--patience", type=int, default=20,
                    help="early stopping: epochs without a better validation Dice")
    ft.add_argument("--no-contrast-phases", action="store_true",
                    help="CT: do not simulate other contrast phases (by default half the patches see their aorta, "
                         "heart, kidneys, liver, spleen... as native, arterial or venous, when the labels name them)")
    ft.add_argument("--deformation", type=float, default=0.0, metavar="SHARE",
                    help="smooth random deformations of the training patches for shape variety (organs larger or "
                         "smaller, outlines bent), up to SHARE of half a patch along each axis (e.g. 0.08); 0: none")
    ft.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="auto: fp32 on CPUs, bf16 (or fp16) autocast on GPUs")
    ft.add_argument("--device", default="auto",
                    help="auto (a CUDA GPU if PyTorch sees one, else the CPU), cpu, cuda or cuda:N")
    ft.add_argument("--workdir",
                    help="folder for the checkpoint (replaced each epoch, removed once the model is saved; kept "
                         "for --resume when a run stops early); default: unimiss-finetune-NAME beside the data")
    ft.add_argument("--resume", action="store_true", help="continue from the workdir's checkpoint")
    ft.add_argument("--progress", default="auto", choices=PROGRESS_CHOICES, help=PROGRESS_HELP)
    ft.set_defaults(func=_finetune)

    pt = commands.add_parser("pretrain", help="UniMiSS self-supervised pretraining on unlabelled radiographs and CTs",
                             formatter_class=_HelpFormatter,
                             description="UniMiSS self-distillation on unlabelled radiographs and CT volumes; writes "
                                         "OUTPUT/checkpoint.pth in the official layout (for finetune --base).")
    pt.add_argument("--images2d", nargs="+", metavar="PATH", help="radiographs (PNG, JPEG, DICOM) or folders of them")
    pt.add_argument("--images3d", nargs="+", metavar="PATH", help="CT volumes (NIfTI, NRRD, DICOM folders) or folders")
    pt.add_argument("--config", default="compact", choices=["compact", "tiny", "small"], help="the MiT network")
    pt.add_argument("--view-size-2d", type=int, nargs=2, default=[128, 128], metavar=("Y", "X"),
                    help="2D view size, multiples of 32 (published: 224 224)")
    pt.add_argument("--view-size-3d", type=int, nargs=3, default=[16, 96, 96], metavar=("Z", "Y", "X"),
                    help="3D view size, multiples of (16, 32, 32)")
    pt.add_argument("--spacing", type=float, default=2.0, help="working CT spacing in mm (isotropic)")
    pt.add_argument("--epochs", type=int, default=10, help="epochs in all, 2D and 3D together")
    pt.add_argument("--interval", type=int, default=2, help="2D and 3D epochs alternate every this many epochs")
    pt.add_argument("--batch-size", type=int, default=4, help="per process")
    pt.add_argument("--samples-per-epoch", type=int, help="default: the number of images of the epoch's kind")
    pt.add_argument("--lr", type=float, help="peak learning rate (default: 8e-4 x total batch / 256)")
    pt.add_argument("--warmup-epochs", type=int, help="learning-rate warm-up (default: min(10, epochs/10))")
    pt.add_argument("--out-dim", type=int, default=4096, help="projection head output (published: 65536)")
    pt.add_argument("--teacher-temp", type=float, default=0.04, help="teacher softmax temperature (sharpening)")
    pt.add_argument("--momentum-teacher", type=float, default=0.996,
                    help="EMA momentum of the teacher, raised to 1 by a cosine schedule")
    pt.add_argument("--seed", type=int, default=0, help="random seed of views, sampling and initialisation")
    pt.add_argument("--save-every", type=int, default=20, help="checkpoint every this many epochs (and the last)")
    pt.add_argument("--device", default="auto",
                    help="auto (a CUDA GPU if PyTorch sees one, else the CPU), cpu, cuda or cuda:N")
    pt.add_argument("--output", default="unimiss-pretrain", help="checkpoint.pth and log.jsonl go here")
    pt.add_argument("--resume", action="store_true", help="continue from the output folder's checkpoint")
    pt.add_argument("--plus", action="store_true",
                    help="UniMiSS+ (MiT+, --config ignored): each CT view also seen as a DRR and as slices, with the "
                         "pair-wise cross-dimension constraint and a reconstruction loss; UniMissPlus.pth layout")
    pt.add_argument("--weight-drr", type=float, default=1.0, help="with --plus: weight of the DRR-to-CT constraint")
    pt.add_argument("--weight-slices", type=float, default=1.0, help="with --plus: weight of the slices-to-CT constraint")
    pt.add_argument("--weight-recon", type=float, default=1.0, help="with --plus: weight of the reconstruction loss")
    pt.add_argument("--progress", default="auto", choices=PROGRESS_CHOICES, help=PROGRESS_HELP)
    pt.set_defaults(func=_pretrain)

    drr = commands.add_parser("drr", help="project a CT and its labels into radiographs and 2D masks",
                              formatter_class=_HelpFormatter,
                              description="Digitally reconstructed radiographs (PA chest views) of a CT, with the "
                                          "projected masks of its labels: training data for 2D models.")
    drr.add_argument("ct", help="the CT volume (NIfTI, NRRD, MHA or a DICOM series folder)")
    drr.add_argument("labels", nargs="?", help="labelmap of the CT (.seg.nrrd, or .nrrd/.nii.gz with a .ctbl); "
                                               "later labels are drawn over earlier ones")
    drr.add_argument("-o", "--output", required=True,
                     help="folder for <ct>-drrNNN.nrrd, and with labels their .seg.nrrd and a cases.csv listing the pairs")
    drr.add_argument("--count", type=int, default=1, help="how many randomised radiographs")
    drr.add_argument("--size", type=int, default=512, help="pixels per side")
    drr.add_argument("--seed", type=int, default=0, help="random seed of the randomised geometry and intensity")
    drr.add_argument("--plain", action="store_true", help="no randomised geometry or intensity")
    drr.add_argument("--hide", nargs="+", metavar="LABEL",
                     help="labels cut out of the lung fields where they project, and not written (the aorta, the "
                          "mediastinum, the organs below the diaphragm), as chest radiograph references draw lungs")
    drr.add_argument("--match", nargs="+", metavar="RADIOGRAPH",
                     help="real radiographs (files or folders): the DRRs take on their grey-level distributions")
    drr.set_defaults(func=_drr)

    ev = commands.add_parser("evaluate", help="Dice and mean surface distance per label, as JSON",
                             formatter_class=_HelpFormatter, epilog=EVALUATE_EPILOG,
                             description="Compare a segmentation with a reference segmentation, label by label.")
    ev.add_argument("prediction", help="the labelmap to score (e.g. what unimiss segment wrote)")
    ev.add_argument("reference", help="the reference labelmap, on the same grid")
    ev.add_argument("--match-by-value", action="store_true",
                    help="pair equal label values instead of equal names (for labelmaps without names); says so")
    ev.set_defaults(func=_evaluate)

    try:
        from .zoo.cli import add_models_parser
    except ImportError:  # pragma: no cover - the zoo is part of the distribution
        pass
    else:
        add_models_parser(commands)

    mit = commands.add_parser("mit", help="the MiT network family").add_subparsers(dest="mit_command", required=True)
    summary = mit.add_parser("summary", help="configurations and parameter counts", formatter_class=_HelpFormatter)
    summary.add_argument("config", nargs="?", choices=["tiny", "small", "compact"], help="one config (default: all)")
    summary.add_argument("--forward", action="store_true", help="also run one 3D forward pass")
    summary.set_defaults(func=_mit_summary)

    inspect = mit.add_parser("inspect", help="check that an official UniMiSS checkpoint loads",
                             formatter_class=_HelpFormatter)
    inspect.add_argument("checkpoint", help="a pretraining (.pth) or nnU-Net segmentation (.model) checkpoint")
    inspect.add_argument("--arch", default="tiny", choices=["tiny", "small"], help="the checkpoint's network")
    inspect.add_argument("--which", default="teacher", choices=["teacher", "student"],
                         help="which network of a pretraining checkpoint")
    inspect.add_argument("--patch-size", type=int, nargs=3, default=[16, 96, 96], metavar=("D", "H", "W"),
                         help="training patch size of a segmentation checkpoint (from its plans)")
    inspect.set_defaults(func=_mit_inspect)
    return parser


def main(argv=None) -> int:
    """Exit status: 0 done, 1 some cases of a batch failed, 2 an error, 3 an internal error, 130 interrupted."""
    from . import errors

    args = build_parser().parse_args(argv)

    def fail(message: str, status: int) -> int:
        if getattr(args, "progress", None) == "jsonl":
            print(json.dumps({"event": "error", "message": message}), flush=True)
        print(f"unimiss: {'error: ' if status != 130 else ''}{message}", file=sys.stderr, flush=True)
        return status

    try:
        return args.func(args)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:  # InputError, CheckpointError, ModelPackageError are ValueErrors
        if errors.is_expected(exc):
            return fail(errors.describe(exc), 2)
        log = errors.write_crash_log(exc, argv)
        return fail(f"internal error ({type(exc).__name__}: {errors.one_line(exc, 200)}); this is a bug in unimiss"
                    + (f", the details are in {log}" if log else ""), 3)
