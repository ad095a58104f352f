"""Annotator: label products with model suggestions, in JupyterLab or served by Voila (glue only).

All logic lives in `fclip_workbench.labelling.annotate.AnnotationSession`; this module draws it and routes
clicks and keys to it. Every decision is written to the label store (and acknowledged) before the
next product is shown; the status line then reads "saved: <item_id> <field> = <value>" (or
"saved: N labels · expected wrong: 1.3 of N (90 % interval 0–3)" for a model batch: how many of its labels
the suggester's calibrated probabilities expect wrong, `AnnotationSession.expected_error`). Errors are shown in the status line, never only in the log.

Keys (wherever the focus is in the widget, except in a text box; see `keys.KeyShortcuts`): 1, 2, 3 accept
that suggestion; Enter in the correction box saves it; Enter in the name box moves the focus to the widget.

Text from the catalog, the label store or the URL reaches markup only through `viz.html_text`.

A decision refused because someone else changed the label after it was shown (`ConflictError`) writes
nothing: the widget says who changed what, redraws the product as it is now (a batch page is marked
stale: it cannot be confirmed until reloaded) and shows a Reload button. Nothing is retried by itself.

DOM contract (CSS classes, stable; browser tests rely on them):
    fclip-annotator        the whole widget (container; key events are watched here)
    fclip-annotator-image  the product image (ipywidgets.Image)
    fclip-annotator-title  the product title (HTML)
    fclip-annotator-item   the item id (HTML holding only the id text)
    fclip-current          the current label; "independent answer" on an overlap product; both answers when adjudicating
    fclip-suggestion       the suggestion buttons, in order 1..3 (description = the label)
    fclip-correct-input    the correction box (ipywidgets.Combobox, completion over the taxonomy)
    fclip-correct-save     its save button
    fclip-taxonomy-add     "add to taxonomy" button (shown after an out-of-taxonomy value)
    fclip-skip, fclip-undo skip / undo buttons
    fclip-progress         progress (n labelled / total, acceptance rate)
    fclip-status           the status line ("saved: ...", or the error)
    fclip-reload           "Reload" (shown after a conflict): read what is shown again from the store
    fclip-annotator-name   the annotator's name (Text)
    fclip-mode             mode toggle buttons, values "single" and "batch"
    fclip-queue-order, fclip-queue-query, fclip-queue-cluster   queue order controls
    fclip-batch            the batch grid
    fclip-batch-item       each batch product's checkbox (ipywidgets.Checkbox, ticked)
    fclip-batch-label      the batch label picker (Dropdown)
    fclip-batch-query      the batch text query (Text; Enter loads a page of matches)
    fclip-batch-confirm    the confirm button ("Confirm N")
    fclip-batch-score      each batch tile's score ("97 % Tshirts": the suggester's probability of the label;
                           "similarity 0.31" for a text query), its tooltip says which
    fclip-batch-error      the ticked products' expected error ("expected wrong: 1.3 of 23 (90 % interval 0–3)")
    fclip-selection        the selection batch pane (`annotator.batch(ids)`, e.g. from the explorer)
    fclip-selection-head   its header ("N products from the selection")
    fclip-selection-value  the value to apply (Dropdown over the taxonomy)
    fclip-selection-tile   each product's tile (thumbnail, title, current label, suggestion)
    fclip-selection-image  the tile's thumbnail (a click includes / excludes the product)
    fclip-selection-item   the tile's include checkbox (description = the item id)
    fclip-selection-apply  "Apply 'V' to N" (names how many labels it changes)
    fclip-selection-undo   undo the last batch; fclip-selection-close: back to the model's batches

Example:
    >>> Annotator.from_catalog(catalog, "articleType", model=model, annotator="ana")   # doctest: +SKIP
    >>> Annotator(session)                                                              # doctest: +SKIP
"""
from __future__ import annotations

import functools
import logging

