"""`fclip label`'s team-server options: --config FILE, --token, --check (logic in apps/app_config.py).

    fclip label --config team.toml --check        # one line per problem, exit 0 (ready) or 1
    fclip label --config team.toml --port 9000    # the file's settings, the command line wins

Example:
    >>> from fclip_workbench.cli import main
    >>> main(["label", "--config", "/nonexistent/team.toml", "--check"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse

SETTINGS = ("store", "data", "format", "limit", "field", "model", "device", "cache", "host", "port", "token",
            "annotator")  # the flags a config file may set (apps.app_config.KEYS, less roles)


def add_label_options(p: argparse.ArgumentParser) -> None:
    """--config, --token and --check on the `label` parser (call it last: it records the flags' defaults)."""
    p.add_argument("--config", default=None, help="TOML file with store, data, field, model, host, port, token, "
                                                  "annotator, roles (the command line wins)")
    p.add_argument("--token", default=None, help="server token for a non-loopback host (default: generated, "
                                                 "printed once); annotators use links: fclip team link NAME")
    p.add_argument("--check", action="store_true", help="check config, store, catalog and cached embeddings; "
                                                        "exit 0 when ready, 1 with one line per problem")
    p.set_defaults(label_defaults={a.dest: a.default for a in p._actions})


def prepare_label_args(args) -> int | None:
    """Fold the config file into `args` (flags win); run --check (returns its exit code); grant the
    config's roles. None: go on and serve."""
    from fclip_workbench.apps.app_config import apply_roles, check_app, load_config, merged

    config = load_config(args.config) if args.config else {}
    defaults = getattr(args, "label_defaults", {})
    if "host" in config and args.host is None:
        args.host = config["host"]  # a host in the config is as explicit as --host
    for key, value in merged(args, config, defaults).items():
        if key != "roles":
            setattr(args, key, value)
    settings = {key: getattr(args, key) for key in SETTINGS} | {"roles": config.get("roles", {})}
    if args.check:
        problems = check_app(settings)
        for line in problems:
            print(line)
        print("ready" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    if not args.field:
        from fclip_workbench.errors import InvalidArgumentError

        raise InvalidArgumentError("no field to label: give --field FIELD or field = ... in the config file")
    if settings["roles"]:
        from fclip_workbench.apps import open_label_store
        from fclip_workbench.labelling.app import absolute_spec

        store = open_label_store(absolute_spec(args.store, is_path=True))
        try:
            apply_roles(store, settings["roles"])
        finally:
            store.close()
    return None
