"""What a catalog *is*, read from its rows, never from its name.

A catalog's `name` is a label a user can change (`Catalog(..., name="my-set")`, a copied
folder, `subset(name=...)`); behaviour that depends on the data set decides by
`catalog_kind`, which looks only at the table:

- "teaching": the generated teaching catalog (`make_teaching_catalog`): columns
  `garment`, `colour`, `pattern` drawn from its vocabularies, and every title is the one
  `teaching_title` makes from them ("red striped dress");
- "fmnist": Fashion-MNIST (`load_fashion_mnist`): a `label` column of its ten class
  names, and every title is its label;
- "other": anything else, whatever it is called (an empty catalog too).

Example:
    >>> from fclip_workbench.data.catalog import Catalog
    >>> import pandas as pd
    >>> t = pd.DataFrame({"item_id": ["a"], "image": [""], "text": ["red striped dress"],
    ...                   "garment": ["dress"], "colour": ["red"], "pattern": ["striped"]})
    >>> catalog_kind(Catalog(t, name="anything"))
    'teaching'
    >>> catalog_kind(Catalog(t.assign(text="a red dress"), name="teaching"))
    'other'
"""
from __future__ import annotations

import pandas as pd

from fclip_workbench.data.datasets.fmnist import FMNIST_CLASSES
from fclip_workbench.data.datasets.teaching import COLOURS, GARMENTS, PATTERNS, teaching_title

KINDS = ("teaching", "fmnist", "other")  # what `catalog_kind` returns


def _within(col: pd.Series, allowed) -> bool:
    """Every value of `col` is a string in `allowed` (missing values are not)."""
    return bool(col.map(lambda v: isinstance(v, str) and v in allowed).all())


def is_teaching(table: pd.DataFrame) -> bool:
    """Rows written by `make_teaching_catalog`: its vocabularies, and titles made from them."""
    cols = ("text", "garment", "colour", "pattern")
    if len(table) == 0 or any(c not in table.columns for c in cols):
        return False
    if not (_within(table["garment"], GARMENTS) and _within(table["colour"], COLOURS)
            and _within(table["pattern"], PATTERNS)):
        return False
    titles = [teaching_title(c, p, g) for c, p, g in zip(table["colour"], table["pattern"], table["garment"])]
    return bool((table["text"] == pd.Series(titles, index=table.index)).all())


def is_fmnist(table: pd.DataFrame) -> bool:
    """Rows of Fashion-MNIST: `label` among its ten classes, and each title is its label."""
    if len(table) == 0 or "label" not in table.columns or "text" not in table.columns:
        return False
    return _within(table["label"], FMNIST_CLASSES) and bool((table["text"] == table["label"]).all())


def catalog_kind(catalog) -> str:
    """"teaching", "fmnist" or "other" for a `Catalog`, decided by its rows (see module docstring).

    >>> catalog_kind(make_teaching_catalog("/tmp/teach", n=12).subset(range(6), name="mine"))  # doctest: +SKIP
    'teaching'
    """
    table = catalog.table
    if is_teaching(table):
        return "teaching"
    if is_fmnist(table):
        return "fmnist"
    return "other"
