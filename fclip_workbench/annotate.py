"""AnnotationSession: the logic of labelling one field of a catalog with model suggestions (no UI).

A session holds the catalog, the field being labelled, a `LabelStore`, a `Suggester`, the catalog's
image embeddings and (optionally) the model, for text queries. It decides which product comes
next (the *queue*), writes each decision to the store before moving on, and refits the suggester
on the store's labels every `refit_every` labels, in a background thread, so the annotator never
waits for it. The widget (`widgets.annotator.Annotator`) is glue over this class; everything here
is testable without widgets.

Queue orders (`QUEUE_ORDERS`):
- "uncertainty": least confident first (1 - top suggestion probability): the labels that teach
  the suggester most;
- "query": most similar to a text query first (`model.encode_texts`);
- "cluster": the products of one KMeans cluster of the embeddings, most typical first;
- "random": a fixed random permutation (`seed`).

`review(item_ids)` queues given products in the given order instead: a label-issue list
(`audit.find_label_issues`, through `audit_item_ids`) or a selection on the map (`Explorer.on_send`).

Batches: `batch_candidates` + `confirm_batch` (a page of the products the model most confidently
puts in one label), or `selection_batch` + `apply_batch` (given products, e.g. a map selection:
one value for all, products labelled otherwise changed only when the annotator says so).

Only products without a label for the field are queued; skipped ones come back after the rest.

Example:
    >>> session = AnnotationSession(catalog, "articleType", store, suggester, embeddings,
    ...                             model=model, annotator="ana")        # doctest: +SKIP
    >>> item = session.current                                          # doctest: +SKIP
    >>> item.suggestions                                                # doctest: +SKIP
    [('Tshirts', 0.71), ('Shirts', 0.12), ('Tops', 0.05)]
    >>> session.accept(1)            # durable in the store when it returns  # doctest: +SKIP
    >>> session.correct("Kurtas"); session.skip(); session.undo()       # doctest: +SKIP
    >>> page = session.batch_candidates(label="Tshirts", n=24)          # doctest: +SKIP
    >>> session.confirm_batch([c.item_id for c in page], "Tshirts")     # doctest: +SKIP
    >>> session.progress()                                              # doctest: +SKIP
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .catalog import Catalog
from .embed import EmbeddingResult
from .errors import InvalidArgumentError, LabelValueError

log = logging.getLogger(__name__)

QUEUE_ORDERS = ("uncertainty", "query", "cluster", "random")
ACCEPTED, CORRECTED, BATCH = "suggestion-accepted", "corrected", "batch"  # LabelStore event sources
DEFAULT_REFIT_EVERY = 5  # labels between two suggester refits
DEFAULT_BATCH_SIZE = 24  # products on one batch page
DEFAULT_CLUSTERS = 8  # KMeans clusters for the "cluster" order


@dataclass
class Item:
    """One product as the annotator sees it."""

    item_id: str
    row: int  # row of the item in the session's embeddings
    title: str
    image: Path | None  # image file, None when the catalog has none
    attributes: dict[str, str]  # the catalog's other columns
    current: str | None  # the store's label for the field, None when unlabelled
    suggestions: list[tuple[str, float]]  # top suggestions, most probable first
    unsure: bool = False  # the suggester is not confident about its top suggestion


@dataclass
class Decision:
    """What a decision wrote to the store."""

    item_ids: list[str]
    field: str
    value: str | None
    source: str  # suggestion-accepted | corrected | batch | undo
    events: list[Any] = dc_field(default_factory=list)  # what the store returned
    replaced: dict[str, str] = dc_field(default_factory=dict)  # batch: item_id -> the other label it had
    unchanged: list[str] = dc_field(default_factory=list)  # batch: items that already had `value` (not written)

    @property
    def status(self) -> str:
        """The widget's line after the write: "saved: <item_id> <field> = <value>", "saved: N labels", "undone: ..."."""
        if self.source == BATCH:
            text = f"saved: {len(self.item_ids)} labels"
            if self.replaced:
                text += f" ({len(self.replaced)} changed from another label)"
            if self.unchanged:
                text += f", {len(self.unchanged)} already {self.value}"
            return text
        if self.source == "undo":
            if len(self.item_ids) > 1:
                return f"undone: a batch of {len(self.item_ids)} {self.field} labels"
            return f"undone: {' '.join(self.item_ids)} {self.field} (now {self.value if self.value else 'unlabelled'})"
        return f"saved: {self.item_ids[0]} {self.field} = {self.value}"


