"""CSV records with their line numbers, where a broken row costs only itself.

Python's `csv` module, left to itself, reads an unclosed quote as one cell running on over the rows
after it (they vanish into it, with no error) and `"blue"x` as `bluex`. `csv_records` reads strictly:
a quote misplaced within a cell is an error, reported at the line its record began on, and reading
starts again on the next line, so the rows after a stray quote are still read. Where no cell may span
lines (`multiline=False`: label files, whose texts never hold a line break), a record spanning lines is
a broken row too. Where cells may span lines (catalog descriptions), a quote that closes lines later
is legal CSV: the record is kept, with a note naming a line inside it that reads as a row of its own.

Example:
    >>> for line, row, why in csv_records('item_id,value\\np1,"red\\np2,blue\\np3,"blue"x\\n'):
    ...     print(line, row, why)
    1 ['item_id', 'value'] None
    2 None a quoted cell opened on line 2 is never closed on that line (a stray quote?)
    3 ['p2', 'blue'] None
    4 None not valid CSV: ',' expected after '"'
"""
from __future__ import annotations

import csv
import re
from itertools import islice
from typing import Iterator

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")  # physical lines with their ends (csv's own breaks)


def csv_records(text: str, delimiter: str = ",",
                multiline: bool = False) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(1-based first line, cells, note) for each record, or (line, None, why) for a broken one.

    An empty line is a record with no cells (`[]`), as `csv.reader` gives it. `multiline`: a quoted
    cell may hold line breaks (catalog descriptions); otherwise a record spanning lines is broken.
    `note` is None, or (multiline) says that a line inside the record's quoted cell reads as a row of
    its own: the record is kept, and the note is for a person to look at.
    """
    lines = _LINE.findall(text)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # any one cell of this text reads
    start = 0  # 0-based index of the line the current reader begins on
    width: int | None = None  # fields of the first record (the header)
    while start < len(lines):
        reader = csv.reader(islice(lines, start, None), delimiter=delimiter, strict=True)
        consumed = 0  # lines this reader has taken
        try:
            for row in reader:
                first = start + consumed  # 0-based line of this record
                spans, consumed = reader.line_num - consumed, reader.line_num
                if spans > 1 and not multiline:
                    yield first + 1, None, _unclosed(first + 1)
                    start = first + 1
                    break
                note = _swallowed(lines[first + 1:first + spans], first + 2, width) if spans > 1 else None
                width = len(row) if width is None else width
                yield first + 1, row, note
            else:
                return
        except csv.Error as e:
            first = start + consumed
            last = start + reader.line_num
            if "end of data" in str(e) or (last - first > 1 and not multiline):  # the text ended inside a quote
                yield first + 1, None, _unclosed(first + 1)
            elif last - first > 1:
                yield first + 1, None, f"not valid CSV from line {first + 1} to {last}: {e} (a stray quote on line {first + 1}?)"
            else:
                yield first + 1, None, f"not valid CSV: {e}"
            start = first + 1


def _swallowed(inner: list[str], line: int, width: int | None) -> str | None:
    """A note when a line inside a multi-line cell reads as a row of its own (`width` fields, the cell's
    closing quote taken out: `p1,a.jpg,red 12",red,dress` after a stray quote the line before), whose
    first cell looks like an id (no spaces): prose that happens to hold commas is not flagged.

    Such a cell is legal CSV, but is more likely a stray quote that closed lines later than a
    description: the record is kept as read, and the note says which line to look at.
    """
    for k, text in enumerate(inner):
        if text.count('"') > 1:
            continue  # quoted cells of its own: not a row swallowed whole
        cells = next(csv.reader([text.rstrip("\r\n").replace('"', "")]), [])  # the closing quote taken out
        looks_like_id = bool(cells) and bool(cells[0]) and not any(ch.isspace() for ch in cells[0])
        if width is not None and width > 1 and len(cells) == width and looks_like_id:
            shown = ",".join(cells)[:60]
            return (f"a quoted cell runs from line {line - 1} over {len(inner)} more line(s), and line {line + k} "
                    f"reads as a row of its own ({shown!r}): a stray quote on line {line - 1}? (kept as read)")
    return None


def _unclosed(line: int) -> str:
    return f"a quoted cell opened on line {line} is never closed on that line (a stray quote?)"
