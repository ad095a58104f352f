"""fclip-workbench: load, embed, search, probe, ground and train FashionCLIP-style models.

The top-level names are imported lazily, so `fclip --help` and `fclip data list`
start without importing torch.

Example:
    >>> from fclip_workbench import load_model, Catalog   # doctest: +SKIP
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import FclipError

_LAZY = {
    "Catalog": ".catalog", "Problem": ".catalog",
    "EmbeddingModel": ".models", "ModelPreset": ".models", "list_models": ".models",
    "load_model": ".models", "register_preset": ".models",
}

__all__ = ["FclipError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
