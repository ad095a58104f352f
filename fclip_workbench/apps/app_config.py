"""`fclip label --config team.toml` and `fclip label --check`: a team server's settings in one file.

The file (TOML) holds the keys of `KEYS`; the command line wins over it. Unknown keys are an error
that names them. `check_app` runs every check that needs no browser and returns one line per problem.

    store = "postgresql+psycopg://fclip@db.internal/labels"
    data = "/srv/catalog/kagl"
    field = "articleType"
    model = "fclip-mini"
    host = "0.0.0.0"
    port = 8866
    # token = "..."           # optional: else a token is generated and printed once
    [roles]
    lea = "lead"
    cy = "adjudicator"

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "team.toml"
    >>> _ = p.write_text('field = "colour"\\nport = 9000\\n')
    >>> load_config(p)
    {'field': 'colour', 'port': 9000}
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from fclip_workbench.errors import ConfigError, FclipError

# config key -> (type, help); the same names as `fclip label`'s flags
KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "store": (str, "label store: SQLite file or SQLAlchemy URL"),
    "data": (str, "catalog: folder, CSV/Parquet file, 'teaching' or 'auto'"),
    "format": (str, "catalog format (auto, kagl, ccp, fmnist, csv, parquet, folder)"),
    "limit": (int, "first N catalog rows"),
    "field": (str, "the label field"),
    "model": (str, "model spec"),
    "device": (str, "cuda, mps or cpu"),
    "cache": (str, "embedding store"),
    "host": (str, "address to serve on; beyond loopback it needs the token or a link"),
    "port": (int, "TCP port"),
    "token": (str, "the server token (else generated and printed once)"),
    "annotator": (str, "who labels with the server token"),
    "roles": (dict, "{name = 'lead' | 'adjudicator'}, granted when the server starts"),
}


def load_config(path: str | Path) -> dict[str, Any]:
    """The settings in a TOML file, type-checked; ConfigError naming unknown keys or a wrong type."""
    p = Path(path).expanduser()
    try:
        with p.open("rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not TOML: {e}") from None
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConfigError(f"config file {p}: unknown keys {', '.join(unknown)}; known: {', '.join(KEYS)}")
    for key, value in values.items():
        kind = KEYS[key][0]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"config file {p}: {key} = {value!r} is not a {getattr(kind, '__name__', kind)}")
    for name, role in values.get("roles", {}).items():
        if role not in ("lead", "adjudicator"):
            raise ConfigError(f"config file {p}: roles.{name} = {role!r}; roles are 'lead' and 'adjudicator'")
    return values


def merged(args, config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Config values under command-line flags: a flag left at its default takes the file's value.

    >>> merged(type("A", (), {"port": 8866, "field": "x"})(), {"port": 9000, "field": "y"}, {"port": 8866})
    {'port': 9000, 'field': 'x'}
    """
    out = {}
    for key, value in config.items():
        given = getattr(args, key, None)
        out[key] = value if key == "roles" or given is None or given == defaults.get(key) else given
    return out


def apply_roles(store, roles: dict[str, str]) -> None:
    """Grant the config's roles (leads first; the first lead of a new team needs no lead)."""
    leads = [n for n, r in roles.items() if r == "lead"]
    by = leads[0] if leads else None
    for name, role in sorted(roles.items(), key=lambda kv: kv[1] != "lead"):
        if not store.has_role(name, role):
            if by is None:
                raise ConfigError(f"roles: granting {name} {role} needs a lead in the config's roles")
            store.grant(name, role, by=by)


def missing_embeddings(model, catalog, cache: str | None) -> tuple[int, int]:
    """(products with a readable image, how many of them have no cached image vector for `model`)."""
    from fclip_workbench.embedding.embed import image_model_key
    from fclip_workbench.embedding.store import EmbeddingStore

    with EmbeddingStore(cache, readonly=True) as store:
        rows = catalog.usable_rows("image")
        digests = [d for d in store.file_digests([catalog.image_path(int(r)) for r in rows]) if d is not None]
        cached = store.get_many(image_model_key(model.space), "image", set(digests), dim=model.space.dim)
    return len(digests), sum(d not in cached for d in digests)


def check_app(settings: dict[str, Any]) -> list[str]:
    """One line per problem with a team server's settings (host, port, token, store, roles, catalog, field,
    model, cached embeddings); [] when it is ready to serve."""
    from fclip_workbench.apps import LabelAppConfig, check_field, open_app_catalog, open_label_store
    from fclip_workbench.labelling.app import absolute_spec, check_host, check_model_spec, check_token

    problems: list[str] = []

    def attempt(what: str, fn):
        try:
            return fn()
        except (FclipError, OSError, ValueError) as e:
            problems.append(f"{what}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            return None

    attempt("host", lambda: check_host(settings.get("host") or "127.0.0.1", allow_remote=True))
    port = settings.get("port", 8866)
    if not 0 < int(port) < 65536:
        problems.append(f"port: {port} is not a TCP port (1..65535)")
    if settings.get("token") is not None:
        attempt("token", lambda: check_token(settings["token"]))
    store = attempt("store", lambda: open_label_store(absolute_spec(settings.get("store"), is_path=True)))
    if store is not None:
        for name, role in settings.get("roles", {}).items():
            if not store.has_role(name, role):
                problems.append(f"roles: {name} is not yet {role} in the store (granted when the server starts)")
        store.close()
    config = LabelAppConfig(data=absolute_spec(settings.get("data", "auto")) or "auto", field=settings.get("field", ""),
                            model=settings.get("model", "auto"), format=settings.get("format", "auto"),
                            limit=settings.get("limit"), device=settings.get("device"), cache=settings.get("cache"))
    catalog = attempt("catalog", lambda: open_app_catalog(config))
    if catalog is None:
        return problems
    if not config.field:
        problems.append("field: no field given (--field or field = ... in the config)")
    else:
        attempt("field", lambda: check_field(catalog, config.field))
    if attempt("model", lambda: check_model_spec(config.model, config.device)) is None:
        return problems
    from fclip_workbench.workshop import resolve_model

    model = attempt("model", lambda: resolve_model(config.model, catalog, device=config.device, progress=False))
    counts = attempt("embeddings", lambda: missing_embeddings(model, catalog, config.cache)) if model else None
    if counts is not None and counts[1]:
        problems.append(f"embeddings: {counts[1]} of {counts[0]} products are not cached for {config.model} "
                        "(fclip label embeds them before serving; fclip embed does it now)")
    return problems
