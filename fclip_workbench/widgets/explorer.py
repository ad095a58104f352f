"""Explorer: a WebGL map of a catalog (jupyter-scatter) with thumbnails on hover, lasso/box
selection synced to Python, colouring, a text query, clusters and a "send to annotator" hook.

UI glue only: the map comes from `projection.UMAPProjector`, clusters from
`projection.cluster_items` / `name_clusters`, grids from `viz`.

Example:
    >>> ex = Explorer.build(model, catalog)                   # doctest: +SKIP
    >>> ex.color_by("articleType"); ex.select(["15970", "39386"])   # doctest: +SKIP
    >>> ex.selection                                           # doctest: +SKIP
    >>> ex.connect(annotator)   # "Send to annotator": review queue / batch grid   # doctest: +SKIP
    >>> ex.show_audit(find_label_issues(ex.vectors, labels))   # colour by the audit's score   # doctest: +SKIP
"""
from __future__ import annotations

import html
import logging
from typing import Callable, Sequence

import ipywidgets as w
import numpy as np
import pandas as pd
import traitlets as tl

from fclip_workbench.errors import FclipError, InvalidArgumentError
from fclip_workbench.widgets.gestures import ShiftLassoGuard
from fclip_workbench.widgets.viz import GRID_CLASS, image_grid_html, thumbnail_data_uri

log = logging.getLogger(__name__)

MAX_CATEGORIES = 20  # colour categories shown; rarer values become "other"
SPECIAL_COLOURS = ("prediction", "label", "disagreement", "cluster", "query")
SEND_MODES = ("review", "batch")  # the annotator's review queue, or its batch grid
MAX_GROUPS = 18  # near-duplicate groups coloured one by one; the smaller ones share "smaller group"
PREVIEW = "_preview"  # the (empty) tooltip preview column: thumbnails are made on hover
# jupyter-scatter 1.0 starts regl-scatterplot with actionKeyMap {merge: meta, remove: alt} and no lasso key, so
# shift+drag would pan. Its public `options` (regl-scatterplot settings) restores regl-scatterplot's own default:
# shift+drag lassos; cmd/meta+drag adds to the selection, alt+drag removes from it. (Long press + drag and the
# toolbar's lasso button still work too.) In JupyterLab, `gestures.ShiftLassoGuard` keeps the notebook from
# taking shift+mousedown as a cell-range selection.
ACTION_KEYS = {"lasso": "shift", "merge": "meta", "remove": "alt"}
LASSO_HINT = ("Select products on the map: hold Shift and drag around them (or press and hold, then drag; "
              "or the lasso button), or type a query.")


def _few(values: Sequence | np.ndarray, n: int = 5) -> str:
    values = list(values)
    return repr(values[:n])[:-1] + (f", ... ({len(values)} in all)]" if len(values) > n else "]")


def _categorical(values, max_categories: int = MAX_CATEGORIES) -> pd.Categorical:
    """Values as a categorical with at most `max_categories` categories (the rest: "other"; missing: "(none)")."""
    s = pd.Series(values).astype("string").fillna("(none)")
    counts = s.value_counts()
    if len(counts) > max_categories:
        keep = set(counts.index[: max_categories - 1])
        s = s.where(s.isin(keep), "other")
    return pd.Categorical(s)


