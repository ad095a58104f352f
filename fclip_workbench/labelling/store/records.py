"""What the label store hands back: events, import reports, statistics, and the `ANY_EVENT` sentinel.

Example:
    >>> from fclip_workbench.labelling.store.records import RowProblem
    >>> str(RowProblem(3, "p1", "colour", "mauve", "not in the taxonomy"))
    "row 3 (item 'p1', colour='mauve'): not in the taxonomy"
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from datetime import datetime
from pathlib import Path

import pandas as pd

SOURCES = ("suggestion-accepted", "corrected", "batch", "import", "undo")  # what `set` / `set_many` / `undo` write
# team labelling (`store/overlap.py`): an independent answer on an overlap item (the label stays unset), and the
# decisions that settle one: two answers that agree, or an adjudicator's choice
ANSWER_SOURCES = ("answer-accepted", "answer-corrected")
SETTLED_SOURCES = ("agreed", "adjudicated")
ALL_SOURCES = SOURCES + ANSWER_SOURCES + SETTLED_SOURCES
# what an annotator decides (acceptance rate): answers count, "agreed" repeats an answer so it does not
DECISION_SOURCES = ("suggestion-accepted", "corrected", "batch", "answer-accepted", "answer-corrected")
ACCEPTED_SOURCES = ("suggestion-accepted", "answer-accepted")
GROUP_SOURCES = ("batch", "import")  # events sharing a batch_id with these sources are undone together
EVENT_COLUMNS = ["id", "time", "annotator", "item_id", "field", "old_value", "new_value", "source", "batch_id",
                 "undoes"]
LABEL_COLUMNS = ["item_id", "value", "annotator", "time"]
SHOW_VALUES = 20  # valid values listed in a refusal, then "... and N more"


class _AnyEvent:
    """The type of `ANY_EVENT`: a write that does not depend on what was shown."""

    def __repr__(self) -> str:
        return "ANY_EVENT"


ANY_EVENT = _AnyEvent()  # `set(expect_event=ANY_EVENT)`: unconditional (the default)


@dataclass(frozen=True)
class LabelEvent:
    """One decision in the log (a row of `label_events`)."""

    id: int
    time: datetime  # UTC
    annotator: str
    item_id: str
    field: str
    old_value: str | None
    new_value: str | None
    source: str
    batch_id: str | None = None
    undoes: int | None = None


@dataclass(frozen=True)
class RowProblem:
    """Why one row of an import file was not applied (`row`: 1-based data row, header excluded)."""

    row: int
    item_id: str
    field: str
    value: str
    reason: str

    def __str__(self) -> str:
        value = self.value if len(self.value) <= 60 else self.value[:60] + "..."
        return f"row {self.row} (item {self.item_id!r}, {self.field or '?'}={value!r}): {self.reason}"


@dataclass
class ImportReport:
    """What `LabelStore.import_` read, refused and applied."""

    path: Path
    rows: int  # data rows read
    applied: list[LabelEvent] = dc_field(default_factory=list)
    problems: list[RowProblem] = dc_field(default_factory=list)
    unchanged: int = 0  # good rows whose value was already the current one
    confirmed: list[LabelEvent] = dc_field(default_factory=list)  # unchanged rows another annotator had set: a
    # confirmation event (old value == new value) is written, so that annotator's undo no longer erases the label
    duplicates: int = 0  # rows repeating an earlier row exactly (applied once)
    partial: bool = False

    @property
    def ok(self) -> bool:
        """True when every row was good."""
        return not self.problems

    def problem_table(self) -> pd.DataFrame:
        return pd.DataFrame([vars(p) for p in self.problems], columns=["row", "item_id", "field", "value", "reason"])

    def __str__(self) -> str:
        head = (f"{self.path.name}: {self.rows} rows, {len(self.applied)} labels applied, "
                f"{self.unchanged} unchanged ({len(self.confirmed)} confirmed), {len(self.problems)} bad rows")
        if self.problems and not self.applied and not self.partial:
            head += " (nothing applied: fix them or import with partial=True)"
        lines = [head] + [f"  {p}" for p in self.problems[:SHOW_VALUES]]
        if len(self.problems) > SHOW_VALUES:
            lines.append(f"  ... and {len(self.problems) - SHOW_VALUES} more")
        return "\n".join(lines)


@dataclass
class LabelStats:
    """Counts of the log. `acceptance_rate`: suggestion-accepted / all decisions (accepted + corrected + batch),
    undone decisions excluded; None before any decision."""

    counts: pd.DataFrame  # annotator, source, events
    decisions: int
    accepted: int
    undone: int
    labelled: int  # items with a current label
    acceptance_rate: float | None

    def __str__(self) -> str:
        rate = "n/a" if self.acceptance_rate is None else f"{self.acceptance_rate:.1%}"
        return (f"{self.labelled} labelled items, {self.decisions} decisions ({self.accepted} accepted suggestions, "
                f"acceptance {rate}), {self.undone} undone")
