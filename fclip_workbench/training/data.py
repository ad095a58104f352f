"""Training data: captions per product, streamed image decoding with a bounded pixel cache, augmentation.

Images are decoded and preprocessed by a torch `DataLoader` (the dataset and
collate function live at module level, so worker processes work under the
`spawn` start method too). Decoded pixels go into a `PixelCache` of at most
`TrainConfig.pixel_cache_mb` (fp16, filled until full and never evicted: with a
cyclic pass over the data an LRU cache would miss every time), so small-image
recipes decode each image once per run and large ones stream within a fixed memory.
Cached entries are keyed by the image's content digest, the preprocessing
config and the image pipeline version, never by row position.

Example:
    >>> cache = PixelCache(max_bytes=1 << 20)
    >>> cache.put("k", torch.zeros(3, 8, 8, dtype=torch.float16))
    True
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Generator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fclip_workbench.embedding import images as _images
from fclip_workbench.data.catalog import Catalog, Problem
from fclip_workbench.embedding.decode import DecodeDataset, worker_init
from fclip_workbench.data.prompts import product_texts, template_fields

log = logging.getLogger(__name__)

# Bumped when decoding/conversion changes pixel values; images.IMAGE_PIPELINE_VERSION wins when defined.
LOCAL_PIPELINE_VERSION = "1"


def pipeline_version() -> str:
    return str(getattr(_images, "IMAGE_PIPELINE_VERSION", LOCAL_PIPELINE_VERSION))


# ------------------------------------------------------------------ captions
def product_fields(catalog: Catalog, row: int) -> dict:
    """A product's fields for caption templates: its table row plus `title` (its text)."""
    rec = catalog.table.iloc[row].to_dict()
    return {**rec, "title": rec["text"]}


def caption_rows(catalog: Catalog, templates: Sequence[str]) -> tuple[list[int], list[list[str]], list[Problem]]:
    """(rows with a usable image and at least one caption, their captions, problems of the rows left out).

    >>> rows, caps, problems = caption_rows(catalog, ("{title}",))   # doctest: +SKIP
    """
    skipped = [p for p in catalog.problems if p.row is not None and p.field in ("image", "item_id")]
    rows, captions = [], []
    for r in catalog.usable_rows("image"):
        caps = product_texts(product_fields(catalog, int(r)), templates)
        if caps:
            rows.append(int(r))
            captions.append(caps)
        else:
            skipped.append(catalog.problem(int(r), "text", "no caption template applies"))
    return rows, captions, skipped


COLOUR_FIELDS = frozenset({"baseColour", "colour", "color"})


def colour_free_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """The templates that name no colour and are not the title (titles often name one).

    >>> colour_free_templates(("{title}", "a {baseColour} {articleType}", "{articleType}"))
    ('{articleType}',)
    """
    return tuple(t for t in templates if not ({"title", *COLOUR_FIELDS} & set(template_fields(t))))


def colour_free_captions(catalog: Catalog, rows: Sequence[int], templates: Sequence[str]) -> list[list[str]]:
    """Per row, its captions from the colour-free templates (empty where none applies): for greyscale views."""
    keep = colour_free_templates(templates)
    return [product_texts(product_fields(catalog, int(r)), keep) for r in rows]


def caption_table(captions: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(unique texts, (n, max_caps) text ids padded with -1, (n,) caption counts).

    >>> texts, table, n = caption_table([["a", "b"], ["a"]]); texts, table.tolist(), n.tolist()
    (['a', 'b'], [[0, 1], [0, -1]], [2, 1])
    """
    unique: dict[str, int] = {}
    width = max((len(c) for c in captions), default=1)
    table = torch.full((len(captions), width), -1, dtype=torch.long)  # (n, max_caps)
    for i, caps in enumerate(captions):
        for j, t in enumerate(caps):
            table[i, j] = unique.setdefault(t, len(unique))
    return list(unique), table, (table >= 0).sum(1)


def pick_captions(batch: torch.Tensor, table: torch.Tensor, n_caps: torch.Tensor, g: torch.Generator,
                  colourless: torch.Tensor | None = None, plain_table: torch.Tensor | None = None,
                  plain_n: torch.Tensor | None = None) -> torch.Tensor:
    """(b,) text ids: one caption drawn per product; colourless views draw from the colour-free table.

    batch: (b,) product positions; table / plain_table: (n, max_caps) text ids; n_caps / plain_n: (n,).
    A colourless product with no colour-free caption keeps its ordinary draw.

    >>> g = torch.Generator().manual_seed(0)
    >>> pick_captions(torch.tensor([0, 1]), torch.tensor([[5], [6]]), torch.tensor([1, 1]), g,
    ...               torch.tensor([True, False]), torch.tensor([[7], [8]]), torch.tensor([1, 1])).tolist()
    [7, 6]
    """
    ids = table[batch, (torch.rand(len(batch), generator=g) * n_caps[batch]).long()]
    if colourless is None or plain_table is None or plain_n is None:
        return ids
    alt = (torch.rand(len(batch), generator=g) * plain_n[batch]).long()
    swap = colourless & (plain_n[batch] > 0)
    return torch.where(swap, plain_table[batch, alt], ids)


# ------------------------------------------------------------------ decoding
def collate_items(batch: list) -> list:
    """Keep items as a list: failed ones (pixels None) cannot be stacked."""
    return batch


def make_loader(dataset: Dataset, positions: Sequence[int], batch_size: int = 64, num_workers: int = 0,
                mp_context: str | None = None) -> DataLoader:
    """A DataLoader over `dataset[positions]` in that order, yielding lists of items.

    >>> loader = make_loader(DecodeDataset(paths, preprocess), [0, 1], num_workers=1, mp_context="spawn")  # doctest: +SKIP
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=list(positions), num_workers=num_workers,
                      collate_fn=collate_items, worker_init_fn=worker_init if num_workers else None,
                      multiprocessing_context=mp_context if num_workers else None)


