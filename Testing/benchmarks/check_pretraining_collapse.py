"""Has a UniMiSS pretraining run collapsed? Different images should give the teacher different outputs.

    python Testing/benchmarks/check_pretraining_collapse.py CHECKPOINT --images2d FILES... --images3d FILES...

For each kind (radiographs, CT volumes): one random view of each image through the checkpoint's teacher, and
through the same network freshly initialised. Prints the mean cosine similarity of the backbone features
between different images, and how many distinct prototypes the teacher's centred, sharpened output picks. A
collapsed run gives every image the same prototype and features nearer each other than a fresh network's.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from unimiss.models.official import load_checkpoint
from unimiss.training.pretrain import PretrainSettings, build_networks, load_official_state
from unimiss.training.pretrain_data import load_radiographs, load_volumes, make_batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--images2d", nargs="+", default=[])
    parser.add_argument("--images3d", nargs="+", default=[])
    args = parser.parse_args()
    saved = load_checkpoint(args.checkpoint)
    run = saved["args"]
    s = PretrainSettings(config=run.arch, view_size_2d=tuple(run.img_size2D), view_size_3d=tuple(run.img_size3D),
                         out_dim=run.out_dim)
    _, teacher = build_networks(s)
    load_official_state(teacher, saved["teacher"], "")
    torch.manual_seed(1)
    _, fresh = build_networks(s)
    rng = np.random.default_rng(0)
    centres = {2: saved["loss"]["center"], 3: saved["loss"].get("center_3d", saved["loss"]["center"])}
    for kind, images, size in ((2, load_radiographs(args.images2d, s.view_size_2d), s.view_size_2d),
                               (3, load_volumes(args.images3d, run.spacing), s.view_size_3d)):
        if len(images) < 2:
            continue
        views = make_batch(images, list(range(len(images))), size, rng)[0]
        for name, network in (("trained", teacher), ("fresh", fresh)):
            network.eval()
            with torch.no_grad():
                features = network.backbone(views)
                output = network.head(features)
            unit = torch.nn.functional.normalize(features, dim=-1)
            similarity = (unit @ unit.T)[~torch.eye(len(images), dtype=torch.bool)].mean()
            prototypes = torch.softmax((output - centres[kind]) / 0.04, -1).argmax(-1)
            print(f"{kind}D {name:8s} {len(images)} images: feature cosine similarity {float(similarity):.4f}, "
                  f"{len(set(prototypes.tolist()))} distinct prototypes", file=sys.stdout)


if __name__ == "__main__":
    main()