class Explorer(w.VBox):
    """The map of `ids` at `xy` (n_items, 2); `catalog` adds titles, columns and thumbnails;
    `vectors` (n_items, dim) and `model` add the text query and named clusters.

    Traits: `selected_ids` (list of item ids, observable: `ex.observe(f, names="selected_ids")`),
    `colour` (what the map is coloured by), `query`. `selection` is the selected rows as a DataFrame.
    """

    selected_ids = tl.List(tl.Unicode(), help="ids of the selected products, in map order")
    colour = tl.Unicode("", help="column or special colouring (prediction, label, disagreement, cluster, query)")
    query = tl.Unicode("", help="the last text query")

    def __init__(self, xy, ids: Sequence[str], catalog=None, vectors=None, model=None, color_by: str | None = None,
                 grid_limit: int = 48, thumb_size: int = 96, height: int = 480, point_size: int | None = None) -> None:
        xy = np.asarray(xy, dtype=np.float32)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise InvalidArgumentError(f"xy must be (n_items, 2) map coordinates; got shape {xy.shape}")
        if not np.isfinite(xy).all():
            raise InvalidArgumentError(f"xy has non-finite coordinates in rows {_few(np.flatnonzero(~np.isfinite(xy).all(1)))}")
        ids = [str(i) for i in ids]
        if len(ids) != len(xy):
            raise InvalidArgumentError(f"{len(ids)} ids for {len(xy)} map points: give one id per point")
        index = pd.Index(ids)
        if not index.is_unique:
            raise InvalidArgumentError(f"ids must be unique; repeated: {_few(index[index.duplicated()].unique())}")
        if vectors is not None:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or len(vectors) != len(ids):
                raise InvalidArgumentError(f"vectors must be (n_items={len(ids)}, dim); got shape {vectors.shape}")
        if isinstance(grid_limit, bool) or not isinstance(grid_limit, int) or grid_limit < 1:
            raise InvalidArgumentError(f"grid_limit must be a whole number >= 1, got {grid_limit!r}")
        self.catalog, self.vectors, self.model = catalog, vectors, model  # vectors: (n_items, dim)
        self.grid_limit, self.thumb_size = grid_limit, thumb_size
        self._index = index
        self._callbacks: dict[str, list[Callable[[list[str]], object]]] = {m: [] for m in SEND_MODES}
        self._thumbs: dict[int, str] = {}  # point -> thumbnail data URI, made on first hover
        self.clusters_: pd.DataFrame | None = None
        self.table = self._build_table(xy, ids, catalog)
        self._rows = self.table.pop("_row").to_numpy() if "_row" in self.table else None  # catalog row per point

        import jscatter

        self.scatter = jscatter.Scatter(
            data=self.table, x="x", y="y", height=height, size=point_size or (2 if len(ids) > 200_000 else 4),
            tooltip=True, tooltip_properties=[c for c in ("title",) if c in self.table] or ["item_id"],
            tooltip_preview=PREVIEW if self._rows is not None else None, tooltip_preview_type="image",
            tooltip_preview_image_height=thumb_size, tooltip_size="medium", lasso_initiator=True,
            legend=True, axes=False, options={"actionKeyMap": dict(ACTION_KEYS)})
        self.map = self.scatter.widget  # the JupyterScatter anywidget
        if self._rows is not None:  # thumbnails are made on hover (lazily, cached), never for every point
            self.map._handle_tooltip = self._handle_tooltip
        self.map.observe(self._on_map_selection, names="selection")

        self.colour_menu = w.Dropdown(options=self._colour_options(), description="Colour", layout=w.Layout(width="260px"))
        self.colour_menu.observe(lambda ch: self._safely(self.color_by, ch["new"]) if ch["new"] else None, names="value")
        self.query_box = w.Text(placeholder="describe products, e.g. red dress", description="Query",
                                continuous_update=False, disabled=vectors is None or model is None)
        self.k = w.IntSlider(value=50, min=1, max=500, description="Top k", layout=w.Layout(width="260px"))
        self.query_box.observe(lambda ch: self._safely(self.search, ch["new"]) if ch["new"].strip() else None,
                               names="value")
        self.send_button = w.Button(description="Send to annotator (review)", icon="paper-plane", disabled=True,
                                    layout=w.Layout(width="auto"))
        self.send_button.add_class("fclip-send-review")
        self.send_button.on_click(lambda _: self._safely(self.send))
        self.send_batch_button = w.Button(description="Send to annotator (batch)", icon="th", disabled=True,
                                          layout=w.Layout(width="auto"))
        self.send_batch_button.add_class("fclip-send-batch")
        self.send_batch_button.on_click(lambda _: self._safely(self.send, "batch"))
        self.clear_button = w.Button(description="Clear selection")
        self.clear_button.on_click(lambda _: self.select([]))
        self.status = w.HTML()  # errors and counts, shown in the widget
        self.grid = w.HTML(layout=w.Layout(max_height="420px", overflow="auto"))
        self.gesture_guard = ShiftLassoGuard(root_class="fclip-explorer")  # shift+drag lassos in JupyterLab too
        super().__init__([w.HBox([self.colour_menu, self.query_box, self.k]), self.scatter.show(),
                          w.HBox([self.send_button, self.send_batch_button, self.clear_button, self.status]),
                          self.grid, self.gesture_guard])
        self.add_class("fclip-explorer")
        if color_by:
            self.color_by(color_by)
        self._show_grid()

    # ------------------------------------------------------------ construction
    @staticmethod
    def _build_table(xy: np.ndarray, ids: list[str], catalog) -> pd.DataFrame:
        table = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "item_id": pd.Categorical(ids) if catalog is None else ids})
        if catalog is None:
            return table
        pos = pd.Index(catalog.ids).get_indexer(ids)
        if (pos < 0).any():
            missing = [ids[i] for i in np.flatnonzero(pos < 0)]
            raise InvalidArgumentError(f"ids not in catalog {catalog.name!r}: {_few(missing)}; "
                                       "pass the ids the map was made from")
        table["_row"] = pos
        table["title"] = [catalog.texts[r] for r in pos]
        for col in catalog.attributes:
            vals = catalog.table[col].to_numpy()[pos]
            table[col] = vals if pd.api.types.is_numeric_dtype(catalog.table[col]) else _categorical(vals)
        table[PREVIEW] = pd.Categorical([""] * len(ids))
        return table

    @classmethod
    def build(cls, model, catalog, store=None, projector=None, progress: bool = True, **kwargs) -> "Explorer":
        """Embed `catalog` (cached), project it with `projector` (default `UMAPProjector()`, cached), explore it.

        Images that cannot be embedded are not on the map; `ex.failures` lists them.
        """
        from fclip_workbench.embedding.embed import embed_images
        from fclip_workbench.analysis.projection import UMAPProjector

        res = embed_images(model, catalog, store=store, progress=progress)
        if len(res) < 3:
            raise InvalidArgumentError(f"only {len(res)} products of {catalog.name!r} could be embedded; "
                                       f"a map needs 3 or more ({len(res.failures)} failed, e.g. {res.failures[:1]})")
        space = getattr(model, "space", None)
        projector = projector if projector is not None else UMAPProjector(space=space)
        if projector.space is not None and space is not None:
            projector.check_space(space)
        xy = projector.fit_transform(res.vectors)  # (n_ok, 2)
        ex = cls(xy, res.ids, catalog=catalog, vectors=res.vectors, model=model, **kwargs)
        ex.failures = res.failures
        if res.failures:
            ex._say(f"{len(res.failures)} products could not be embedded and are not on the map (see .failures)")
        return ex

    def _colour_options(self) -> list[str]:
        cols = [c for c in self.table.columns if c not in ("x", "y", "item_id", "title", PREVIEW)]
        return [""] + cols

    # ------------------------------------------------------------ thumbnails on hover
    def _thumbnail(self, point: int) -> str:
        if self._rows is None:  # no catalog images: no thumbnails (never asked then)
            return ""
        if point not in self._thumbs:
            if len(self._thumbs) > 4096:
                self._thumbs.clear()
            path = self.catalog.image_path(int(self._rows[point]))
            self._thumbs[point] = thumbnail_data_uri(path, self.thumb_size) or ""
        return self._thumbs[point]

    def _handle_tooltip(self, event: dict) -> None:
        """Answer jupyter-scatter's tooltip request with the product's thumbnail (made now, cached)."""
        i = int(event["index"])
        props = [p for p in (event.get("properties") or []) if p in self.table.columns]
        self.map.send({"type": "tooltip", "index": i,
                       "preview": self._thumbnail(i) if event.get("preview") else None,
                       "properties": {p: _plain(self.table[p].iat[i]) for p in props}})

    # ------------------------------------------------------------ selection
    def _on_map_selection(self, change) -> None:
        sel = change["new"]
        pos = np.asarray(sel if sel is not None else [], dtype=np.int64)
        self.selected_ids = self._index[np.sort(pos)].tolist() if len(pos) else []

    @tl.observe("selected_ids")
    def _selection_changed(self, change) -> None:
        self.send_button.disabled = self.send_batch_button.disabled = not change["new"]
        self._show_grid()

    @property
    def selection(self) -> pd.DataFrame:
        """The selected products (one row each: item_id, x, y, title and the catalog's columns)."""
        pos = self._index.get_indexer(self.selected_ids)
        out = self.table.iloc[pos].drop(columns=[PREVIEW], errors="ignore")
        return out.reset_index(drop=True)

    def select(self, ids: Sequence[str]) -> "Explorer":
        """Select these products on the map (and in the grid); `[]` clears. Unknown ids are an error."""
        if isinstance(ids, str):
            ids = [ids]
        ids = [str(i) for i in ids]
        pos = self._index.get_indexer(ids)
        if (pos < 0).any():
            raise InvalidArgumentError(f"ids not on the map: {_few([ids[i] for i in np.flatnonzero(pos < 0)])}")
        pos = np.unique(pos)
        self.scatter.selection(pos)  # -> the widget's selection trait -> selected_ids
        self._on_map_selection({"new": pos})
        return self

    def _show_grid(self) -> None:
        ids = self.selected_ids
        if not ids:
            self.grid.value = f'<p style="color:#666">{html.escape(LASSO_HINT)}</p>'
            return
        shown = ids[: self.grid_limit]
        head = f"<b>{len(ids)} selected</b>" + (f" (showing the first {len(shown)})" if len(ids) > len(shown) else "")
        if self._rows is None:
            self.grid.value = f"<p>{head}</p><div class=\"{GRID_CLASS}\">{html.escape(', '.join(shown))}</div>"
            return
        pos = self._index.get_indexer(shown)
        paths = [self.catalog.image_path(int(self._rows[p])) for p in pos]
        caps = [f"{i}: {self.table['title'].iat[p]}" for i, p in zip(shown, pos)]
        self.grid.value = f"<p>{head}</p>" + image_grid_html(paths, caps, size=self.thumb_size)

    # ------------------------------------------------------------ colouring
    def color_by(self, what: str) -> "Explorer":
        """Colour by a column of `table` (catalog column, or one added by `set_predictions` / `set_labels`),
        or by "disagreement" (label vs prediction), "cluster" or "query" once those exist."""
        if what == "disagreement" and "disagreement" not in self.table:
            self._add_disagreement()
        if what not in self.table.columns or what in ("x", "y", PREVIEW):
            options = [c for c in self._colour_options() if c]
            raise InvalidArgumentError(f"Cannot colour by {what!r}; choose one of {options}"
                                       + ("" if "prediction" in options else
                                          " (set_predictions / set_labels / clusters / search add more)"))
        self.scatter.color(by=what)
        self.scatter.legend(True)
        self.colour = what
        if self.colour_menu.value != what:
            self.colour_menu.options = self._colour_options()
            self.colour_menu.value = what
        return self

    def _add_column(self, name: str, values) -> None:
        self.table[name] = values  # jupyter-scatter holds this same DataFrame: the column is visible to it
        self.colour_menu.options = self._colour_options()

    def set_predictions(self, predictions: Sequence[str], name: str = "prediction") -> "Explorer":
        """A prediction per point (zero-shot or probe), in map order; colour with `color_by(name)`."""
        preds = list(predictions)
        if len(preds) != len(self.table):
            raise InvalidArgumentError(f"{len(preds)} predictions for {len(self.table)} map points: give one per point")
        self._add_column(name, _categorical(preds))
        self.table.drop(columns=["disagreement"], errors="ignore", inplace=True)
        return self

    def set_labels(self, labels: pd.DataFrame, field: str | None = None, column: str = "label") -> "Explorer":
        """Annotator labels from a LabelStore-like DataFrame (columns item_id and label, optionally field;
        the last row per item wins); products without a label show as "(none)"."""
        if not isinstance(labels, pd.DataFrame) or not {"item_id", column} <= set(labels.columns):
            got = list(labels.columns) if isinstance(labels, pd.DataFrame) else type(labels).__name__
            raise InvalidArgumentError(f"labels must be a DataFrame with columns 'item_id' and {column!r}; got {got}")
        if field is not None:
            if "field" not in labels.columns:
                raise InvalidArgumentError(f"field={field!r} given but labels have no 'field' column")
            labels = labels[labels["field"] == field]
        last = labels.assign(item_id=labels["item_id"].astype(str)).drop_duplicates("item_id", keep="last")
        values = last.set_index("item_id")[column].reindex(self._index)
        self._add_column("label", _categorical(values.to_numpy()))
        self.table.drop(columns=["disagreement"], errors="ignore", inplace=True)
        return self

    def _add_disagreement(self) -> None:
        if "label" not in self.table or "prediction" not in self.table:
            raise InvalidArgumentError("colouring by 'disagreement' needs labels and predictions: call "
                                       "set_labels(...) and set_predictions(...) first")
        lab = self.table["label"].astype(str).to_numpy()
        pred = self.table["prediction"].astype(str).to_numpy()
        state = np.where(lab == "(none)", "unlabelled", np.where(lab == pred, "agree", "disagree"))
        self._add_column("disagreement", pd.Categorical(state, categories=["disagree", "agree", "unlabelled"]))

    # ------------------------------------------------------------ query and clusters
    def search(self, text: str, k: int | None = None) -> pd.DataFrame:
        """Select the top-k products for a text query (model.encode_texts); returns them with their scores."""
        if self.vectors is None or self.model is None:
            raise InvalidArgumentError("a text query needs vectors= and model= (Explorer.build gives both)")
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgumentError(f"the query must be a non-empty text, got {text!r}")
        k = self.k.value if k is None else k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgumentError(f"k must be a whole number >= 1, got {k!r}")
        q = self.model.encode_texts([text])[0]  # (dim,)
        scores = self.vectors @ q  # (n_items,)
        top = np.argsort(-scores, kind="stable")[: min(int(k), len(scores))]
        self.query = text
        self._add_column("query", pd.Categorical(np.where(np.isin(np.arange(len(scores)), top), "match", "other"),
                                                 categories=["match", "other"]))
        self.select(self._index[top].tolist())
        self._say(f"top {len(top)} for {text!r} selected")
        return pd.DataFrame({"item_id": self._index[top], "score": scores[top]})

    def clusters(self, labels: Sequence[str], n_clusters: int = 8, classifier=None, random_state: int = 0) -> pd.DataFrame:
        """k-means clusters of the vectors, each named by its most likely zero-shot labels; colours the map."""
        from fclip_workbench.analysis.projection import cluster_items, name_clusters
        from fclip_workbench.analysis.zeroshot import ZeroShotClassifier

        if self.vectors is None or (self.model is None and classifier is None):
            raise InvalidArgumentError("clusters need vectors= and model= (or classifier=)")
        clf = classifier or ZeroShotClassifier(self.model, list(labels))
        cid = cluster_items(self.vectors, n_clusters=n_clusters, random_state=random_state)  # (n_items,)
        table = name_clusters(cid, clf.predict_proba(self.vectors), clf.labels)
        names = dict(zip(table["cluster"], [f"{c}: {n}" for c, n in zip(table["cluster"], table["name"])]))
        self._add_column("cluster", pd.Categorical([names[c] for c in cid]))
        self.clusters_ = table
        self.color_by("cluster")
        return table

    # ------------------------------------------------------------ send to annotator
    def on_send(self, callback: Callable[[list[str]], object], mode: str = "review") -> "Explorer":
        """Call `callback(ids)` with the selected ids when "Send to annotator (review)" is pressed (`send()`),
        or, with mode="batch", "Send to annotator (batch)" (`send("batch")`).

        >>> explorer.on_send(annotator.review).on_send(annotator.batch, mode="batch")   # doctest: +SKIP
        """
        if mode not in SEND_MODES:
            raise InvalidArgumentError(f"unknown send mode {mode!r}; choose one of {', '.join(SEND_MODES)}")
        if not callable(callback):
            raise InvalidArgumentError(f"on_send needs a function of the selected ids, got {callback!r}")
        self._callbacks[mode].append(callback)
        return self

    def connect(self, annotator) -> "Explorer":
        """Wire both buttons to an annotator: review queue (`annotator.review`), batch grid (`annotator.batch`)."""
        if not (callable(getattr(annotator, "review", None)) and callable(getattr(annotator, "batch", None))):
            raise InvalidArgumentError(f"connect needs an annotator (with review and batch), got {annotator!r}")
        return self.on_send(annotator.review).on_send(annotator.batch, mode="batch")

    def send(self, mode: str = "review") -> list[str]:
        """Hand the selection to every `on_send` callback of `mode` ("review" or "batch"); returns the ids sent."""
        if mode not in SEND_MODES:
            raise InvalidArgumentError(f"unknown send mode {mode!r}; choose one of {', '.join(SEND_MODES)}")
        ids = list(self.selected_ids)
        if not ids:
            raise InvalidArgumentError("nothing selected: select products before sending them to the annotator")
        if not self._callbacks[mode]:
            how = "explorer.connect(annotator)" + (" or explorer.on_send(callback)" if mode == "review"
                                                   else " or explorer.on_send(callback, mode='batch')")
            raise InvalidArgumentError(f"no annotator connected for {mode}: call {how} first")
        for cb in self._callbacks[mode]:
            cb(ids)
        self._say(f"sent {len(ids)} products to the annotator ({mode})")
        return ids

    # ------------------------------------------------------------ audits as layers
    def _audit_rows(self, table: pd.DataFrame, ids: Sequence[str] | None) -> np.ndarray:
        """The map point of each audit row: by `item_id`, else `position` through `ids` (default: the map's ids)."""
        if "item_id" in table.columns:
            item_ids = table["item_id"].astype(str).tolist()
        else:
            if ids is None:
                if len(table) != len(self.table) or table["position"].max() >= len(self.table):
                    raise InvalidArgumentError(
                        f"this audit has positions for {len(table)} items, the map has {len(self.table)} points: "
                        "pass ids=... (the ids of the vectors the audit ran on)")
                ids = self._index
            ids = [str(i) for i in ids]
            pos = table["position"].to_numpy()
            if len(pos) and (pos.min() < 0 or pos.max() >= len(ids)):
                raise InvalidArgumentError(f"positions outside the {len(ids)} ids given: pass the audit's ids")
            item_ids = [ids[int(p)] for p in pos]
        rows = self._index.get_indexer(item_ids)
        if (rows < 0).any():
            raise InvalidArgumentError(f"audit items not on the map: {_few([item_ids[i] for i in np.flatnonzero(rows < 0)])}")
        return rows

    def show_audit(self, table: pd.DataFrame, ids: Sequence[str] | None = None, select: int = 0) -> str:
        """Add an audit as a layer and colour the map by it; returns the layer's column name.

        - `audit.find_label_issues` -> "label_issue_score" (its `score`, 0 = label fits, 1 = contradicted;
          0 for items it did not score) and "label_issue" (cleanlab's verdict: issue / ok);
        - `audit.near_duplicates` -> "duplicate_group" (the largest groups one colour each, "(none)" for
          the rest) and "duplicate_similarity" (0 outside the groups);
        - `audit.outliers` -> "outlier_score" (mean cosine distance to the nearest others).
        Rows are matched by `item_id`, else `position` (the row of the audit's input vectors; pass `ids`
        when they are not the map's points in map order). `select=n` also selects the first n rows (most
        suspicious), so the grid shows them and "Send to annotator" hands them on.

        >>> explorer.show_audit(find_label_issues(explorer.vectors, labels), select=20)   # doctest: +SKIP
        'label_issue_score'
        """
        if not isinstance(table, pd.DataFrame):
            raise InvalidArgumentError(f"show_audit needs an audit DataFrame, got {type(table).__name__}")
        if getattr(self.model, "space", None) is not None:  # an audit of another embedding space: refused
            from fclip_workbench.analysis.audit import check_space
            check_space(table, self.model.space, "audit table")
        cols = set(table.columns)
        if isinstance(select, bool) or not isinstance(select, (int, np.integer)) or select < 0:
            raise InvalidArgumentError(f"select must be a whole number >= 0, got {select!r}")
        rows = self._audit_rows(table, ids) if ({"item_id", "position"} & cols) else None
        if rows is None:
            raise InvalidArgumentError(f"an audit table needs 'item_id' or 'position'; it has {sorted(cols)}")
        n = len(self.table)
        if {"given_label", "suggested_label", "score"} <= cols:  # find_label_issues
            score = np.zeros(n)
            score[rows] = table["score"].to_numpy(dtype=float)
            self._add_column("label_issue_score", score)
            if "is_issue" in cols:
                verdict = np.full(n, "(not audited)", dtype=object)
                verdict[rows] = np.where(table["is_issue"].to_numpy(dtype=bool), "issue", "ok")
                self._add_column("label_issue", pd.Categorical(verdict, categories=["issue", "ok", "(not audited)"]))
            layer = "label_issue_score"
        elif {"group", "group_size", "max_similarity"} <= cols:  # near_duplicates
            group = np.full(n, "(none)", dtype=object)
            g = table["group"].to_numpy()
            names = np.array([f"group {k} ({s})" if k < MAX_GROUPS else "smaller group"
                              for k, s in zip(g, table["group_size"])], dtype=object)
            group[rows] = names
            cats = list(dict.fromkeys(names.tolist())) + ["(none)"]
            self._add_column("duplicate_group", pd.Categorical(group, categories=cats))
            sim = np.zeros(n)
            sim[rows] = table["max_similarity"].to_numpy(dtype=float)
            self._add_column("duplicate_similarity", sim)
            layer = "duplicate_group"
        elif {"score", "rank"} <= cols:  # outliers
            score = np.zeros(n)
            score[rows] = table["score"].to_numpy(dtype=float)
            self._add_column("outlier_score", score)
            layer = "outlier_score"
        else:
            raise InvalidArgumentError(f"not an audit table from fclip_workbench.analysis.audit (find_label_issues, "
                                       f"near_duplicates, outliers); its columns: {sorted(cols)}")
        self.color_by(layer)
        if select:
            self.select(self._index[rows[: int(select)]].tolist())
        self._say(f"audit layer {layer!r}: {len(rows)} products" + (f", the first {min(select, len(rows))} selected"
                                                                   if select else ""))
        return layer

    # ------------------------------------------------------------ messages
    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00" if error else "#333"
        self.status.value = f'<span style="color:{colour}">{html.escape(text)}</span>'

    def _safely(self, fn, *args) -> None:
        """Run a UI action; a user error is shown in the widget, not lost in a callback's log."""
        try:
            fn(*args)
        except FclipError as e:
            self._say(str(e), error=True)

    def __repr__(self) -> str:
        return f"Explorer({len(self.table)} points, {len(self.selected_ids)} selected, colour={self.colour!r})"


def _plain(v):
    """A JSON-friendly scalar for the tooltip."""
    if isinstance(v, (np.generic,)):
        return v.item()
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
