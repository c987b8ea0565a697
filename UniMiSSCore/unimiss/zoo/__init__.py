"""Model packages (model.json + weights.safetensors) and the registry of built-in and user models."""
from .package import ModelPackage, ModelPackageError, save_package, validate_meta
from .registry import (builtin_models_dir, default_model, export_model, import_model, list_models, model_origin,
                       next_version, remove_model, resolve_model, user_models_dir)

__all__ = [
    "ModelPackage", "ModelPackageError", "save_package", "validate_meta", "builtin_models_dir", "default_model",
    "export_model", "import_model", "list_models", "model_origin", "next_version", "remove_model", "resolve_model",
    "user_models_dir",
]
