"""What fine-tuning predicts on its own cases: which cases validate, their Dice, and the base model's
pseudo-labels for the classes a case leaves unlabelled."""
from __future__ import annotations

import numpy as np
import torch

from ..inference.sliding_window import sliding_window, window_starts
from .losses import dice_per_class

VALIDATION_OVERLAP = 0.0    # cheap validation: windows side by side (Gaussian blending still weighs their centres)
PSEUDO_LABEL_OVERLAP = 0.5  # targets are worth the usual inference quality


def split_cases(cases, requested: int | None):
    """(training cases, validation cases, a sentence saying which validate and why)."""
    n = len(cases)
    def names(group):
        listed = [c.name for c in group]
        return ", ".join(listed if len(listed) <= 8 else [*listed[:6], "...", listed[-1]])

    if requested is None and n < 3:
        return cases, [], (f"all {n} case{'s' if n > 1 else ''} train ({names(cases)}): with fewer than three "
                           "cases none is held out for validation, so the model is not scored and the last "
                           "weights are kept")
    if requested == 0:
        return cases, [], (f"all {n} cases train ({names(cases)}), as --validation 0 asks: the model is not "
                           "scored and the last weights are kept")
    k = requested if requested is not None else max(1, round(n / 5))
    if k >= n:
        raise ValueError(f"--validation {k} would leave no training case among the {n} given")
    train, val = cases[: n - k], cases[n - k:]
    why = "as --validation asks" if requested is not None else "about a fifth of the cases, at least one; " \
                                                                 "--validation N sets how many, 0 none"
    return train, val, (f"validation: {names(val)} (the last {k} of {n} cases, {why}), scored with Dice after "
                        f"each epoch to keep the best weights; training: {names(train)}")


def window_count(shape, patch, overlap: float = VALIDATION_OVERLAP) -> int:
    padded = [max(s, p) for s, p in zip(shape, patch)]
    return int(np.prod([len(window_starts(s, p, overlap)) for s, p in zip(padded, patch)]))


@torch.no_grad()
def predict_labels(network, image: np.ndarray, patch, num_classes: int, device, autocast, overlap: float,
                   batch_size: int = 2) -> torch.Tensor:
    """Class indices of one working-grid image, by Gaussian-blended sliding windows."""
    was_training = network.training
    network.eval()

    def predict(batch):
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            return torch.softmax(network(batch.to(device)).float(), dim=1)

    probs = sliding_window(predict, torch.from_numpy(image)[None], patch, num_classes, overlap, batch_size)
    network.train(was_training)
    return probs.argmax(0).to(torch.uint8).cpu()


def validate(network, cases, patch, class_names, device, autocast) -> dict:
    """Mean Dice per class over `cases`. A class is scored on a case only where that case's labelmap declares
    it, and not where both prediction and reference are empty (such a class is absent, not missed)."""
    num_classes = len(class_names) + 1
    scores = {name: [] for name in class_names}
    for case in cases:
        pred = predict_labels(network, case.image, patch, num_classes, device, autocast, VALIDATION_OVERLAP)
        for index, (name, d) in enumerate(zip(class_names, dice_per_class(pred, torch.from_numpy(case.label),
                                                                            num_classes)), start=1):
            if d is not None and (not case.labelled or index in case.labelled):
                scores[name].append(d)
    return {name: float(np.mean(v)) for name, v in scores.items() if v}


def fill_unlabelled(network, cases, patch, num_classes, device, autocast) -> dict[str, list[int]]:
    """Classes a case does not declare take the base network's predictions as targets (in place), so that
    fine-tuning on a few classes does not forget the others; the classes the user labelled keep their
    labels and their background. Returns, per case name, the classes filled."""
    filled = {}
    for case in cases:
        missing = [c for c in range(1, num_classes) if case.labelled and c not in case.labelled]
        if not missing:
            continue
        pred = predict_labels(network, case.image, patch, num_classes, device, autocast,
                              PSEUDO_LABEL_OVERLAP).numpy()
        take = (case.label == 0) & np.isin(pred, missing)
        case.label = np.where(take, pred, case.label).astype(np.uint8)
        filled[case.name] = missing
    return filled