import ipywidgets as w
import traitlets

from fclip_workbench.labelling.annotate import QUEUE_ORDERS, AnnotationSession, Candidate, Decision, audit_item_ids
from fclip_workbench.errors import LabelValueError
from fclip_workbench.labelling.labels import check_annotator_name
from fclip_workbench.widgets.viz import html_text, image_bytes
from fclip_workbench.widgets.keys import KeyShortcuts
from fclip_workbench.widgets.annotator_selection import THUMB_PX, SelectionBatchMixin
from fclip_workbench.widgets.ui import css, guarded

log = logging.getLogger(__name__)

IMAGE_PX = 360  # width of the large product image
ORDER_NAMES = {"uncertainty": "most useful first (uncertainty)", "query": "similar to a text query",
               "cluster": "by cluster", "random": "random",
               "adjudication": "disagreements to adjudicate (adjudicators)",
               "diversity": "most useful first, across the catalog (diversity)",
               "activelab": "new products or re-label doubtful ones (ActiveLab)"}
TEXT_INPUTS = ("INPUT", "TEXTAREA", "SELECT")  # key presses typed into these are not shortcuts
NOT_TEXT_INPUTS = ("checkbox", "radio", "button", "submit", "reset", "range", "color", "file", "image")




class Annotator(SelectionBatchMixin, w.VBox):
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
        self.name_input = css(w.Text(value=session.annotator, placeholder="your name", description="Annotator"),
                               "fclip-annotator-name")
        self.mode_toggle = css(w.ToggleButtons(options=["single", "batch"], value="single"),
                                "fclip-mode")
        self.progress_html = css(w.HTML(), "fclip-progress")
        self.status_html = css(w.HTML(), "fclip-status")
        self.reload_button = css(w.Button(description="Reload", icon="refresh", button_style="warning",
                                           tooltip="read the labels shown again from the label store",
                                           layout=w.Layout(display="none", width="auto")), "fclip-reload")
        self._name_error = False  # the status line shows a refused annotator name
        # ---- single item
        self.image = css(w.Image(format="png", layout=w.Layout(width=f"{IMAGE_PX}px", object_fit="contain")),
                          "fclip-annotator-image")
        self.item_html = css(w.HTML(), "fclip-annotator-item")
        self.title_html = css(w.HTML(), "fclip-annotator-title")
        self.attrs_html = w.HTML()
        self.current_html = css(w.HTML(), "fclip-current")  # the current label, or "independent answer", or the answers
        self.suggestion_buttons = [css(w.Button(tooltip=f"key {k}", layout=w.Layout(width="220px")),
                                        "fclip-suggestion") for k in (1, 2, 3)]
        self.suggestion_bars = [w.FloatProgress(min=0.0, max=1.0, layout=w.Layout(width="160px")) for _ in range(3)]
        self.suggestion_pct = [w.HTML() for _ in range(3)]
        self.suggestion_rows = [w.HBox([w.HTML(f"<b>{k}</b>"), b, bar, pct]) for k, b, bar, pct in
                                zip((1, 2, 3), self.suggestion_buttons, self.suggestion_bars, self.suggestion_pct)]
        self.correct_input = css(w.Combobox(placeholder="type the right label", ensure_option=False,
                                             description="Correct"), "fclip-correct-input")
        self.correct_save = css(w.Button(description="Save", button_style="primary"), "fclip-correct-save")
        self.taxonomy_add = css(w.Button(description="Add to taxonomy", button_style="warning",
                                          layout=w.Layout(display="none")), "fclip-taxonomy-add")
        self.skip_button = css(w.Button(description="Skip", icon="forward"), "fclip-skip")
        self.undo_button = css(w.Button(description="Undo", icon="undo"), "fclip-undo")
        self.order_dropdown = css(w.Dropdown(options=[(ORDER_NAMES[o], o) for o in QUEUE_ORDERS],
                                              value=session.order, description="Queue"), "fclip-queue-order")
        self.order_query = css(w.Text(placeholder="text query, Enter", continuous_update=False,
                                       layout=w.Layout(display="none")), "fclip-queue-query")
        self.order_cluster = css(w.Dropdown(options=[], layout=w.Layout(display="none")), "fclip-queue-cluster")
        details = w.VBox([self.item_html, self.title_html, self.attrs_html, self.current_html,
                          w.HTML("<b>Suggestions</b> (keys 1-3)"), *self.suggestion_rows,
                          w.HBox([self.correct_input, self.correct_save]), self.taxonomy_add,
                          w.HBox([self.skip_button, self.undo_button])])
        self.single_pane = w.VBox([w.HBox([self.image, details]),
                                   w.HBox([self.order_dropdown, self.order_query, self.order_cluster])])
        # ---- batch
        self.batch_label = css(w.Dropdown(options=session.classes, description="Label"), "fclip-batch-label")
        self.batch_query = css(w.Text(placeholder="or a text query, Enter", continuous_update=False),
                                "fclip-batch-query")
        self.batch_grid = css(w.GridBox(layout=w.Layout(grid_template_columns=f"repeat(6, {THUMB_PX + 24}px)")),
                               "fclip-batch")
        self.batch_boxes: list[w.Checkbox] = []  # the shown page's checkboxes
        self._cells: list[tuple[w.VBox, w.Image, w.HTML, w.Checkbox]] = []
        self.batch_confirm = css(w.Button(description="Confirm 0", button_style="success"), "fclip-batch-confirm")
        self.batch_error_html = css(w.HTML(), "fclip-batch-error")
        # Confirm above the grid: on a laptop screen the grid pushes it below the fold
        self.model_batch = w.VBox([w.HBox([self.batch_label, self.batch_query]),
                                   w.HBox([self.batch_confirm, self.batch_error_html]), self.batch_grid])
        # ---- selection batch: given products (a map selection), one value for all
        self.sel_head = css(w.HTML(), "fclip-selection-head")
        self.sel_value = css(w.Dropdown(options=self._values(), value=None, description="Apply"),
                              "fclip-selection-value")
        self.sel_grid = css(w.GridBox(layout=w.Layout(grid_template_columns=f"repeat(6, {THUMB_PX + 28}px)")),
                             "fclip-selection-grid")
        self.sel_apply = css(w.Button(description="Apply", button_style="success", disabled=True,
                                       layout=w.Layout(width="auto")), "fclip-selection-apply")
        self.sel_undo = css(w.Button(description="Undo last batch", icon="undo"), "fclip-selection-undo")
        self.sel_prev = w.Button(description="Previous page", layout=w.Layout(display="none"))
        self.sel_next = w.Button(description="Next page", layout=w.Layout(display="none"))
        self.sel_close = css(w.Button(description="Back to the model's batches"), "fclip-selection-close")
        self.selection_pane = css(w.VBox([self.sel_head, self.sel_value, self.sel_grid,
                                           w.HBox([self.sel_apply, self.sel_undo, self.sel_prev, self.sel_next,
                                                   self.sel_close])], layout=w.Layout(display="none")),
                                   "fclip-selection")
        self._sel_ids: list[str] = []  # every product sent to the batch
        self._sel_start = 0  # first of them on the shown page
        self._sel: list[Candidate] = []  # the shown page, with current labels as last read
        self._sel_tiles: list[tuple[w.VBox, w.Image, w.HTML, w.Checkbox]] = []
        self._excluded: set[str] = set()  # products the annotator excluded
        self._confirmed: set[str] = set()  # products labelled otherwise whose change the annotator confirmed
        self.batch_pane = w.VBox([self.model_batch, self.selection_pane], layout=w.Layout(display="none"))
        self.shortcuts = KeyShortcuts(root_class="fclip-annotator", shortcut_keys=["1", "2", "3"],
                                      enter_boxes=["fclip-correct-input", "fclip-annotator-name"],
                                      release_boxes=["fclip-annotator-name"])
        super().__init__([w.HBox([self.name_input, self.mode_toggle]), self.progress_html,
                          w.HBox([self.status_html, self.reload_button]), self.single_pane, self.batch_pane,
                          self.shortcuts], **kwargs)
        self.add_class("fclip-annotator")
        # ---- events
        for k, b in enumerate(self.suggestion_buttons, start=1):
            b.on_click(functools.partial(lambda k, _: self.accept(k), k))
        self.correct_save.on_click(lambda _: self.correct())
        self.taxonomy_add.on_click(lambda _: self.add_and_save())
        self.skip_button.on_click(lambda _: self.skip())
        self.undo_button.on_click(lambda _: self.undo())
        self.reload_button.on_click(lambda _: self.reload())
        self.name_input.observe(self._on_name, names="value")
        self.mode_toggle.observe(lambda ch: self.set_mode(ch["new"]), names="value")
        self.order_dropdown.observe(lambda ch: self._on_order(), names="value")
        self.order_query.observe(lambda ch: self._on_order(), names="value")
        self.order_cluster.observe(lambda ch: self._on_order(), names="value")
        self.batch_label.observe(lambda ch: self.load_batch(), names="value")
        self.batch_query.observe(lambda ch: self.load_batch(), names="value")
        self.batch_confirm.on_click(lambda _: self.confirm_batch())
        self.sel_value.observe(lambda ch: self._on_sel_value(), names="value")
        self.sel_apply.on_click(lambda _: self.apply_selection())
        self.sel_undo.on_click(lambda _: self.undo_batch())
        self.sel_prev.on_click(lambda _: self._sel_page(-1))
        self.sel_next.on_click(lambda _: self._sel_page(+1))
        self.sel_close.on_click(lambda _: self.close_selection())
        self.shortcuts.on_key(self.on_key)
        self._refresh_taxonomy()
        self.show_item()
        if session.annotator:
            self._on_name({"new": session.annotator})  # a refused name (e.g. from the URL) is said now

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
        self.status_html.value = f'<span style="color:#b00020">&#9888; {html_text(message)}</span>'

    def show_status(self, message: str) -> None:
        self.status = message
        self.status_html.value = f'<span style="color:#1b5e20">{html_text(message)}</span>'

    def show_conflict(self, message: str) -> None:
        """A decision refused (someone else changed the label after it was shown; nothing written): redraw
        the product as it is now, mark a batch page stale, say who changed what, offer Reload."""
        try:
            if self.mode == "single":
                self.show_item()  # the session re-read the item: it now shows the other label
            elif self._sel_ids:
                self._load_selection()
            else:
                self.batch_confirm.disabled = True  # the page is not what the store holds: reload first
                self.batch_confirm.description = "Reload to confirm"
        finally:
            self.show_error(message)
            self.reload_button.layout.display = "flex"

    @guarded
    def reload(self) -> None:
        """Read what is shown again from the label store: the product, the batch page or the selection grid."""
        self.reload_button.layout.display = "none"
        if self.mode == "single":
            if self.session.current is not None:
                self.session.current = self.session.item(self.session.current.row)
            self.show_item()
        elif self._sel_ids:
            self._load_selection()
        else:
            self.load_batch()
        self.show_progress()
        self.show_status("reloaded: the labels shown are the store's labels now")

    def show_progress(self) -> None:
        p = self.session.progress()
        judged = p["accepted"] + p["corrected"]
        rate = f"{p['acceptance_rate']:.0%} of {judged} suggestions accepted" if judged else "no decisions yet"
        missing = f" &middot; {p['not_embedded']} without image embedding" if p["not_embedded"] else ""
        self.progress_html.value = (f"<b>{p['labelled']} / {p['total']}</b> labelled ({html_text(self.session.field)}) "
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
        self.item_html.value = html_text(item.item_id)
        self.title_html.value = f"<h3>{html_text(item.title)}</h3>"
        self.attrs_html.value = "<br>".join(f"<b>{html_text(k)}</b>: {html_text(v)}"
                                            for k, v in item.attributes.items())
        if item.answers:  # adjudication: both answers, the adjudicator decides
            shown = " &middot; ".join(f"{html_text(k)}: <b>{html_text(v)}</b>" for k, v in item.answers.items())
            current = f"answers that disagree: {shown}"
        elif item.independent:
            current = "<i>independent answer</i>: nobody sees it until a second annotator answers"
        else:
            current = (f"current {html_text(self.session.field)}: "
                       f"<b>{html_text(item.current) if item.current else '(none)'}</b>")
        self.current_html.value = current + (" &middot; <i>the model is unsure</i>" if item.unsure else "")
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

    def _values(self) -> tuple[str, ...]:
        tax = self.session.taxonomy
        return tuple(tax.values) if tax is not None else tuple(self.session.classes)

    def _refresh_taxonomy(self) -> None:
        values = self._values()
        self.correct_input.options = values
        if tuple(self.sel_value.options) != values:
            keep, self._quiet = self.sel_value.value, True
            try:
                self.sel_value.options = values
                self.sel_value.value = keep if keep in values else None
            finally:
                self._quiet = False

    def _after(self, decision: Decision) -> None:
        """Called once the store acknowledged `decision`: show the next item, then the status."""
        self.show_item()
        note = f" · {self.session.refit_error}" if self.session.refit_error else ""
        self.show_status(decision.status + note)

    # ------------------------------------------------------------------ single-item actions
    @guarded
    def accept(self, k: int) -> None:
        self._after(self.session.accept(k))

    @guarded
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

    @guarded
    def add_and_save(self) -> None:
        """Add the refused value to the taxonomy (the annotator asked for it), then save it."""
        value = self._last_bad_value
        self.session.add_to_taxonomy(value)
        self._refresh_taxonomy()
        self._after(self.session.correct(value))

    @guarded
    def skip(self) -> None:
        skipped = self.item_id
        self.session.skip()
        self.show_item()
        self.show_status(f"skipped: {skipped}")

    @guarded
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

    @staticmethod
    def _in_text_box(event: dict) -> bool:
        target = event.get("target") or {}
        tag = str(target.get("tagName", "")).upper()
        if event.get("text_box") or tag in ("TEXTAREA", "SELECT"):
            return True
        return tag == "INPUT" and str(target.get("type", "")).lower() not in NOT_TEXT_INPUTS

    def on_key(self, event: dict) -> None:
        """A key press in the widget (`keys.KeyShortcuts`): 1-3 accept (not while typing in a text box);
        Enter in the correction box saves it."""
        if event.get("key") == "Enter" and event.get("box") == "fclip-correct-input":
            if not self._is_repeat_delivery(event):
                self.correct()
            return
        if self._in_text_box(event):
            return
        if self.mode == "single" and event.get("key") in ("1", "2", "3") and not event.get("repeat"):
            if not self._is_repeat_delivery(event):
                self.accept(int(event["key"]))

    def on_correct_key(self, event: dict) -> None:
        """Enter in the correction box saves it."""
        self.on_key({**event, "box": "fclip-correct-input"})

    @guarded
    def _on_name(self, change) -> None:
        """The name box: the one rule for names (`labels.check_annotator_name`); a refused name is said in the
        status line at once, and the session refuses to write under it (same line)."""
        raw = change["new"] if isinstance(change["new"], str) else ""
        self.session.annotator = raw
        if not raw.strip():
            return
        was_refused, self._name_error = self._name_error, True
        self.session.annotator = check_annotator_name(raw)  # raises: shown in the status line
        self._name_error = False
        if was_refused:
            self.show_status(f"annotator: {self.session.annotator}")

    @guarded
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

    @guarded
    def review(self, items, ids=None, flagged_only: bool = False, limit: int | None = None) -> None:
        """Label exactly these products next, in this order: item ids (a map selection:
        `explorer.on_send(annotator.review)`) or an audit table, most suspicious first
        (`annotator.review(find_label_issues(vectors, labels), ids=ids)`; see `annotate.audit_item_ids`)."""
        import pandas as pd

        if isinstance(items, pd.DataFrame):
            items = audit_item_ids(items, ids=ids, flagged_only=flagged_only, limit=limit)
        elif isinstance(items, str):
            items = [items]
        self.session.review(list(items))
        self.set_mode("single")
        self.show_item()
        self.show_status(f"queue: review of {len(self.session.queue())} products")

    # ------------------------------------------------------------------ batch mode
    @guarded
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
            self.model_batch.layout.display = "none" if self._sel_ids else "flex"
            self.selection_pane.layout.display = "flex" if self._sel_ids else "none"
            if not self._sel_ids:
                self.load_batch()
        else:
            self.show_item()

    @guarded
    def load_batch(self) -> None:
        """Fill the grid with the next page for the chosen label (or the text query)."""
        if self.mode != "batch" or self._sel_ids:
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
            box = css(w.Checkbox(value=True, indent=False), "fclip-batch-item")
            box.observe(lambda _: self._count_ticks(), names="value")
            cap = w.HTML()
            self._cells.append((w.VBox([img, cap, box]), img, cap, box))
        for c, (_, img, cap, box) in zip(page, self._cells):
            pic = image_bytes(c.image, size=THUMB_PX)
            img.format, img.value = (pic[1], pic[0]) if pic else ("png", b"")
            cap.value = f"<small>{html_text(c.title)}<br>{self._score_text(c, query)}</small>"
            box.description, box.value = c.item_id, True
        cells = [cell for cell, *_ in self._cells[:len(page)]]
        self.batch_boxes = [box for *_, box in self._cells[:len(page)]]
        self.batch_grid.children = cells
        self._count_ticks()
        if not page:
            self.show_status("no unlabelled products left for this choice")

    def _score_text(self, c: Candidate, query: str) -> str:
        """A tile's score, said what it is: "97 % Tshirts" (the suggester's probability of the label) or
        "similarity 0.31" (cosine to the text query), with a tooltip."""
        if query:
            tip = f"cosine similarity of the image to the text query {query!r}"
            text = f"similarity {c.score:.2f}"
        else:
            label = self.batch_label.value
            tip = f"the suggester's calibrated probability that this product is {label}"
            text = f"{c.score:.0%} {label}"
        return f'<span class="fclip-batch-score" title="{html_text(tip)}">{html_text(text)}</span>'

    def _count_ticks(self) -> None:
        n = sum(b.value for b in self.batch_boxes)
        self.batch_confirm.description = f"Confirm {n}"
        target = self.batch_label.value
        self.batch_confirm.tooltip = f"save {self.session.field} = {target} for the {n} ticked products"
        ticked = [c for c, b in zip(self._page, self.batch_boxes) if b.value]
        err = self.session.expected_error(ticked, target)
        self.batch_error_html.value = "" if err is None else (
            f'<span title="from the suggester\'s calibrated probability of {html_text(str(target))} for each '
            f'ticked product">{html_text(str(err))}</span>')

    @guarded
    def confirm_batch(self) -> None:
        """Save the ticked products (one set_many), show "saved: N labels · expected wrong: ...", load the next page."""
        ticked = [c for c, b in zip(self._page, self.batch_boxes) if b.value]  # with the events the page showed
        decision = self.session.confirm_batch(ticked, self.batch_label.value)
        self.show_progress()
        self.load_batch()
        self.show_status(decision.report)
