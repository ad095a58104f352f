"""GroundingPanel: pick a product (or upload a photo), type queries, choose methods, see the maps
side by side with the seconds each took. Glue only: maps come from `grounding.py`, drawing from `viz.py`.

Example:
    >>> GroundingPanel(model, catalog, query="shoes, bag", methods=("grad_eclip", "occlusion"))  # doctest: +SKIP
"""
from __future__ import annotations

import io
import time

import ipywidgets as w
import traitlets
from IPython.display import HTML
from PIL import Image

from fclip_workbench.errors import FclipError
from fclip_workbench.grounding.maps import GroundingExplainer, check_texts, load_image
from fclip_workbench.widgets.viz import grounding_html


def split_queries(text: str) -> list[str]:
    """'shoes, red bag' -> ['shoes', 'red bag'] (commas separate queries).

    >>> split_queries(" shoes,  red bag ,")
    ['shoes', 'red bag']
    """
    return [q.strip() for q in text.split(",") if q.strip()]


class GroundingPanel(w.VBox):
    """State in traitlets: `selection` (item id or "upload"), `query` (comma-separated), `methods`."""

    selection = traitlets.Unicode("")
    query = traitlets.Unicode("")
    methods = traitlets.Tuple()

    def __init__(self, model, catalog=None, query: str = "", methods=("grad_eclip", "occlusion"),
                 item: str | None = None, max_items: int = 500) -> None:
        self.model, self.catalog = model, catalog
        known = list(GroundingExplainer.methods())
        bad = [m for m in methods if m not in known]
        if bad:
            raise FclipError(f"Unknown grounding method(s) {bad}; known: {', '.join(known)}")
        options = []
        if catalog is not None:
            options = [(f"{i} - {t[:40]}", i) for i, t in zip(catalog.ids[:max_items], catalog.texts[:max_items])]
        self.item = w.Dropdown(options=options + [("uploaded photo", "upload")], description="Product")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.query_box = w.Text(value=query, placeholder="queries, comma separated: shoes, red stripes",
                                description="Queries", layout=w.Layout(width="420px"))
        self.method_box = w.SelectMultiple(options=known, value=tuple(methods), description="Methods", rows=4)
        self.go = w.Button(description="Explain", button_style="primary")
        self.progress = w.IntProgress(min=0, max=1, value=0, description="", layout=w.Layout(width="200px"))
        self.out = w.Output()
        w.link((self.query_box, "value"), (self, "query"))
        w.link((self.method_box, "value"), (self, "methods"))
        w.link((self.item, "value"), (self, "selection"))
        self.go.on_click(lambda _: self.run())
        self._uploaded: Image.Image | None = None
        self.upload.observe(self._on_upload, names="value")
        if item is not None:
            self.item.value = item
        super().__init__([w.HBox([self.item, self.upload]), w.HBox([self.query_box, self.go, self.progress]),
                          self.method_box, self.out])
        if query:
            self.run()

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        content = files[0]["content"] if isinstance(files, (list, tuple)) else next(iter(files.values()))["content"]
        try:
            self._uploaded = load_image(Image.open(io.BytesIO(bytes(content))))
        except Exception as e:  # noqa: BLE001 - any undecodable upload is shown, not raised
            self.out.outputs = ()
            self.out.append_stderr(f"cannot read the uploaded file: {e}\n")
            return
        self.item.value = "upload"

    def photo(self) -> Image.Image:
        if self.selection == "upload":
            if self._uploaded is None:
                raise FclipError("no photo uploaded yet: use the Upload button")
            return self._uploaded
        return load_image(self.catalog.image_path(self.catalog.row_of(self.selection)))

    def run(self) -> None:
        """Compute every chosen method's maps and show them side by side with their time."""
        self.out.outputs = ()
        try:
            texts = check_texts(split_queries(self.query))
            if not self.methods:
                raise FclipError("choose at least one method")
            img = self.photo()
        except FclipError as e:
            self.out.append_stderr(f"{e}\n")
            return
        self.progress.max, self.progress.value = len(self.methods), 0
        maps, captions = {}, {}
        for method in self.methods:
            t0 = time.perf_counter()
            try:
                result = GroundingExplainer(self.model, method=method).attribute(img, texts)
            except FclipError as e:
                self.out.append_stderr(f"{method}: {e}\n")
                self.progress.value += 1
                continue
            secs = time.perf_counter() - t0
            for text, m in zip(texts, result):
                maps[f"{text} ({method})"] = m
                captions[f"{text} ({method})"] = f"{secs / len(texts):.2f} s per map"
            self.progress.value += 1
        if maps:
            self.out.append_display_data(HTML(grounding_html(img, maps, captions)))
