"""CSV records of a label file, each with its line, where a broken row costs only itself.

Python's `csv` module, left to itself, reads an unclosed quote as one cell running to the end of the
file (every later row vanishes into it) and `"blue"x` as `bluex`. No text the label store accepts spans
lines (`textrules.canonical_text` refuses line breaks), so here a record spanning lines is a broken
row: it is reported at its first line and reading starts again on the next line; a quote misplaced
within a line is reported for that line alone.

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


def csv_records(text: str) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(1-based line, cells, None) for each record, or (line, None, why) for a broken one.

    An empty line is a record with no cells (`[]`), as `csv.reader` gives it.
    """
    lines = _LINE.findall(text)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # any one cell of this text reads
    start = 0  # 0-based index of the line the current reader begins on
    while start < len(lines):
        reader = csv.reader(islice(lines, start, None), strict=True)
        consumed = 0  # lines this reader has taken
        try:
            for row in reader:
                first = start + consumed  # 0-based line of this record
                spans, consumed = reader.line_num - consumed, reader.line_num
                if spans > 1:
                    yield (first + 1, None, f"a quoted cell opened on line {first + 1} is never closed on that "
                                            "line (a stray quote?)")
                    start = first + 1
                    break
                yield first + 1, row, None
            else:
                return
        except csv.Error as e:
            first = start + consumed
            if reader.line_num - consumed > 1 or "end of data" in str(e):  # the text ended inside a quote
                yield (first + 1, None, f"a quoted cell opened on line {first + 1} is never closed on that "
                                        "line (a stray quote?)")
            else:
                yield first + 1, None, f"not valid CSV: {e}"
            start = first + 1
