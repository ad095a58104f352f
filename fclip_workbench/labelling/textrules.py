"""The rules for text that people type or files carry: one canonical form, and safe spreadsheet cells.

`canonical_text` is the one rule for label values, field names, item ids and annotator names (in the
label store, its taxonomies, the annotator and the app): Unicode NFC, surrounding spaces stripped, other
kinds of space turned into a plain space, and no invisible or control characters (zero-width, bidi
controls, NUL, tabs, newlines: Unicode Cc/Cf/Cs/Co/Zl/Zp, blank fillers, variation selectors, U+FFFC/FFFD,
and a combining mark on no letter): those are refused with one
line naming the character, never stored (they make two values that look the same differ). Each kind of
text has a length limit, so every value the store accepts also exports and imports back.

`csv_escape` / `csv_unescape` neutralise spreadsheet formulas in CSV cells (CSV injection: a cell
starting with = + - @, tab or CR, even after spaces, is run by Excel/LibreOffice) by a leading quote,
reversibly: `csv_unescape(csv_escape(v)) == v` for every string.

Example:
    >>> canonical_text("  Cafe\\u0301 ", "label value")
    'Café'
    >>> csv_escape("=HYPERLINK(1)"), csv_unescape("'=HYPERLINK(1)"), csv_escape("Tshirts")
    ("'=HYPERLINK(1)", '=HYPERLINK(1)', 'Tshirts')
"""
from __future__ import annotations

import unicodedata

import pandas as pd

from fclip_workbench.errors import FclipError, InvalidArgumentError

MAX_CHARS = {  # characters allowed per kind of text (after canonicalisation); the default is "text"
    "label value": 1000,
    "item id": 1000,
    "field": 200,
    "annotator name": 64,
    "text": 1000,
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet runs as a formula (CSV injection)
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # control, format (zero-width, bidi), ...
_BLANKS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u034f", "\u180e",  # fillers that draw nothing
           "\ufffc", "\ufffd"}  # an object placeholder; a replacement character (bytes lost in decoding)
# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties): characters that draw nothing
_VARIATION_SELECTORS = (("\u00ad", "\u00ad"), ("\u034f", "\u034f"), ("\u061c", "\u061c"), ("\u115f", "\u1160"),
                        ("\u17b4", "\u17b5"), ("\u180b", "\u180f"), ("\u200b", "\u200f"), ("\u202a", "\u202e"),
                        ("\u2060", "\u206f"), ("\u3164", "\u3164"), ("\ufe00", "\ufe0f"), ("\ufeff", "\ufeff"),
                        ("\uffa0", "\uffa0"), ("\ufff0", "\ufff8"), ("\U0001bca0", "\U0001bca3"),
                        ("\U0001d173", "\U0001d17a"), ("\U000e0000", "\U000e0fff"))
_SHOW = 40  # characters of a refused text shown in a message


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOW else text[:_SHOW] + "...")


def invisible_characters(text: str) -> list[tuple[int, str]]:
    """(position, character) of every invisible or control character in `text`.

    >>> invisible_characters("red\\u200b")
    [(3, '\\u200b')]
    """
    return [(i, ch) for i, ch in enumerate(text)
            if ch in _BLANKS or unicodedata.category(ch) in _REFUSED_CATEGORIES
            or any(lo <= ch <= hi for lo, hi in _VARIATION_SELECTORS)]


def canonical_text(value: object, what: str = "text", error: type[FclipError] = InvalidArgumentError,
                   limit: int | None = None, allow_int: bool = False) -> str:
    """`value` in its one canonical form, or a one-line `error` naming what is wrong with it.

    NFC, surrounding whitespace stripped, any other space character (no-break, em, ideographic) made a
    plain space; empty text, invisible/control characters and text over the limit of `what`
    (`MAX_CHARS`) are refused. `allow_int`: an integer (not a bool) is taken as its decimal text (ids).

    >>> canonical_text("\\u00a0navy\\u2003blue ", "label value")
    'navy blue'
    >>> canonical_text("a\\u202eb", "field")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: field 'a\\u202eb' contains an invisible or control character U+202E (RIGHT-TO-LEFT OVERRIDE) at position 2; retype it without it
    """
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise error(f"{what} {value!r} is not text; give a non-empty string")
    text = unicodedata.normalize("NFC", value).strip()
    if not text:
        raise error(f"{what} {value!r} is empty; give at least one visible character")
    bad = invisible_characters(text)
    if bad:
        pos, ch = bad[0]
        name = unicodedata.name(ch, "a control character")
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise error(f"{what} {_shown(text)} contains an invisible or control character U+{ord(ch):04X} ({name}) "
                    f"at position {pos + 1}{more}; retype it without it")
    if any(ch != " " and ch.isspace() for ch in text):
        text = "".join(" " if ch.isspace() else ch for ch in text)
    marks = [i for i, ch in enumerate(text) if unicodedata.category(ch).startswith("M")
             and (i == 0 or text[i - 1] == " ")]
    if marks:  # a combining mark on nothing (or on a space) draws as a stray accent
        ch = text[marks[0]]
        raise error(f"{what} {_shown(text)} has a combining mark U+{ord(ch):04X} "
                    f"({unicodedata.name(ch, 'a combining mark')}) on no letter at position {marks[0] + 1}; "
                    "retype it with the accent on its letter")
    most = limit if limit is not None else MAX_CHARS.get(what, MAX_CHARS["text"])
    if len(text) > most:
        raise error(f"{what} {_shown(text)} has {len(text)} characters; at most {most} are allowed")
    return text


def check_annotator_name(name: object) -> str:
    """The one rule for annotator names (store, session, widget, app box, URL parameter): canonical text of at
    most `MAX_CHARS['annotator name']` characters, or a one-line InvalidArgumentError.

    >>> check_annotator_name("  Ana\\u0308 ")
    'Anä'
    """
    return canonical_text(name, "annotator name", InvalidArgumentError)


# ----------------------------------------------------------------------------- spreadsheet cells
def _is_formula(text: str) -> bool:
    return text.startswith(FORMULA_START) or text.lstrip().startswith(FORMULA_START)


def _needs_quote(text: str) -> bool:
    """A formula, or a formula behind leading quotes (so that unescaping is exact)."""
    return _is_formula(text.lstrip("'"))


def csv_escape(value: object) -> object:
    """A string a spreadsheet would run as a formula gets a leading quote; other values pass unchanged.

    >>> csv_escape("-10%"), csv_escape(" @SUM(A1)"), csv_escape("'=x"), csv_escape("'quoted"), csv_escape(3)
    ("'-10%", "' @SUM(A1)", "''=x", "'quoted", 3)
    """
    if isinstance(value, str) and _needs_quote(value):
        return "'" + value
    return value


def csv_unescape(value: object) -> object:
    """The inverse of `csv_escape`: a cell it quoted reads back as the original string.

    >>> [csv_unescape(csv_escape(v)) for v in ["=1+1", "''=x", "'", "'a", "+"]]
    ['=1+1', "''=x", "'", "'a", '+']
    """
    if isinstance(value, str) and value.startswith("'") and _needs_quote(value[1:]):
        return value[1:]
    return value


def csv_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` whose text cells (and column names) are `csv_escape`d, ready for `to_csv`."""
    out = df.copy()
    for col in out.columns:
        kind = out[col].dtype
        if not (pd.api.types.is_numeric_dtype(kind) or pd.api.types.is_datetime64_any_dtype(kind)):
            out[col] = out[col].map(csv_escape)  # object, string and categorical columns
    out.columns = [csv_escape(c) for c in out.columns]
    return out
