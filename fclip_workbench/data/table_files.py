"""Reading a product table from a file: CSV and Parquet, checked, every bad line reported.

`read_csv_reporting` keeps every well-formed row and reports the others as `Problem`s with their
line number and raw content (nothing is dropped silently); undecodable bytes are replaced and
noted per row. `read_parquet_checked` refuses what is not a Parquet file in one line. `Catalog`
(catalog.py) builds on both.

Example:
    >>> raw = read_csv_reporting("styles.csv", id_col="id")                     # doctest: +SKIP
    >>> len(raw.table), [str(p) for p in raw.problems][:1]                       # doctest: +SKIP
    (44424, ["line 6044: expected 10 fields, saw 11"])
"""
from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from fclip_workbench.data.csv_rows import csv_records
from fclip_workbench.errors import CatalogError, MissingExtraError

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Problem:
    """One problem found in a catalog.

    `row` is the 0-based row in `Catalog.table` (None for a line that never
    became a row); `line` the 1-based line in the source file when known.
    `str(problem)` names the source line when known, else the 1-based row:

    >>> str(Problem("a7", "text", "empty text", row=4))
    "row 5 of the table (id 'a7') text: empty text"
    >>> str(Problem("a7", "text", "empty text", row=4, line=6))
    "line 6 (id 'a7') text: empty text"
    """

    item_id: str | None
    field: str  # "image", "text", "item_id", "line", "encoding"
    reason: str
    row: int | None = None
    line: int | None = None

    @property
    def where(self) -> str:
        """Where it is: `line L` of the source file when known, else `row R of the table` (R 1-based)."""
        if self.line is not None:
            return f"line {self.line}"
        if self.row is not None:
            return f"row {self.row + 1} of the table"
        return "catalog"

    def __str__(self) -> str:
        who = f" (id {self.item_id!r})" if self.item_id is not None else ""
        return f"{self.where}{who} {self.field}: {self.reason}"


@dataclass
class RawTable:
    """What `read_csv_reporting` returns: well-formed rows, their source lines, and problems.

    `table` holds str values only; `lines[i]` is the 1-based source line of row i;
    `problems` are lines that never became rows; `row_notes` are (row, field,
    reason) for rows that were kept but altered (undecodable bytes replaced).
    """

    table: pd.DataFrame
    lines: list[int]
    problems: list[Problem] = field(default_factory=list)
    row_notes: list[tuple[int, str, str]] = field(default_factory=list)


def check_unique_columns(columns: Sequence[object], source: str) -> None:
    """CatalogError naming each repeated column name and its 1-based positions."""
    positions: dict[object, list[int]] = {}
    for i, c in enumerate(columns, start=1):
        positions.setdefault(c, []).append(i)
    repeated = {c: pos for c, pos in positions.items() if len(pos) > 1}
    if repeated:
        named = "; ".join(f"{c!r} at columns {', '.join(map(str, pos))}" for c, pos in repeated.items())
        raise CatalogError(f"{source}: repeated column name(s) in the header: {named}; "
                           "rename them so every column name is unique")



# ---- reading files ---------------------------------------------------------
def _check_file(path: Path, kind: str) -> None:
    """CatalogError for a missing path, a folder, or an empty file (before any parsing)."""
    if path.is_dir():
        raise CatalogError(f"{path} is a folder, not a {kind} file: give the {kind} file itself "
                           "(open_catalog(folder) reads data folders)")
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        raise CatalogError(f"Catalog file not found: {path}") from e
    if size == 0:
        raise CatalogError(f"{path} is empty (0 bytes): a {kind} catalog needs at least a header row")


def read_parquet_checked(path: str | Path) -> pd.DataFrame:
    """A Parquet file as a DataFrame; CatalogError (one line) for anything unreadable.

    Integer columns with nulls come back as Python ints and None (not floats).
    """
    path = Path(path)
    _check_file(path, "Parquet")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise MissingExtraError("Reading Parquet needs pyarrow: pip install pyarrow") from e
    try:
        pf = pq.ParquetFile(path)
        check_unique_columns(pf.schema_arrow.names, str(path))
        return pf.read().to_pandas(integer_object_nulls=True)
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, CatalogError):
            raise
        raise CatalogError(f"{path} is not a readable Parquet file: {e}") from e


def _mark_undecodable(e: UnicodeError) -> tuple[str, int]:
    """Codec error handler: one lone surrogate per undecodable byte (found and replaced later)."""
    if not isinstance(e, UnicodeDecodeError):  # registered for decoding only
        raise e
    return "\udcff" * (e.end - e.start), e.end


