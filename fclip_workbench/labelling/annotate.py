"""AnnotationSession: the logic of labelling one field of a catalog with model suggestions (no UI).

A session holds the catalog, the field being labelled, a `LabelStore`, a `Suggester`, the catalog's
image embeddings and (optionally) the model, for text queries. It decides which product comes
next (the *queue*), writes each decision to the store before moving on, and refits the suggester
on the store's labels every `refit_every` labels, in a background thread, so the annotator never
waits for it. The widget (`widgets.annotator.Annotator`) is glue over this class; everything here
is testable without widgets.

The class is assembled from one part per responsibility, each in its own module:
- `annotate_queue.QueueMixin`: queue orders (`QUEUE_ORDERS`: "uncertainty", least confident first;
  "diversity", k-center over the most uncertain; "activelab", new products or re-labels of doubtful labels
  (queue_orders.py); "query", most similar to a text query; "cluster", one KMeans cluster, most typical
  first; "random", seeded), `review(item_ids)` (a label-issue list through `audit_item_ids`, or a map selection), and
  what was shown of each item (the store's last event on it);
- `annotate_decide.DecisionsMixin`: accept / correct / skip / undo, the value and name rules;
- `annotate_batch.BatchMixin`: the model batch (`batch_candidates` + `confirm_batch`) and the
  selection batch (`selection_batch` + `apply_batch`);
- `annotate_suggestions.SuggestionsMixin`: refits and the suggestions shown;
- `annotate_team.TeamMixin`: overlap products answered independently, and the "adjudication" order;
- `annotate_items`: what they show and return (`Item`, `Candidate`, `Decision`, `SessionConflictError`).

Every write is compare-and-set on what the session showed: the last event id of each item it
showed or put on a page goes to the store (`expect_event(s)`); when anyone else's event came since,
nothing is written and `SessionConflictError` names who changed what. Undo is refused once anyone
else's event touched the item since.

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
from pathlib import Path
from typing import Callable

import numpy as np

from fclip_workbench.labelling.annotate_batch import BatchMixin
from fclip_workbench.labelling.annotate_decide import DecisionsMixin
from fclip_workbench.labelling.annotate_items import (ACCEPTED, BATCH, CORRECTED, DEFAULT_BATCH_SIZE, DEFAULT_CLUSTERS, DEFAULT_REFIT_EVERY,
                             QUEUE_ORDERS, Candidate, Decision, Item, SessionConflictError, SuggestionView,
                             audit_item_ids)
from fclip_workbench.labelling.annotate_queue import QueueMixin
from fclip_workbench.labelling.annotate_suggestions import SuggestionsMixin
from fclip_workbench.labelling.annotate_team import TeamMixin
from fclip_workbench.labelling.annotate_unsaved import UnsavedMixin
from fclip_workbench.data.catalog import Catalog
from fclip_workbench.embedding.embed import EmbeddingResult
from fclip_workbench.errors import InvalidArgumentError

log = logging.getLogger(__name__)


def catalog_rows(catalog: Catalog, item_ids: list[str]) -> list[int]:
    """The catalog row of each id (the first, as `Catalog.row_of`), from one read of the id column: asking
    `row_of` once per id read the whole column each time (78 s for the 39,609 KAGL products)."""
    first: dict[str, int] = {}
    for r, i in enumerate(catalog.table["item_id"].to_numpy()):
        first.setdefault(i, r)
    missing = [i for i in item_ids if str(i) not in first]
    if missing:
        raise KeyError(f"No item with id {missing[0]!r} in catalog {catalog.name!r}")
    return [first[str(i)] for i in item_ids]


class AnnotationSession(QueueMixin, DecisionsMixin, BatchMixin, SuggestionsMixin, TeamMixin, UnsavedMixin):
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
        if isinstance(refit_every, bool) or not isinstance(refit_every, int) or refit_every < 0:
            raise InvalidArgumentError(f"refit_every must be an integer >= 0 (got {refit_every!r}); 0 never refits")
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
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
        # the embedding space of the vectors, when known: refits stop once the model moved away from it
        self.space = getattr(embeddings, "space", None) or getattr(model, "space", None)
        self.not_embedded = list(embeddings.failures)  # products that cannot be suggested for, with reasons
        self._row = {item_id: i for i, item_id in enumerate(self.ids)}
        self._cat_row = catalog_rows(catalog, self.ids)
        n = len(self.ids)
        self._labelled = np.zeros(n, dtype=bool)  # has a label for `field` in the store
        self._skipped = np.zeros(n, dtype=bool)
        self._reviewed = np.zeros(n, dtype=bool)  # decided in the current review (order "review")
        self._relabel = np.zeros(n, dtype=bool)  # labelled products the "activelab" queue shows again
        self._relabelled = np.zeros(n, dtype=bool)  # decided while labelled (re-labels), since "activelab" was set
        self._calibration: np.ndarray | None = None  # (n,) the calibration items (uncertainty queue, refits)
        # what each batch view showed: {view: {item_id: the store's last event on it then}} ("page": the model
        # batch's pages, "grid": the selection grids); the current item carries its own (`Item.event_id`)
        self._shown: dict[str, dict[str, int | None]] = {"page": {}, "grid": {}}
        self._rejected: dict[str, set[int]] = {}  # batch label -> rows unticked on one of its pages
        self._front: list[int] = []  # rows to show before the queue (an undone item)
        self._decisions: list[Decision] = []  # this session's, newest last
        # the log's newest event when the session opened: with no decision of its own, undo reaches only
        # decisions made before (never those of the same annotator in another tab since)
        self._opened_at: int | None = store.last_event_id() if hasattr(store, "last_event_id") else None
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
        self._overlap: np.ndarray | None = None  # (n,) overlap products of the field (annotate_team.py)
        self._team_closed = np.zeros(n, dtype=bool)  # overlap products answered by me or twice
        self.overlap_share = 0.0
        self._view = SuggestionView(np.zeros((n, 0), np.float32), (), np.ones(n, np.float32))
        self._open()  # classes, labelled set and the first products' probabilities from the store; the rest after
        self._advance()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_catalog(cls, catalog: Catalog, field: str, model=None, store=None, annotator: str = "",
                     taxonomy=None, embeddings: EmbeddingResult | None = None, suggester=None,
                     progress: bool = True, embedding_store=None, **options) -> "AnnotationSession":
        """Open the store (default `paths.default_labels_path()`), the field's taxonomy (default: the
        catalog's column values), embed the catalog (cached in `embedding_store`, an `EmbeddingStore` or its
        path; default the workbench's) and build a zero-shot `Suggester` whose label prompts' vectors are
        cached there too.

        >>> AnnotationSession.from_catalog(cat, "colour", model, annotator="ana")   # doctest: +SKIP
        """
        from fclip_workbench.embedding.embed import embed_images
        from fclip_workbench.labelling.labels import LabelStore
        from fclip_workbench.paths import default_labels_path, default_store_path
        from fclip_workbench.labelling.suggest import Suggester
        from fclip_workbench.labelling.taxonomy import Taxonomy

        if field not in catalog.attributes and taxonomy is None:
            raise InvalidArgumentError(f"catalog {catalog.name} has no column {field!r} to take the values from; "
                                       f"its columns: {', '.join(catalog.attributes)}; or pass taxonomy=...")
        if store is None or isinstance(store, (str, Path)):
            store = LabelStore(store if store is not None else default_labels_path(), catalog=catalog)
        if taxonomy is None:
            taxonomy = store.taxonomy(field) or Taxonomy.from_catalog(catalog, field)
        taxonomy = store.set_taxonomy(field, taxonomy)  # stored: every annotator of the field sees the same values
        from fclip_workbench.embedding.store import EmbeddingStore

        if embeddings is None:
            if model is None:
                raise InvalidArgumentError("give a model (or embeddings=...) to suggest labels")
            if not isinstance(embedding_store, EmbeddingStore):
                embedding_store = EmbeddingStore(embedding_store)
            embeddings = embed_images(model, catalog, store=embedding_store, progress=progress)
        if suggester is None:
            cache = embedding_store.path if isinstance(embedding_store, EmbeddingStore) else embedding_store
            suggester = Suggester(model=model, labels=list(taxonomy.values),
                                  text_cache=cache if cache is not None else default_store_path())
        return cls(catalog, field, store, suggester, embeddings, model=model, taxonomy=taxonomy,
                   annotator=annotator, **options)

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



__all__ = ["AnnotationSession", "Item", "Candidate", "Decision", "SessionConflictError", "QUEUE_ORDERS",
           "ACCEPTED", "CORRECTED", "BATCH", "DEFAULT_BATCH_SIZE", "DEFAULT_CLUSTERS", "DEFAULT_REFIT_EVERY",
           "audit_item_ids"]
