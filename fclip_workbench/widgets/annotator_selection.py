"""The annotator's selection batch: products sent from elsewhere (the explorer's lasso), one value for all.

A part of `Annotator` (widgets/annotator.py): `annotator.batch(ids)` shows the products as tiles with
their thumbnail, title, current label and the model's suggestion; clicks on tiles include or exclude
them, and "Apply" saves the value for the included ones in one transaction, conditional on what the
tiles showed (`AnnotationSession.apply_batch`). The DOM classes are listed in annotator.py.

Example:
    >>> annotator.batch(explorer.selected_ids)                                     # doctest: +SKIP
    >>> annotator.apply_selection()                                                # doctest: +SKIP
"""
from __future__ import annotations

import functools

import ipywidgets as w

from fclip_workbench.errors import LabelValueError
from fclip_workbench.labelling.annotate import Candidate
from fclip_workbench.widgets.ui import click_events, css, guarded
from fclip_workbench.widgets.viz import html_text, image_bytes

THUMB_PX = 112  # batch thumbnails
SELECTION_PAGE = 120  # products on one page of a selection batch
TILE_BORDER = {"in": "2px solid #2e7d32", "change": "3px solid #e65100", "out": "2px dashed #bdbdbd"}


class SelectionBatchMixin:
    """The selection batch pane of `Annotator` (its widgets are made in `Annotator.__init__`)."""

    # ------------------------------------------------------------------ selection batch (e.g. from the explorer)
    @guarded
    def batch(self, item_ids) -> None:
        """Show these products as a batch grid (`explorer.on_send(annotator.batch, mode="batch")`): each tile
        with its thumbnail, title, current label and the model's suggestion; pick one value, click tiles to
        exclude products, "Apply" saves the value for the included ones in one transaction (source batch)."""
        if isinstance(item_ids, str):
            item_ids = [item_ids]
        ids = self.session.check_ids(item_ids, "show in a batch")  # unknown / no ids: refused, nothing changes
        self._sel_ids, self._sel_start = ids, 0
        self._excluded, self._confirmed = set(), set()
        self._quiet = True
        try:
            self.sel_value.value = None  # the annotator picks the value: nothing is preselected
        finally:
            self._quiet = False
        if self.mode_toggle.value != "batch":
            self.mode_toggle.value = "batch"  # observed: set_mode shows the selection pane
        else:
            self.set_mode("batch")
        self._load_selection()
        self.show_status(f"batch: {len(ids)} products from the selection; pick a value to apply")

    def close_selection(self) -> None:
        """Leave the selection batch: back to the model's batches."""
        self._sel_ids, self._sel = [], []
        self.sel_grid.children = ()
        self.set_mode("batch")

    @property
    def selection_ids(self) -> list[str]:
        """The products of the selection batch (every page)."""
        return list(self._sel_ids)

    def _is_change(self, c: Candidate) -> bool:
        value = self.sel_value.value
        return value is not None and c.current is not None and c.current != value

    def _included(self, c: Candidate) -> bool:
        return c.item_id not in self._excluded and (not self._is_change(c) or c.item_id in self._confirmed)

    @guarded
    def _load_selection(self) -> None:
        """Read the shown page's products (current labels from the store) and draw the tiles."""
        page_ids = self._sel_ids[self._sel_start:self._sel_start + SELECTION_PAGE]
        self._sel = self.session.selection_batch(page_ids) if page_ids else []
        while len(self._sel_tiles) < len(self._sel):  # tiles are reused (cheaper than new widgets)
            img = css(w.Image(layout=w.Layout(width=f"{THUMB_PX}px", height=f"{THUMB_PX}px", object_fit="contain")),
                       "fclip-selection-image")
            box = css(w.Checkbox(value=True, indent=False), "fclip-selection-item")
            k = len(self._sel_tiles)
            box.observe(functools.partial(self._on_tick, k), names="value")
            cap = w.HTML()
            tile = css(w.VBox([img, cap, box], layout=w.Layout(padding="3px")), "fclip-selection-tile")
            self._sel_tiles.append((tile, img, cap, box))
            Event = click_events()
            if Event is not None:  # a click on the thumbnail includes / excludes the product
                ev = Event(source=img, watched_events=["click"])
                ev.on_dom_event(functools.partial(self._on_tile_click, k))
                self._tile_events = [*getattr(self, "_tile_events", []), ev]
        for c, (_, img, _, _) in zip(self._sel, self._sel_tiles):
            pic = image_bytes(c.image, size=THUMB_PX)
            img.format, img.value = (pic[1], pic[0]) if pic else ("png", b"")
        n, start = len(self._sel_ids), self._sel_start
        paged = n > SELECTION_PAGE
        self.sel_head.value = (f"<b>{n} products from the selection</b>"
                               + (f" &middot; showing {start + 1}-{start + len(self._sel)}" if paged else "")
                               + f" &middot; click a picture to exclude or include it; set {html_text(self.session.field)}:")
        self.sel_prev.layout.display = "flex" if paged else "none"
        self.sel_next.layout.display = "flex" if paged else "none"
        self.sel_prev.disabled, self.sel_next.disabled = start == 0, start + SELECTION_PAGE >= n
        self._draw_tiles()  # captions and ticks first: the tiles reach the page complete
        self.sel_grid.children = [tile for tile, *_ in self._sel_tiles[:len(self._sel)]]

    def _draw_tiles(self) -> None:
        """Captions, borders and ticks from the state (value, exclusions, confirmed changes); the apply button."""
        value = self.sel_value.value
        self._quiet = True
        try:
            for c, (tile, _, cap, box) in zip(self._sel, self._sel_tiles):
                change, included = self._is_change(c), self._included(c)
                now = (f"now <b>{html_text(c.current)}</b>" if c.current else "<i>unlabelled</i>")
                if change:
                    now += (f" &rarr; <b style='color:#e65100'>{html_text(value)}</b>" if included
                            else " <span style='color:#e65100'>(keeps its label: click to change it)</span>")
                elif value is not None and c.current == value:
                    now += " (already)"
                sugg = (f"model: {html_text(c.suggestion[0])} {c.suggestion[1]:.0%}" if c.suggestion else "")
                cap.value = (f"<small>{html_text(c.title)}<br>{now}<br>{sugg}"
                             f"{'' if included else '<br><b>excluded</b>'}</small>")
                box.description, box.value = c.item_id, included
                tile.layout.border = TILE_BORDER["change" if change and included else "in" if included else "out"]
        finally:
            self._quiet = False
        chosen = [c for c in self._sel if self._included(c)]
        changes = sum(self._is_change(c) for c in chosen)
        if value is None:
            self.sel_apply.description, self.sel_apply.disabled = "Pick a value to apply", True
            return
        text = f"Apply '{value}' to {len(chosen)}"
        if changes:
            text += f" ({changes} change another label)"
        self.sel_apply.description, self.sel_apply.disabled = text, not chosen
        self.sel_apply.tooltip = f"save {self.session.field} = {value} for the {len(chosen)} included products"

    def toggle(self, item_id: str) -> None:
        """Exclude an included product, or include an excluded one (for one labelled otherwise: confirm the change)."""
        c = next((c for c in self._sel if c.item_id == str(item_id)), None)
        if c is None:
            raise LabelValueError(f"{item_id!r} is not on the shown page of the batch")
        if self._included(c):
            self._excluded.add(c.item_id)
            self._confirmed.discard(c.item_id)
        else:
            self._excluded.discard(c.item_id)
            if self._is_change(c):
                self._confirmed.add(c.item_id)
        self._draw_tiles()

    @guarded
    def _on_tile_click(self, k: int, event: dict) -> None:
        if k < len(self._sel) and not self._is_repeat_delivery(event):
            self.toggle(self._sel[k].item_id)

    @guarded
    def _on_tick(self, k: int, change) -> None:
        if self._quiet or k >= len(self._sel):
            return
        if bool(change["new"]) != self._included(self._sel[k]):
            self.toggle(self._sel[k].item_id)

    @guarded
    def _on_sel_value(self) -> None:
        if self._quiet:
            return
        self._confirmed.clear()  # a change was confirmed for the previous value, not this one
        self._draw_tiles()

    @guarded
    def _sel_page(self, step: int) -> None:
        start = self._sel_start + step * SELECTION_PAGE
        if 0 <= start < len(self._sel_ids):
            self._sel_start = start
            self._load_selection()

    @guarded
    def apply_selection(self) -> None:
        """Save the chosen value for the included products of the shown page (one set_many, source batch);
        the tiles then show the labels as stored."""
        value = self.sel_value.value
        if value is None:
            raise LabelValueError(f"pick the {self.session.field} to apply")
        chosen = [c for c in self._sel if self._included(c)]
        if not chosen:
            raise LabelValueError("every product is excluded: click a picture to include it")
        try:
            decision = self.session.apply_batch(chosen, value,  # the Candidates: conditional on what this grid showed
                                                replace=[c.item_id for c in chosen if self._is_change(c)],
                                                expected={c.item_id: c.current for c in chosen})
        except LabelValueError:
            self._load_selection()  # show the labels as they are now
            raise
        self._confirmed.clear()
        self._load_selection()
        self.show_progress()
        self.show_status(decision.status)

    @guarded
    def undo_batch(self) -> None:
        """Undo this annotator's last decision (a batch as a whole) and redraw the tiles."""
        decision = self.session.undo()
        if self._sel_ids:
            self._load_selection()
        self.show_progress()
        self.show_status("nothing to undo" if decision is None else decision.status)
