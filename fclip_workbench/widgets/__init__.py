"""ipywidgets front ends: glue only, the work happens in the package."""
from .annotator import Annotator
from .explorer import Explorer
from .search import SearchBox

__all__ = ["Annotator", "Explorer", "SearchBox"]
