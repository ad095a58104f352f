"""Reading product images robustly: any mode PIL opens becomes 8-bit RGB.

CMYK, palette, 16-bit greyscale and images with alpha are converted, never
rejected; truncated or unreadable files raise `ImageLoadError` with the reason.
`image_pipeline_salt(model)` names this pipeline (its version, Pillow, torchvision
and the model's preprocessing), so cached image vectors are never reused across
a change of any of them.

Example:
    >>> img = load_rgb("data/sample.png")      # doctest: +SKIP
    >>> img.mode                                # doctest: +SKIP
    'RGB'
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

WHITE = (255, 255, 255)
# Bump whenever load_rgb / to_rgb change what pixels they produce: cached image vectors are then recomputed.
IMAGE_PIPELINE_VERSION = 2  # 2: 16-bit and float greyscale scaled by bit depth, not stretched


class ImageLoadError(Exception):
    """An image file that cannot be decoded; the message says why."""


def to_rgb(img: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Convert any PIL image to 8-bit RGB; transparency is composited on `background`."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = Image.fromarray(_grey_to_8bit(np.asarray(img, dtype=np.float64), img.mode), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGB", rgba.size, background)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return img.convert("RGB")


def _grey_to_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """(h, w) 16-bit, 32-bit or float grey levels -> uint8, by the range the mode stands for.

    A flat white 16-bit image stays white (never stretched to black): "I;16*" are 16-bit levels;
    "I" (32-bit) in [0, 255] holds 8-bit levels, in [0, 65535] 16-bit ones; "F" in [0, 1] is a
    fraction of white, in [0, 255] 8-bit levels.
    Only values no such range holds (negative, over 65535) are stretched to their own min..max.

    >>> _grey_to_8bit(np.full((1, 2), 65535.0), "I;16").tolist()
    [[255, 255]]
    >>> _grey_to_8bit(np.array([[0.0, 0.5, 1.0]]), "F").tolist()
    [[0, 128, 255]]
    """
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode == "F" and lo >= 0 and hi <= 1:
        scaled = arr * 255.0
    elif mode in ("F", "I") and lo >= 0 and hi <= 255:  # 32-bit levels holding 8-bit ones (convert("I"))
        scaled = arr
    elif lo >= 0 and hi <= 65535:
        scaled = arr / 257.0
    else:
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def image_file_problem(path: str | Path) -> str | None:
    """Why `path` cannot be read as an image file (missing, a folder, a FIFO or device...), or None.

    A FIFO would block a reader forever, so it is refused by its type, before any read.

    >>> image_file_problem("/nonexistent.jpg")
    'missing file /nonexistent.jpg'
    >>> image_file_problem("/")
    'not a regular file (a folder): /'
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"missing file {path}"
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "not a file")
    return f"not a regular file ({kind}): {path}"


def load_rgb(path: str | Path) -> Image.Image:
    """Open, fully decode and convert an image to RGB, honouring EXIF orientation.

    Raises `ImageLoadError` for a missing, truncated or undecodable file.
    """
    return load_rgb_and_digest(path)[0]


def load_rgb_and_digest(path: str | Path) -> tuple[Image.Image, str]:
    """(RGB image, SHA-256 of the very bytes decoded): read the file once, hash and decode that copy.

    A vector is stored under the hash of the picture it was computed from, even when the file is
    rewritten between a first hash (`file_digest`) and the decode.

    >>> import io, tempfile, os
    >>> f = tempfile.NamedTemporaryFile(suffix=".png", delete=False); Image.new("RGB", (2, 2)).save(f); f.close()
    >>> img, digest = load_rgb_and_digest(f.name)
    >>> digest == file_digest(f.name), img.size
    (True, (2, 2))
    >>> os.unlink(f.name)
    """
    problem = image_file_problem(path)
    if problem is not None:
        raise ImageLoadError(problem)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as e:
        raise ImageLoadError(f"file not found: {path}") from e
    except IsADirectoryError as e:
        raise ImageLoadError(f"not a file: {path}") from e
    except OSError as e:
        raise ImageLoadError(f"cannot read {path}: {e.strerror or e}") from e
    return decode_rgb(data, path), hashlib.sha256(data).hexdigest()


def decode_rgb(data: bytes, path: str | Path = "<bytes>") -> Image.Image:
    """Decode image bytes to RGB (EXIF orientation honoured); `path` only names it in errors."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now: truncated files fail here, not later
            return to_rgb(ImageOps.exif_transpose(img))
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"not an image PIL can read: {path}") from e
    except Image.DecompressionBombError as e:  # a pixel count past Pillow's limit: refused, not decoded
        raise ImageLoadError(f"image too large to decode safely {path}: {e}") from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data
        raise ImageLoadError(f"corrupt or truncated image {path}: {e}") from e


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex), the content key of an image.

    >>> file_digest(__file__) == file_digest(__file__)
    True
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def text_digest(text: str) -> str:
    """SHA-256 of a UTF-8 string (hex), the content key of a text.

    >>> len(text_digest("navy shirt"))
    64
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def image_pipeline_salt(model) -> str:
    """Short hash of everything between an image file and the model's input besides its bytes:
    IMAGE_PIPELINE_VERSION, Pillow and torchvision versions, and `model.preprocess_cfg`.

    >>> from types import SimpleNamespace
    >>> len(image_pipeline_salt(SimpleNamespace(preprocess_cfg={"size": 224})))
    16
    """
    try:
        import torchvision
        tv = torchvision.__version__
    except ImportError:  # preprocessing without torchvision
        tv = None
    payload = {"pipeline": IMAGE_PIPELINE_VERSION, "pillow": PIL.__version__, "torchvision": tv,
               "preprocess": getattr(model, "preprocess_cfg", None) or {}}
    return hashlib.blake2b(json.dumps(payload, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