codecs.register_error("fclip-mark", _mark_undecodable)

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _decode(raw: bytes, path: Path) -> str:
    """Text of a CSV file: encoding from its byte-order mark, else UTF-8.

    Undecodable bytes become lone surrogates (U+DC80..U+DCFF) for the caller to
    report and replace. A file that is not text at all raises CatalogError.
    """
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return raw.decode(encoding, "fclip-mark")
    if raw.startswith(b"PAR1"):
        raise CatalogError(f"{path} is a Parquet file, not a CSV: name it .parquet or use Catalog.from_parquet")
    head = raw[:4096]
    nuls = head.count(0)
    if nuls > len(head) // 8:
        on_one_side = max(head[0::2].count(0), head[1::2].count(0)) >= 0.9 * nuls
        if on_one_side:
            raise CatalogError(f"{path} looks like UTF-16 without a byte-order mark; save as UTF-8 "
                               "(or as UTF-16 with a BOM)")
        raise CatalogError(f"{path} is binary data ({nuls} NUL bytes in its first {len(head)}), not CSV text")
    return raw.decode("utf-8", "surrogateescape")


_SURROGATE = re.compile("[\udc80-\udcff]")


def _has_surrogates(s: str) -> bool:
    """True where undecodable bytes were smuggled in by the decoder."""
    return not s.isascii() and _SURROGATE.search(s) is not None


def replace_undecodable(s: str) -> str:
    """`s` with each undecodable byte replaced by U+FFFD: always valid UTF-8."""
    return _SURROGATE.sub("\ufffd", s) if _has_surrogates(s) else s


def read_csv_reporting(path: str | Path, id_col: str | None = None) -> RawTable:
    """Parse a CSV, reporting (not dropping silently) malformed and non-UTF-8 lines.

    Every string it returns is valid UTF-8 (undecodable bytes become U+FFFD).
    The delimiter is a tab when the header has tabs and no comma, else a comma.
    `id_col` names the column whose value identifies a malformed line (else the
    first field).

    >>> raw = read_csv_reporting("catalog.csv")       # doctest: +SKIP
    >>> raw.table.shape, raw.lines[:2], raw.problems  # doctest: +SKIP
    ((3, 3), [2, 3], [])
    """
    path = Path(path)
    _check_file(path, "CSV")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CatalogError(f"Cannot read catalog file {path}: {e}") from e
    text = _decode(raw, path)
    dirty = _has_surrogates(text)  # any undecodable byte at all? (checked once, per field only if so)
    first = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]  # the header line, whatever the line ends
    delimiter = "\t" if "\t" in first and "," not in first else ","
    records = csv_records(text, delimiter, multiline=True)  # a description may hold line breaks
    line, header, why = next(records, (0, None, None))
    if header is None:
        if why is not None:
            raise CatalogError(f"{path}: the header row cannot be parsed as CSV: {why}")
        raise CatalogError(f"{path} is empty: no header row")
    problems: list[Problem] = []
    if dirty and any(_has_surrogates(h) for h in header):
        header = [replace_undecodable(h) for h in header]
        problems.append(Problem(None, "encoding", "not valid UTF-8 in the header; undecodable bytes replaced by "
                                "U+FFFD", line=1))
    check_unique_columns(header, str(path))
    id_at = header.index(id_col) if id_col in header else 0
    notes: list[tuple[int, str, str]] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    for line, fields, why in records:
        if fields is None:
            problems.append(Problem(None, "line", f"unparseable CSV: {replace_undecodable(str(why))}; "
                                    "this line is not used", line=line))
            continue
        if why is not None and len(fields) == len(header):  # kept, with a note for a person to look at
            notes.append((len(rows), "line", replace_undecodable(why)))
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line: nothing to report
        if len(fields) != len(header):
            fields = [replace_undecodable(f) for f in fields] if dirty else fields
            problems.append(Problem(fields[id_at] if id_at < len(fields) else None, "line",
                                    f"malformed CSV line: {len(fields)} fields, header has {len(header)}: "
                                    f"{delimiter.join(fields)[:120]!r}", line=line))
            continue
        if dirty:
            bad_cols = [h for h, f in zip(header, fields) if _has_surrogates(f)]
            if bad_cols:
                notes.append((len(rows), "encoding", f"not valid UTF-8 in column(s) {bad_cols}; "
                              "undecodable bytes replaced by U+FFFD (row kept)"))
                fields = [replace_undecodable(f) for f in fields]
        rows.append(fields)
        lines.append(line)
    table = pd.DataFrame(rows, columns=header, dtype=str)
    return RawTable(table, lines, problems, notes)
