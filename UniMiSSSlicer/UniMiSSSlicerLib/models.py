"""The model packages the core knows, each with the one-line summary the module shows."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    reference: str          # name@version, what `unimiss segment --model` takes
    name: str
    version: str
    dimension: int          # 2 (radiographs) or 3 (CT volumes)
    modality: str
    labels: tuple[str, ...]
    builtin: bool
    default: bool
    description: str
    trainingData: str
    details: str            # the core's multi-line description, for a tooltip

    @property
    def summary(self) -> str:
        """One line: labels, dimension and training data."""
        labels = ", ".join(self.labels)
        if len(labels) > 80:
            labels = labels[:77] + "..."
        source = "built-in" if self.builtin else "your model"
        return (f"{self.reference} ({source}): {self.dimension}D {self.modality}, {len(self.labels)} labels "
                f"({labels}); trained on {self.trainingData}")

    @classmethod
    def fromPackage(cls, package) -> "ModelInfo":
        meta = package.meta
        return cls(package.reference, package.name, package.version, package.dimension, package.modality,
                   tuple(label.name for label in package.labels), package.is_builtin, bool(meta.get("default")),
                   meta.get("description", ""), _training_data(meta.get("provenance", {}).get("training_data")),
                   package.describe())


def _training_data(data) -> str:
    if isinstance(data, str):
        return data if len(data) <= 100 else data[:97] + "..."
    if isinstance(data, list):
        roles = [c.get("role", "training") for c in data if isinstance(c, dict)]
        training, validation = roles.count("training"), roles.count("validation")
        return (f"{training} local case{'s' * (training != 1)}"
                + (f" ({validation} more for validation)" if validation else ""))
    if isinstance(data, dict):
        return str(data.get("name") or data.get("description") or "see the model's provenance")
    return "unknown data"


def listModels(dimension: int | None = None) -> list[ModelInfo]:
    """Built-in and user models (the core's registry), optionally only those for 2D or 3D images."""
    from unimiss.zoo import list_models

    infos = [ModelInfo.fromPackage(p) for p in list_models()]
    return [m for m in infos if dimension is None or m.dimension == dimension]


def findModel(reference: str) -> ModelInfo:
    """name, name@version or a package path; ValueError (one line) when it is unknown."""
    from unimiss.zoo import resolve_model

    return ModelInfo.fromPackage(resolve_model(reference))


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")  # unimiss.training.finetune.PRETRAINING_CHECKPOINTS, known here
                                                # before the core is installed (the panel fills its lists first)


def isPretrainingCheckpoint(reference: str) -> bool:
    """A UniMiSS or UniMiSS+ pretraining checkpoint file (the released .pth, or `unimiss pretrain`'s), which
    fine-tuning starts from as it starts from a model package."""
    return bool(reference) and reference.lower().endswith(CHECKPOINT_SUFFIXES)
