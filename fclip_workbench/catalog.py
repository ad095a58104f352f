"""Catalog: a validated product table (item id, image, text, attributes).

Every problem is reported per row; no row is dropped silently. Rows whose image
is unusable stay in the table (their text can still be embedded) and are listed
in `catalog.problems`; rows that cannot be parsed at all (malformed CSV lines)
are listed there too, with their line number and raw content.

Example:
    >>> cat = Catalog.from_csv("styles.csv", image_root="images",
    ...                        id_col="id", text_col="productDisplayName",
    ...                        image_template="{id}.jpg")          # doctest: +SKIP
    >>> print(cat.report())                                         # doctest: +SKIP
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import CatalogError
from .images import ImageLoadError, load_rgb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CORE_COLUMNS = ("item_id", "image", "text")


@dataclass(frozen=True)
class Problem:
    """One problem found in a catalog.

    `row` is the 0-based row in `Catalog.table` (None for a line that never
    became a row); `line` the 1-based line in the source file when known.
    """

    item_id: str | None
    field: str  # "image", "text", "item_id", "line"
    reason: str
    row: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else f"row {self.row}"
        return f"{where} (id {self.item_id!r}) {self.field}: {self.reason}"


class Catalog:
    """A validated table of products.

    Columns of `table`: `item_id` (str, unique among usable rows), `image`
    (path relative to `image_root`, "" when none), `text`, then attribute columns.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        image_root: str | Path | None = None,
        name: str = "catalog",
        problems: Sequence[Problem] = (),
        check_images: bool = True,
    ) -> None:
        missing = [c for c in CORE_COLUMNS if c not in table.columns]
        if missing:
            raise CatalogError(f"Catalog table lacks columns {missing}; it has {list(table.columns)}")
        self.table = table.reset_index(drop=True)
        for col in CORE_COLUMNS:
            self.table[col] = self.table[col].fillna("").astype(str)
        self.image_root = Path(image_root).resolve() if image_root is not None else None
        # the table is read-only after validation: these lists serve the hot paths
        self._ids: list[str] = self.table["item_id"].tolist()
        self._texts: list[str] = self.table["text"].tolist()
        self._lines: list[int] | None = self.table["_line"].tolist() if "_line" in self.table.columns else None
        self._paths: list[str] = []
        self.name = name
        self.problems: list[Problem] = list(problems)
        self._bad_image = np.zeros(len(self.table), dtype=bool)
        self._bad_text = np.zeros(len(self.table), dtype=bool)
        self._check_rows(check_images)

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
        """Read a CSV; `image_template` (e.g. "{id}.jpg") builds image paths from columns."""
        table, problems = read_csv_reporting(path)
        return cls._from_raw(table, problems, path, image_root, id_col, text_col, image_col, image_template,
                             name, check_images)

    @classmethod
    def from_parquet(cls, path: str | Path, **options) -> "Catalog":
        """Read a Parquet file (needs pyarrow); `options` as for `from_csv`."""
        try:
            table = pd.read_parquet(path)
        except FileNotFoundError as e:
            raise CatalogError(f"Catalog file not found: {path}") from e
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
                  check_images: bool = True) -> "Catalog":
        cols = list(table.columns)
        for col, what in ((id_col, "id_col"), (text_col, "text_col")):
            if col not in cols:
                raise CatalogError(f"{source}: no column {col!r} ({what}); columns are {cols}")
        out = pd.DataFrame({"item_id": table[id_col].astype(str), "text": table[text_col]})
        if image_template is not None:
            try:
                out["image"] = [image_template.format(**{"id": r[id_col], **r}) for r in table.to_dict("records")]
            except KeyError as e:
                raise CatalogError(f"image_template {image_template!r} names unknown column {e}; columns are {cols}") from e
        elif image_col is not None and image_col in cols:
            out["image"] = table[image_col]
        else:
            out["image"] = ""
        for col in cols:
            if col not in (id_col, text_col, image_col) and col not in out.columns:
                out[col] = table[col]
        if "_line" in table.columns:
            out["_line"] = table["_line"]
        out = out[[*CORE_COLUMNS, *[c for c in out.columns if c not in CORE_COLUMNS]]]
        return cls(out, image_root=image_root, name=name or Path(source).stem, problems=problems,
                   check_images=check_images)

    # ---- validation ---------------------------------------------------
    def _line(self, i: int) -> int | None:
        return int(self._lines[i]) if self._lines is not None else None

    def _flag(self, i: int, field: str, reason: str) -> None:
        self.problems.append(Problem(self._ids[i], field, reason, row=i, line=self._line(i)))
        if field in ("image", "item_id"):
            self._bad_image[i] = True
        if field in ("text", "item_id"):
            self._bad_text[i] = True

    def _check_rows(self, check_images: bool) -> None:
        ids = self._ids
        seen: dict[str, int] = {}
        for i, item_id in enumerate(ids):
            if not item_id.strip():
                self._flag(i, "item_id", "empty item id")
            elif item_id in seen:
                self._flag(i, "item_id", f"duplicate id (first at row {seen[item_id]}); this row is not used")
            else:
                seen[item_id] = i
        for i, text in enumerate(self._texts):
            if not text.strip():
                self._flag(i, "text", "empty text")
        for i, rel in enumerate(self.table["image"].tolist()):
            path, reason = self._resolve(rel) if rel else ("", "no image path")
            self._paths.append(path)
            if reason:
                self._flag(i, "image", reason)
            elif check_images and not os.path.isfile(path):
                self._flag(i, "image", f"missing file {path}")

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
    def attributes(self) -> list[str]:
        return [c for c in self.table.columns if c not in CORE_COLUMNS and not c.startswith("_")]

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
        return Catalog(self.table.iloc[rows].copy(), self.image_root, name or self.name)

    def problem_table(self) -> pd.DataFrame:
        return pd.DataFrame([p.__dict__ for p in self.problems], columns=["item_id", "field", "reason", "row", "line"])

    def report(self, limit: int = 20) -> str:
        """A human summary: counts per kind of problem, then the first `limit` problems."""
        if not self.problems:
            return f"{self.name}: {len(self)} rows, no problems"
        kinds = Counter(f"{p.field}: {p.reason.split(' /')[0].split(':')[0]}" for p in self.problems)
        lines = [f"{self.name}: {len(self)} rows, {len(self.problems)} problems"]
        lines += [f"  {n:6d} x {k}" for k, n in kinds.most_common()]
        lines += [f"  - {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more (catalog.problem_table())")
        return "\n".join(lines)


