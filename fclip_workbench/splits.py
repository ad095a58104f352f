"""Train/validation split by product id: deterministic, no product on both sides.

Each id is hashed with the seed, so the split of an id never depends on the
order or size of the catalog (appending products keeps earlier assignments).

Example:
    >>> val = is_validation(["a", "b", "c"], val_fraction=0.5, seed=0)
    >>> val.dtype
    dtype('bool')
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


def is_validation(ids: Sequence[str], val_fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """(n,) bool mask: True for held-out ids. Rows sharing an id land on the same side."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out = np.empty(len(ids), dtype=bool)
    for i, item_id in enumerate(ids):
        h = hashlib.blake2b(f"{seed}:{item_id}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "big") / 2**64 < val_fraction
    return out


def split_rows(ids: Sequence[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_rows, val_rows) index arrays."""
    val = is_validation(ids, val_fraction, seed)
    return np.flatnonzero(~val), np.flatnonzero(val)
