"""Catalog: a validated product table (item id, image, text, attributes).

Every problem is reported per row; no row is dropped silently. Rows whose image
is unusable stay in the table (their text can still be embedded) and are listed
in `catalog.problems`; rows that cannot be parsed at all (malformed CSV lines)
are listed there too, with their line number and raw content.

Source line numbers are kept beside the table (never in a column of it), so a
user column of any name, `_line` included, is an attribute like any other.

Example:
    >>> cat = Catalog.from_csv("styles.csv", image_root="images",
    ...                        id_col="id", text_col="productDisplayName",
    ...                        image_template="{id}.jpg")          # doctest: +SKIP
    >>> print(cat.report())                                         # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
import string
from collections import Counter
from pathlib import Path
from typing import AbstractSet, Iterable, Sequence

import numpy as np
import pandas as pd

from fclip_workbench.errors import CatalogError
from fclip_workbench.labelling.textrules import canonical_text
from fclip_workbench.embedding.images import ImageLoadError, image_file_problem, load_rgb
from fclip_workbench.data.table_files import (Problem, RawTable, check_unique_columns, read_csv_reporting,
                                             read_parquet_checked, replace_undecodable)

log = logging.getLogger(__name__)

__all__ = ["Catalog", "Problem", "RawTable", "read_csv_reporting", "read_parquet_checked", "IMAGE_SUFFIXES",
           "CORE_COLUMNS"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CORE_COLUMNS = ("item_id", "image", "text")
# what each core column is called in messages about its values
_CORE_WHAT = {"item_id": "item id", "image": "image path", "text": "text"}


class Catalog:
    """A validated table of products.

    Columns of `table`: `item_id` (str, unique among usable rows), `image`
    (path relative to `image_root`, "" when none), `text`, then attribute columns
    (every other column, whatever its name). `lines` (optional, one per row) are
    the 1-based source lines, used in problem reports.

    A cell of a core column that is not a scalar (a list, dict, array or bytes,
    e.g. from a Parquet list column) is not joined or stringified: it becomes ""
    and a problem ("text is a list, not a string: ..."), so that row's text is
    never embedded. Float ids/images that hold whole numbers (pandas turns
    integer columns with nulls into floats) print as integers ("39386", not
    "39386.0"); nulls become "".

    >>> cat = Catalog(pd.DataFrame({"item_id": [1.0, None], "image": ["", ""], "text": [["a"], "b"]}))
    >>> cat.ids
    ['1', '']
    >>> for p in cat.problems:
    ...     print(p)
    row 1 of the table (id '1') text: text is a list, not a string: give one string per product (['a'])
    row 1 of the table (id '1') image: no image path
    row 2 of the table (id '') item_id: empty item id
    row 2 of the table (id '') image: no image path
    """

    def __init__(
        self,
        table: pd.DataFrame,
        image_root: str | Path | None = None,
        name: str = "catalog",
        problems: Sequence[Problem] = (),
        check_images: bool = True,
        lines: Sequence[int] | None = None,
    ) -> None:
        check_unique_columns(list(table.columns), "catalog table")
        missing = [c for c in CORE_COLUMNS if c not in table.columns]
        if missing:
            raise CatalogError(f"Catalog table lacks columns {missing}; it has {list(table.columns)}")
        if lines is not None and len(lines) != len(table):
            raise ValueError(f"lines has {len(lines)} entries for a table of {len(table)} rows")
        self.table = table.reset_index(drop=True)
        notes: list[tuple[int, str, str]] = []
        for col in CORE_COLUMNS:
            values, bad = _core_strings(self.table[col], _CORE_WHAT[col])
            if col == "item_id":
                bad += _canonical_ids(values, {i for i, _ in bad})
            self.table[col] = values
            notes += [(i, col, reason) for i, reason in bad]
        self.image_root = Path(image_root).resolve() if image_root is not None else None
        # the table is read-only after validation: these lists serve the hot paths
        self._ids: list[str] = self.table["item_id"].tolist()
        self._texts: list[str] = self.table["text"].tolist()
        self._lines: list[int] | None = [int(x) for x in lines] if lines is not None else None
        self._paths: list[str] = []
        self.name = name
        self.problems: list[Problem] = list(problems)
        self._bad_image = np.zeros(len(self.table), dtype=bool)
        self._bad_text = np.zeros(len(self.table), dtype=bool)
        for i, col, reason in notes:
            self._flag(i, col, reason)
        self._check_rows(check_images, refused={(i, col) for i, col, _ in notes})
        self._sort_problems()

    # ---- construction -------------------------------------------------
    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        image_root: str | Path | None = None,
        id_col: str = "item_id",
        text_col: str = "text",
        image_col: str | None = "image",
        image_template: str | None = None,
        name: str | None = None,
        check_images: bool = True,
    ) -> "Catalog":
        """Read a CSV; `image_template` (e.g. "{id}.jpg") builds image paths from columns.

        UTF-8 (with or without BOM), UTF-16/32 with a BOM (Excel's "Unicode
        text"), comma- or tab-separated (tabs when the header has tabs and no comma).
        """
        raw = read_csv_reporting(path, id_col=id_col)
        return cls._from_raw(raw.table, raw.problems, path, image_root, id_col, text_col, image_col, image_template,
                             name, check_images, lines=raw.lines, row_notes=raw.row_notes)

    @classmethod
    def from_parquet(cls, path: str | Path, **options) -> "Catalog":
        """Read a Parquet file; `options` as for `from_csv`.

        Integer columns with nulls keep their integers (no "39386.0").
        """
        table = read_parquet_checked(path)
        return cls._from_raw(table, [], path, **options)

    @classmethod
    def from_folder(cls, root: str | Path, name: str | None = None) -> "Catalog":
        """Every image under `root` (recursively); the text is the file name's stem.

        >>> Catalog.from_folder("photos")                  # doctest: +SKIP
        """
        root = Path(root)
        if not root.is_dir():
            raise CatalogError(f"Image folder not found: {root}")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        rel = [p.relative_to(root).as_posix() for p in files]
        table = pd.DataFrame({
            "item_id": rel,
            "image": rel,
            "text": [Path(r).stem.replace("_", " ").replace("-", " ") for r in rel],
        })
        return cls(table, image_root=root, name=name or root.name)

    @classmethod
    def _from_raw(cls, table: pd.DataFrame, problems: list[Problem], source: str | Path,
                  image_root: str | Path | None = None, id_col: str = "item_id", text_col: str = "text",
                  image_col: str | None = "image", image_template: str | None = None, name: str | None = None,
                  check_images: bool = True, lines: Sequence[int] | None = None,
                  row_notes: Sequence[tuple[int, str, str]] = ()) -> "Catalog":
        cols = list(table.columns)
        check_unique_columns(cols, str(source))
        for col, what in ((id_col, "id_col"), (text_col, "text_col")):
            if col not in cols:
                raise CatalogError(f"{source}: no column {col!r} ({what}); columns are {cols}")
        out = pd.DataFrame({"item_id": table[id_col], "text": table[text_col]})
        if image_template is not None:
            out["image"] = _format_template(image_template, table, id_col, cols)
        elif image_col is not None and image_col in cols:
            out["image"] = table[image_col]
        else:
            out["image"] = ""
        for col in cols:
            if col not in (id_col, text_col, image_col) and col not in out.columns:
                out[col] = table[col]
        out = out[[*CORE_COLUMNS, *[c for c in out.columns if c not in CORE_COLUMNS]]]
        if len(out) == 0:
            log.warning("%s has column names but no data rows: the catalog is empty", source)
        cat = cls(out, image_root=image_root, name=name or Path(source).stem, problems=problems,
                  check_images=check_images, lines=lines)
        if row_notes:
            cat.problems += [cat.problem(r, fld, reason) for r, fld, reason in row_notes]
            cat._sort_problems()
        return cat

    # ---- validation ---------------------------------------------------
    def _line(self, i: int) -> int | None:
        return self._lines[i] if self._lines is not None else None

    def _where(self, i: int) -> str:
        line = self._line(i)
        return f"line {line}" if line is not None else f"row {i + 1} of the table"

    def _flag(self, i: int, field: str, reason: str) -> None:
        self.problems.append(self.problem(i, field, reason))
        if field in ("image", "item_id"):
            self._bad_image[i] = True
        if field in ("text", "item_id"):
            self._bad_text[i] = True

    def _sort_problems(self) -> None:
        """Problems in source order (stable: per row, in the order they were found)."""
        def key(p: Problem) -> int:
            return p.line if p.line is not None else (p.row + 1 if p.row is not None else 0)
        self.problems.sort(key=key)

    def _check_rows(self, check_images: bool, refused: AbstractSet[tuple[int, str]] = frozenset()) -> None:
        """Flag empty/duplicate ids, empty texts, bad image paths; `refused` cells are already reported."""
        ids = self._ids
        seen: dict[str, int] = {}
        for i, item_id in enumerate(ids):
            if (i, "item_id") in refused:
                continue
            if not item_id.strip():
                self._flag(i, "item_id", "empty item id")
            elif item_id in seen:
                self._flag(i, "item_id", f"duplicate id (first at {self._where(seen[item_id])}); this row is not used")
            else:
                seen[item_id] = i
        for i, text in enumerate(self._texts):
            if not text.strip() and (i, "text") not in refused:
                self._flag(i, "text", "empty text")
        for i, rel in enumerate(self.table["image"].tolist()):
            path, reason = self._resolve(rel) if rel else ("", "no image path")
            self._paths.append(path)
            if (i, "image") in refused:
                continue
            if reason:
                self._flag(i, "image", reason)
            elif check_images and (problem := image_file_problem(path)):
                self._flag(i, "image", problem)

    def _resolve(self, rel: str) -> tuple[str, str | None]:
        """Absolute, normalised path of an image entry, or a reason it is refused.

        The check is lexical ("..", absolute paths): symbolic links inside the
        root are the owner's choice and are followed.
        """
        if self.image_root is None:
            return os.path.abspath(rel), None
        if os.path.isabs(rel):
            return rel, f"absolute path {rel!r} outside the image root"
        root = str(self.image_root)
        path = os.path.normpath(os.path.join(root, rel))
        if not path.startswith(root + os.sep):
            return path, f"path {rel!r} escapes the image root {self.image_root}"
        return path, None

    def check_image_contents(self, rows: Iterable[int] | None = None) -> list[Problem]:
        """Decode images (all usable rows by default); unreadable ones become problems.

        Slower than the existence check done at construction; `embed_images`
        reports decode failures anyway, so call this for an audit.
        """
        found = []
        for i in (rows if rows is not None else np.flatnonzero(~self._bad_image)):
            try:
                load_rgb(self.image_path(int(i)))
            except ImageLoadError as e:
                self._flag(int(i), "image", str(e))
                found.append(self.problems[-1])
        return found

    # ---- access ---------------------------------------------------------
    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"Catalog({self.name!r}, {len(self)} rows, {len(self.problems)} problems)"

    @property
    def ids(self) -> list[str]:
        """Item id of each row (a list; do not modify)."""
        return self._ids

    @property
    def texts(self) -> list[str]:
        """Text of each row (a list; do not modify)."""
        return self._texts

    @property
    def lines(self) -> list[int] | None:
        """1-based source line of each row (a list; do not modify), or None when not read from a file."""
        return self._lines

    @property
    def attributes(self) -> list[str]:
        """Every column but item_id, image and text, whatever its name."""
        return [c for c in self.table.columns if c not in CORE_COLUMNS]

    def image_path(self, row: int) -> Path:
        return Path(self._paths[row])

    def usable_rows(self, kind: str = "image") -> np.ndarray:
        """Row indices usable for `kind` ("image" or "text"). Shape (n_usable,)."""
        if kind not in ("image", "text"):
            raise ValueError(f"kind must be 'image' or 'text', not {kind!r}")
        bad = self._bad_image if kind == "image" else self._bad_text
        return np.flatnonzero(~bad)

    def problem(self, row: int, field: str, reason: str) -> Problem:
        """A `Problem` for table row `row`, with its item id and source line filled in.

        >>> catalog.problem(3, "image", "corrupt or truncated image")   # doctest: +SKIP
        """
        row = int(row)
        return Problem(self._ids[row], field, reason, row=row, line=self._line(row))

    def row_of(self, item_id: str) -> int:
        matches = np.flatnonzero(self.table["item_id"].to_numpy() == str(item_id))
        if len(matches) == 0:
            raise KeyError(f"No item with id {item_id!r} in catalog {self.name!r}")
        return int(matches[0])

    def subset(self, rows: Sequence[int] | np.ndarray, name: str | None = None) -> "Catalog":
        """A new catalog of the given rows; their problems are found again by validation."""
        rows = np.asarray(rows, dtype=int)
        lines = [self._lines[r] for r in rows] if self._lines is not None else None
        return Catalog(self.table.iloc[rows].copy(), self.image_root, name or self.name, lines=lines)

    def problem_table(self) -> pd.DataFrame:
        """One row per problem: item_id, field, reason, row (0-based), line (1-based; empty when unknown)."""
        out = pd.DataFrame([p.__dict__ for p in self.problems], columns=["item_id", "field", "reason", "row", "line"])
        for col in ("row", "line"):
            out[col] = out[col].astype("Int64")
        return out

    def report(self, limit: int = 20) -> str:
        """A human summary: counts per kind of problem, then the first `limit` problems."""
        size = f"{len(self)} rows" if len(self) else "0 rows (no products: the table has a header but no data rows)"
        if not self.problems:
            return f"{self.name}: {size}, no problems"
        kinds = Counter(f"{p.field}: {p.reason.split(' /')[0].split(':')[0]}" for p in self.problems)
        lines = [f"{self.name}: {size}, {len(self.problems)} problems"]
        lines += [f"  {n:6d} x {k}" for k, n in kinds.most_common()]
        lines += [f"  - {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more (catalog.problem_table())")
        return "\n".join(lines)


_NOT_SCALAR = (list, tuple, dict, set, frozenset, np.ndarray, bytes, bytearray)


def _refusal(what: str, v: object) -> str:
    """Why a non-scalar cell of a core column is refused (one line, valid UTF-8)."""
    if isinstance(v, (bytes, bytearray)):
        kind, advice = "bytes", "decode it to a string first"
    elif isinstance(v, dict):
        kind, advice = "a dict", "give one string per product"
    elif isinstance(v, (set, frozenset)):
        kind, advice = "a set", "give one string per product"
    else:
        kind, advice = "a list", "give one string per product"
    shown = repr(v.tolist() if isinstance(v, np.ndarray) else v)
    shown = replace_undecodable(shown[:80] + ("..." if len(shown) > 80 else ""))
    return f"{what} is {kind}, not a string: {advice} ({shown})"


def _core_strings(col: pd.Series, what: str) -> tuple[list[str], list[tuple[int, str]]]:
    """A core column as str values ("" for nulls), and (row, reason) for refused cells.

    Floats that are whole numbers print as integers (an integer column with
    nulls reaches pandas as floats); lists, dicts, arrays and bytes are refused.
    """
    if col.dtype.kind == "f":
        arr = col.to_numpy(dtype=np.float64)  # (n,)
        ok = ~np.isnan(arr)
        vals = arr[ok]
        if np.isfinite(vals).all() and (vals == np.floor(vals)).all():
            return [str(int(v)) if o else "" for v, o in zip(arr.tolist(), ok.tolist())], []
        return [repr(v) if o else "" for v, o in zip(arr.tolist(), ok.tolist())], []
    if col.dtype != object:  # str, Int64, int, bool, category, datetime: scalars only
        return [str(v) if not m else "" for v, m in zip(col.tolist(), col.isna().tolist())], []
    out: list[str] = []
    bad: list[tuple[int, str]] = []
    for i, v in enumerate(col.tolist()):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, _NOT_SCALAR):
            out.append("")
            bad.append((i, _refusal(what, v)))
        elif pd.isna(v):
            out.append("")
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return out, bad


def _canonical_ids(ids: list[str], skip: AbstractSet[int]) -> list[tuple[int, str]]:
    """Put every id in the label store's canonical form, in place; (row, reason) for ids it refuses.

    The same rule as the label store's (textrules.canonical_text: NFC, surrounding spaces stripped),
    so two rows whose ids differ only by spaces or Unicode composition are duplicates here too,
    and a label stored for an id names exactly one product.

    >>> ids = [" 42 ", "Cafe\u0301", "a\u200bb", ""]
    >>> [(row, why.split(" contains ")[1][:36]) for row, why in _canonical_ids(ids, set())], ids[:2]
    ([(2, 'an invisible or control character U+')], ['42', 'Café'])
    """
    bad = []
    for i, item_id in enumerate(ids):
        if i in skip or not item_id.strip():
            continue  # refused already, or reported as an empty id
        try:
            ids[i] = canonical_text(item_id, "item id", CatalogError)
        except CatalogError as e:
            bad.append((i, str(e)))
    return bad


def _template_values(col: pd.Series) -> list[object]:
    """Values of a column for `str.format`: whole floats as int, nulls as ""."""
    if col.dtype.kind == "f":
        arr = col.to_numpy(dtype=np.float64)
        vals = arr[~np.isnan(arr)]
        if np.isfinite(vals).all() and (vals == np.floor(vals)).all():
            return ["" if v != v else int(v) for v in arr.tolist()]
    return ["" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in col.tolist()]


def _format_template(template: str, table: pd.DataFrame, id_col: str, cols: list) -> list[str]:
    """Image paths from `template` ("{id}.jpg", "{folder}/{sku}.png"): one per row.

    `{id}` is the column named "id" when there is one, else `id_col`.
    """
    try:
        names = {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise CatalogError(f"image_template {template!r} is not a valid format string: {e}") from e
    unknown = sorted(n for n in names if n != "id" and n not in cols)
    if unknown:
        raise CatalogError(f"image_template {template!r} names unknown column(s) {unknown}; columns are {cols}")
    if not names:
        return [template] * len(table)
    source = {n: (n if n in cols else id_col) for n in names}
    values = {n: _template_values(table[c]) for n, c in source.items()}
    out = []
    for i, row in enumerate(zip(*values.values())):
        fields = dict(zip(values, row))
        try:
            out.append(template.format(**fields))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise CatalogError(f"image_template {template!r} cannot be filled for row {i + 1} of the table "
                               f"({fields}): {e}") from e
    return out
