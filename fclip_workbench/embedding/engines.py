"""Embedding engines: where image vectors are computed, one pure function from a shard of image
paths to a shard of vectors and per-item failures.

`embed_images(..., engine=...)` asks an engine for the paths it has not cached and commits what
comes back to the `EmbeddingStore` itself, so every engine's vectors land under the same keys:

- `local` (default): this process, images decoded by `DataLoader` workers;
- `ray`: a Ray Data pipeline on a Ray cluster (`fclip-workbench[ray]`), one model replica per GPU
  (or per `cpus_per_replica` CPUs when the cluster has no GPU). The model travels to the workers
  as data (its configs + state dict in Ray's object store), is rebuilt there with
  `models.build_model`, and must reproduce the driver's store key, or the run stops.

Each engine yields `ShardResult`s as batches finish, in any order; `positions` index the
`paths` it was given. Reading an image and the reason it fails are the same in every engine
(`decode.DecodeDataset`), so failures read the same.

Example:
    >>> engine = get_engine("ray", address="10.0.0.1:6379")             # doctest: +SKIP
    >>> for shard in engine.embed(model, ["a.jpg", "gone.jpg"], 64):     # doctest: +SKIP
    ...     print(shard.positions, shard.vectors.shape, shard.errors)
    [0] (1, 256) [(1, 'missing file gone.jpg')]
"""
from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from fclip_workbench.embedding.decode import DecodeDataset, collate_decoded, default_num_workers, worker_init
from fclip_workbench.errors import EngineError, InvalidArgumentError, MissingExtraError
from fclip_workbench.embedding.models import EmbeddingModel

log = logging.getLogger(__name__)

RAY_EXTRA_HINT = "install the extra: pip install 'fclip-workbench[ray]'"


@dataclass
class ShardResult:
    """Vectors for some of an engine's input paths, and why others have none."""

    positions: list[int]  # index into the engine's `paths` of each row of `vectors`
    vectors: np.ndarray  # (len(positions), dim) float32, as the model returned them (checked by the caller)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (position, why it has no vector)
    digests: list[str] | None = None  # SHA-256 of the bytes each row was decoded from (None: not known)

    def __len__(self) -> int:
        return len(self.positions) + len(self.errors)


class Engine(Protocol):
    """Computes image vectors for `paths`, yielding `ShardResult`s as batches finish."""

    name: str

    def embed(self, model: EmbeddingModel, paths: Sequence[str], batch_size: int) -> Iterator[ShardResult]: ...


def embed_paths(model: EmbeddingModel, paths: Sequence[str]) -> ShardResult:
    """The pure function of both engines, for one batch in this process: decode + encode `paths`.

    >>> embed_paths(model, ["a.jpg", "gone.jpg"]).errors       # doctest: +SKIP
    [(1, 'missing file gone.jpg')]
    """
    ds = DecodeDataset(paths, model.preprocess)
    positions, pixels, bad, digests = collate_decoded(ds.__getitems__(range(len(ds))))  # the DataLoader's path
    if pixels is None:
        return ShardResult([], np.zeros((0, 0), np.float32), bad, [])
    return ShardResult(positions, model.encode_images(pixels), bad, digests)  # (b, dim)


class LocalEngine:
    """This process: `num_workers` decoding processes (None: `decode.default_num_workers()`)."""

    name = "local"

    def __init__(self, num_workers: int | None = None) -> None:
        self.num_workers = num_workers

    def embed(self, model: EmbeddingModel, paths: Sequence[str], batch_size: int) -> Iterator[ShardResult]:
        num_workers = default_num_workers() if self.num_workers is None else self.num_workers
        loader = DataLoader(DecodeDataset(paths, model.preprocess), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=collate_decoded,
                            worker_init_fn=worker_init if num_workers else None, persistent_workers=False)
        for positions, pixels, bad, digests in loader:
            vectors = model.encode_images(pixels) if pixels is not None else np.zeros((0, 0), np.float32)
            yield ShardResult(positions, vectors, bad, digests)  # (b, dim)


