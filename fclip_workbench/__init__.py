"""fclip-workbench: load, embed, search, probe, ground and train FashionCLIP-style models.

Example:
    >>> from fclip_workbench import load_model, Catalog, embed_images   # doctest: +SKIP
"""
from .catalog import Catalog, Problem
from .errors import FclipError
from .models import EmbeddingModel, ModelPreset, list_models, load_model, register_preset

__all__ = ["Catalog", "Problem", "FclipError", "EmbeddingModel", "ModelPreset", "list_models",
           "load_model", "register_preset"]
__version__ = "0.1.0"
