"""ipywidgets front ends: glue only, the work happens in the package."""
from fclip_workbench.widgets.annotator import Annotator
from fclip_workbench.widgets.explorer import Explorer
from fclip_workbench.widgets.grounding import GroundingPanel
from fclip_workbench.widgets.search import SearchBox

__all__ = ["Annotator", "Explorer", "GroundingPanel", "SearchBox"]
