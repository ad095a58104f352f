"""Label files: export the store to CSV/Parquet and import labels from them.

CSV exports are safe to open in a spreadsheet: every text cell that would run as a formula (starting
with = + - @, tab or CR, even after spaces) gets a leading quote (`textrules.csv_escape`), and import
reads such a cell back to the original value, so an export imports back exactly. Parquet (typed, not run
by spreadsheets) holds the values as they are. Every value the store accepts is within
`textrules.MAX_CHARS`, and CSV cells of any length are read, so an export always imports back.

Example:
    >>> import tempfile, os
    >>> from fclip_workbench.labelling.labels import LabelStore
    >>> d = tempfile.mkdtemp()
    >>> s = LabelStore(os.path.join(d, "l.sqlite"))
    >>> _ = s.set("p1", "size", "-XL", annotator="ana")
    >>> open(s.export(os.path.join(d, "out.csv"))).read().splitlines()[1].split(",")[:3]
    ['size', 'p1', "'-XL"]
    >>> r = LabelStore(os.path.join(d, "copy.sqlite")).import_(os.path.join(d, "out.csv"), annotator="bo")
    >>> r.applied[0].new_value
    '-XL'
"""
from __future__ import annotations

import logging
import math
import os
import uuid
from pathlib import Path
from typing import Iterable

import pandas as pd
import sqlalchemy as sa

from fclip_workbench.errors import FclipError, InvalidArgumentError, LabelImportError
from fclip_workbench.labelling.taxonomy import Taxonomy
from fclip_workbench.labelling.textrules import csv_safe_frame, csv_unescape
from fclip_workbench.labelling.store import canon
from fclip_workbench.labelling.store.connection import _first_line
from fclip_workbench.data.csv_rows import csv_records
from fclip_workbench.data.table_files import read_parquet_checked
from fclip_workbench.labelling.store.multivalue import decode_values
from fclip_workbench.labelling.store.parts import StoreParts
from fclip_workbench.labelling.store.records import LABEL_COLUMNS, ImportReport, LabelEvent, RowProblem

log = logging.getLogger("fclip_workbench.labelling.labels")


