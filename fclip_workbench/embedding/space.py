"""The embedding space: the one value that says which vectors may be compared with which.

Two vectors are comparable only when they came from the same weights, through the
same inference path (precision and its variant, e.g. the int8 range), through the
same image pipeline (decoder, preprocessing, library versions), and have the same
width. `EmbeddingSpace` holds exactly those four facts. Every artifact made from
vectors (store rows, saved indexes, probe files, projection caches, ONNX/OpenVINO
graphs, suggester text weights, audit results) records the space it was made in and
checks it on use; a mismatch is one `SpaceMismatchError` line naming both spaces.

`EmbeddingModel.space` gives the model's current space (it follows the weights:
fine-tune them in place and the space changes). The value itself is frozen.

Example:
    >>> a = EmbeddingSpace(weights="a" * 32, precision="fp32", image_pipeline="c" * 16, dim=256, model="fclip-mini@1")
    >>> b = EmbeddingSpace.from_dict(a.to_dict())
    >>> a == b, a.key
    (True, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa+fp32:cccccccccccccccc:256')
    >>> c = EmbeddingSpace(weights="b" * 32, precision="fp32", image_pipeline="c" * 16, dim=256, model="fclip-mini@2")
    >>> a.check(c, "index 'v1'")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.SpaceMismatchError: index 'v1' was made in space fclip-mini@1 [aaaaaaaaaaaa fp32 256-d], not in fclip-mini@2 [bbbbbbbbbbbb fp32 256-d]: rebuild it with this model, or use the model it was made with
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from fclip_workbench.errors import SpaceMismatchError

_HEX = re.compile(r"^[0-9a-f]{8,128}$")
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


@dataclass(frozen=True)
class EmbeddingSpace:
    """Weights fingerprint + inference path + image-pipeline salt + dimension.

    `model` is the human name, for messages only: it takes no part in equality.
    """

    weights: str  # fingerprint of the fp32 weights and configs (models.weights_fingerprint)
    precision: str  # inference path with its variant: "fp32", "onnx", "onnx-int8-full8", "bf16", ...
    image_pipeline: str  # images.image_pipeline_salt: decoder version, Pillow, torchvision, preprocessing
    dim: int  # width of the vectors
    model: str = field(default="", compare=False)  # e.g. "fclip-mini@1"; messages only

    def __post_init__(self) -> None:
        for name in ("weights", "image_pipeline"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _HEX.match(value):
                raise SpaceMismatchError(f"embedding space: {name} must be a hex digest, got {value!r}")
        if not isinstance(self.precision, str) or not _TOKEN.match(self.precision):
            raise SpaceMismatchError(f"embedding space: precision must be a short name, got {self.precision!r}")
        if isinstance(self.dim, bool) or not isinstance(self.dim, (int, np.integer)) or not 0 < int(self.dim) < 1 << 20:
            raise SpaceMismatchError(f"embedding space: dim must be a positive integer, got {self.dim!r}")
        object.__setattr__(self, "dim", int(self.dim))
        if not isinstance(self.model, str):
            object.__setattr__(self, "model", str(self.model))

    # ------------------------------------------------------------ identity
    @property
    def key(self) -> str:
        """One string for the space (store keys, file names): `weights+precision:pipeline:dim`."""
        return f"{self.weights}+{self.precision}:{self.image_pipeline}:{self.dim}"

    @property
    def vector_fingerprint(self) -> str:
        """The model fingerprint of these vectors (`EmbeddingModel.fingerprint`): no suffix for fp32."""
        return self.weights if self.precision == "fp32" else f"{self.weights}+{self.precision}"

    @property
    def image_store_key(self) -> str:
        """`EmbeddingStore` model key of this space's image vectors: vectors' fingerprint + image pipeline."""
        return f"{self.vector_fingerprint}:{self.image_pipeline}"

    @property
    def text_store_key(self) -> str:
        """`EmbeddingStore` model key of this space's text vectors (no image pipeline in a text)."""
        return self.vector_fingerprint

    def describe(self) -> str:
        """Short, human: 'fclip-mini@1 [1a2b3c4d5e6f fp32 256-d]'."""
        body = f"[{self.weights[:12]} {self.precision} {self.dim}-d]"
        return f"{self.model} {body}" if self.model else body

    def __str__(self) -> str:
        return self.describe()

    # ------------------------------------------------------------ checks
    def check(self, actual: "EmbeddingSpace", what: str) -> None:
        """Raise `SpaceMismatchError` unless `actual` is this space. `what` names the artifact ("index 'v1'")."""
        if not isinstance(actual, EmbeddingSpace):
            raise SpaceMismatchError(f"{what}: expected an embedding space, got {type(actual).__name__}")
        if actual != self:
            raise SpaceMismatchError(f"{what} was made in space {self.describe()}, not in {actual.describe()}: "
                                     f"rebuild it with this model, or use the model it was made with")

    def check_vectors(self, vectors: np.ndarray, what: str) -> None:
        """Raise `SpaceMismatchError` unless `vectors` is (n, dim) and finite. (NaN rows are never served.)"""
        arr = np.asarray(vectors)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise SpaceMismatchError(f"{what} holds vectors of shape {tuple(arr.shape)}, "
                                     f"but its space {self.describe()} is {self.dim}-d")
        if arr.size and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr).all(axis=1)).sum())
            raise SpaceMismatchError(f"{what} holds {bad} non-finite vector(s): rebuild it")

    # ------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "artifact") -> "EmbeddingSpace":
        """Read a recorded space; a missing or damaged record is one `SpaceMismatchError` line naming `where`."""
        if not isinstance(data, Mapping):
            raise SpaceMismatchError(f"{where} records no embedding space (made by an older fclip-workbench?): "
                                     f"rebuild it")
        missing = [k for k in ("weights", "precision", "image_pipeline", "dim") if k not in data]
        if missing:
            raise SpaceMismatchError(f"{where}: its embedding space lacks {', '.join(missing)}: rebuild it")
        dim = data["dim"]
        if isinstance(dim, float) and math.isfinite(dim) and dim.is_integer():
            dim = int(dim)
        try:
            return cls(weights=data["weights"], precision=data["precision"], image_pipeline=data["image_pipeline"],
                       dim=dim, model=str(data.get("model", "")))
        except SpaceMismatchError as e:
            raise SpaceMismatchError(f"{where}: damaged embedding space ({e})") from e


def space_of(model_or_space: Any) -> EmbeddingSpace:
    """The `EmbeddingSpace` of an `EmbeddingModel` (its `.space`) or a space itself.

    >>> s = EmbeddingSpace("a" * 32, "fp32", "b" * 16, 8)
    >>> space_of(s) is s
    True
    """
    if isinstance(model_or_space, EmbeddingSpace):
        return model_or_space
    space = getattr(model_or_space, "space", None)
    if isinstance(space, EmbeddingSpace):
        return space
    raise SpaceMismatchError(f"expected an EmbeddingModel or an EmbeddingSpace, got {type(model_or_space).__name__}")
