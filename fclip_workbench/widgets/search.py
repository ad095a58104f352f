"""SearchBox: a text box and a result grid over a `Searcher`.

Example:
    >>> SearchBox(searcher, query="navy blue shirt")      # doctest: +SKIP
"""
from __future__ import annotations

import ipywidgets as w
from IPython.display import HTML

from fclip_workbench.errors import FclipError
from fclip_workbench.search.searcher import Searcher
from fclip_workbench.widgets.viz import search_results_html


class SearchBox(w.VBox):
    def __init__(self, searcher: Searcher, query: str = "", k: int = 12) -> None:
        self.searcher = searcher
        self.query = w.Text(value=query, placeholder="describe a product, e.g. navy blue shirt", description="Query")
        self.k = w.IntSlider(value=k, min=1, max=48, description="Results")
        self.go = w.Button(description="Search", button_style="primary")
        self.out = w.Output()
        self.go.on_click(lambda _: self.run())
        self.query.continuous_update = False
        self.query.observe(lambda _: self.run(), names="value")
        super().__init__([w.HBox([self.query, self.k, self.go]), self.out])
        if query:
            self.run()

    def run(self) -> None:
        """Search and show the grid. Outputs are set on the widget directly (no `with out:`
        capture), which also works from callbacks and in headless execution."""
        self.out.outputs = ()
        if not self.query.value.strip():
            self.out.append_stdout("Type a query.\n")
            return
        try:
            hits = self.searcher.by_text(self.query.value, k=self.k.value)
        except FclipError as e:  # shown in the widget, not lost in a callback's log
            self.out.append_stderr(f"{e}\n")
            return
        self.out.append_display_data(HTML(search_results_html(self.searcher.catalog, hits)))