class Transfer(StoreParts):
    """`LabelStore`'s export and import (needs the connection, the taxonomies, the event log and reading)."""

    def export(self, path: str | os.PathLike, field: str | None = None, history: bool = False) -> Path:
        """Write the current labels (DataFrame[field, item_id, value, annotator, time]) or, with `history=True`,
        the whole log to `.csv` or `.parquet`, atomically (an existing file is replaced only when complete).
        A multi-valued field gives one row per value of each item's set (what `import_` reads back)."""
        from fclip_workbench.paths import check_output_file

        path = Path(path)
        field = canon.field(field) if field is not None else None
        fmt = path.suffix.lower()
        if fmt not in (".csv", ".parquet"):
            raise InvalidArgumentError(f"export file {path} has suffix {fmt!r}; use .csv or .parquet")
        check_output_file(path, "export file")  # a folder, a file in place of a folder, a read-only folder
        if history:
            df = self.history(field=field)
        else:
            fields = [field] if field is not None else self.fields()
            multi = self.multi_fields()
            parts = [(self._value_rows(f) if f in multi else self.labels(f)).assign(field=f) for f in fields]
            df = (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=LABEL_COLUMNS + ["field"]))
            df = df[["field"] + LABEL_COLUMNS]
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == ".csv":
                out = df.copy()
                if "time" in out and len(out):
                    out["time"] = out["time"].map(lambda t: t.isoformat())
                csv_safe_frame(out).to_csv(tmp, index=False)  # formulas neutralised, reversibly
            else:
                df.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        except OSError as e:
            raise InvalidArgumentError(f"export file {path} cannot be written ({e.strerror or e}); "
                                       "choose another path (the labels are untouched)") from e
        finally:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        log.info("exported %d rows to %s", len(df), path)
        return path

    def _value_rows(self, field: str) -> pd.DataFrame:
        """A multi-valued field's sets as rows DataFrame[item_id, value, annotator, time], one per value."""
        df = self.value_sets(field).explode("values").rename(columns={"values": "value"})
        return df[LABEL_COLUMNS].reset_index(drop=True)


    def import_(self, path: str | os.PathLike, field: str | None = None, annotator: str = "",
                taxonomy: Taxonomy | None = None, known_ids: Iterable[object] | None = None,
                partial: bool = False) -> ImportReport:
        """Import labels from `.csv`/`.parquet` with columns item_id, value (and field, unless `field` is given;
        an export of this store reads back as is). Every row is checked first (empty or malformed rows, unknown
        ids, values outside the taxonomy, conflicting repeats); with any bad row NOTHING is applied unless
        `partial=True`, which applies the good rows. What is applied is one transaction (source "import").
        A multi-valued field (`set_multi`) has one row per value: an item's rows are its set, which replaces
        the item's current set (add/remove events for the difference; items not in the file are untouched)."""
        annotator = canon.annotator(annotator)
        field = canon.field(field) if field is not None else None
        path = Path(path)
        rows, problems = read_label_file(path, field)
        known = frozenset(canon.known_id(i) for i in known_ids) if known_ids is not None else self.known_ids
        report = ImportReport(path=path, rows=len(rows) + sum(p.reason.startswith("malformed") for p in problems),
                              problems=problems, partial=partial)
        good: dict[tuple[str, str], tuple[int, str]] = {}  # (field, item) -> (row, value)
        self._multi_cache = None  # fresh: another process may have declared a field multi-valued
        multi = self.multi_fields()
        sets: dict[tuple[str, str], dict[str, int]] = {}  # multi-valued: (field, item) -> {value: row}
        for rownum, item, fld, value in rows:
            bad = None
            if not fld:
                bad = "empty field"
            elif not item:
                bad = "empty item id"
            elif not value:
                bad = "empty value"
            else:
                try:
                    fld, item = canon.field(fld), canon.item_id(item)
                    value = canon.value(fld, value)
                except FclipError as e:
                    bad = str(e)
            if bad:
                pass
            elif field is not None and fld != field:
                bad = f"field {fld!r} is not the field being imported ({field!r})"
            elif known is not None and item not in known:
                bad = f"unknown item id {item!r} (not in the catalog)"
            else:
                tx = taxonomy if taxonomy is not None and taxonomy.field in (fld, field) else self.taxonomy(fld)
                if tx is not None:
                    spelt = tx.canonical(value)
                    if spelt is None:
                        bad = f"{value!r} is not in the {fld} taxonomy ({tx.describe(10)})"
                    else:
                        value = spelt
            if bad is None and fld in multi:  # one row per value: the rows of an item are its set
                if value in sets.setdefault((fld, item), {}):
                    report.duplicates += 1
                else:
                    sets[(fld, item)][value] = rownum
                continue
            if bad is None and (fld, item) in good:
                first_row, first_value = good[(fld, item)]
                if first_value == value:
                    report.duplicates += 1
                    continue
                bad = f"item {item!r} already has value {first_value!r} in row {first_row}; give one value per item"
            if bad:
                problems.append(RowProblem(rownum, item, fld, value, bad))
            else:
                good[(fld, item)] = (rownum, value)
        problems.sort(key=lambda p: p.row)
        if problems and not partial:
            log.warning("import of %s refused: %d bad rows", path, len(problems))
            return report
        by_field: dict[str, list[tuple[str, str]]] = {}
        for (fld, item), (_, value) in good.items():
            by_field.setdefault(fld, []).append((item, value))
        batch = uuid.uuid4().hex

        def work(conn: sa.Connection) -> tuple[list[LabelEvent], list[LabelEvent], int]:
            applied: list[LabelEvent] = []
            confirmed: list[LabelEvent] = []
            unchanged = 0
            for fld, pairs in by_field.items():
                self._lock_keys(conn, [self._item_key(i, fld) for i, _ in pairs])
                old = self._current_rows(conn, fld, [i for i, _ in pairs])
                todo = [(i, v) for i, v in pairs if i not in old or old[i].value != v]
                # the same value another annotator set: a confirmation event, so their undo cannot erase it
                others = [(i, v) for i, v in pairs if i in old and old[i].value == v and old[i].annotator != annotator]
                unchanged += len(pairs) - len(todo)
                if todo:
                    applied += self._apply(conn, fld, todo, annotator, "import", batch)
                if others:
                    confirmed += self._apply(conn, fld, others, annotator, "import", batch)
            by_set: dict[str, list[tuple[str, frozenset[str]]]] = {}
            for (fld, item), vals in sets.items():
                by_set.setdefault(fld, []).append((item, frozenset(vals)))
            for fld, wanted in by_set.items():  # the file's set of each item becomes its set
                have = self._current_rows(conn, fld, [i for i, _ in wanted])
                ops: list[tuple[str, str, bool]] = []
                for item, want in wanted:
                    now = decode_values(have[item].value) if item in have else frozenset()
                    ops += [(item, v, True) for v in sorted(want - now)] + [(item, v, False) for v in sorted(now - want)]
                    unchanged += want == now
                applied += self._apply_values(conn, fld, ops, annotator, "import", batch)
            return applied, confirmed, unchanged

        report.applied, report.confirmed, report.unchanged = self._write(work)
        log.info("imported %s: %d applied, %d unchanged (%d confirmed), %d bad rows", path, len(report.applied),
                 report.unchanged, len(report.confirmed), len(problems))
        return report



