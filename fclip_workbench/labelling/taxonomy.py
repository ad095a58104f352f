"""Taxonomies: the allowed values of one label field, in order, looked up case-insensitively.

A `Taxonomy` comes from the catalog's own column (`from_catalog`), a YAML/JSON file
(`from_file`), values typed in the annotator (`from_values`) or the Fashionpedia
ontology (`from_fashionpedia`: 46 categories, 294 attributes). Lookups return the
canonical spelling, so "T-SHIRT" is stored as "T-shirt"; `complete(prefix)` serves
the annotator's autocompletion.

Values are text as written: YAML is read without YAML 1.1 types (`[NO, SE, DK]` stays "NO", `010` stays
"010", `12:30` stays "12:30"), JSON numbers keep their spelling, and every value and field name follows
`textrules.canonical_text` (NFC, no invisible characters). A taxonomy from a file or typed values has at
least one value: an empty list is an error, never a free field.

Example:
    >>> tx = Taxonomy.from_values("articleType", ["Tshirts", "Shirts", "Jeans"])
    >>> "tshirts" in tx, tx.canonical("JEANS"), tx.complete("sh")
    (True, 'Jeans', ['Shirts', 'Tshirts'])
"""
from __future__ import annotations

import json
import logging
import math
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

from fclip_workbench.errors import TaxonomyError
from fclip_workbench.labelling.textrules import MAX_CHARS, canonical_text

log = logging.getLogger(__name__)

FASHIONPEDIA_FILE = "category_attributes_descriptions.json"
FASHIONPEDIA_KINDS = {"categories": "category", "attributes": "attribute"}  # kind -> default field name


def lookup_key(value: str) -> str:
    """Case-insensitive lookup key (NFC, casefold, surrounding spaces ignored).

    >>> lookup_key(" Cafe\u0301 ") == lookup_key("CAFÉ")
    True
    """
    return unicodedata.normalize("NFC", value).strip().casefold()


_key = lookup_key


def _clean(value: object, field: str) -> str:
    """One value as canonical non-empty text (`textrules.canonical_text`), or a one-line TaxonomyError."""
    if not isinstance(value, str):
        if value is None or isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)) \
                or isinstance(value, (list, dict, bytes, tuple, set)):
            raise TaxonomyError(f"taxonomy {field!r}: value {value!r} is not a text value; give strings")
        value = str(value)
    if not value.strip():
        raise TaxonomyError(f"taxonomy {field!r}: empty value; every value must have at least one character")
    return canonical_text(value, f"taxonomy {field!r} value", TaxonomyError, limit=MAX_CHARS["label value"])


def _as_written(data: object) -> object:
    """JSON booleans back to their spelling ("true"/"false"); numbers are read as text by the parser."""
    if isinstance(data, bool):
        return "true" if data else "false"
    if isinstance(data, list):
        return [_as_written(v) for v in data]
    if isinstance(data, dict):
        return {k: _as_written(v) for k, v in data.items()}
    return data


def _unique_keys(pairs: list[tuple[object, object]], where: str) -> dict:
    """A mapping from its (key, value) pairs, refusing a key written twice (parsers keep the last silently).

    >>> _unique_keys([("colour", ["red"]), ("colour", ["blue"])], "t.json")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.TaxonomyError: taxonomy file t.json has the key 'colour' twice; merge the two lists into one
    """
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise TaxonomyError(f"taxonomy file {where} has the key {k!r} twice; merge the two lists into one")
        out[k] = v
    return out


def _yaml_loader(where: str):
    """yaml.BaseLoader (every scalar a string as written) that refuses duplicate mapping keys."""
    import yaml

    class UniqueKeyLoader(yaml.BaseLoader):
        def construct_mapping(self, node, deep=False):
            pairs = [(self.construct_object(k, deep=deep), self.construct_object(v, deep=deep))
                     for k, v in node.value]
            return _unique_keys(pairs, where)

    return UniqueKeyLoader


