"""End-to-end segmentation time and peak memory on real CT, beside MONAI's sliding window, on this machine.

    python Testing/benchmarks/bench_segment.py [--skip-large]

Each measurement runs in a fresh process so its peak memory (max RSS) is its own.
1. `Predictor.predict` end to end (read, preprocess, sliding window, back onto the
   input grid, write .seg.nrrd) on LIDC-IDRI-0001 (512x512x133), for MiT-compact and
   MiT-small packages with the same preprocessing.
2. The sliding-window stage alone, ours and monai.inferers.sliding_window_inference
   (Gaussian blending, same windows, overlap and batch), same network.
3. Peak memory on a 512x512x600 volume (the real CT tiled along z), MiT-compact.
Weights are random: speed and memory do not depend on them.
"""
from __future__ import annotations

import argparse
import json
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
STAGES = {"predict": "segment end to end", "ours": "sliding window (ours)", "monai": "sliding window (MONAI)"}
LABELS = ["liver", "spleen", "kidney_left", "kidney_right", "aorta", "heart", "lung_left", "lung_right"]

CHILD = r'''
import json, resource, sys, time
import numpy as np, torch
from pathlib import Path
mode, package_dir, image_path, out = sys.argv[1:5]
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


def measure(mode, package, image, out):
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(package), str(image), str(out)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true", help="skip the 512x512x600 volume")
    args = parser.parse_args()
    import numpy as np
    import SimpleITK as sitk

    work = Path(tempfile.mkdtemp(prefix="unimiss-bench-"))
    results = {}
    for config in ("compact", "small"):
        pkg = make_package(work, f"bench-{config}", 3, LABELS, PREPROCESSING, PATCH, config=config)
        for mode in ("predict", "ours", "monai"):
            r = measure(mode, pkg.root, CT, work / f"{config}.seg.nrrd")
            results[f"{config} {mode}"] = r
            print(f"MiT-{config:<8}{STAGES[mode]:<26}{r['seconds']:7.2f} s   peak RSS {r['peak_rss_gb']:.2f} GB",
                  flush=True)
    if not args.skip_large:
        ct = sitk.ReadImage(str(CT))
        arr = sitk.GetArrayFromImage(ct)
        reps = -(-600 // arr.shape[0])
        tiled = sitk.GetImageFromArray(np.concatenate([arr, arr[::-1]] * reps)[:600])
        tiled.SetSpacing(ct.GetSpacing())
        tiled.SetOrigin(ct.GetOrigin())
        tiled.SetDirection(ct.GetDirection())
        big = work / "big.nrrd"
        sitk.WriteImage(tiled, str(big))
        r = measure("predict", work / "bench-compact-1.0.0", big, work / "big.seg.nrrd")
        results["compact predict 512x512x600"] = r
        print(f"MiT-compact segment 512x512x600 (tiled real CT): {r['seconds']:.1f} s, peak RSS {r['peak_rss_gb']:.2f} GB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