def read_label_file(path: Path, field: str | None) -> tuple[list[tuple[int, str, str, str]], list[RowProblem]]:
    """Rows (row number, item_id, field, value) and malformed-row problems of a CSV/Parquet label file."""
    if not path.is_file():
        raise LabelImportError(f"label file {path} does not exist; give a .csv or .parquet file")
    fmt = path.suffix.lower()
    problems: list[RowProblem] = []
    if fmt == ".csv":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise LabelImportError(f"label file {path} cannot be read as UTF-8 text ({e}); save it as UTF-8 CSV") from e
        records = []
        header: list[str] | None = None
        for line, row, why in csv_records(text):
            n = line - 1  # data row: the header is line 1
            if header is None:
                if row is None:
                    raise LabelImportError(f"label file {path} has an unreadable header line ({why})")
                header = [h.strip() for h in row]
            elif row is None:
                problems.append(RowProblem(n, "", field or "", "", f"malformed row: {why}"))
            elif not any(c.strip() for c in row):
                problems.append(RowProblem(n, "", field or "", "", "malformed row: empty line"))
            elif len(row) != len(header):
                problems.append(RowProblem(n, row[0].strip() if row else "", field or "", "",
                                           f"malformed row: {len(row)} fields, the header has {len(header)}"))
            else:
                records.append((n, dict(zip(header, (csv_unescape(c) for c in row)))))  # export's quoting undone
        if header is None:
            raise LabelImportError(f"label file {path} is empty; it needs a header row with item_id and value")
    elif fmt == ".parquet":
        try:
            df = read_parquet_checked(path)  # integers exactly (an int64 column with nulls is not made float)
        except FclipError as e:
            raise LabelImportError(f"label file {path} is not a readable Parquet file ({_first_line(e)})") from e
        header = [str(c) for c in df.columns]
        records = [(n, dict(zip(header, vals))) for n, vals in enumerate(df.itertuples(index=False), start=1)]
    else:
        raise LabelImportError(f"label file {path} has suffix {fmt!r}; use .csv or .parquet")
    twice = sorted({h for h in header if header.count(h) > 1 and h})
    if twice:
        raise LabelImportError(f"label file {path} has column(s) {', '.join(twice)} more than once; "
                               "keep one of each (which one holds the labels is ambiguous)")
    need = ["item_id", "value"] + ([] if field is not None else ["field"])
    missing = [c for c in need if c not in header]
    if missing:
        hint = "" if field is not None or "field" not in missing else " (or pass field=...)"
        raise LabelImportError(f"label file {path} lacks column(s) {', '.join(missing)}{hint}; "
                               f"it has: {', '.join(header)}")
    out = []
    for n, rec in records:
        cells = {}
        bad = None
        for col in ("item_id", "value", "field"):
            v = rec.get(col, field)
            if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
                v = ""
            elif isinstance(v, float) and v.is_integer():
                v = str(int(v))
            elif not isinstance(v, (str, int)) or isinstance(v, bool):
                bad = f"malformed row: {col} is a {type(v).__name__}, not text"
                v = str(v)
            cells[col] = str(v).strip()
        if field is not None and not cells["field"]:
            cells["field"] = field
        if bad:
            problems.append(RowProblem(n, cells["item_id"], cells["field"], cells["value"], bad))
        else:
            out.append((n, cells["item_id"], cells["field"], cells["value"]))
    return out, problems

