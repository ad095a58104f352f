"""Serve the labelling app (`apps/label.ipynb`) with Voila: `fclip label` in the library.

Everything the user can get wrong is checked here, in one line each, before Voila starts:
host (loopback unless `allow_remote`), port (a number that is free), catalog, field (one of
the catalog's attribute columns), model spec, and the label store (opened once, so a
read-only or locked store fails now and not in the browser). The catalog is then embedded into
the cache (progress bar here, not a page stuck loading). Then this process becomes Voila
(`os.execv`, same pid: Ctrl-C and SIGTERM stop the server) with the settings in
`FCLIP_LABEL_APP` for the app's kernel.

Example:
    >>> serve_label_app("teaching", "colour", store="labels.sqlite", port=8866)   # doctest: +SKIP
    open http://127.0.0.1:8866/ (annotator name: http://127.0.0.1:8866/?annotator=NAME)
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path

from fclip_workbench.apps import (ENV_CONFIG, LABEL_NOTEBOOK, VOILA_DATA_DIR, VOILA_TEMPLATE, LabelAppConfig, check_annotator_name,
                   check_field, open_app_catalog)
from fclip_workbench.apps.serving import DEFAULT_POOL_SIZE, serving_args
from fclip_workbench.errors import FclipError, InvalidArgumentError, MissingExtraError

log = logging.getLogger(__name__)

DEFAULT_PORT = 8866  # Voila's own default
LOCAL_MODELS = ("auto", "tiny-teaching")  # specs workshop.resolve_model handles without load_model


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'.

    >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0"), is_loopback("localhost")
    (True, False, True)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool = False) -> str:
    """`host` when it is an IP address (or 'localhost') that may be bound; InvalidArgumentError otherwise."""
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError as e:
            raise InvalidArgumentError(f"--host {host!r} is not an IP address: give e.g. 127.0.0.1 or 0.0.0.0") from e
    if not is_loopback(host) and not allow_remote:
        raise InvalidArgumentError(
            f"--host {host} is reachable from other machines: pass --host explicitly on the command line "
            "(or host in the config file) to allow it; it then needs a token or a link (the default is 127.0.0.1)")
    return host


def check_port(host: str, port: int) -> int:
    """`port` when it is in 1..65535 and free on `host`; InvalidArgumentError otherwise."""
    if not 0 < int(port) < 65536:
        raise InvalidArgumentError(f"--port {port} is not a TCP port: give a number from 1 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as e:
            raise InvalidArgumentError(f"--port {port} on {host} is not free ({e.strerror}): "
                                       "pick another with --port") from e
    return int(port)


def check_model_spec(spec: str, device: str | None = None) -> str:
    """`spec` when it names a model: presets, local paths and hub specs are checked without loading;
    anything else goes through `load_model` (raises UnknownModelError with the known presets)."""
    if spec in LOCAL_MODELS or spec.startswith("hf-hub:") or Path(spec).expanduser().exists():
        return spec
    from fclip_workbench.embedding.models import PRESETS, load_model

    if spec not in PRESETS:
        load_model(spec, device=device, progress=False)  # an open_clip ARCH:TAG, or the one-line error
    return spec


def absolute_spec(spec: str | None, is_path: bool = False) -> str | None:
    """A local path made absolute (the app's kernel runs in another folder); URLs and names kept.

    `is_path`: make it absolute even when it does not exist yet (a new label store file).

    >>> absolute_spec("postgresql://u@h/db", is_path=True), absolute_spec(None), absolute_spec("fclip-mini")
    ('postgresql://u@h/db', None, 'fclip-mini')
    """
    if spec is None or "://" in spec or spec.startswith("hf-hub:"):
        return spec
    path = Path(spec).expanduser()
    return str(path.resolve()) if is_path or path.exists() else spec


def check_store(spec: str | None) -> str | None:
    """Open the label store once (creates it; read-only, locked or unreachable stores fail here)."""
    from fclip_workbench.apps import open_label_store

    store = open_label_store(spec)
    close = getattr(store, "close", None)
    if close is not None:
        close()
    return spec


MIN_TOKEN = 16  # characters of a server token given with --token


def check_token(token: str) -> str:
    """`token` when long enough to guess at no rate (>= 16 characters, no spaces)."""
    if len(token) < MIN_TOKEN or any(c.isspace() for c in token) or token.startswith("fcl_"):
        raise InvalidArgumentError(f"--token must be at least {MIN_TOKEN} characters without spaces "
                                   "(and not a link secret); leave it out to have one generated")
    return token


def voila_command(host: str, port: int, notebook: Path = LABEL_NOTEBOOK, debug: bool = False,
                  secured: bool = False, pool_size: int = DEFAULT_POOL_SIZE) -> list[str]:
    """The Voila command line that serves `notebook` on host:port, no browser, sources stripped,
    `pool_size` kernels preheated and closed pages' kernels culled (see apps/serving.py).

    `secured`: Jupyter's token auth with the team's links (apps/access.py; token in $FCLIP_LABEL_TOKEN)."""
    cmd = [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", f"--Voila.ip={host}",
           "--Voila.port_retries=0",  # never another port than the URL printed
           "--strip_sources=True", "--theme=light", f"--template={VOILA_TEMPLATE}", *serving_args(pool_size)]
    if secured:
        from fclip_workbench.apps.access import PROVIDER

        cmd.append(f"--Voila.identity_provider_class={PROVIDER}")
    if debug:
        cmd.append("--debug")
    return cmd


def jupyter_path_with_template(environ: dict[str, str] | None = None) -> str:
    """$JUPYTER_PATH with the app's Voila template folder first (Voila finds `fclip-lab` there)."""
    current = (os.environ if environ is None else environ).get("JUPYTER_PATH", "")
    return os.pathsep.join([str(VOILA_DATA_DIR), *([current] if current else [])])


def app_url(host: str, port: int) -> str:
    """The URL to open (IPv6 in brackets; 0.0.0.0 shown as this machine's name)."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/"


def prepare_label_app(data: str, field: str, model: str = "auto", store: str | None = None,
                      host: str = "127.0.0.1", port: int = DEFAULT_PORT, annotator: str | None = None,
                      allow_remote: bool = False, warm: bool = True, progress: bool = True, token: str | None = None,
                      pool_size: int = DEFAULT_POOL_SIZE, **catalog: object) -> tuple[LabelAppConfig, list[str]]:
    """Check every setting (cheap ones first), embed the catalog into the cache (`warm`), and
    return (config for the kernel, Voila command).

    `catalog` takes `format`, `limit`, `catalog_options`, `device`, `cache` (see LabelAppConfig).
    """
    import importlib.util

    check_host(host, allow_remote)
    check_port(host, port)
    serving_args(pool_size)  # a bad --pool-size fails now
    secured = token is not None or not is_loopback(host)
    if token is not None:
        check_token(token)
    if annotator is not None:
        annotator = check_annotator_name(annotator)
    if importlib.util.find_spec("voila") is None:
        raise MissingExtraError("fclip label needs Voila: pip install voila")
    if catalog.get("cache") is not None:
        catalog["cache"] = absolute_spec(str(catalog["cache"]), is_path=True)
    config = LabelAppConfig(data=absolute_spec(data) or "auto", field=field, model=absolute_spec(model) or "auto",
                            store=absolute_spec(store, is_path=True), annotator=annotator, remote=secured,
                            **catalog)  # type: ignore[arg-type]
    catalog_ = open_app_catalog(config)
    check_field(catalog_, field)
    check_model_spec(config.model, config.device)
    check_store(config.store)
    if warm:
        warm_embeddings(config, catalog_, progress=progress)
    return config, voila_command(host, port, secured=secured, pool_size=pool_size)


def warm_embeddings(config: LabelAppConfig, catalog, progress: bool = True) -> int:
    """Embed the catalog's images into the embedding cache now, with a progress bar in the terminal,
    so the first page load finds them cached (a 40k-product catalog would otherwise leave the page
    'executing' for minutes). Returns the number of products embedded or found cached."""
    from fclip_workbench.embedding.embed import embed_images
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.workshop import resolve_model

    model = resolve_model(config.model, catalog, device=config.device, progress=progress)
    result = embed_images(model, catalog, store=EmbeddingStore(config.cache), progress=progress)
    if result.failures:
        log.warning("%d products have no image embedding and will not be offered for labelling",
                    len(result.failures))
    return len(result.ids)


def serve_label_app(data: str, field: str, model: str = "auto", store: str | None = None,
                    host: str = "127.0.0.1", port: int = DEFAULT_PORT, annotator: str | None = None,
                    allow_remote: bool = False, exec_: bool = True, warm: bool = True, progress: bool = True,
                    token: str | None = None, pool_size: int = DEFAULT_POOL_SIZE, **catalog: object) -> int:
    """Check the settings, print the URL, and run Voila on the labelling app until stopped.

    With `exec_` (POSIX) this process becomes Voila and never returns; otherwise Voila runs as a
    child that SIGINT/SIGTERM stop, and its exit status is returned.
    """
    config, cmd = prepare_label_app(data, field, model, store, host, port, annotator, allow_remote, warm=warm,
                                    progress=progress, token=token, pool_size=pool_size, **catalog)
    env = {**os.environ, ENV_CONFIG: config.to_json(), "JUPYTER_PATH": jupyter_path_with_template()}
    url = app_url(host, port)
    from fclip_workbench.paths import default_labels_path

    where = config.store or f"the default label store {default_labels_path()}"
    print(f"labelling {config.field!r} of {config.data} into {where}", flush=True)
    if config.remote:
        from fclip_workbench.apps.access import ENV_TOKEN, new_token

        env[ENV_TOKEN] = token or new_token()
        shown = env[ENV_TOKEN] if token is None else "<the token you gave>"
        print(f"open {url}?token={shown} (printed once); each annotator opens their own link: "
              f"fclip team link NAME --url {url}; Ctrl-C stops the server", flush=True)
    else:
        print(f"open {url} (annotator name: {url}?annotator=NAME); Ctrl-C stops the server", flush=True)
    from fclip_workbench.processes import become, run_forwarding_signals

    return become(cmd, env) if exec_ else run_forwarding_signals(cmd, env)


__all__ = ["serve_label_app", "prepare_label_app", "check_host", "check_port", "is_loopback", "FclipError"]