# ------------------------------------------------------------------ Ray
@dataclass(frozen=True)
class ModelPayload:
    """What a worker needs to rebuild a model's image tower: configs + weights, no code objects.

    `image_key` is the driver's store key (`EmbeddingSpace.image_store_key`); `rebuild()` refuses to
    return a model whose key differs (other weights, Pillow or torchvision on that worker).
    """

    name: str
    model_cfg: dict
    preprocess_cfg: dict
    tokenizer_cfg: dict  # part of the fingerprint
    state_dict: dict  # name -> CPU tensor
    image_key: str
    precision: str = "fp32"  # inference path (precision.py), re-applied on the worker

    @classmethod
    def of(cls, model: EmbeddingModel) -> "ModelPayload":
        sd = {k: v.detach().cpu() for k, v in model.model.state_dict().items()}
        return cls(model.name, dict(model.model_cfg), dict(model.preprocess_cfg), dict(model.tokenizer_cfg),
                   sd, model.space.image_store_key, getattr(model, "precision", "fp32"))

    def rebuild(self, device: str | torch.device = "cpu") -> EmbeddingModel:
        from fclip_workbench.embedding.models import build_model

        model = build_model(self.model_cfg, self.state_dict, self.preprocess_cfg, self.name, device,
                            progress=False, tokenizer=_no_tokenizer, tokenizer_cfg=self.tokenizer_cfg)
        if self.precision != "fp32":
            model = model.with_precision(self.precision)
        key = model.space.image_store_key
        if key != self.image_key:
            raise EngineError(f"The model {self.name!r} rebuilt on a Ray worker has store key {key}, the driver's "
                              f"is {self.image_key}: install the same fclip-workbench, torch, torchvision and "
                              "Pillow versions on every node")
        return model


def _no_tokenizer(texts):  # workers embed images only
    raise EngineError("models rebuilt on Ray workers embed images only")


class RayEmbedder:
    """Ray Data callable class: one model replica per actor; a batch of {pos, path} in,
    {pos, vector, error} out (vector rows of failed items are zeros, `error` '' when fine)."""

    def __init__(self, payload: dict, threads: int = 1) -> None:
        import ray

        torch.set_num_threads(max(1, threads))
        device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        self.model = ray.get(payload["ref"]).rebuild(device)  # payload: {"ref": ObjectRef[ModelPayload]}
        self.dim = int(self.model.model_cfg.get("embed_dim") or 0)
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pos, paths = batch["pos"], [str(p) for p in batch["path"]]
        res = embed_paths(self.model, paths)
        dim = res.vectors.shape[1] if res.positions else self.dim
        vectors = np.zeros((len(paths), dim), np.float32)  # (b, dim)
        errors = np.array([""] * len(paths), dtype=object)
        digests = np.array([""] * len(paths), dtype=object)
        if res.positions:
            vectors[res.positions] = res.vectors
            digests[res.positions] = res.digests
        for i, why in res.errors:
            errors[i] = why
        return {"pos": np.asarray(pos, np.int64), "vector": vectors, "error": errors, "digest": digests,
                "worker": np.full(len(paths), self.pid, np.int64)}


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise MissingExtraError(f"The ray engine needs Ray Data ({e.name or 'ray'} is missing): {RAY_EXTRA_HINT}") from e
    return ray


