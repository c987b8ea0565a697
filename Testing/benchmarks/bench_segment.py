"""End-to-end segmentation time and peak memory on real CT, beside MONAI's sliding window, on this machine.

    python Testing/benchmarks/bench_segment.py [--configs compact small] [--rounds 1] [--skip-large]
                                               [--compare-with OTHER_CHECKOUT/UniMiSSCore]

Each measurement runs in a fresh process so its peak memory (max RSS) is its own.
1. `unimiss segment` on LIDC-IDRI-0001 (512x512x133) with the default built-in model, as a user
   runs it: wall clock of the whole command (imports, reading, segmenting, writing .seg.nrrd).
2. `Predictor.predict` end to end (read, preprocess, sliding window, back onto the input grid,
   write .seg.nrrd), after the imports, for MiT-compact and MiT-small packages with the same
   preprocessing (random weights).
3. The sliding-window stage alone, ours and monai.inferers.sliding_window_inference
   (Gaussian blending, same windows, overlap and batch), same network: their ratio.
4. Peak memory on a 512x512x600 volume (the real CT tiled along z), MiT-compact.
--only-resample times instead the way back to the input grid alone, this package's separable
path against SimpleITK's, on one MiT-compact output (in this process, alternating).
With --compare-with, every measurement also runs on that other copy of the package (e.g. an
earlier commit, `git archive`d), alternating with this one; with --rounds N each is repeated
N times, interleaved, and medians are printed, so that a busy machine slows both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))
from testkit import DATA, make_package  # noqa: E402

CT = DATA / "ct" / "lidc-idri-0001" / "image.nii.gz"
PREPROCESSING = {"spacing": [1.5, 1.5, 2.5], "orientation": "LPS",
                 "intensity": {"method": "ct", "clip": [-1000, 1000], "scale": [0.0, 1000.0]}}
PATCH = (32, 128, 128)
STAGES = {"cli": "`unimiss segment`, whole command", "predict": "segment end to end",
          "ours": "sliding window (ours)", "monai": "sliding window (MONAI)"}
LABELS = ["liver", "spleen", "kidney_left", "kidney_right", "aorta", "heart", "lung_left", "lung_right"]

CHILD = r'''
import json, resource, sys, time
import numpy as np, torch
from pathlib import Path
mode, package_dir, image_path, out = sys.argv[1:5]
if mode == "cli":
    import subprocess
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "unimiss", "segment", image_path, "-o", out, "--progress", "none"], check=True)
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6}))
    sys.exit()
from unimiss.zoo import ModelPackage
from unimiss.data import read_image, write_labelmap
from unimiss.inference import Predictor
from unimiss.inference.preprocessing import prepare
package = ModelPackage.load(package_dir)
start = time.perf_counter()
if mode == "predict":
    image = read_image(image_path)
    predictor = Predictor(package, device="cpu", overlap=0.5)
    labels = predictor.predict(image)
    write_labelmap(labels, out, package.labels)
else:
    image = read_image(image_path)
    predictor = Predictor(package, device="cpu", overlap=0.5)
    volume = torch.from_numpy(prepare(image, package.preprocessing).array)[None, None]
    t0 = time.perf_counter()
    if mode == "ours":
        from unimiss.inference import sliding_window
        sliding_window(predictor._forward, volume[0], package.patch_size, predictor.num_classes, 0.5, 2)
    else:
        from monai.inferers import sliding_window_inference
        sliding_window_inference(volume, package.patch_size, 2, predictor._forward, overlap=0.5, mode="gaussian")
    start = t0
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
'''


def measure(mode, package, image, out, source=None):
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = os.pathsep.join([str(source), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(package), str(image), str(out)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_resampling(package_dir, rounds):
    """Back to the input grid, this package's separable path against SimpleITK's, on one network output."""
    import time

    import numpy as np
    import torch

    from unimiss.data import read_image
    from unimiss.inference import Predictor, resample, sliding_window
    from unimiss.inference.preprocessing import prepare
    from unimiss.zoo import ModelPackage

    package = ModelPackage.load(package_dir)
    image = read_image(CT)
    predictor = Predictor(package, device="cpu", overlap=0.5)
    prepared = prepare(image, package.preprocessing)
    probs = sliding_window(predictor._forward, torch.from_numpy(prepared.array)[None], package.patch_size,
                           predictor.num_classes, 0.5, 2, dtype=torch.float16).numpy()
    classes = resample.winning_classes(probs)
    maps = resample.axis_maps(prepared.grid, image)
    paths = {"separable": lambda: resample.labels_on_input_grid(probs, maps, image.array.shape, classes, np.uint8),
             "SimpleITK": lambda: resample.labels_by_sitk(probs, prepared.grid, image, classes, np.uint8)}
    times, labels = {name: [] for name in paths}, {}
    for _ in range(rounds):
        for name, fn in paths.items():
            start = time.perf_counter()
            labels[name] = fn()
            times[name].append(time.perf_counter() - start)
    sep, ref = (statistics.median(times[n]) for n in paths)
    print(f"back to the input grid, {len(classes)} classes: separable {sep:.2f} s, SimpleITK {ref:.2f} s "
          f"({ref / sep:.2f}x), labels differ on {np.mean(labels['separable'] != labels['SimpleITK']):.1e} of voxels",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["compact", "small"], choices=["compact", "small"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--compare-with", type=Path, help="another copy of UniMiSSCore (the folder holding unimiss/)")
    parser.add_argument("--skip-large", action="store_true", help="skip the 512x512x600 volume")
    parser.add_argument("--only-resample", action="store_true",
                        help="only time the way back to the input grid (separable and SimpleITK), MiT-compact")
    args = parser.parse_args()
    import numpy as np
    import SimpleITK as sitk

    from unimiss import cpu

    print(f"CPU: {cpu.describe()}", flush=True)
    sources = {"this": None, **({"other": args.compare_with.resolve()} if args.compare_with else {})}
    work = Path(tempfile.mkdtemp(prefix="unimiss-bench-"))
    if args.only_resample:
        package = make_package(work, "bench-compact", 3, LABELS, PREPROCESSING, PATCH, config="compact")
        return compare_resampling(package.root, max(args.rounds, 2))
    jobs = [("default", "cli", CT)]
    for config in args.configs:
        make_package(work, f"bench-{config}", 3, LABELS, PREPROCESSING, PATCH, config=config)
        jobs += [(config, mode, CT) for mode in ("predict", "ours", "monai")]
    if not args.skip_large:
        ct = sitk.ReadImage(str(CT))
        arr = sitk.GetArrayFromImage(ct)
        reps = -(-600 // arr.shape[0])
        tiled = sitk.GetImageFromArray(np.concatenate([arr, arr[::-1]] * reps)[:600])
        tiled.SetSpacing(ct.GetSpacing())
        tiled.SetOrigin(ct.GetOrigin())
        tiled.SetDirection(ct.GetDirection())
        sitk.WriteImage(tiled, str(work / "big.nrrd"))
        jobs.append(("compact", "predict", work / "big.nrrd"))
    runs = {}
    for _ in range(args.rounds):
        for config, mode, image in jobs:
            for name, source in sources.items():
                package = work / f"bench-{config}-1.0.0"
                r = measure(mode, package, image, work / f"{config}-{name}.seg.nrrd", source)
                runs.setdefault((config, mode, image.name, name), []).append(r)
    results = {}
    for (config, mode, image, name), rs in runs.items():
        r = {"seconds": statistics.median(x["seconds"] for x in rs),
             "peak_rss_gb": max(x["peak_rss_gb"] for x in rs), "runs": len(rs)}
        results[f"{config} {mode} {image} {name}"] = r
        what = f"MiT-{config}" if config != "default" else "default model"
        where = "" if image == CT.name else " 512x512x600 (tiled real CT)"
        print(f"{what:<14}{STAGES[mode] + where:<50}{name:<6}{r['seconds']:7.2f} s   peak RSS "
              f"{r['peak_rss_gb']:.2f} GB   (median of {len(rs)})", flush=True)
    for name in sources:
        for config in args.configs:
            ours, monai = (results[f"{config} {m} {CT.name} {name}"]["seconds"] for m in ("ours", "monai"))
            print(f"{name}: MiT-{config} sliding window, MONAI / ours = {monai / ours:.2f}")
    if args.compare_with:
        for key in sorted({k.rsplit(" ", 1)[0] for k in results}):
            print(f"{key}: other / this = {results[key + ' other']['seconds'] / results[key + ' this']['seconds']:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
