"""Dice + cross-entropy, with deep supervision over the decoder's outputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss


class DeepSupervisionLoss(torch.nn.Module):
    """MONAI's DiceCELoss on the full-resolution logits and, with halving weights, on each coarser output."""

    def __init__(self):
        super().__init__()
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if torch.is_tensor(outputs):
            outputs = [outputs]
        weights = [0.5**i for i in range(len(outputs))]
        total = 0.0
        for weight, logits in zip(weights, outputs):
            t = target[:, None].float()
            if logits.shape[2:] != t.shape[2:]:
                t = F.interpolate(t, size=logits.shape[2:], mode="nearest")
            total = total + weight * self.dice_ce(logits.float(), t)
        return total / sum(weights)


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[float | None]:
    """Dice of classes 1..num_classes-1 between two label tensors (None where both are empty)."""
    scores = []
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        denom = int(p.sum()) + int(t.sum())
        scores.append(2 * int((p & t).sum()) / denom if denom else None)
    return scores
