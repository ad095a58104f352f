"""What an annotation session shows and returns: items, batch candidates, decisions, conflicts.

Shared by the session's parts (`annotate.py` and the `annotate_*.py` modules); import them from
`fclip_workbench.labelling.annotate`.

Example:
    >>> Decision(["p1"], "colour", "red", ACCEPTED).status
    'saved: p1 colour = red'
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fclip_workbench.errors import ConflictError, InvalidArgumentError, LabelValueError
from fclip_workbench.labelling.batch_error import BatchError

QUEUE_ORDERS = ("uncertainty", "diversity", "activelab", "query", "cluster", "random",
                "adjudication")  # diversity, activelab: queue_orders.py; adjudication: annotate_team.py
ACTIVELAB = "activelab"  # shows labelled products too (re-label candidates), with their label
REBUILT_ON_REFIT = ("uncertainty", "diversity", ACTIVELAB)  # queues made from the suggestions: rebuilt at each refit
ACCEPTED, CORRECTED, BATCH = "suggestion-accepted", "corrected", "batch"  # LabelStore event sources
DEFAULT_REFIT_EVERY = 5  # labels between two suggester refits
DEFAULT_BATCH_SIZE = 24  # products on one batch page
DEFAULT_CLUSTERS = 8  # KMeans clusters for the "cluster" order


class SessionConflictError(ConflictError, LabelValueError):
    """A decision refused because a label changed after the session showed it (another annotator, another
    tab): nothing was written, the session shows the label as it is now. Caught as `ConflictError` (a label
    store conflict) or as `LabelValueError` (the widget reloads what it shows)."""


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
    event_id: int | None = None  # the store's last event on (item, field) when shown: decisions are conditional on it
    independent: bool = False  # an overlap product: the decision is an independent answer (annotate_team.py)
    answers: dict[str, str] | None = None  # order "adjudication": {annotator: answer} of the two who disagree


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
    note: str = ""  # said after the status: "adjudicated", "your independent answer; ..."
    kept: bool = False  # not in the store yet (unreachable): kept by the session, saved when it is back
    # model batch: how many of the written labels the suggester expects wrong (None: it gives `value` no probability)
    batch_error: BatchError | None = None

    @property
    def report(self) -> str:
        """`status`, then the batch's expected error when known: "saved: 23 labels · expected wrong: 1.3 of 23
        (90 % interval 0–3)"."""
        return self.status + (f" · {self.batch_error}" if self.batch_error is not None else "")

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
        said = "not saved yet" if self.kept else "saved"
        return f"{said}: {self.item_ids[0]} {self.field} = {self.value}" + (f" ({self.note})" if self.note else "")


@dataclass
class Candidate:
    """One product of a batch page."""

    item_id: str
    row: int
    title: str
    image: Path | None
    score: float  # probability of the label, or similarity to the query (selection: of the top suggestion)
    current: str | None = None  # the store's label for the field when the page was drawn
    suggestion: tuple[str, float] | None = None  # the model's top suggestion and its probability (selection batches)
    event_id: int | None = None  # the store's last event on (item, field) when the page was drawn


@dataclass(frozen=True, eq=False)
class SuggestionView:
    """The session's suggestions from ONE suggester state: probabilities, their classes, uncertainty.

    Swapped as a whole after each refit, so a reader never pairs one refit's classes with another's columns.
    """

    proba: np.ndarray  # (n_items, n_classes)
    classes: tuple[str, ...]  # (n_classes,)
    uncertainty: np.ndarray  # (n_items,) 1 - top probability
    unsure_below: float = 0.5

    def top(self, row: int, k: int = 3) -> list[tuple[str, float]]:
        p = self.proba[row]  # (n_classes,)
        return [(self.classes[j], float(p[j])) for j in np.argsort(-p, kind="stable")[:k]]


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