class RayEngine:
    """A Ray Data pipeline on the cluster at `address` (None: `RAY_ADDRESS`, the latest local cluster,
    else a new local one; a session already `ray.init`-ed is used as it is).

    Replicas: one per GPU (`num_gpus=1` each) when the cluster has GPUs, else one per
    `cpus_per_replica` CPUs; `replicas` overrides the count. After a run, `plan` holds
    (replicas, resources of each) and `workers_used` the pids of the actors that embedded something
    (Ray Data hands batches to the replicas that are ready, so a short run may use fewer).
    """

    name = "ray"

    def __init__(self, address: str | None = None, replicas: int | None = None, cpus_per_replica: int = 1) -> None:
        if replicas is not None and replicas < 1:
            raise InvalidArgumentError(f"replicas must be at least 1, got {replicas}")
        if cpus_per_replica < 1:
            raise InvalidArgumentError(f"cpus_per_replica must be at least 1, got {cpus_per_replica}")
        self.address, self.replicas, self.cpus_per_replica = address, replicas, cpus_per_replica
        self.workers_used: set[int] = set()
        self.plan: tuple[int, dict[str, Any]] | None = None

    def _connect(self, ray) -> bool:
        """Connect (True when this call did, so it must disconnect)."""
        if ray.is_initialized():
            return False
        where = self.address or os.environ.get("RAY_ADDRESS") or "a new local Ray instance"
        check_reachable(self.address or os.environ.get("RAY_ADDRESS"))
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        except Exception as e:  # ConnectionError, RuntimeError, ValueError (bad address), TimeoutError
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            if "auth" in str(e).lower() and os.environ.get("RAY_AUTH_MODE") != "token":
                first += " (a cluster with token auth: export RAY_AUTH_MODE=token, with its token in ~/.ray/auth_token)"
            raise EngineError(f"Cannot reach the Ray cluster at {where}: {first}") from e
        return True

    def _plan(self, ray) -> tuple[int, dict[str, Any]]:
        """(replicas, resources of each) for the cluster as it is now."""
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
        if gpus:
            return self.replicas or gpus, {"num_gpus": 1, "num_cpus": self.cpus_per_replica}
        if cpus < self.cpus_per_replica:
            raise EngineError(f"The Ray cluster has {cpus} CPUs and no GPU: a replica needs {self.cpus_per_replica}")
        return self.replicas or max(1, cpus // self.cpus_per_replica), {"num_cpus": self.cpus_per_replica}

    def embed(self, model: EmbeddingModel, paths: Sequence[str], batch_size: int,
              progress: bool = False) -> Iterator[ShardResult]:
        ray = _import_ray()
        if not paths:
            return
        started = self._connect(ray)
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = progress
            replicas, resources = self.plan = self._plan(ray)
            ref = ray.put(ModelPayload.of(model))
            items = [{"pos": i, "path": str(p)} for i, p in enumerate(paths)]
            ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / batch_size)))
            ds = ds.map_batches(RayEmbedder, fn_constructor_kwargs={"payload": {"ref": ref},
                                                                   "threads": self.cpus_per_replica},
                                batch_size=batch_size, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=replicas), **resources)
            log.info("ray engine: %d images, %d replicas of %s each", len(items), replicas, resources)
            self.workers_used = set()
            for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                yield _shard_of(out)
                self.workers_used.update(int(w) for w in out["worker"])
        except Exception as e:
            if isinstance(e, (EngineError, MissingExtraError)):
                raise
            cause = _unwrap(e)
            if isinstance(cause, EngineError):
                raise cause from e
            raise
        finally:
            if started:
                ray.shutdown()


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when nothing listens at a Ray `address` ('host:port' or 'ray://host:port');
    None, 'auto' and 'local' are left to Ray (Ray itself retries an absent head for minutes).

    >>> check_reachable("127.0.0.1:1")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.EngineError: Cannot reach the Ray cluster at 127.0.0.1:1: connection refused; start one with `ray start --head` or check the address
    """
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"Ray address {address!r} is not host:port (e.g. 10.0.0.1:6379 or ray://10.0.0.1:10001)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        why = "connection refused" if isinstance(e, ConnectionRefusedError) else (e.strerror or str(e) or type(e).__name__)
        raise EngineError(f"Cannot reach the Ray cluster at {address}: {why}; start one with `ray start --head` "
                          "or check the address") from e


def _shard_of(out: dict[str, np.ndarray]) -> ShardResult:
    pos, vectors, errors = out["pos"], np.asarray(out["vector"], np.float32), out["error"]  # (b,), (b, dim), (b,)
    ok = [i for i, why in enumerate(errors) if not why]
    digests = out.get("digest")
    return ShardResult([int(pos[i]) for i in ok], vectors[ok],
                       [(int(pos[i]), str(why)) for i, why in enumerate(errors) if why],
                       None if digests is None else [str(digests[i]) for i in ok])


def _unwrap(e: BaseException) -> BaseException:
    """The user-facing error inside Ray's task/actor error wrappers, if any."""
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, EngineError):
            return x
        cause = getattr(x, "cause", None)
        x = cause if isinstance(cause, BaseException) else x.__cause__
    return e


ENGINES = {"local": LocalEngine, "ray": RayEngine}


def get_engine(name: "str | Engine" = "local", address: str | None = None, num_workers: int | None = None,
               **options) -> Engine:
    """The engine called `name` ('local' or 'ray'), or `name` itself when it is an engine already;
    `address` is the Ray cluster's, `num_workers` the local engine's decoding processes.

    >>> get_engine("local").name
    'local'
    """
    if not isinstance(name, str):
        if not callable(getattr(name, "embed", None)):
            raise InvalidArgumentError(f"engine must be one of {', '.join(ENGINES)} or an Engine, got {name!r}")
        return name
    if name not in ENGINES:
        raise InvalidArgumentError(f"Unknown engine {name!r}. Known engines: {', '.join(ENGINES)}")
    if name == "local":
        if address is not None:
            raise InvalidArgumentError("address is for the ray engine; the local engine runs in this process")
        return LocalEngine(num_workers)
    _import_ray()  # fail early, before any image is read
    check_reachable(address or os.environ.get("RAY_ADDRESS"))
    return RayEngine(address, **options)