def read_csv_reporting(path: str | Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Parse a CSV, reporting (not dropping silently) malformed and non-UTF-8 lines.

    Returns the table of well-formed rows (all values str, plus a `_line`
    column with the 1-based source line) and the problems found.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise CatalogError(f"Catalog file not found: {path}") from e
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration as e:
        raise CatalogError(f"{path} is empty") from e
    problems: list[Problem] = []
    rows, lines = [], []
    start = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append(Problem(None, "line", f"unparseable CSV: {e}", line=start))
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line: nothing to report
        if len(fields) != len(header):
            problems.append(Problem(fields[0] if fields else None, "line",
                                    f"malformed CSV line: {len(fields)} fields, header has {len(header)}: "
                                    f"{','.join(fields)[:120]!r}", line=line))
            continue
        bad_cols = [h for h, f in zip(header, fields) if _has_surrogates(f)]
        if bad_cols:
            problems.append(Problem(fields[0], "encoding", f"not valid UTF-8 in column(s) {bad_cols}; "
                                    "undecodable bytes replaced by U+FFFD (row kept)", line=line))
            fields = [f.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for f in fields]
        rows.append(fields)
        lines.append(line)
    table = pd.DataFrame(rows, columns=header, dtype=str)
    table["_line"] = lines
    return table, problems


_SURROGATE = re.compile("[\udc80-\udcff]")


def _has_surrogates(s: str) -> bool:
    """True where undecodable bytes were smuggled in by the surrogateescape decoder."""
    return not s.isascii() and _SURROGATE.search(s) is not None
