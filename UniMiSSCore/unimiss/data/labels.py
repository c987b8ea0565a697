"""Segment labels: value, name, colour and standard terminology, as model packages and labelmaps carry them."""
from __future__ import annotations

from dataclasses import dataclass, field

SLICER_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"


@dataclass(frozen=True)
class Label:
    """One segment class.

    `color` is RGB in 0..255. `terminology` uses slicerio's form:
    {"category": [scheme, code, meaning], "type": [scheme, code, meaning],
    optional "typeModifier", "anatomicRegion", ...}; e.g. liver is
    category ["SCT", "123037004", "Anatomical Structure"], type ["SCT", "10200004", "Liver"].
    """

    value: int
    name: str
    color: tuple[int, int, int] = (128, 128, 128)
    terminology: dict = field(default_factory=dict, compare=False, hash=False)
    description: str = field(default="", compare=False)

    def to_dict(self) -> dict:
        d = {"value": self.value, "name": self.name, "color": list(self.color)}
        if self.terminology:
            d["terminology"] = self.terminology
        if self.description:
            d["description"] = self.description
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Label":
        return cls(int(d["value"]), str(d["name"]), tuple(int(c) for c in d.get("color", (128, 128, 128))),
                   dict(d.get("terminology", {})), str(d.get("description", "")))

    def terminology_string(self) -> str:
        """Slicer's TerminologyEntry string (empty when the label has no terminology)."""
        t = self.terminology
        if not t.get("type"):
            return ""
        code = lambda key: "^".join(t.get(key, ["", "", ""]))
        return "~".join([t.get("contextName", SLICER_CONTEXT), code("category"), code("type"), code("typeModifier"),
                         t.get("anatomicContextName", "Anatomic codes - DICOM master list"), code("anatomicRegion"),
                         code("anatomicRegionModifier")])
