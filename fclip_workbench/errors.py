"""The project's exceptions: one small hierarchy so callers (and the CLI) can tell
user mistakes from bugs.

Example:
    >>> try:
    ...     raise UnknownModelError("Unknown model 'x'.")
    ... except FclipError as e:
    ...     print(e)
    Unknown model 'x'.
"""
from __future__ import annotations


class FclipError(Exception):
    """Base class for errors caused by user input (bad spec, bad file, bad data)."""


class UnknownModelError(FclipError, ValueError):
    """A model spec that is neither a preset, an open_clip name, nor a local path."""


class WeightsNotFoundError(FclipError, FileNotFoundError):
    """Model weights are not on disk and cannot be downloaded (e.g. offline)."""


class CheckpointError(FclipError, ValueError):
    """A checkpoint file exists but cannot be understood (unknown format, wrong keys)."""


class CatalogError(FclipError, ValueError):
    """A catalog file cannot be read at all (missing columns, missing file)."""


class MissingExtraError(FclipError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class CacheError(FclipError):
    """An embedding store that cannot be used (not a database, damaged, disk full); the message says what to do."""


class LeakageError(FclipError, ValueError):
    """An evaluation would score a model on products it was trained on; the message names the overlap."""


class InvalidArgumentError(FclipError, ValueError):
    """A bad argument value (k, a weight, a query, a batch size); the message names it and what is allowed."""


class ConfigError(FclipError, ValueError):
    """A training or evaluation setting out of range (batch size, learning rate, ...); the message names it."""


class LabelStoreError(FclipError):
    """A label store that cannot be used (unreachable, damaged, not a label store); the message says what to do."""


class LabelStoreUnreachableError(LabelStoreError):
    """The label store's server cannot be reached now (restarting, network down): nothing was saved; retry."""


class LabelStoreBusyError(LabelStoreError):
    """The label store stayed locked by another process for longer than the store's timeout."""


class LabelStoreReadOnlyError(LabelStoreError, PermissionError):
    """The label store cannot be written (read-only file, folder or server): labels could not be saved."""


class UnknownItemError(FclipError, ValueError):
    """A label for an item id that is not in the store's known ids (its catalog)."""


class LabelValueError(FclipError, ValueError):
    """A label value outside the field's taxonomy (or empty); the message lists the valid values."""


class TaxonomyError(FclipError, ValueError):
    """A taxonomy that cannot be built (bad file, unknown field or supercategory, empty value)."""


class LabelImportError(FclipError, ValueError):
    """A label file that cannot be imported at all (missing, unknown format, missing columns)."""


class UndoConflictError(LabelStoreError):
    """An undo that would overwrite a later decision made by someone else on the same item."""


class RoleError(LabelStoreError, PermissionError):
    """A team action (adjudicating, granting a role) by someone without the role it needs."""


class AccessError(FclipError, PermissionError):
    """A team-server link or token that is unknown, expired or revoked."""


class ModelMismatchError(FclipError, ValueError):
    """Embeddings from another model (fingerprint) or of another width than a fitted probe expects."""


class EngineError(FclipError, RuntimeError):
    """An embedding engine that cannot run (unreachable Ray cluster, workers that differ from the driver)."""


class SpaceMismatchError(ModelMismatchError):
    """An artifact made from vectors (index, probe, projection, graph, weights, store row) used in another
    embedding space (`space.EmbeddingSpace`); the message names both spaces."""


class ConflictError(LabelStoreError):
    """A conditional label write whose premise no longer holds: someone else's event touched the item after
    the page (or batch) was drawn. Nothing was written; the message names who and what."""


class SavedIndexError(FclipError, ValueError):
    """A saved search index folder that cannot be used (missing, not an index, damaged, made by an older
    version); the message names the folder and what is wrong with it."""
