"""How close the pre-flight memory estimate is to the memory a segmentation really takes.

    python Testing/benchmarks/bench_preflight.py IMAGE [MODEL]

Prints the estimate (unimiss.inference.preflight) and the peak resident memory the prediction
added to the process (ru_maxrss after loading the model, before and after predict).
"""
from __future__ import annotations

import resource
import sys

import torch

from unimiss.data.io import read_image
from unimiss.inference import Predictor, preflight
from unimiss.zoo import default_model, resolve_model


def main(path, model=None):
    torch.set_num_threads(1)
    image = read_image(path)
    package = resolve_model(model) if model else default_model(image.dimension)
    predictor = Predictor(package, precision="fp32", batch_size=2)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    found = preflight.estimate(image.size, image.spacing, image.direction, image.array.dtype.itemsize, package)
    predictor.predict(image)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{path} {image.size} with {package.reference}: estimate {found.peak_bytes / 2**30:.2f} GB "
          f"({found.describe(package.patch_size)}); measured peak added {(after - before) / 2**30:.2f} GB "
          f"over {before / 2**30:.2f} GB")


if __name__ == "__main__":
    main(*sys.argv[1:])