@dataclass
class Candidate:
    """One product of a batch page."""

    item_id: str
    row: int
    title: str
    image: Path | None
    score: float  # probability of the label, or similarity to the query (selection: of the top suggestion)
    current: str | None = None  # the store's label for the field (selection batches)
    suggestion: tuple[str, float] | None = None  # the model's top suggestion and its probability (selection batches)


def audit_item_ids(table, ids: Sequence[str] | None = None, flagged_only: bool = False,
                   limit: int | None = None) -> list[str]:
    """The item ids of an audit table (`audit.find_label_issues`, `near_duplicates`, `outliers`), in its
    order (most suspicious first): its `item_id` column, else `position` mapped through `ids` (the ids of
    the vectors the audit ran on). `flagged_only` keeps the rows with `is_issue`; `limit` the first ones.

    >>> import pandas as pd
    >>> audit_item_ids(pd.DataFrame({"position": [2, 0], "is_issue": [True, False]}), ["a", "b", "c"])
    ['c', 'a']
    """
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise InvalidArgumentError(f"give an audit DataFrame (find_label_issues, near_duplicates, outliers); "
                                   f"got {type(table).__name__}")
    if flagged_only:
        if "is_issue" not in table.columns:
            raise InvalidArgumentError(f"flagged_only needs an 'is_issue' column (find_label_issues); "
                                       f"the table has {list(table.columns)}")
        table = table[table["is_issue"].astype(bool)]
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise InvalidArgumentError(f"limit must be a whole number >= 1, got {limit!r}")
        table = table.head(int(limit))
    if "item_id" in table.columns:
        return [str(i) for i in table["item_id"]]
    if "position" not in table.columns:
        raise InvalidArgumentError(f"an audit table needs an 'item_id' or a 'position' column; "
                                   f"it has {list(table.columns)}")
    if ids is None:
        raise InvalidArgumentError("this audit table has positions, not item ids: pass ids=... "
                                   "(the ids of the vectors the audit ran on, in order)")
    ids = [str(i) for i in ids]
    pos = table["position"].to_numpy()
    bad = pos[(pos < 0) | (pos >= len(ids))] if len(pos) else pos
    if len(bad):
        raise InvalidArgumentError(f"positions {bad[:5].tolist()} are outside the {len(ids)} ids given: "
                                   "pass the ids of the vectors the audit ran on")
    return [ids[int(p)] for p in pos]


