"""Dice + cross-entropy, with deep supervision over the decoder's outputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..evaluation import dice_score


class DeepSupervisionLoss(torch.nn.Module):
    """MONAI's DiceCELoss on the full-resolution logits and, with halving weights, on each coarser output.

    Dice over the whole batch (nnU-Net's batch Dice): a class absent from one patch is not scored alone there.
    """

    def __init__(self):
        super().__init__()
        from monai.losses import DiceCELoss  # importing MONAI takes seconds: not before the inputs are checked

        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

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
    """Dice of classes 1..num_classes-1 between two label tensors; None where both are empty (not scored)."""
    counts = torch.bincount(pred.reshape(-1).long() * num_classes + target.reshape(-1).long(),
                            minlength=num_classes * num_classes).view(num_classes, num_classes)
    both, in_pred, in_target = counts.diagonal(), counts.sum(1), counts.sum(0)
    return [dice_score(int(in_pred[c]), int(in_target[c]), int(both[c])) for c in range(1, num_classes)]
