"""Relative errors of our MiT+ against every UniMiSS+ reference output (Testing/reference/official-unimissplus).

    OMP_NUM_THREADS=1 python Testing/benchmarks/plus_reference_errors.py

Prints one line per network with the largest relative error over its outputs; the tests
(Testing/core/test_official_plus.py) require at most 1e-4 for each.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from testkit import deterministic_weights, plus_reference  # noqa: E402
from unimiss.models.official_plus import (from_official_plus_classifier, from_official_plus_pretrain,  # noqa: E402
                                          from_official_plus_segmentation, transfer_plus_pretrain)


def rel(out, ref):
    return ((out - ref).norm() / ref.norm()).item()


def main():
    torch.set_grad_enabled(False)
    pre = plus_reference("pretrain")
    weights = deterministic_weights(pre["keys"]["model"])
    student = {"student": {f"module.backbone.{k}": v for k, v in weights.items()}}
    net = from_official_plus_pretrain(weights)
    errors = {}
    for x in ("x2", "x2b", "x2c", "x3", "x3b"):
        recon, cls = net(pre[x])
        errors[f"y{x[1:]}"] = rel(cls, pre[f"y{x[1:]}"])
        if x == "x2":
            errors["r2"] = rel(recon[..., ::2, ::2], pre["r2"])
        if x == "x3":
            errors["r3_sub"] = rel(recon[..., ::4, ::4], pre["r3_sub"])
    report("pretraining backbone (2D+3D)", errors)

    seg2 = plus_reference("seg2d")
    errors = {}
    for tag in ("y", "yp"):
        model = from_official_plus_segmentation(deterministic_weights(seg2["keys"]["model"]), 2, patch_size=(224, 224))
        if tag == "yp":
            transfer_plus_pretrain(model, student, positional="official")
        out = model(seg2["x"])
        errors[f"{tag}_sub"], errors[f"{tag}_mean"] = rel(out[..., ::4, ::4], seg2[f"{tag}_sub"]), \
            rel(out.mean(dim=(0, 2, 3)), seg2[f"{tag}_mean"])
    report("2D segmentation", errors)

    seg3 = plus_reference("seg3d")
    errors = {}
    for tag in ("y", "yp"):
        model = from_official_plus_segmentation({"state_dict": deterministic_weights(seg3["keys"]["model"])}, 3,
                                                deep_supervision=True)
        if tag == "yp":
            transfer_plus_pretrain(model, student, positional="official")
        out = model(seg3["x"])
        errors[f"{tag}_sub"], errors[f"{tag}_mean"] = rel(out[..., ::8, ::8], seg3[f"{tag}_sub"]), \
            rel(out.mean(dim=(0, 2, 3, 4)), seg3[f"{tag}_mean"])
        if tag == "y":
            outs = model.train()(seg3["x"])
            errors["ds_means"] = max(rel(o.mean(dim=(0, 2, 3, 4)), m) for o, m in zip(outs, seg3["ds_means"]))
    report("3D segmentation", errors)

    cls = plus_reference("cls2d")
    model = from_official_plus_classifier(deterministic_weights(cls["keys"]["model"]), patch_size=(224, 224))
    errors = {"y": rel(model(cls["x"]), cls["y"]), "yb": rel(model(cls["xb"]), cls["yb"])}
    transfer_plus_pretrain(model, student, positional="official")
    errors["yp"] = rel(model(cls["x"]), cls["yp"])
    report("2D classification", errors)


def report(name, errors):
    worst = max(errors, key=errors.get)
    print(f"{name}: max relative error {errors[worst]:.1e} ({worst}); " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))


if __name__ == "__main__":
    main()
