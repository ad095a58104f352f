"""What a grounding map is computed from: the photo as loaded, the model's view of it, and the similarity.

`open_image` reads a photo once (bounded in size, so a huge file never decodes in full), `Preprocessor`
turns it into the model's input the way its preprocessing would (`fit`: squash or letterbox), and
`Similarity` is the image-text similarity that every method in `methods.py` explains.

Example:
    >>> img, size = open_image("shirt.jpg", max_side=1024)                   # doctest: +SKIP
    >>> Preprocessor(load_model("fclip-mini")).prepare(img).x.shape          # doctest: +SKIP
    torch.Size([1, 3, 96, 96])
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fclip_workbench.errors import InvalidArgumentError

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
FITS = ("auto", "squash", "pad")  # how a photo becomes the model's square input (Preprocessor)


# ------------------------------------------------------------------ inputs
WORK_MAX_SIDE = 1024  # px: maps are computed on the photo scaled down to at most this (or 5 x the model's input)
DISPLAY_MAX_SIDE = 1024  # px: `fclip ground` draws and saves maps at most this size


def _bounded(img: Image.Image, max_side: int | None) -> Image.Image:
    """`img` scaled down (aspect kept) so its longer side is at most `max_side`; smaller ones unchanged."""
    if max_side is None or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    factor = max(1, min(img.width // size[0], img.height // size[1]) // 2)
    if factor > 1:  # integer box reduction first: fast, and no full-size float copy
        img = img.reduce(factor)
    return img.resize(size, Image.Resampling.LANCZOS)


def open_image(image, max_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(RGB PIL image with its longer side at most `max_side`, the photo's own (H, W)).

    A JPEG is decoded at a reduced scale (PIL `draft`), so a 10000 x 10000 photo never sits in
    memory at full size. Missing, folder, not an image, truncated, or larger than PIL's
    `Image.MAX_IMAGE_PIXELS` allows (a decompression bomb): one `InvalidArgumentError` line.

    >>> img, size = open_image(np.zeros((40, 60, 3), np.uint8), max_side=30)
    >>> img.size, size
    ((30, 20), (40, 60))
    """
    import warnings

    from PIL import ImageOps, UnidentifiedImageError

    from fclip_workbench.embedding.images import image_file_problem, to_rgb

    if not isinstance(image, (str, Path)) or max_side is None:
        img = load_image(image)
        return _bounded(img, max_side), (img.height, img.width)
    path = Path(image)
    if not path.exists():
        raise InvalidArgumentError(f"query image {path} does not exist")
    if path.is_dir():
        raise InvalidArgumentError(f"query image {path} is a folder; give an image file")
    problem = image_file_problem(path)  # a FIFO or device would block the reader forever
    if problem is not None:
        raise InvalidArgumentError(f"query image {path}: {problem}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decoded reduced, below
            with Image.open(path) as im:
                orientation = im.getexif().get(0x0112, 1)
                w, h = im.size
                if im.format == "JPEG":
                    im.draft("RGB", (max_side, max_side))  # DCT scaling: at least max_side, up to 8x smaller
                im.load()
                img = _bounded(to_rgb(ImageOps.exif_transpose(im)), max_side)
    except Image.DecompressionBombError as e:
        raise InvalidArgumentError(f"query image {path} is too large to decode safely: {e}") from e
    except UnidentifiedImageError as e:
        raise InvalidArgumentError(f"cannot use query image: not an image PIL can read: {path}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidArgumentError(f"cannot use query image: corrupt or truncated image {path}: {e}") from e
    own = (w, h) if orientation in (5, 6, 7, 8) else (h, w)  # EXIF rotations by 90 degrees swap the sides
    return img, own


def load_image(image, max_side: int | None = None) -> Image.Image:
    """A path, PIL image or (H, W, 3) uint8 array as an RGB PIL image; a bad one -> InvalidArgumentError.

    `max_side`: scaled down so the longer side is at most that (a JPEG is decoded reduced).

    >>> load_image(np.zeros((4, 6, 3), np.uint8)).size
    (6, 4)
    """
    from fclip_workbench.search.searcher import load_query_image

    if max_side is not None:
        return open_image(image, max_side)[0]
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise InvalidArgumentError(f"image array must be (H, W, 3), got shape {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image).astype(np.uint8), "RGB")
    if isinstance(image, (str, Path, Image.Image)):
        return load_query_image(image)
    raise InvalidArgumentError(f"image must be a file path, a PIL image or an (H, W, 3) array, got {type(image).__name__}")


def check_texts(text: str | Sequence[str]) -> list[str]:
    """The query (or queries) as a list; empty or blank ones -> InvalidArgumentError.

    >>> check_texts("red dress")
    ['red dress']
    """
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise InvalidArgumentError("no query given; pass a text such as 'red stripes'")
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise InvalidArgumentError(f"empty query {t!r}; give a non-empty text such as 'red stripes'")
    return texts


@dataclass
class Prepared:
    """An image as the model sees it, and where it sits in the model's square input."""

    x: torch.Tensor  # (1, 3, S, S) normalised pixels
    box: tuple[int, int, int, int]  # top, left, height, width of the image inside the S x S input
    size: tuple[int, int]  # (H, W) of the original image

    def to_image(self, maps: torch.Tensor) -> np.ndarray:
        """(n, S, S) input-space maps -> (n, H, W) float32 in the image's own pixels."""
        top, left, h, w = self.box
        crop = maps[:, top:top + h, left:left + w].float()  # (n, h, w)
        out = F.interpolate(crop[:, None], size=self.size, mode="bilinear", align_corners=False)[:, 0]
        return out.detach().cpu().numpy().astype(np.float32)

    def to_input(self, image_map: np.ndarray) -> torch.Tensor:
        """(H, W) image-space map -> (S, S) input-space map (outside the image: -inf)."""
        top, left, h, w = self.box
        s = self.x.shape[-1]
        t = torch.as_tensor(np.asarray(image_map, np.float32))[None, None]
        inner = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        out = torch.full((s, s), float("-inf"))
        out[top:top + h, left:left + w] = inner
        return out


class Preprocessor:
    """PIL image -> `Prepared`, with the model's size, mean, std and interpolation.

    >>> p = Preprocessor(size=8, fit="pad")
    >>> p(Image.new("RGB", (16, 8))).box
    (2, 0, 4, 8)
    """

    def __init__(self, size: int, mean=OPENAI_MEAN, std=OPENAI_STD, fit: str = "pad",
                 interpolation: str = "bicubic") -> None:
        self.size, self.fit = int(size), fit
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.resample = Image.Resampling.BILINEAR if interpolation == "bilinear" else Image.Resampling.BICUBIC

    @classmethod
    def for_model(cls, model, fit: str = "auto") -> "Preprocessor":
        cfg = getattr(model, "preprocess_cfg", None) or {}
        size = cfg.get("size", 224)
        size = size[0] if isinstance(size, (tuple, list)) else size
        if fit == "auto":
            fit = "squash" if cfg.get("resize_mode") == "squash" else "pad"
        return cls(size, cfg.get("mean", OPENAI_MEAN), cfg.get("std", OPENAI_STD), fit,
                   cfg.get("interpolation", "bicubic"))

    @property
    def fill(self) -> tuple[int, int, int]:
        """The mean colour (uint8 RGB): normalised, it is 0 (the perturbation baseline)."""
        r, g, b = (int(round(float(m) * 255)) for m in self.mean.flatten())
        return r, g, b

    def normalise(self, img: Image.Image) -> torch.Tensor:
        arr = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)  # (3, S, S)
        return (arr - self.mean) / self.std

    def __call__(self, img: Image.Image) -> Prepared:
        s, (w, h) = self.size, img.size
        if self.fit == "squash":
            canvas, box = img.resize((s, s), self.resample), (0, 0, s, s)
        else:  # letterbox: the whole image, aspect kept, on the mean colour
            scale = s / max(w, h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            canvas = Image.new("RGB", (s, s), self.fill)
            top, left = (s - nh) // 2, (s - nw) // 2
            canvas.paste(img.resize((nw, nh), self.resample), (left, top))
            box = (top, left, nh, nw)
        return Prepared(self.normalise(canvas)[None], box, (h, w))


# ------------------------------------------------------------------ the similarity being explained
class Similarity(torch.nn.Module):
    """pixels (n, 3, S, S) -> cosine similarity with each text (n, n_texts)."""

    text_emb: torch.Tensor  # a buffer

    def __init__(self, clip: torch.nn.Module, text_emb: torch.Tensor) -> None:
        super().__init__()
        self.clip: Any = clip  # a CLIP module: encode_image, visual, ... are untyped on nn.Module
        self.register_buffer("text_emb", text_emb)  # (n_texts, dim), L2-normalised

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        img = self.clip.encode_image(pixels, normalize=True)  # (n, dim)
        return img.float() @ self.text_emb.T  # (n, n_texts)