class AnnotationSession:
    """Label `field` of `catalog` with suggestions; every decision is durable before the next item.

    Parameters: `store` (a `LabelStore`), `suggester` (a `Suggester`, fitted or zero-shot),
    `embeddings` (the catalog's image embeddings: products without one are listed in
    `not_embedded`, not queued), `model` (for text queries; optional), `taxonomy` (valid values;
    default: the suggester's classes), `refit_every` labels between refits (0: never),
    `background` (refit in a thread; False refits inline, for tests and scripts).

    >>> s = AnnotationSession(cat, "colour", store, sugg, emb, annotator="ana")   # doctest: +SKIP
    >>> s.accept(1).item_ids                                                     # doctest: +SKIP
    ['t00017']
    """

    def __init__(self, catalog: Catalog, field: str, store, suggester, embeddings: EmbeddingResult, *,
                 model=None, taxonomy=None, annotator: str = "", order: str = "uncertainty",
                 refit_every: int = DEFAULT_REFIT_EVERY, n_clusters: int = DEFAULT_CLUSTERS, seed: int = 0,
                 background: bool = True) -> None:
        if not isinstance(field, str) or not field.strip():
            raise InvalidArgumentError(f"give the field to label (got {field!r})")
        if not isinstance(refit_every, int) or refit_every < 0:
            raise InvalidArgumentError(f"refit_every must be an integer >= 0 (got {refit_every!r}); 0 never refits")
        if not isinstance(n_clusters, int) or n_clusters < 1:
            raise InvalidArgumentError(f"n_clusters must be an integer >= 1 (got {n_clusters!r})")
        if order not in QUEUE_ORDERS:
            raise InvalidArgumentError(f"unknown queue order {order!r}; choose one of {', '.join(QUEUE_ORDERS)}")
        if len(embeddings.ids) == 0:
            raise InvalidArgumentError(f"no product of catalog {catalog.name} has an embedding: nothing to label "
                                       f"({len(embeddings.failures)} failed; see embeddings.failures)")
        self.catalog, self.field, self.store, self.suggester = catalog, field, store, suggester
        if taxonomy is None and hasattr(store, "taxonomy"):
            taxonomy = store.taxonomy(field)  # the field's stored taxonomy (None: free values)
        self.model, self.taxonomy, self.refit_every = model, taxonomy, refit_every
        self.annotator = annotator
        self.n_clusters, self.seed, self.background = n_clusters, seed, background
        self.ids: list[str] = list(embeddings.ids)
        self.vectors = np.asarray(embeddings.vectors, dtype=np.float32)  # (n, dim)
        self.not_embedded = list(embeddings.failures)  # products that cannot be suggested for, with reasons
        self._row = {item_id: i for i, item_id in enumerate(self.ids)}
        self._cat_row = [catalog.row_of(i) for i in self.ids]
        n = len(self.ids)
        self._labelled = np.zeros(n, dtype=bool)  # has a label for `field` in the store
        self._skipped = np.zeros(n, dtype=bool)
        self._rejected: dict[str, set[int]] = {}  # batch label -> rows unticked on one of its pages
        self._front: list[int] = []  # rows to show before the queue (an undone item)
        self._decisions: list[Decision] = []  # this session's, newest last
        self.counts = {ACCEPTED: 0, CORRECTED: 0, BATCH: 0, "skipped": 0, "undo": 0}
        self._lock = threading.RLock()
        self._executor: ThreadPoolExecutor | None = None
        self._refit_future: Future | None = None
        self._since_refit = 0
        self.n_refits = 0
        self.refit_error: str | None = None  # last refit failure, shown by the widget
        self.on_refit: list[Callable[["AnnotationSession"], None]] = []  # called after each refit (any thread)
        self._kmeans = None
        self.order, self.query, self.cluster = order, "", 0
        self._query_scores: np.ndarray | None = None  # (n,) similarity to `query`
        self._pos = 0
        self.current: Item | None = None
        self._refit()  # classes, probabilities and labelled set from the store, before the first item
        self._queue = self._make_queue()
        self._advance()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_catalog(cls, catalog: Catalog, field: str, model=None, store=None, annotator: str = "",
                     taxonomy=None, embeddings: EmbeddingResult | None = None, suggester=None,
                     progress: bool = True, **options) -> "AnnotationSession":
        """Open the store (default `paths.default_labels_path()`), the field's taxonomy (default: the
        catalog's column values), embed the catalog (cached) and build a zero-shot `Suggester`.

        >>> AnnotationSession.from_catalog(cat, "colour", model, annotator="ana")   # doctest: +SKIP
        """
        from .embed import embed_images
        from .labels import LabelStore
        from .paths import default_labels_path
        from .suggest import Suggester
        from .taxonomy import Taxonomy

        if field not in catalog.attributes and taxonomy is None:
            raise InvalidArgumentError(f"catalog {catalog.name} has no column {field!r} to take the values from; "
                                       f"its columns: {', '.join(catalog.attributes)}; or pass taxonomy=...")
        if store is None or isinstance(store, (str, Path)):
            store = LabelStore(store if store is not None else default_labels_path(), catalog=catalog)
        if taxonomy is None:
            taxonomy = store.taxonomy(field) or Taxonomy.from_catalog(catalog, field)
        taxonomy = store.set_taxonomy(field, taxonomy)  # stored: every annotator of the field sees the same values
        if embeddings is None:
            if model is None:
                raise InvalidArgumentError("give a model (or embeddings=...) to suggest labels")
            from .store import EmbeddingStore
            embeddings = embed_images(model, catalog, store=EmbeddingStore(), progress=progress)
        if suggester is None:
            suggester = Suggester(model=model, labels=list(taxonomy.values))
        return cls(catalog, field, store, suggester, embeddings, model=model, taxonomy=taxonomy,
                   annotator=annotator, **options)

    # ------------------------------------------------------------------ suggestions
    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def _fit_data(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(rows, values, labelled mask) of the store's labels for the field, among embedded items."""
        table = self.store.labels(self.field)
        rows, values = [], []
        for item_id, value in zip(table["item_id"], table["value"]):
            r = self._row.get(str(item_id))
            if r is not None and value is not None:
                rows.append(r)
                values.append(str(value))
        mask = np.zeros(len(self.ids), dtype=bool)
        mask[rows] = True
        return np.asarray(rows, dtype=int), values, mask

    def _refit(self) -> None:
        """Fit the suggester on the store's labels, recompute every probability, swap them in."""
        rows, values, labelled = self._fit_data()
        label_set = getattr(self.suggester, "labels", None)
        if label_set is None:
            label_set = getattr(self.suggester, "classes_", ())
        known = {str(v) for v in label_set}
        keep = [i for i, v in enumerate(values) if v in known]  # labels the suggester cannot learn are left out
        if len(keep) < len(values):
            log.info("refit: %d labels outside the suggester's label set not used", len(values) - len(keep))
        if keep:
            self.suggester.fit(self.vectors[rows[keep]], [values[i] for i in keep])
        try:
            proba = np.asarray(self.suggester.predict_proba(self.vectors), dtype=np.float32)  # (n, n_classes)
        except Exception as e:  # an unfitted suggester: fit it zero-shot (no labels)
            if type(e).__name__ != "NotFittedError":
                raise
            self.suggester.fit()
            proba = np.asarray(self.suggester.predict_proba(self.vectors), dtype=np.float32)
        classes = [str(c) for c in self.suggester.classes_]
        uncertainty = 1.0 - proba.max(axis=1) if proba.shape[1] else np.ones(len(self.ids), np.float32)  # (n,)
        with self._lock:
            self._proba, self._classes, self._uncertainty = proba, classes, uncertainty
            self._labelled |= labelled  # labels this session wrote meanwhile stay marked
            self.n_refits += 1
            if self.order == "uncertainty" and hasattr(self, "_queue"):
                self._queue, self._pos = self._make_queue(), 0

    def _refit_job(self) -> None:
        try:
            self._refit()
            self.refit_error = None
        except Exception as e:  # noqa: BLE001 - shown in the widget; the previous suggestions stay
            log.exception("refit failed")
            self.refit_error = f"suggestions not updated: {e}"
        for callback in list(self.on_refit):
            callback(self)

    def refit(self, wait: bool = True) -> None:
        """Refit now (inline when `wait` or not `background`, else in the background thread)."""
        self._since_refit = 0
        if wait or not self.background:
            self.wait_refit()
            self._refit_job()
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fclip-refit")
        self._refit_future = self._executor.submit(self._refit_job)

    def wait_refit(self, timeout: float | None = None) -> None:
        """Block until a background refit has finished (tests, benchmarks, shutdown)."""
        if self._refit_future is not None:
            self._refit_future.result(timeout)

    @property
    def refitting(self) -> bool:
        return self._refit_future is not None and not self._refit_future.done()

    def _count_labels(self, n: int) -> None:
        self._since_refit += n
        if self.refit_every and self._since_refit >= self.refit_every and not self.refitting:
            self.refit(wait=False)

    def close(self) -> None:
        """Wait for a running refit and stop the refit thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def suggestions(self, row: int, top: int = 3) -> list[tuple[str, float]]:
        """The `top` most probable labels of the item at `row`, with their probabilities."""
        with self._lock:
            p = self._proba[row]  # (n_classes,)
            best = np.argsort(-p, kind="stable")[:top]
            return [(self._classes[j], float(p[j])) for j in best]

    # ------------------------------------------------------------------ the queue
    def _make_queue(self) -> np.ndarray:
        """Rows in the order of `self.order` (labelled ones are passed over when read)."""
        n = len(self.ids)
        if self.order == "uncertainty":
            return np.argsort(-self._uncertainty, kind="stable")
        if self.order == "query":
            if self._query_scores is None:
                return np.arange(n)
            return np.argsort(-self._query_scores, kind="stable")
        if self.order == "cluster":
            km = self._clusters()
            members = np.flatnonzero(km.labels_ == self.cluster)
            dist = np.linalg.norm(self.vectors[members] - km.cluster_centers_[self.cluster], axis=1)  # (m,)
            return members[np.argsort(dist, kind="stable")]
        if self.order == "review":
            return self._review_rows
        return np.random.default_rng(self.seed).permutation(n)

    def review(self, item_ids: Sequence[str]) -> Item | None:
        """Queue exactly `item_ids`, in their order (e.g. the most suspicious labels first), and show the first.

        Ids without an image embedding in this session are refused, naming a few; labelled ones are passed over.

        >>> session.review(find_label_issues(vectors, labels).position.map(lambda p: ids[p]))   # doctest: +SKIP
        """
        ids = [str(i) for i in item_ids]
        row_of = {item_id: r for r, item_id in enumerate(self.ids)}
        unknown = [i for i in ids if i not in row_of]
        if not ids:
            raise InvalidArgumentError("nothing to review: give at least one item id")
        if unknown:
            raise InvalidArgumentError(f"{len(unknown)} of the {len(ids)} ids to review are not in this session "
                                       f"(not in the catalog or without an image embedding), e.g. {unknown[:3]}")
        rows = np.array(list(dict.fromkeys(row_of[i] for i in ids)), dtype=np.int64)  # (m,) first occurrence
        with self._lock:
            self._review_rows = rows
            self.order = "review"
            self._queue, self._pos = rows, 0
        self._front.clear()
        self._advance()
        return self.current

    def _clusters(self):
        if self._kmeans is None:
            from sklearn.cluster import KMeans
            k = min(self.n_clusters, len(self.ids))
            self._kmeans = KMeans(n_clusters=k, n_init=1, random_state=self.seed).fit(self.vectors)
        return self._kmeans

    def clusters(self) -> list[tuple[int, int, str]]:
        """(cluster, size, most suggested label) for the cluster picker (fits KMeans on first use)."""
        km = self._clusters()
        out = []
        with self._lock:
            top = self._proba.argmax(axis=1) if self._proba.shape[1] else np.zeros(len(self.ids), int)
            for c in range(km.n_clusters):
                members = km.labels_ == c
                common = np.bincount(top[members]).argmax() if members.any() else 0
                name = self._classes[common] if self._classes else ""
                out.append((c, int(members.sum()), name))
        return out

    def set_order(self, order: str, query: str | None = None, cluster: int | None = None) -> Item | None:
        """Reorder the queue and show its first item: "uncertainty", "query" (give `query`), "cluster"
        (give `cluster`), "random". The current item, not decided, goes back to the queue."""
        if order not in QUEUE_ORDERS:
            raise InvalidArgumentError(f"unknown queue order {order!r}; choose one of {', '.join(QUEUE_ORDERS)}")
        if order == "query":
            self._query_scores = self.similarity(query)
            self.query = query
        if order == "cluster":
            k = min(self.n_clusters, len(self.ids))
            if not isinstance(cluster, (int, np.integer)) or not 0 <= cluster < k:
                raise InvalidArgumentError(f"cluster must be 0..{k - 1} (got {cluster!r})")
            self.cluster = int(cluster)
        with self._lock:
            self.order = order
            self._queue, self._pos = self._make_queue(), 0
        self._front.clear()
        self._advance()
        return self.current

    def similarity(self, query: str | None) -> np.ndarray:
        """Cosine similarity of every embedded product to a text query. (n,)"""
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgumentError(f"type a text query to order by (got {query!r})")
        if self.model is None:
            raise InvalidArgumentError("ordering by a text query needs the model: give model=... to the session")
        q = np.asarray(self.model.encode_texts([query.strip()]), dtype=np.float32)[0]  # (dim,)
        return self.vectors @ q

    def queue(self, limit: int | None = None) -> list[str]:
        """The ids still to show, in order (skipped ones last), at most `limit`."""
        with self._lock:
            order = self._queue
            todo = order[~(self._labelled[order] | self._skipped[order])]
            later = order[self._skipped[order] & ~self._labelled[order]]
        rows = np.concatenate([todo, later])[:limit]
        return [self.ids[r] for r in rows]

    def queue_table(self, limit: int = 10):
        """The next `limit` products of the queue with the model's best guess: DataFrame[item_id, title,
        suggestion, probability, uncertainty].

        >>> session.queue_table(3)          # doctest: +SKIP
          item_id            title suggestion  probability  uncertainty
        0   t0042  red striped bag      shirt         0.31         0.69
        """
        import pandas as pd

        rows = [self._row[i] for i in self.queue(limit)]
        best = [self.suggestions(r, top=1) for r in rows]
        with self._lock:
            unc = [float(self._uncertainty[r]) for r in rows]
        return pd.DataFrame({"item_id": [self.ids[r] for r in rows],
                             "title": [self.catalog.texts[self._cat_row[r]] for r in rows],
                             "suggestion": [b[0][0] if b else "" for b in best],
                             "probability": [round(b[0][1], 3) if b else float("nan") for b in best],
                             "uncertainty": [round(u, 3) for u in unc]})

    def _next_row(self) -> int | None:
        while self._front:
            r = self._front.pop(0)
            if not self._labelled[r]:
                return r
        with self._lock:
            rest = self._queue[self._pos:]
            free = np.flatnonzero(~(self._labelled[rest] | self._skipped[rest]))
            if len(free):
                self._pos += int(free[0])
                return int(rest[free[0]])
            if self._skipped.any():  # everything else is done: the skipped ones come back
                self._skipped[:] = False
                self._pos = 0
                return self._next_row()
        return None

    def item(self, row: int) -> Item:
        """The product at `row` with its current label (read from the store) and suggestions."""
        item_id = self.ids[row]
        crow = self._cat_row[row]
        table = self.catalog.table
        attrs = {c: str(table.at[crow, c]) for c in self.catalog.attributes}
        image = self.catalog.image_path(crow) if table.at[crow, "image"] else None
        sugg = self.suggestions(row)
        # from the probabilities already computed: the suggester itself may be refitting in another thread
        unsure = bool(sugg) and sugg[0][1] < getattr(self.suggester, "unsure_below", 0.5)
        return Item(item_id, row, self.catalog.texts[crow], image, attrs, self.store.get(item_id, self.field),
                    sugg, unsure)

    def _advance(self) -> Item | None:
        row = self._next_row()
        self.current = None if row is None else self.item(row)
        return self.current

    # ------------------------------------------------------------------ decisions
    def _check_annotator(self) -> str:
        name = self.annotator.strip() if isinstance(self.annotator, str) else ""
        if not name:
            raise InvalidArgumentError("type your name in the annotator box before labelling")
        return name

    def check_value(self, value: object) -> str:
        """`value` in the taxonomy's spelling (case-insensitive match); else `LabelValueError` listing the
        valid values (without a taxonomy: the suggester's classes)."""
        text = value.strip() if isinstance(value, str) else ""
        if not text:
            raise LabelValueError(f"type a label for {self.field} (got {value!r})")
        if self.taxonomy is not None:
            canonical = self.taxonomy.canonical(text)
            valid = self.taxonomy.values
        else:
            canonical = next((c for c in self._classes if c.casefold() == text.casefold()), None)
            valid = self._classes
        if canonical is not None:
            return canonical
        shown = ", ".join(valid[:30]) + (f" ... and {len(valid) - 30} more" if len(valid) > 30 else "")
        raise LabelValueError(f"{text!r} is not a valid {self.field}; valid values: {shown}; "
                              f"or add it to the taxonomy")

    def add_to_taxonomy(self, value: str) -> str:
        """Add `value` to the field's taxonomy (an explicit choice of the annotator); return its spelling."""
        text = value.strip() if isinstance(value, str) else ""
        if not text:
            raise InvalidArgumentError(f"cannot add an empty value to the {self.field} taxonomy (got {value!r})")
        if self.taxonomy is None:
            raise InvalidArgumentError("this session has no taxonomy to add to: give taxonomy=...")
        value = self.taxonomy.add(text)
        if hasattr(self.store, "set_taxonomy"):  # durable, and seen by the other annotators
            self.store.set_taxonomy(self.field, type(self.taxonomy)(self.field, [value], source="typed"),
                                    annotator=self.annotator.strip() or None)
        labels = getattr(self.suggester, "labels", None)
        if isinstance(labels, list) and value not in labels:
            self.suggester.labels = [*labels, value]  # suggested from the next refit on
        return value

    def _write(self, value: str, source: str) -> Decision:
        item = self.current
        if item is None:
            raise InvalidArgumentError("nothing left to label in this queue: change the queue order")
        event = self.store.set(item.item_id, self.field, value, annotator=self._check_annotator(), source=source)
        # durable: only now does the session move on
        decision = Decision([item.item_id], self.field, value, source, [event])
        with self._lock:  # a background refit swaps this mask's contents under the same lock
            self._labelled[item.row] = True
        self._decisions.append(decision)
        self.counts[source] += 1
        self._count_labels(1)
        self._advance()
        return decision

    def accept(self, k: int = 1) -> Decision:
        """Save the current item's k-th suggestion (1-based) as its label (source suggestion-accepted)."""
        if self.current is None:
            raise InvalidArgumentError("nothing left to label in this queue: change the queue order")
        options = self.current.suggestions
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= len(options):
            raise InvalidArgumentError(f"suggestion number must be 1..{len(options)} (got {k!r})")
        return self._write(options[k - 1][0], ACCEPTED)

    def correct(self, value: str) -> Decision:
        """Save a typed label for the current item (source corrected); refused outside the taxonomy."""
        value = self.check_value(value)
        return self._write(value, CORRECTED)

    def skip(self) -> Item | None:
        """Leave the current item for later (it comes back after the rest); show the next."""
        if self.current is None:
            return None
        self._skipped[self.current.row] = True
        self.counts["skipped"] += 1
        return self._advance()

    def undo(self) -> Decision | None:
        """Undo this annotator's last decision in the store; its item is shown again. None if nothing to undo."""
        name = self._check_annotator()
        event = self.store.undo(name, field=self.field)
        if event is None:
            return None
        item_id = getattr(event, "item_id", None)
        if item_id is None and self._decisions:
            item_id = self._decisions[-1].item_ids[0]
        value = getattr(event, "new_value", getattr(event, "value", None))
        undone = [item_id] if item_id else []
        if getattr(event, "batch_id", None) is not None:  # a whole batch was undone: name all of its products
            batch = next((d for d in reversed(self._decisions) if d.source == BATCH and item_id in d.item_ids), None)
            undone = list(batch.item_ids) if batch is not None else undone
        decision = Decision(undone, self.field, value, "undo", [event])
        self.counts["undo"] += 1
        if getattr(event, "batch_id", None) is not None:  # a whole batch was undone: re-read the labelled set
            with self._lock:
                self._labelled[:] = self._fit_data()[2]
        if item_id in self._row:
            r = self._row[item_id]
            self._labelled[r] = self.store.get(item_id, self.field) is not None
            self._skipped[r] = False
            if self.current is not None:
                self._front.insert(0, self.current.row)
            self._front.insert(0, r)
            self._advance()
        self._decisions.append(decision)
        return decision

    # ------------------------------------------------------------------ batch mode
    def batch_candidates(self, label: str | None = None, query: str | None = None,
                         n: int = DEFAULT_BATCH_SIZE) -> list[Candidate]:
        """The `n` unlabelled products the suggester most confidently puts in `label` (or, with
        `query`, most similar to it), leaving out those unticked on an earlier page."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidArgumentError(f"batch size must be an integer >= 1 (got {n!r})")
        if (label is None) == (query is None):
            raise InvalidArgumentError("give either a label or a text query for the batch")
        if label is not None:
            if label not in self._classes:
                raise LabelValueError(f"{label!r} is not a label the suggester knows; "
                                         f"known: {', '.join(self._classes[:30])}")
            with self._lock:
                scores = self._proba[:, self._classes.index(label)].copy()  # (n_items,)
            key = f"label:{label}"
        else:
            scores = self.similarity(query)
            key = f"query:{query.strip()}"
        hidden = self._labelled.copy()
        hidden[list(self._rejected.get(key, ()))] = True
        scores[hidden] = -np.inf
        k = min(int(n), int((~hidden).sum()))
        if k == 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        out = []
        for r in best:
            crow = self._cat_row[r]
            image = self.catalog.image_path(crow) if self.catalog.table.at[crow, "image"] else None
            out.append(Candidate(self.ids[r], int(r), self.catalog.texts[crow], image, float(scores[r])))
        self._last_page = (key, [c.row for c in out])
        return out

    def confirm_batch(self, item_ids: Sequence[str], value: str) -> Decision:
        """Save `value` for `item_ids` in ONE `set_many` (source batch). The products of the last page
        that are not in `item_ids` are not offered again for this label."""
        value = self.check_value(value)
        name = self._check_annotator()
        unknown = [i for i in item_ids if i not in self._row]
        if unknown:
            raise InvalidArgumentError(f"unknown item ids in the batch: {unknown[:10]}")
        ids = list(dict.fromkeys(item_ids))
        events = self.store.set_many([(i, value) for i in ids], self.field, annotator=name, source=BATCH) if ids else []
        rows = [self._row[i] for i in ids]
        with self._lock:
            self._labelled[rows] = True
        key, page = getattr(self, "_last_page", (None, []))
        if key is not None:
            self._rejected.setdefault(key, set()).update(r for r in page if r not in set(rows))
        decision = Decision(ids, self.field, value, BATCH, list(events or []))
        self._decisions.append(decision)
        self.counts[BATCH] += len(ids)
        self._count_labels(len(ids))
        if self.current is not None and self._labelled[self.current.row]:
            self._advance()
        return decision

    # ------------------------------------------------------------------ selection batches (a map selection)
    def check_ids(self, item_ids: Sequence[str], what: str = "label") -> list[str]:
        """`item_ids` as strings, first occurrences kept; ids not in this session are refused, naming a few."""
        if isinstance(item_ids, str):
            item_ids = [item_ids]
        ids = list(dict.fromkeys(str(i) for i in item_ids))
        if not ids:
            raise InvalidArgumentError(f"nothing to {what}: give at least one item id")
        unknown = [i for i in ids if i not in self._row]
        if unknown:
            raise InvalidArgumentError(f"{len(unknown)} of the {len(ids)} ids to {what} are not in this session "
                                       f"(not in the catalog or without an image embedding), e.g. {unknown[:3]}")
        return ids

    def current_labels(self, item_ids: Sequence[str]) -> dict[str, str | None]:
        """{item_id: the store's current label for the field, or None}, read now."""
        ids = [str(i) for i in item_ids]
        if len(ids) <= 200:
            return {i: self.store.get(i, self.field) for i in ids}
        table = self.store.labels(self.field)
        known = dict(zip(table["item_id"].astype(str), table["value"]))
        return {i: known.get(i) for i in ids}

    def selection_batch(self, item_ids: Sequence[str]) -> list[Candidate]:
        """The given products (e.g. a selection on the map), in their order, each with its current label
        and the model's top suggestion: what the batch grid shows before one value is applied to them.

        >>> [(c.item_id, c.current, c.suggestion) for c in session.selection_batch(["p1", "p7"])]  # doctest: +SKIP
        [('p1', None, ('red', 0.91)), ('p7', 'blue', ('green', 0.55))]
        """
        ids = self.check_ids(item_ids, "show in a batch")
        current = self.current_labels(ids)
        out = []
        for item_id in ids:
            r = self._row[item_id]
            crow = self._cat_row[r]
            image = self.catalog.image_path(crow) if self.catalog.table.at[crow, "image"] else None
            best = self.suggestions(r, top=1)
            out.append(Candidate(item_id, r, self.catalog.texts[crow], image, best[0][1] if best else float("nan"),
                                 current=current[item_id], suggestion=best[0] if best else None))
        return out

    def apply_batch(self, item_ids: Sequence[str], value: str, replace: Sequence[str] | bool = (),
                    expected: dict[str, str | None] | None = None) -> Decision:
        """Save `value` for every product of `item_ids` in ONE `set_many` (source batch, undone as a whole).

        Existing labels are never lost silently: a product that already has `value` is left as it is
        (`decision.unchanged`); one labelled otherwise is changed only if listed in `replace` (or
        `replace=True`), else `LabelValueError` names them and nothing is written. `expected`
        ({item_id: label the annotator saw}) refuses the batch, writing nothing, when a label changed
        since it was shown (another annotator).

        >>> session.apply_batch(["p1", "p7"], "red", replace=["p7"]).status   # doctest: +SKIP
        'saved: 2 labels (1 changed from another label)'
        """
        value = self.check_value(value)
        name = self._check_annotator()
        ids = self.check_ids(item_ids, "label in a batch")
        current = self.current_labels(ids)
        if expected is not None:
            moved = [i for i in ids if i in expected and current[i] != expected[i]]
            if moved:
                shown = ", ".join(f"{i} ({expected[i] or 'unlabelled'} -> {current[i] or 'unlabelled'})"
                                  for i in moved[:5])
                raise LabelValueError(f"{len(moved)} labels changed since the grid was shown: {shown}; "
                                      "nothing saved: check the refreshed grid and apply again")
        allowed = set(ids) if replace is True else {str(i) for i in (replace or ())}
        conflicts = [i for i in ids if current[i] is not None and current[i] != value]
        refused = [i for i in conflicts if i not in allowed]
        if refused:
            named = ", ".join(f"{i} ({current[i]})" for i in refused[:5])
            raise LabelValueError(f"{len(refused)} of the {len(ids)} products already have another {self.field}: "
                                  f"{named}{' ...' if len(refused) > 5 else ''}; nothing saved: exclude them or "
                                  f"confirm changing their label to {value!r}")
        unchanged = [i for i in ids if current[i] == value]
        write = [i for i in ids if current[i] != value]
        events = self.store.set_many([(i, value) for i in write], self.field, annotator=name,
                                     source=BATCH) if write else []
        rows = [self._row[i] for i in ids]
        with self._lock:
            self._labelled[rows] = True
        decision = Decision(write, self.field, value, BATCH, list(events or []),
                            replaced={i: current[i] for i in conflicts}, unchanged=unchanged)
        if write:
            self._decisions.append(decision)
            self.counts[BATCH] += len(write)
            self._count_labels(len(write))
        if self.current is not None and self._labelled[self.current.row]:
            self._advance()
        return decision

    # ------------------------------------------------------------------ progress
    def progress(self) -> dict[str, float | int]:
        """Labelled / total embedded products, this session's decisions and its acceptance rate
        (accepted suggestions / (accepted + corrected))."""
        accepted, corrected = self.counts[ACCEPTED], self.counts[CORRECTED]
        judged = accepted + corrected
        return {"labelled": int(self._labelled.sum()), "total": len(self.ids), "not_embedded": len(self.not_embedded),
                "accepted": accepted, "corrected": corrected, "batch": self.counts[BATCH],
                "skipped": self.counts["skipped"], "undone": self.counts["undo"],
                "acceptance_rate": accepted / judged if judged else float("nan"), "refits": self.n_refits}

    def __repr__(self) -> str:
        p = self.progress()
        return (f"AnnotationSession({self.catalog.name!r}, field={self.field!r}, {p['labelled']}/{p['total']} "
                f"labelled, order={self.order!r})")


__all__ = ["AnnotationSession", "Item", "Candidate", "Decision", "QUEUE_ORDERS", "audit_item_ids"]
