"""CSV records with their line numbers, where a broken row costs only itself.

Python's `csv` module, left to itself, reads an unclosed quote as one cell running on over the rows
after it (they vanish into it, with no error) and `"blue"x` as `bluex`. `csv_records` reads strictly:
a quote misplaced within a cell is an error, reported at the line its record began on, and reading
starts again on the next line, so the rows after a stray quote are still read. Where no cell may span
lines (`multiline=False`: label files, whose texts never hold a line break), a record spanning lines is
a broken row too.

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
    """(1-based first line, cells, None) for each record, or (line, None, why) for a broken one.

    An empty line is a record with no cells (`[]`), as `csv.reader` gives it. `multiline`: a quoted
    cell may hold line breaks (catalog descriptions); otherwise a record spanning lines is broken.
    """
    lines = _LINE.findall(text)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # any one cell of this text reads
    start = 0  # 0-based index of the line the current reader begins on
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
                yield first + 1, row, None
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


def _unclosed(line: int) -> str:
    return f"a quoted cell opened on line {line} is never closed on that line (a stray quote?)"
