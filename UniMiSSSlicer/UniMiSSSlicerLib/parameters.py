"""The module's typed parameters, kept in a parameter node so they are saved with the scene."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

NODE = {"node": True}  # field metadata: stored as a node reference, not as text


@dataclass
class UniMiSSParameters:
    # Segment
    inputVolume: object = field(default=None, metadata=NODE)   # vtkMRMLScalarVolumeNode
    model: str = ""                                             # name@version; "" = the default for the input
    device: str = "auto"                                        # auto, cpu, cuda
    testTimeAugmentation: bool = False
    segmentNames: str = ""                                      # "" = all the model's; else e.g. "liver, spleen"
    # Fine-tune
    baseModel: str = ""                                         # "" = from scratch
    newModelName: str = "my-model"
    newLabelSet: bool = False                                   # train the base model on other labels
    epochs: int = 20
    minutes: float = 0.0                                        # time budget; 0 = none
    learningRate: float = 0.0                                   # 0 = the core's default
    patchSize: str = ""                                         # "z y x" or "y x"; "" = from the base model
    # Export
    exportSegmentation: object = field(default=None, metadata=NODE)  # vtkMRMLSegmentationNode
    exportReferenceVolume: object = field(default=None, metadata=NODE)
    exportFormat: str = "seg.nrrd"                              # seg.nrrd, nrrd, nii.gz, dicom

    def save(self, parameterNode) -> None:
        """Write every field into a vtkMRMLScriptedModuleNode (text parameters and node references)."""
        wasModifying = parameterNode.StartModify()
        try:
            for f in dataclasses.fields(self):
                value = getattr(self, f.name)
                if f.metadata.get("node"):
                    parameterNode.SetNodeReferenceID(f.name, value.GetID() if value is not None else None)
                else:
                    parameterNode.SetParameter(f.name, _to_text(value))
        finally:
            parameterNode.EndModify(wasModifying)

    @classmethod
    def load(cls, parameterNode) -> "UniMiSSParameters":
        """Read the fields back; a parameter that is missing or unreadable keeps its default."""
        values = {}
        for f in dataclasses.fields(cls):
            if f.metadata.get("node"):
                values[f.name] = parameterNode.GetNodeReference(f.name)
            elif parameterNode.GetParameter(f.name):
                try:
                    values[f.name] = _from_text(parameterNode.GetParameter(f.name), f.type)
                except ValueError:
                    pass
        return cls(**values)

    def segmentNameList(self) -> list[str]:
        return [name.strip() for name in self.segmentNames.split(",") if name.strip()]

    def patchSizeValues(self) -> tuple[int, ...] | None:
        """The patch size as numbers, None when empty; ValueError with a readable message otherwise."""
        text = self.patchSize.replace(",", " ").replace("x", " ").split()
        if not text:
            return None
        try:
            values = tuple(int(v) for v in text)
        except ValueError:
            raise ValueError(f"patch size {self.patchSize!r}: give 2 or 3 whole numbers, e.g. '32 128 128'") from None
        if len(values) not in (2, 3) or min(values) <= 0:
            raise ValueError(f"patch size {self.patchSize!r}: give 2 or 3 positive numbers, e.g. '32 128 128'")
        return values


def _to_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _from_text(text: str, kind):
    kind = kind if isinstance(kind, str) else kind.__name__
    if kind == "bool":
        return text.lower() in ("true", "1", "yes")
    if kind == "int":
        return int(float(text))
    if kind == "float":
        return float(text)
    return text
