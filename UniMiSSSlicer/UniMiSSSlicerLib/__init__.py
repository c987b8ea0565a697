"""UniMiSS for 3D Slicer: the module's logic, background processes, parameters and helpers (no Qt)."""
from .logic import UniMiSSSlicerLogic
from .parameters import UniMiSSParameters
from .process import BackgroundProcess, ProcessOutcome

__all__ = ["BackgroundProcess", "ProcessOutcome", "UniMiSSParameters", "UniMiSSSlicerLogic"]
