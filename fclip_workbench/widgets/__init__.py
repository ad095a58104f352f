"""ipywidgets front ends: glue only, the work happens in the package."""
from .annotator import Annotator
from .explorer import Explorer
from .grounding import GroundingPanel
from .search import SearchBox

__all__ = ["Annotator", "Explorer", "GroundingPanel", "SearchBox"]
