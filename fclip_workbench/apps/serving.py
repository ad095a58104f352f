"""Serving the labelling app to many pages: preheated kernels, the request read at render time, culling.

A page load used to start a kernel, import torch, load the model and the vectors (15-80 s). Now Voila
keeps `pool_size` kernels preheated (`--preheat_kernel=True`): each runs the app notebook's first cell,
`preload_label_app()`, which loads everything that does not depend on who opens the page (catalog,
model, image vectors, label store), then blocks in the second cell, `request_environ()`, until a page
takes the kernel; Voila then sends that request's query string to the kernel, and `build_label_app`
builds the annotator for the `?annotator=` of that page. Without preheating, `request_environ()`
returns at once (Voila put the query string in the kernel's environment before it started).

Kernels of closed pages are shut down by the page's `beforeunload` request; when that never arrives
(a crashed or killed browser, a dropped connection) the kernel manager culls kernels that have had no
connection and no activity for `cull_idle_s` seconds, checked every `cull_interval_s` seconds.
Pooled kernels are never culled (Voila's kernel manager skips them).

Example:
    >>> serving_args(pool_size=2, cull_idle_s=30, cull_interval_s=10)[:2]
    ['--preheat_kernel=True', '--pool_size=2']
    >>> serving_args(pool_size=0)[0]
    '--preheat_kernel=False'
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fclip_workbench.errors import FclipError, InvalidArgumentError

log = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 2  # kernels kept preheated: pages opened at once beyond it wait for a kernel start
DEFAULT_CULL_IDLE_S = 30  # a kernel with no page connected and no activity for this long is shut down
DEFAULT_CULL_INTERVAL_S = 10  # how often the kernel manager looks (a closed page's kernel goes within 40 s)


def serving_args(pool_size: int = DEFAULT_POOL_SIZE, cull_idle_s: int = DEFAULT_CULL_IDLE_S,
                 cull_interval_s: int = DEFAULT_CULL_INTERVAL_S) -> list[str]:
    """Voila options for a preheated pool of `pool_size` kernels (0: no pool) and idle-kernel culling."""
    if pool_size < 0 or pool_size > 64:
        raise InvalidArgumentError(f"--pool-size {pool_size} is not usable: give 0 (no preheated kernels) to 64")
    if cull_idle_s < 1 or cull_interval_s < 1:
        raise InvalidArgumentError("cull times must be at least 1 second")
    pool = [f"--preheat_kernel={pool_size > 0}"] + ([f"--pool_size={pool_size}"] if pool_size else [])
    return pool + [f"--MappingKernelManager.cull_idle_timeout={cull_idle_s}",
                   f"--MappingKernelManager.cull_interval={cull_interval_s}",
                   "--MappingKernelManager.cull_connected=False",  # an open page (idle or not) keeps its kernel
                   "--MappingKernelManager.cull_busy=False"]


@dataclass
class AppResources:
    """What every page of one app shares, loaded once per kernel before a page asks for it."""

    config: Any  # LabelAppConfig
    catalog: Any  # Catalog
    model: Any  # the suggestion model
    store: Any  # LabelStore
    embeddings: Any  # EmbedResult: ids (N,), vectors (N, D) float32


def preload_label_app(config=None, environ: Mapping[str, str] | None = None) -> AppResources | FclipError:
    """Load the catalog, model, vectors and label store for the app (from `FCLIP_LABEL_APP`).

    Returns the FclipError instead of raising it, so that `build_label_app` shows it as a message
    on the page that takes this kernel.

    >>> res = preload_label_app(LabelAppConfig(data="teaching", field="colour"))   # doctest: +SKIP
    """
    from fclip_workbench.apps import LabelAppConfig, check_field, open_app_catalog, open_label_store

    environ = os.environ if environ is None else environ
    try:
        config = LabelAppConfig.from_env(environ) if config is None else config
        catalog = open_app_catalog(config)
        check_field(catalog, config.field)
        from fclip_workbench.embedding.embed import embed_images
        from fclip_workbench.embedding.store import EmbeddingStore
        from fclip_workbench.workshop import resolve_model

        model = resolve_model(config.model, catalog, device=config.device, progress=False)  # no bar atop the app
        store = open_label_store(config.store)
        embeddings = embed_images(model, catalog, store=EmbeddingStore(config.cache), progress=False)
        import fclip_workbench.widgets.annotator  # noqa: F401  (imported now, not when the page asks)
        return AppResources(config, catalog, model, store, embeddings)
    except FclipError as e:
        return e


def request_environ() -> Mapping[str, str]:
    """The environment with this page's request (QUERY_STRING, ...): in a preheated kernel this waits
    until a page takes the kernel and Voila sends its request; otherwise it is already there."""
    if os.environ.get("VOILA_PREHEAT", "False") != "False":
        from voila.utils import wait_for_request

        wait_for_request()
    return os.environ