class Taxonomy:
    """Ordered, unique (case-insensitively) values of one label field.

    Args:
        field: the label field it constrains (e.g. "articleType").
        values: allowed values, in display order; repeats (ignoring case) keep the first spelling.
        source: where the values came from ("catalog:kagl", "file:...", "fashionpedia", "typed").
        multi: the field holds a SET of values per item (Fashionpedia attributes); `LabelStore.set_taxonomy`
            then declares the field multi-valued (`store/multivalue.py`).

    Example:
        >>> tx = Taxonomy("colour", ["Red", "red", "Blue"])
        >>> tx.values, len(tx)
        (['Red', 'Blue'], 2)
        >>> tx.add("navy blue"), tx.complete("blue")
        ('navy blue', ['Blue', 'navy blue'])
    """

    def __init__(self, field: str, values: Iterable[object] = (), source: str = "typed", multi: bool = False) -> None:
        """Values are one per spelling ignoring case: a second spelling of one value ("red" after "Red",
        "STRASSE" after "Straße") is merged into the first, with a warning naming both."""
        if not isinstance(field, str) or not field.strip():
            raise TaxonomyError(f"taxonomy field name {field!r} is empty; name the label field (e.g. 'articleType')")
        self.field = canonical_text(field, "taxonomy field name", TaxonomyError, limit=MAX_CHARS["field"])
        self.source = source
        self.multi = bool(multi)
        self._values: list[str] = []
        self._lookup: dict[str, str] = {}  # casefolded -> canonical spelling
        for v in values:
            text = _clean(v, self.field)
            kept = self.add(text)
            if kept != text:
                log.warning("taxonomy %r: %r is the value %r ignoring case; kept as %r", self.field, text, kept, kept)

    # ---- lookups -------------------------------------------------------
    @property
    def values(self) -> list[str]:
        """The allowed values, in order (a copy)."""
        return list(self._values)

    def canonical(self, value: object) -> str | None:
        """The taxonomy's spelling of `value` (case-insensitive), or None when it is not in it."""
        if not isinstance(value, str):
            return None
        return self._lookup.get(_key(value))

    def __contains__(self, value: object) -> bool:
        return self.canonical(value) is not None

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._values))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Taxonomy) and other.field == self.field and other._values == self._values

    def __repr__(self) -> str:
        head = ", ".join(map(repr, self._values[:5])) + (", ..." if len(self) > 5 else "")
        return f"Taxonomy({self.field!r}, [{head}], {len(self)} values, source={self.source!r})"

    def add(self, value: object) -> str:
        """Add `value` at the end (no-op when present, ignoring case); return its canonical spelling."""
        text = _clean(value, self.field)
        found = self._lookup.get(_key(text))
        if found is not None:
            return found
        self._values.append(text)
        self._lookup[_key(text)] = text
        return text

    def complete(self, prefix: str, limit: int = 10) -> list[str]:
        """Values for autocompletion: those starting with `prefix`, then those containing it (case-insensitive).

        An empty prefix gives the first `limit` values.

        >>> Taxonomy("t", ["Casual Shoes", "Shoe Accessories", "Sports Shoes", "Shirts"]).complete("shoe", 3)
        ['Shoe Accessories', 'Casual Shoes', 'Sports Shoes']
        """
        if limit < 1:
            raise TaxonomyError(f"complete(limit={limit!r}): limit must be at least 1")
        p = _key(prefix or "")
        starts = [v for v in self._values if _key(v).startswith(p)]
        if len(starts) >= limit:
            return starts[:limit]
        contains = [v for v in self._values if p in _key(v) and not _key(v).startswith(p)]
        return (starts + contains)[:limit]

    def describe(self, limit: int = 20) -> str:
        """The values as one line: up to `limit`, then "... and N more"."""
        shown = ", ".join(self._values[:limit])
        more = len(self) - limit
        return shown + (f" ... and {more} more" if more > 0 else "") if self._values else "(no values)"

    def to_dict(self) -> dict[str, list[str]]:
        """`{field: [values]}`, the format `from_file` reads."""
        return {self.field: self.values}

    # ---- constructors --------------------------------------------------
    @classmethod
    def from_values(cls, field: str, values: Iterable[object], source: str = "typed") -> "Taxonomy":
        """Values typed by a person (e.g. in the annotator widget); empty values are refused.

        >>> Taxonomy.from_values("fit", ["slim", " regular "]).values
        ['slim', 'regular']
        """
        if isinstance(values, str):
            values = [v for v in values.split(",")]
        out = cls(field, values, source=source)
        if not len(out):
            raise TaxonomyError(f"taxonomy {out.field!r} has no values; give at least one")
        return out

    @classmethod
    def from_catalog(cls, catalog, field: str) -> "Taxonomy":
        """The distinct non-empty values of column `field` of a `Catalog` (or DataFrame), in first-seen order.

        >>> import pandas as pd
        >>> Taxonomy.from_catalog(pd.DataFrame({"colour": ["Red", None, "", "Blue", "red"]}), "colour").values
        ['Red', 'Blue']
        """
        table = getattr(catalog, "table", catalog)
        if field not in getattr(table, "columns", ()):
            cols = [c for c in table.columns if c not in ("item_id", "image", "text")]
            raise TaxonomyError(f"catalog has no column {field!r}; its attribute columns: {', '.join(map(str, cols))}")
        out = cls(field, source=f"catalog:{getattr(catalog, 'name', 'table')}")
        distinct: dict[tuple[type, str], object] = {}  # each distinct cell once, first seen first (40k rows: 2 s)
        for v in table[field].tolist():
            distinct.setdefault((type(v), str(v)), v)
        for v in distinct.values():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            if isinstance(v, (list, dict, bytes)):
                raise TaxonomyError(f"catalog column {field!r} holds {type(v).__name__} values ({v!r}); "
                                    "a taxonomy needs one text value per product")
            if str(v).strip():
                out.add(str(v))
        if not len(out):
            raise TaxonomyError(f"catalog column {field!r} has no non-empty values; label another field "
                                "or give the values with Taxonomy.from_values")
        return out

    @classmethod
    def from_file(cls, path: str | Path, field: str | None = None) -> "Taxonomy":
        """Read a YAML (.yaml/.yml) or JSON (.json) file: `{field: [values], ...}` or a plain list of values.

        With several fields in the file, `field` picks one; a plain list needs `field` (else the file's stem).

        Example:
            >>> import tempfile, pathlib
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "fit.yaml"
            >>> _ = p.write_text("fit: [slim, regular, loose]")
            >>> Taxonomy.from_file(p).values
            ['slim', 'regular', 'loose']
        """
        path = Path(path)
        if not path.is_file():
            raise TaxonomyError(f"taxonomy file {path} does not exist; give a .yaml or .json file")
        suffix = path.suffix.lower()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise TaxonomyError(f"taxonomy file {path} cannot be read ({e}); save it as UTF-8 text") from e
        try:
            if suffix == ".json":  # numbers as written ("1.50" stays "1.50")
                data = _as_written(json.loads(text, parse_int=str, parse_float=str, parse_constant=str,
                                              object_pairs_hook=lambda pairs: _unique_keys(pairs, path.name)))
            elif suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.load(text, Loader=_yaml_loader(path.name))  # scalars as written (no YAML 1.1 types)
            else:
                raise TaxonomyError(f"taxonomy file {path} has suffix {suffix!r}; use .yaml, .yml or .json")
        except TaxonomyError:
            raise
        except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TaxonomyError(f"taxonomy file {path} is not valid {suffix[1:].upper()}: {first}") from e
        source = f"file:{path.name}"
        if isinstance(data, list):
            if not data:
                raise TaxonomyError(f"taxonomy file {path} holds an empty list; give at least one value")
            return cls(field or path.stem, data, source=source)
        if isinstance(data, dict) and data:
            def name(k: object) -> str:
                return canonical_text(str(k), f"taxonomy file {path}: field name", TaxonomyError,
                                      limit=MAX_CHARS["field"])

            by_name = _unique_keys([(name(k), v) for k, v in data.items()], path.name)  # " colour" is "colour"
            fields = list(by_name)
            if field is None:
                if len(data) > 1:
                    raise TaxonomyError(f"taxonomy file {path} has several fields ({', '.join(fields)}); "
                                        "pick one with field=...")
                field = fields[0]
            field = name(field)
            if field not in by_name:
                raise TaxonomyError(f"taxonomy file {path} has no field {field!r}; it has: {', '.join(fields)}")
            values = by_name[field]
            if not isinstance(values, list):
                raise TaxonomyError(f"taxonomy file {path}: field {field!r} must be a list of values, "
                                    f"not {type(values).__name__}")
            if not values:
                raise TaxonomyError(f"taxonomy file {path}: field {field!r} has an empty list; give at least one "
                                    "value (leave the field out of the file to keep it free)")
            return cls(field, values, source=source)
        raise TaxonomyError(f"taxonomy file {path} must hold {{field: [values]}} or a list of values, "
                            f"not {type(data).__name__} {str(data)[:40]!r}")

    @classmethod
    def from_fashionpedia(cls, path: str | Path | None = None, kind: str = "categories",
                          supercategory: str | None = None, field: str | None = None) -> "Taxonomy":
        """The Fashionpedia ontology: its 46 garment categories or 294 attributes, optionally one supercategory.

        `path`: the data set folder or its `category_attributes_descriptions.json`; default: found with
        `paths.find_dataset("fashionpedia")`. `field` defaults to "category" / "attribute". Attributes are
        multi-valued (`multi=True`: a dress has a pattern AND a neckline type), categories single-valued.

        Example:
            >>> tx = Taxonomy.from_fashionpedia(kind="attributes", supercategory="neckline type")  # doctest: +SKIP
            >>> tx.complete("v")                                                                      # doctest: +SKIP
            ['v-neck', ...]
        """
        if kind not in FASHIONPEDIA_KINDS:
            raise TaxonomyError(f"Fashionpedia kind {kind!r} is unknown; use one of: {', '.join(FASHIONPEDIA_KINDS)}")
        if path is None:
            from fclip_workbench.paths import find_dataset

            folder = find_dataset("fashionpedia")
            if folder is None:
                raise TaxonomyError("Fashionpedia ontology not found; run `fclip data fetch fashionpedia` "
                                    "or pass path=<folder with category_attributes_descriptions.json>")
            path = folder
        path = Path(path)
        file = path / FASHIONPEDIA_FILE if path.is_dir() else path
        if not file.is_file():
            raise TaxonomyError(f"Fashionpedia ontology file {file} does not exist; "
                                f"give the folder holding {FASHIONPEDIA_FILE}")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            entries = data[kind]
            names = [(str(e["name"]), str(e.get("supercategory", ""))) for e in entries]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TaxonomyError(f"{file} is not the Fashionpedia ontology (no {kind!r} list of named entries: "
                                f"{type(e).__name__}: {e}); fetch it again with `fclip data fetch fashionpedia`") from e
        if supercategory is not None:
            supers = list(dict.fromkeys(s for _, s in names))
            if supercategory not in supers:
                raise TaxonomyError(f"Fashionpedia {kind} have no supercategory {supercategory!r}; "
                                    f"known: {', '.join(supers)}")
            names = [(n, s) for n, s in names if s == supercategory]
        source = "fashionpedia:" + kind + (f"/{supercategory}" if supercategory else "")
        return cls(field or FASHIONPEDIA_KINDS[kind], [n for n, _ in names], source=source,
                   multi=kind == "attributes")  # a garment has several attributes; one category
