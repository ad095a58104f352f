"""The one canonical form of everything the label store takes or looks up by (write AND read paths).

Every public method passes its item ids, field names, values, annotator names and batch ids through
these, so " colour" and "colour", "Cafe\\u0301" and "Café" are the same field or value everywhere (get,
labels, history, stats, export, import, taxonomy), and invisible or control characters (NUL included,
which PostgreSQL cannot store) are a one-line error on every backend. The rules themselves live in
`fclip_workbench.labelling.textrules`.

Example:
    >>> field(" colour "), item_id(39386), value("colour", " Navy\\u00a0Blue ")
    ('colour', '39386', 'Navy Blue')
"""
from __future__ import annotations

import unicodedata

from fclip_workbench.errors import InvalidArgumentError, LabelValueError
from fclip_workbench.labelling.store.records import SOURCES
from fclip_workbench.labelling.textrules import MAX_CHARS, canonical_text, check_annotator_name

__all__ = ["field", "item_id", "value", "annotator", "batch_id", "source", "known_id", "check_annotator_name"]


def field(name: object) -> str:
    """A field name (e.g. 'articleType'), canonical, or InvalidArgumentError."""
    return canonical_text(name, "field", InvalidArgumentError)


def item_id(item: object) -> str:
    """An item id (text or an integer, e.g. 39386), canonical, or InvalidArgumentError."""
    return canonical_text(item, "item id", InvalidArgumentError, allow_int=True)


def value(field_name: str, text: object) -> str:
    """A label value of `field_name` (not None), canonical, or LabelValueError."""
    return canonical_text(text, f"label value for {field_name}", LabelValueError, limit=MAX_CHARS["label value"])


def annotator(name: object) -> str:
    """An annotator name: `textrules.check_annotator_name`."""
    return check_annotator_name(name)


def batch_id(batch: object | None) -> str | None:
    return None if batch is None else canonical_text(batch, "batch id", InvalidArgumentError, limit=200)


def source(how: object, note: str = "") -> str:
    """How a decision was made (one of `records.SOURCES` but 'undo', which only undo() writes), or
    InvalidArgumentError naming the valid ones, then `note`.

    Example:
        >>> source("batch")
        'batch'
    """
    if how not in SOURCES or how == "undo":
        raise InvalidArgumentError(f"label source {how!r} is unknown; use one of: "
                                   f"{', '.join(s for s in SOURCES if s != 'undo')}{note}")
    return str(how)


def known_id(item: object) -> str:
    """A catalog id as the store compares it (NFC, stripped; never raises: a bad id just never matches)."""
    return unicodedata.normalize("NFC", str(item)).strip()
