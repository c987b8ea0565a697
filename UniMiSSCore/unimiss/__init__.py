"""UniMiSS for 3D Slicer: the core library (models, data, inference, training, model packages, CLI)."""
__version__ = "0.1.0"
