"""Train/held-out split of products: deterministic, leak-free, recorded with every trained model.

Each product's *group key* is hashed with the seed, so a product's side never
depends on the order or size of the catalog (appending products keeps earlier
assignments). Rules:

- `title-group-v1` (default): the key is the product's normalised title
  (`normalise_title`), so products that differ only in id or image but share a
  title stay on one side; a product without a title falls back to its id;
- `id-hash-v1`: the key is the item id (the rule fclip-mini v1 was trained with).

`fclip train` writes a `SplitRecord` into `training.json` and the training ids
into `train_ids.txt`; `evaluate()` reads them back (`read_split_record`) and
refuses to score a model on products it was trained on.

Example:
    >>> val = is_validation(["a", "b", "c"], val_fraction=0.5, seed=0)
    >>> val.dtype
    dtype('bool')
    >>> normalise_title("  Nike Men's  RED T-shirt ") == normalise_title("nike men s red t shirt")
    True
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

ID_RULE = "id-hash-v1"
TITLE_RULE = "title-group-v1"
DEFAULT_RULE = TITLE_RULE
RULES = (ID_RULE, TITLE_RULE)
TRAIN_IDS_FILE = "train_ids.txt"
TRAINING_FILE = "training.json"

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise_title(title: str) -> str:
    """Unicode-normalised, case-folded title with punctuation and runs of spaces collapsed to one space."""
    text = unicodedata.normalize("NFKC", str(title)).casefold()
    return _NON_WORD.sub(" ", text).strip()


def group_keys(ids: Sequence[str], titles: Sequence[str] | None = None, rule: str = DEFAULT_RULE) -> list[str]:
    """The key each product is split by under `rule` ((n,) strings)."""
    if rule not in RULES:
        raise ValueError(f"Unknown split rule {rule!r}; known: {', '.join(RULES)}")
    if rule == ID_RULE or titles is None:
        if rule == TITLE_RULE and titles is None:
            raise ValueError(f"Split rule {TITLE_RULE!r} needs the products' titles")
        return [str(i) for i in ids]
    if len(titles) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(titles)} titles")
    out = []
    for item_id, title in zip(ids, titles):
        norm = normalise_title(title) if title is not None else ""
        out.append(f"title:{norm}" if norm else f"id:{item_id}")
    return out


def is_validation(ids: Sequence[str], val_fraction: float = 0.1, seed: int = 0,
                  titles: Sequence[str] | None = None, rule: str | None = None) -> np.ndarray:
    """(n,) bool mask: True for held-out products.

    Without `titles` (and `rule`) the id rule is used, as before titles were
    known; with them, the title-group rule. Rows sharing a key land on one side.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rule = rule or (ID_RULE if titles is None else TITLE_RULE)
    keys = group_keys(ids, titles, rule) if rule == TITLE_RULE else [str(i) for i in ids]
    out = np.empty(len(keys), dtype=bool)
    for i, key in enumerate(keys):
        h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "big") / 2**64 < val_fraction
    return out


def split_rows(ids: Sequence[str], val_fraction: float = 0.1, seed: int = 0, titles: Sequence[str] | None = None,
               rule: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train_rows, held-out rows) index arrays; see `is_validation`."""
    val = is_validation(ids, val_fraction, seed, titles, rule)
    return np.flatnonzero(~val), np.flatnonzero(val)


def ids_digest(ids: Iterable[str]) -> str:
    """SHA-256 of the sorted, newline-joined ids: names a set of products."""
    return hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SplitRecord:
    """How a model's training products were chosen; stored under "split" in training.json."""

    rule: str  # ID_RULE or TITLE_RULE
    seed: int
    val_fraction: float
    catalog: str  # name of the catalog trained on
    n_train: int
    n_heldout: int
    train_ids_sha256: str  # ids_digest of the training ids (train_ids.txt)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SplitRecord":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def write_split(folder: str | Path, record: SplitRecord, train_ids: Sequence[str]) -> Path:
    """Write `train_ids.txt` (sorted, one id a line) into `folder`; returns its path.

    The record itself goes into training.json (written by the training loop).
    """
    path = Path(folder) / TRAIN_IDS_FILE
    if ids_digest(train_ids) != record.train_ids_sha256:
        raise ValueError("train_ids do not match the record's train_ids_sha256")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{i}\n" for i in sorted(str(i) for i in train_ids)), encoding="utf-8")
    tmp.replace(path)
    return path


def read_split_record(folder: str | Path) -> tuple[SplitRecord, set[str] | None] | None:
    """(record, training ids or None) of a trained model's folder, or None when it has no record.

    A folder whose training.json has a "config" but no "split" (trained before
    splits were recorded) gets the id rule with the config's seed and fraction.
    The ids come from train_ids.txt when present and matching the record's digest.
    """
    folder = Path(folder)
    path = folder / TRAINING_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(info, dict):
        return None
    if isinstance(info.get("split"), dict):
        record = SplitRecord.from_dict(info["split"])
    elif isinstance(info.get("config"), dict):
        cfg = info["config"]
        record = SplitRecord(ID_RULE, int(cfg.get("seed", 0)), float(cfg.get("val_fraction", 0.05)),
                             str(info.get("catalog", "")), int(info.get("n_train", 0)),
                             int(info.get("n_heldout", 0)), "")
    else:
        return None
    ids_path = folder / TRAIN_IDS_FILE
    train_ids = None
    if ids_path.is_file():
        train_ids = {line for line in ids_path.read_text(encoding="utf-8").splitlines() if line}
        if record.train_ids_sha256 and ids_digest(train_ids) != record.train_ids_sha256:
            raise ValueError(f"{ids_path} does not match the split recorded in {path} (digest differs)")
    return record, train_ids
