"""fclip-workbench: load, embed, search, probe, ground and train FashionCLIP-style models.

The top-level names are imported lazily, so `fclip --help` and `fclip data list`
start without importing torch.

Example:
    >>> from fclip_workbench import load_model, Catalog   # doctest: +SKIP
"""
from __future__ import annotations

import importlib
from typing import Any

from fclip_workbench.errors import FclipError

_LAZY = {
    "Catalog": ".data.catalog", "Problem": ".data.catalog",
    "EmbeddingModel": ".embedding.models", "ModelPreset": ".embedding.models", "list_models": ".embedding.models",
    "load_model": ".embedding.models", "register_preset": ".embedding.models",
}

__all__ = ["FclipError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
