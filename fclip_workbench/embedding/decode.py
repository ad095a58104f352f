"""Decoding product images for a model, in DataLoader worker processes: the one place where pixels come from.

`DecodeDataset(paths, preprocess)[i]` is `(i, pixels, error, digest)`: the (3, S, S) tensor (or None and
why), and the SHA-256 of the very bytes that were decoded, so a vector is always stored under the hash of
the picture it came from (a file rewritten between a first hash and the decode gets its new hash). The
embedding engines (`engines.py`) and training (`training/data.py`) both decode through it.

Example:
    >>> ds = DecodeDataset(["gone.jpg"], preprocess=lambda im: im)
    >>> ds[0][:3]
    (0, None, 'missing file gone.jpg')
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch.utils.data import Dataset

from fclip_workbench.embedding.images import ImageLoadError, load_rgb_and_digest

DecodedItem = tuple  # (position, (3, S, S) tensor | None, error | None, digest | None)


class DecodeDataset(Dataset):
    """(position, (3, S, S) pixels or None, error or None, SHA-256 of the decoded bytes or None) per image
    path; picklable for worker processes."""

    def __init__(self, paths: Sequence[str], preprocess) -> None:
        self.paths, self.preprocess = [str(p) for p in paths], preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> DecodedItem:
        try:
            image, digest = load_rgb_and_digest(self.paths[i])
        except ImageLoadError as e:
            return i, None, str(e), None
        try:
            return i, self.preprocess(image), None, digest
        except Exception as e:  # a preprocessing failure on odd input is reported, not fatal
            return i, None, f"preprocessing failed: {type(e).__name__}: {e}", digest

    def __getitems__(self, indices: Sequence[int]) -> list[DecodedItem]:
        """A batch (the DataLoader's path), decoded on one torch thread: intra-op threads on these small
        images cost more than they give (KAGL 60x80 -> 224, busy 2-core machine: 33 vs 3.3 ms/image)."""
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [self[i] for i in indices]
        finally:
            torch.set_num_threads(before)


def collate_decoded(batch: list[DecodedItem]):
    """(positions, (b, 3, H, W) pixels or None, [(position, error)], digests) of a decoded batch;
    `digests[j]` is the hash of the bytes behind `pixels[j]`."""
    ok = [(i, x, d) for i, x, err, d in batch if x is not None]
    bad = [(i, err) for i, x, err, _ in batch if x is None]
    pixels = torch.stack([x for _, x, _ in ok]) if ok else None  # (b, 3, H, W)
    return [i for i, _, _ in ok], pixels, bad, [d for _, _, d in ok]


def worker_init(_: int) -> None:
    torch.set_num_threads(1)


def default_num_workers() -> int:
    """Decoding processes: none on 1-2 cores (measured: the model's own threads need them,
    benchmarks/bench_throughput.py), else half the cores, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(8, cores // 2)