class PixelCache:
    """Decoded, preprocessed images (fp16), filled until `max_bytes` and then left as is."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.nbytes = int(max_bytes), 0
        self._items: dict[str, torch.Tensor] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> torch.Tensor | None:
        return self._items.get(key)

    def put(self, key: str, pixels: torch.Tensor) -> bool:
        """Keep `pixels` if there is room; True when kept."""
        size = pixels.numel() * pixels.element_size()
        if key in self._items or self.nbytes + size > self.max_bytes:
            return False
        self._items[key] = pixels
        self.nbytes += size
        return True


def pixel_keys(digests: Sequence[str | None], preprocess_cfg: dict) -> list[str | None]:
    """Cache key per image: content digest + preprocessing + pipeline version (None where no digest)."""
    prefix = hashlib.blake2b(json.dumps([pipeline_version(), preprocess_cfg], sort_keys=True, default=str).encode(),
                             digest_size=8).hexdigest()
    return [f"{prefix}:{d}" if d is not None else None for d in digests]


class PixelSource:
    """Pixels of products by position: from the cache, else decoded by a DataLoader, in a given order."""

    def __init__(self, paths: Sequence[str], keys: Sequence[str], preprocess, cache: PixelCache,
                 num_workers: int = 0, mp_context: str | None = None, chunk: int = 64) -> None:
        self.dataset = DecodeDataset(paths, preprocess)
        self.keys, self.cache = list(keys), cache
        self.num_workers, self.mp_context, self.chunk = num_workers, mp_context, chunk
        self.failures: dict[int, str] = {}  # position -> why it could not be decoded
        self.n_decoded = 0

    def _stream(self, positions: Sequence[int]) -> Generator[tuple[int, torch.Tensor | None, str | None], None, None]:
        if not positions:
            return
        loader = make_loader(self.dataset, positions, self.chunk, self.num_workers, self.mp_context)
        for items in loader:
            for pos, x, err, digest in items:
                self.n_decoded += 1
                if x is None:
                    self.failures[pos] = err
                    yield pos, None, err
                else:
                    x = x.half()  # cached or not, values are rounded alike: hits and misses give the same run
                    key = self.keys[pos]
                    if key is not None and key.endswith(f":{digest}"):  # a file rewritten since it was hashed
                        self.cache.put(key, x)                           # is used, not cached under its old hash
                    yield pos, x, None

    def prefetch(self, positions: Sequence[int], progress: bool = True) -> dict[int, str]:
        """Decode every position once (filling the cache); returns {position: error} for those that fail."""
        todo = [p for p in positions if self.keys[p] not in self.cache]
        with tqdm(total=len(todo), desc="decoding images", unit="img", disable=not progress or not todo) as bar:
            for _ in self._stream(todo):
                bar.update(1)
        log.info("decoded %d images; %d cached (%.0f MB), %d failed", len(todo), len(self.cache),
                 self.cache.nbytes / 2**20, len(self.failures))
        return {p: self.failures[p] for p in positions if p in self.failures}

    def batches(self, order: Sequence[Sequence[int]]) -> Generator[tuple[list[int], torch.Tensor], None, None]:
        """For each batch of positions: (positions decoded, (b, 3, S, S) float32 pixels)."""
        from_stream = [p for batch in order for p in batch if self.keys[p] not in self.cache]
        pending = set(from_stream)
        stream = self._stream(from_stream)
        buffer: dict[int, torch.Tensor | None] = {}
        try:
            for batch in order:
                ok: list[int] = []
                xs: list[torch.Tensor] = []
                for p in batch:
                    if p in pending:
                        while p not in buffer:
                            pos, x, _ = next(stream)
                            buffer[pos] = x
                        pending.discard(p)
                        x = buffer.pop(p)
                        if x is None:
                            log.warning("image of position %d failed to decode: %s", p, self.failures.get(p))
                            continue
                    else:
                        x = self.cache.get(self.keys[p])  # cached when the batches were planned (never dropped)
                        if x is None:
                            raise RuntimeError(f"image of position {p} is no longer in the pixel cache")
                    ok.append(p)
                    xs.append(x)
                pixels = torch.stack(xs).float() if xs else torch.zeros((0, 3, 1, 1))
                yield ok, pixels
        finally:
            stream.close()  # ends the DataLoader (and its workers) when a run stops early


# ------------------------------------------------------------------ augmentation
def augment(x: torch.Tensor, g: torch.Generator, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Random zoom (0.8-1), shift, horizontal flip, 20% greyscale (half of it inverted). x: (b, 3, h, w) normalised."""
    b, dev = x.shape[0], x.device
    mean, std = mean.to(dev), std.to(dev)
    scale = 1.0 - 0.2 * torch.rand(b, generator=g)
    shift = (torch.rand(b, 2, generator=g) * 2 - 1) * (1 - scale)[:, None]
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(dev), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid.to(x.dtype), padding_mode="border", align_corners=False)
    grey = torch.rand(b, generator=g) < 0.2
    invert = torch.rand(b, generator=g) < 0.5  # half the greyscale ones: light garment on dark ground
    if grey.any():
        sel = grey.to(dev)
        raw = x[sel] * std + mean  # (g, 3, h, w) in [0, 1]
        lum = (0.299 * raw[:, 0] + 0.587 * raw[:, 1] + 0.114 * raw[:, 2])[:, None]
        lum = torch.where(invert[grey].view(-1, 1, 1, 1).to(dev), 1.0 - lum, lum)
        x[sel] = (lum - mean) / std
    return x
