"""A model's confusion matrix from `fclip compare` where a click on a cell shows the products in it.

Rows are the true values, columns the predicted ones (the `top` most frequent true values of the field).
A click on a cell fills the grid below with those products' thumbnails, captioned "id: true -> predicted".

Example:
    >>> from fclip_workbench.analysis.compare import compare                          # doctest: +SKIP
    >>> report = compare("fclip-mini@1", "fclip-mini@2", data="teaching")            # doctest: +SKIP
    >>> browser = ConfusionBrowser(report, "garment", which=1)                        # doctest: +SKIP
    >>> browser.show_cell("dress", "skirt")   # what a click on that cell does         # doctest: +SKIP
"""
from __future__ import annotations

import html

import ipywidgets as w
import plotly.graph_objects as go

from fclip_workbench.analysis.compare import CompareReport
from fclip_workbench.analysis.compare_report import CONFUSION_CLASSES, confusion, confusion_figure
from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.widgets.ui import css
from fclip_workbench.widgets.viz import image_grid_html

MAX_SHOWN = 48  # thumbnails drawn for one cell (the count says how many there are)


class ConfusionBrowser(w.VBox):
    """The confusion heatmap of model `which` (0: A, 1: B) on `field`, and the products of the clicked cell."""

    def __init__(self, report: CompareReport, field: str, which: int = 0, top: int = CONFUSION_CLASSES,
                 thumb_px: int = 96) -> None:
        if field not in report.fields:
            raise InvalidArgumentError(f"the report has no field {field!r}; it has: {', '.join(report.fields)}")
        if which not in (0, 1):
            raise InvalidArgumentError(f"which must be 0 (model A) or 1 (model B), not {which!r}")
        self.report, self.field, self.which, self.thumb_px = report, field, which, thumb_px
        self.classes, self.counts, self.cells = confusion(report, field, which, top)  # counts: (L, L)
        self.figure = go.FigureWidget(confusion_figure(report, field, which, (self.classes, self.counts)))
        self.figure.data[0].on_click(self._on_click)
        self.head = css(w.HTML("<i>Click a cell to see its products.</i>"), "fclip-confusion-head")
        self.grid = css(w.HTML(), "fclip-confusion-grid")
        self.shown: list[str] = []  # item ids of the cell drawn now
        super().__init__([self.figure, self.head, self.grid])
        self.add_class("fclip-confusion")

    def _on_click(self, _trace, points, _state) -> None:
        if points.xs and points.ys:
            self.show_cell(str(points.ys[0]), str(points.xs[0]))

    def show_cell(self, true: str, predicted: str) -> list[str]:
        """Draw the products whose true value is `true` and the model predicted `predicted`; their ids."""
        for v in (true, predicted):
            if v not in self.classes:
                raise InvalidArgumentError(f"{v!r} is not a value of this matrix; it has: {', '.join(self.classes)}")
        ids = self.cells.get((true, predicted), [])
        self.shown = list(ids)
        name = self.report.models[self.which]
        kind = "right" if true == predicted else "confused"
        self.head.value = (f"<b>{len(ids):,}</b> products, true <b>{html.escape(true)}</b>, {html.escape(name)} "
                           f"predicted <b>{html.escape(predicted)}</b> ({kind})"
                           + (f"; the first {MAX_SHOWN} shown" if len(ids) > MAX_SHOWN else ""))
        drawn = ids[:MAX_SHOWN]
        with_image = [i for i in drawn if self.report.images.get(i)]
        self.grid.value = image_grid_html([self.report.images[i] for i in with_image],
                                          [f"{i}: {true} -> {predicted}" for i in with_image], size=self.thumb_px)
        if len(with_image) < len(drawn):
            missing = ", ".join(i for i in drawn if i not in with_image)
            self.grid.value += f"<div>no image for: {html.escape(missing)}</div>"
        return self.shown


__all__ = ["ConfusionBrowser"]
