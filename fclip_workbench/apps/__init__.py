"""Web apps served with Voila: the labelling app for merchandisers (`label.ipynb`).

The app notebook holds no logic: `fclip label` (see `label_app.serve_label_app`) writes a
`LabelAppConfig` into the environment variable `FCLIP_LABEL_APP` (JSON) and starts Voila;
the kernel reads it back with `LabelAppConfig.from_env()` and `build_label_app()` returns the
annotator widget. Voila hands the page's URL query string to the kernel as `QUERY_STRING`,
so `http://127.0.0.1:8866/?annotator=alice` opens the app as annotator "alice".

Example:
    >>> cfg = LabelAppConfig(data="/data/teaching", field="colour")
    >>> LabelAppConfig.from_env({ENV_CONFIG: cfg.to_json()}) == cfg
    True
    >>> annotator_from_query("annotator=alice&x=1")
    'alice'
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any

from fclip_workbench.errors import ConfigError, InvalidArgumentError

log = logging.getLogger(__name__)

ENV_CONFIG = "FCLIP_LABEL_APP"  # JSON of a LabelAppConfig, set by serve_label_app for the Voila kernel
LABEL_NOTEBOOK = Path(__file__).with_name("label.ipynb")
# Jupyter data folder of the app's Voila template `fclip-lab` (lab, with no CDN links: everything is served locally)
VOILA_DATA_DIR = Path(__file__).with_name("share") / "jupyter"
VOILA_TEMPLATE = "fclip-lab"
QUERY_KEYS = ("annotator", "name")  # URL parameters that name the annotator, first found wins
MAX_NAME = 64
_NAME_OK = re.compile(r"^[\w .@'-]+$")  # letters (any script), digits, space, . @ ' - _


@dataclass(frozen=True)
class LabelAppConfig:
    """What the labelling app serves: a catalog, one label field, a model and a label store."""

    data: str = "auto"  # catalog spec: 'auto', 'teaching', 'kagl', or an absolute path
    field: str = ""  # the label field (a catalog attribute column), e.g. "articleType"
    model: str = "auto"  # model spec for suggestions (preset, hf-hub:..., absolute local path)
    store: str | None = None  # label store: absolute SQLite path or SQLAlchemy URL; None: default_labels_path()
    annotator: str | None = None  # default annotator name (the URL's ?annotator= wins)
    format: str = "auto"  # catalog format, as `fclip --format`
    limit: int | None = None  # first N catalog rows only
    catalog_options: dict[str, Any] = dc_field(default_factory=dict)  # open_catalog keyword arguments
    device: str | None = None  # cuda, mps or cpu (None: best available)
    cache: str | None = None  # embedding store path (None: the default store)
    remote: bool = False  # served beyond loopback: the annotator comes from the link (apps/access.py), never the URL

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "LabelAppConfig":
        """The config `serve_label_app` put in `FCLIP_LABEL_APP`; ConfigError when absent or malformed."""
        environ = os.environ if environ is None else environ
        raw = environ.get(ENV_CONFIG)
        if not raw:
            raise ConfigError(f"{ENV_CONFIG} is not set: start the app with `fclip label --data CATALOG --field FIELD`")
        try:
            values = json.loads(raw)
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(f"{ENV_CONFIG} has unknown keys {unknown}; known: {sorted(known)}")
            return cls(**values)
        except (json.JSONDecodeError, TypeError, AttributeError) as e:
            raise ConfigError(f"{ENV_CONFIG} is not a label app config ({e}): restart with `fclip label`") from e


def annotator_from_query(query_string: str | None) -> str | None:
    """The annotator named in a URL query string (`annotator=` or `name=`), or None.

    A name that is too long or holds odd characters raises InvalidArgumentError.

    >>> annotator_from_query("name=Ana%20Lopez") , annotator_from_query("")
    ('Ana Lopez', None)
    """
    params = urllib.parse.parse_qs(query_string or "", keep_blank_values=False)
    for key in QUERY_KEYS:
        if params.get(key):
            return check_annotator_name(params[key][0])
    return None


def check_annotator_name(name: str) -> str:
    """`name` stripped, or InvalidArgumentError naming the bad value.

    >>> check_annotator_name("  alice ")
    'alice'
    """
    clean = name.strip()
    if not clean or len(clean) > MAX_NAME or not _NAME_OK.match(clean):
        raise InvalidArgumentError(
            f"Annotator name {name!r} is not usable: give 1 to {MAX_NAME} letters, digits, spaces or . @ ' - _")
    return clean


def open_app_catalog(config: LabelAppConfig):
    """The catalog `config` describes (same rules as the CLI's --data/--format/--limit)."""
    from fclip_workbench.data.datasets import open_catalog
    from fclip_workbench.workshop import resolve_data

    if config.data in ("auto", "teaching", "kagl"):
        return resolve_data(config.data, limit=config.limit)
    options = dict(config.catalog_options)
    fmnist = config.format == "fmnist" or options.get("split") is not None
    if fmnist:
        options["limit"] = config.limit
    cat = open_catalog(config.data, config.format, **options)
    if config.limit is not None and not fmnist and config.limit < len(cat):
        cat = cat.subset(range(config.limit))
    return cat


def check_field(catalog, field: str) -> str:
    """`field` when it is one of the catalog's attribute columns, else InvalidArgumentError listing them.

    >>> check_field(catalog, "colour")            # doctest: +SKIP
    'colour'
    """
    fields = catalog.attributes
    if field not in fields:
        listed = ", ".join(fields) if fields else "none (the catalog has no attribute columns)"
        raise InvalidArgumentError(f"Unknown field {field!r} for catalog {catalog.name!r}; its fields: {listed}")
    return field


def open_label_store(spec: str | None):
    """The LabelStore for a path or SQLAlchemy URL (None: `paths.default_labels_path()`)."""
    from fclip_workbench.labelling.labels import LabelStore
    from fclip_workbench.paths import default_labels_path

    if spec is None:
        path = default_labels_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        spec = str(path)
    return LabelStore(spec)
