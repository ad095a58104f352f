"""Annotator: label products with model suggestions, in JupyterLab or served by Voila (glue only).

All logic lives in `fclip_workbench.annotate.AnnotationSession`; this module draws it and routes
clicks and keys to it. Every decision is written to the label store (and acknowledged) before the
next product is shown; the status line then reads "saved: <item_id> <field> = <value>" (or
"saved: N labels" for a batch). Errors are shown in the status line, never only in the log.

Keys (mouse over the widget): 1, 2, 3 accept that suggestion; Enter in the correction box saves it.

DOM contract (CSS classes, stable; browser tests rely on them):
    fclip-annotator        the whole widget (container; key events are watched here)
    fclip-annotator-image  the product image (ipywidgets.Image)
    fclip-annotator-title  the product title (HTML)
    fclip-annotator-item   the item id (HTML holding only the id text)
    fclip-suggestion       the suggestion buttons, in order 1..3 (description = the label)
    fclip-correct-input    the correction box (ipywidgets.Combobox, completion over the taxonomy)
    fclip-correct-save     its save button
    fclip-taxonomy-add     "add to taxonomy" button (shown after an out-of-taxonomy value)
    fclip-skip, fclip-undo skip / undo buttons
    fclip-progress         progress (n labelled / total, acceptance rate)
    fclip-status           the status line ("saved: ...", or the error)
    fclip-annotator-name   the annotator's name (Text)
    fclip-mode             mode toggle buttons, values "single" and "batch"
    fclip-queue-order, fclip-queue-query, fclip-queue-cluster   queue order controls
    fclip-batch            the batch grid
    fclip-batch-item       each batch product's checkbox (ipywidgets.Checkbox, ticked)
    fclip-batch-label      the batch label picker (Dropdown)
    fclip-batch-query      the batch text query (Text; Enter loads a page of matches)
    fclip-batch-confirm    the confirm button ("Confirm N")

Example:
    >>> Annotator.from_catalog(catalog, "articleType", model=model, annotator="ana")   # doctest: +SKIP
    >>> Annotator(session)                                                              # doctest: +SKIP
"""
from __future__ import annotations

import functools
import html
import logging
from typing import Callable

import ipywidgets as w
import traitlets

from ..annotate import QUEUE_ORDERS, AnnotationSession, Candidate, Decision
from ..errors import FclipError, LabelValueError
from ..viz import image_bytes

log = logging.getLogger(__name__)

IMAGE_PX = 360  # width of the large product image
THUMB_PX = 112  # batch thumbnails
ORDER_NAMES = {"uncertainty": "most useful first (uncertainty)", "query": "similar to a text query",
               "cluster": "by cluster", "random": "random"}
TEXT_INPUTS = ("INPUT", "TEXTAREA", "SELECT")  # key presses typed into these are not shortcuts


