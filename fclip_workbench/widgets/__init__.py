"""ipywidgets front ends: glue only, the work happens in the package."""
from .search import SearchBox

__all__ = ["SearchBox"]