def _guarded(method: Callable) -> Callable:
    """Run a UI handler; show any error in the status line (FclipError as is, others named)."""
    @functools.wraps(method)
    def run(self: "Annotator", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except FclipError as e:
            self.show_error(str(e))
        except Exception as e:  # noqa: BLE001 - a bug: still shown to the annotator, traceback in the log
            log.exception("annotator: %s failed", method.__name__)
            self.show_error(f"{type(e).__name__}: {e} (details in the log)")
        return None
    return run


def _css(widget: w.Widget, *classes: str) -> w.Widget:
    for c in classes:
        widget.add_class(c)
    return widget


class Annotator(w.VBox):
    """The annotator widget over an `AnnotationSession`.

    Traits: `item_id` (the product shown), `mode` ("single" | "batch"), `status` (the status line text).
    """

    item_id = traitlets.Unicode("")
    mode = traitlets.Unicode("single")
    status = traitlets.Unicode("")

    def __init__(self, session: AnnotationSession, batch_size: int = 24, **kwargs) -> None:
        self.session = session
        self.batch_size = batch_size
        self._last_bad_value = ""
        self._quiet = False  # True while the widget itself changes a control
        self._page: list[Candidate] = []
        self._page_value = ""
        # ---- header: name, mode, progress, status
        self.name_input = _css(w.Text(value=session.annotator, placeholder="your name", description="Annotator"),
                               "fclip-annotator-name")
        self.mode_toggle = _css(w.ToggleButtons(options=["single", "batch"], value="single"),
                                "fclip-mode")
        self.progress_html = _css(w.HTML(), "fclip-progress")
        self.status_html = _css(w.HTML(), "fclip-status")
        # ---- single item
        self.image = _css(w.Image(format="png", layout=w.Layout(width=f"{IMAGE_PX}px", object_fit="contain")),
                          "fclip-annotator-image")
        self.item_html = _css(w.HTML(), "fclip-annotator-item")
        self.title_html = _css(w.HTML(), "fclip-annotator-title")
        self.attrs_html = w.HTML()
        self.current_html = w.HTML()
        self.suggestion_buttons = [_css(w.Button(tooltip=f"key {k}", layout=w.Layout(width="220px")),
                                        "fclip-suggestion") for k in (1, 2, 3)]
        self.suggestion_bars = [w.FloatProgress(min=0.0, max=1.0, layout=w.Layout(width="160px")) for _ in range(3)]
        self.suggestion_pct = [w.HTML() for _ in range(3)]
        self.suggestion_rows = [w.HBox([w.HTML(f"<b>{k}</b>"), b, bar, pct]) for k, b, bar, pct in
                                zip((1, 2, 3), self.suggestion_buttons, self.suggestion_bars, self.suggestion_pct)]
        self.correct_input = _css(w.Combobox(placeholder="type the right label", ensure_option=False,
                                             description="Correct"), "fclip-correct-input")
        self.correct_save = _css(w.Button(description="Save", button_style="primary"), "fclip-correct-save")
        self.taxonomy_add = _css(w.Button(description="Add to taxonomy", button_style="warning",
                                          layout=w.Layout(display="none")), "fclip-taxonomy-add")
        self.skip_button = _css(w.Button(description="Skip", icon="forward"), "fclip-skip")
        self.undo_button = _css(w.Button(description="Undo", icon="undo"), "fclip-undo")
        self.order_dropdown = _css(w.Dropdown(options=[(ORDER_NAMES[o], o) for o in QUEUE_ORDERS],
                                              value=session.order, description="Queue"), "fclip-queue-order")
        self.order_query = _css(w.Text(placeholder="text query, Enter", continuous_update=False,
                                       layout=w.Layout(display="none")), "fclip-queue-query")
        self.order_cluster = _css(w.Dropdown(options=[], layout=w.Layout(display="none")), "fclip-queue-cluster")
        details = w.VBox([self.item_html, self.title_html, self.attrs_html, self.current_html,
                          w.HTML("<b>Suggestions</b> (keys 1-3)"), *self.suggestion_rows,
                          w.HBox([self.correct_input, self.correct_save]), self.taxonomy_add,
                          w.HBox([self.skip_button, self.undo_button])])
        self.single_pane = w.VBox([w.HBox([self.image, details]),
                                   w.HBox([self.order_dropdown, self.order_query, self.order_cluster])])
        # ---- batch
        self.batch_label = _css(w.Dropdown(options=session.classes, description="Label"), "fclip-batch-label")
        self.batch_query = _css(w.Text(placeholder="or a text query, Enter", continuous_update=False),
                                "fclip-batch-query")
        self.batch_grid = _css(w.GridBox(layout=w.Layout(grid_template_columns=f"repeat(6, {THUMB_PX + 24}px)")),
                               "fclip-batch")
        self.batch_boxes: list[w.Checkbox] = []  # the shown page's checkboxes
        self._cells: list[tuple[w.VBox, w.Image, w.HTML, w.Checkbox]] = []
        self.batch_confirm = _css(w.Button(description="Confirm 0", button_style="success"), "fclip-batch-confirm")
        self.batch_pane = w.VBox([w.HBox([self.batch_label, self.batch_query]), self.batch_grid, self.batch_confirm],
                                 layout=w.Layout(display="none"))
        super().__init__([w.HBox([self.name_input, self.mode_toggle]), self.progress_html, self.status_html,
                          self.single_pane, self.batch_pane], **kwargs)
        self.add_class("fclip-annotator")
        # ---- events
        for k, b in enumerate(self.suggestion_buttons, start=1):
            b.on_click(functools.partial(lambda k, _: self.accept(k), k))
        self.correct_save.on_click(lambda _: self.correct())
        self.taxonomy_add.on_click(lambda _: self.add_and_save())
        self.skip_button.on_click(lambda _: self.skip())
        self.undo_button.on_click(lambda _: self.undo())
        self.name_input.observe(self._on_name, names="value")
        self.mode_toggle.observe(lambda ch: self.set_mode(ch["new"]), names="value")
        self.order_dropdown.observe(lambda ch: self._on_order(), names="value")
        self.order_query.observe(lambda ch: self._on_order(), names="value")
        self.order_cluster.observe(lambda ch: self._on_order(), names="value")
        self.batch_label.observe(lambda ch: self.load_batch(), names="value")
        self.batch_query.observe(lambda ch: self.load_batch(), names="value")
        self.batch_confirm.on_click(lambda _: self.confirm_batch())
        self.key_events = self.enter_events = None
        try:
            from ipyevents import Event
        except ImportError:  # keys are a convenience: buttons still work
            log.warning("ipyevents is not installed: keys 1-3 and Enter are off (pip install ipyevents)")
        else:
            self.key_events = Event(source=self, watched_events=["keydown"])
            self.key_events.on_dom_event(self.on_key)
            self.enter_events = Event(source=self.correct_input, watched_events=["keydown"])
            self.enter_events.on_dom_event(self.on_correct_key)
        self._refresh_taxonomy()
        self.show_item()

    @classmethod
    def from_catalog(cls, catalog, field: str, model=None, store=None, annotator: str = "",
                     batch_size: int = 24, **options) -> "Annotator":
        """Build the session (store, taxonomy, embeddings, suggester; see `AnnotationSession.from_catalog`)
        and its widget."""
        return cls(AnnotationSession.from_catalog(catalog, field, model=model, store=store, annotator=annotator,
                                                  **options), batch_size=batch_size)

    # ------------------------------------------------------------------ drawing
    def show_error(self, message: str) -> None:
        self.status = message
        self.status_html.value = f'<span style="color:#b00020">&#9888; {html.escape(message)}</span>'

    def show_status(self, message: str) -> None:
        self.status = message
        self.status_html.value = f'<span style="color:#1b5e20">{html.escape(message)}</span>'

    def show_progress(self) -> None:
        p = self.session.progress()
        judged = p["accepted"] + p["corrected"]
        rate = f"{p['acceptance_rate']:.0%} of {judged} suggestions accepted" if judged else "no decisions yet"
        missing = f" &middot; {p['not_embedded']} without image embedding" if p["not_embedded"] else ""
        self.progress_html.value = (f"<b>{p['labelled']} / {p['total']}</b> labelled ({self.session.field}) "
                                    f"&middot; {rate} &middot; {p['batch']} by batch{missing}")

    def show_item(self) -> None:
        """Draw the session's current item (or 'all done')."""
        item = self.session.current
        self.taxonomy_add.layout.display = "none"
        self.correct_input.value = ""
        if item is None:
            self.item_id = ""
            self.item_html.value = ""
            self.title_html.value = "<h3>Nothing left to label in this queue.</h3>"
            self.image.value = b""
            for row in self.suggestion_rows:
                row.layout.display = "none"
            self.show_progress()
            return
        pic = image_bytes(item.image)
        self.image.format, self.image.value = (pic[1], pic[0]) if pic else ("png", b"")
        self.item_html.value = html.escape(item.item_id)
        self.title_html.value = f"<h3>{html.escape(item.title)}</h3>"
        self.attrs_html.value = "<br>".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}"
                                            for k, v in item.attributes.items())
        self.current_html.value = (f"current {html.escape(self.session.field)}: "
                                   f"<b>{html.escape(item.current) if item.current else '(none)'}</b>"
                                   + (" &middot; <i>the model is unsure</i>" if item.unsure else ""))
        for k, row in enumerate(self.suggestion_rows):
            if k < len(item.suggestions):
                label, p = item.suggestions[k]
                self.suggestion_buttons[k].description = label
                self.suggestion_bars[k].value = p
                self.suggestion_pct[k].value = f"{p:.0%}"
                row.layout.display = "flex"
            else:
                row.layout.display = "none"
        self.item_id = item.item_id
        self.show_progress()

    def _refresh_taxonomy(self) -> None:
        tax = self.session.taxonomy
        self.correct_input.options = tuple(tax.values) if tax is not None else tuple(self.session.classes)

    def _after(self, decision: Decision) -> None:
        """Called once the store acknowledged `decision`: show the next item, then the status."""
        self.show_item()
        note = f" · {self.session.refit_error}" if self.session.refit_error else ""
        self.show_status(decision.status + note)

    # ------------------------------------------------------------------ single-item actions
    @_guarded
    def accept(self, k: int) -> None:
        self._after(self.session.accept(k))

    @_guarded
    def correct(self, value: str | None = None) -> None:
        value = self.correct_input.value if value is None else value
        try:
            decision = self.session.correct(value)
        except LabelValueError:
            self._last_bad_value = value.strip() if isinstance(value, str) else ""
            if self._last_bad_value and self.session.taxonomy is not None:
                self.taxonomy_add.description = f"Add '{self._last_bad_value}' to the taxonomy and save"
                self.taxonomy_add.layout.display = "flex"
            raise
        self._after(decision)

    @_guarded
    def add_and_save(self) -> None:
        """Add the refused value to the taxonomy (the annotator asked for it), then save it."""
        value = self._last_bad_value
        self.session.add_to_taxonomy(value)
        self._refresh_taxonomy()
        self._after(self.session.correct(value))

    @_guarded
    def skip(self) -> None:
        skipped = self.item_id
        self.session.skip()
        self.show_item()
        self.show_status(f"skipped: {skipped}")

    @_guarded
    def undo(self) -> None:
        decision = self.session.undo()
        if decision is None:
            self.show_status("nothing to undo")
            return
        self.show_item()
        self.show_status(decision.status)

    def _is_repeat_delivery(self, event: dict) -> bool:
        """True for a second delivery of the same DOM event (ipyevents can attach its document listener twice,
        and both copies carry the event's own `timeStamp`): one key press must never decide two products."""
        stamp = (event.get("type"), event.get("key"), event.get("timeStamp"))
        if stamp[2] is not None and stamp == getattr(self, "_last_key_event", None):
            return True
        self._last_key_event = stamp
        return False

    def on_key(self, event: dict) -> None:
        """ipyevents keydown on the container: 1-3 accept (not while typing in a text box)."""
        target = event.get("target") or {}
        if str(target.get("tagName", "")).upper() in TEXT_INPUTS:
            return
        if self.mode == "single" and event.get("key") in ("1", "2", "3") and not event.get("repeat"):
            if not self._is_repeat_delivery(event):
                self.accept(int(event["key"]))

    def on_correct_key(self, event: dict) -> None:
        """Enter in the correction box saves it."""
        if event.get("key") == "Enter" and not self._is_repeat_delivery(event):
            self.correct()

    @_guarded
    def _on_name(self, change) -> None:
        self.session.annotator = change["new"]

    @_guarded
    def _on_order(self) -> None:
        if self._quiet:
            return
        order = self.order_dropdown.value
        self.order_query.layout.display = "flex" if order == "query" else "none"
        self.order_cluster.layout.display = "flex" if order == "cluster" else "none"
        if order == "query":
            if not self.order_query.value.strip():
                self.show_status("type a text query and press Enter")
                return
            self.session.set_order("query", query=self.order_query.value)
        elif order == "cluster":
            if not self.order_cluster.options:  # KMeans runs once, on first use
                opts = [(f"cluster {c}: {n} products, mostly {name}", c) for c, n, name in self.session.clusters()]
                self._quiet = True
                try:
                    self.order_cluster.options = opts
                    self.order_cluster.value = opts[0][1]
                finally:
                    self._quiet = False
            self.session.set_order("cluster", cluster=self.order_cluster.value)
        else:
            self.session.set_order(order)
        self.show_item()
        self.show_status(f"queue: {ORDER_NAMES[order]}")

    @_guarded
    def review(self, item_ids) -> None:
        """Label exactly these products next, in this order: a label-issue list or a map selection
        (`explorer.on_send(annotator.review)`)."""
        self.session.review(list(item_ids))
        self.set_mode("single")
        self.show_item()
        self.show_status(f"queue: review of {len(self.session.queue())} products")

    # ------------------------------------------------------------------ batch mode
    @_guarded
    def set_mode(self, mode: str) -> None:
        """Show the single-item pane ("single") or the batch grid ("batch")."""
        if mode not in ("single", "batch"):
            raise LabelValueError(f"unknown mode {mode!r}; use 'single' or 'batch'")
        if self.mode_toggle.value != mode:
            self.mode_toggle.value = mode  # observed: comes back here
            return
        self.mode = mode
        self.single_pane.layout.display = "flex" if mode == "single" else "none"
        self.batch_pane.layout.display = "flex" if mode == "batch" else "none"
        if mode == "batch":
            self.load_batch()
        else:
            self.show_item()

    @_guarded
    def load_batch(self) -> None:
        """Fill the grid with the next page for the chosen label (or the text query)."""
        if self.mode != "batch":
            return
        query = self.batch_query.value.strip()
        if query:
            page = self.session.batch_candidates(query=query, n=self.batch_size)
        else:
            if self.batch_label.value is None:
                raise LabelValueError("pick a label for the batch")
            page = self.session.batch_candidates(label=self.batch_label.value, n=self.batch_size)
        self._page, self._page_value = page, self.batch_label.value
        while len(self._cells) < len(page):  # cells are reused from page to page (cheaper than new widgets)
            img = w.Image(layout=w.Layout(width=f"{THUMB_PX}px", height=f"{THUMB_PX}px", object_fit="contain"))
            box = _css(w.Checkbox(value=True, indent=False), "fclip-batch-item")
            box.observe(lambda _: self._count_ticks(), names="value")
            cap = w.HTML()
            self._cells.append((w.VBox([img, cap, box]), img, cap, box))
        for c, (_, img, cap, box) in zip(page, self._cells):
            pic = image_bytes(c.image, size=THUMB_PX)
            img.format, img.value = (pic[1], pic[0]) if pic else ("png", b"")
            cap.value = f"<small>{html.escape(c.title)}<br>{c.score:.2f}</small>"
            box.description, box.value = c.item_id, True
        cells = [cell for cell, *_ in self._cells[:len(page)]]
        self.batch_boxes = [box for *_, box in self._cells[:len(page)]]
        self.batch_grid.children = cells
        self._count_ticks()
        if not page:
            self.show_status("no unlabelled products left for this choice")

    def _count_ticks(self) -> None:
        n = sum(b.value for b in self.batch_boxes)
        self.batch_confirm.description = f"Confirm {n}"
        target = self.batch_label.value
        self.batch_confirm.tooltip = f"save {self.session.field} = {target} for the {n} ticked products"

    @_guarded
    def confirm_batch(self) -> None:
        """Save the ticked products (one set_many), show "saved: N labels", load the next page."""
        ticked = [c.item_id for c, b in zip(self._page, self.batch_boxes) if b.value]
        decision = self.session.confirm_batch(ticked, self.batch_label.value)
        self.show_progress()
        self.load_batch()
        self.show_status(decision.status)
