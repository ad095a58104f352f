"""`fclip team`: a lead's commands for labelling as a team (roles, overlap, agreement, adjudication, consensus).

    fclip team grant lea lead --by lea --store labels.sqlite         # the first role needs no lead
    fclip team grant cy adjudicator --by lea
    fclip team link ana --expires 7d --url https://label.example.com/   # ana's own link to the team server
    fclip team overlap articleType 0.1 --by lea                      # 10 % of products answered twice
    fclip team status articleType                                    # kappa, alpha, accuracy, what is left
    fclip team pending articleType                                   # the adjudication queue
    fclip team consensus articleType --out consensus.csv [--data ../shared/data/kagl --model fclip-mini]

`consensus` without --data is the majority vote; with --data (and --model) the suggester is fitted on the
store's labels and its probabilities go into cleanlab's CROWDLAB.

Example:
    >>> from fclip_workbench.cli import main
    >>> main(["team", "status", "colour", "--store", "/nonexistent/dir/l.sqlite"])  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

from fclip_workbench.cli_args import add_data_args, open_from_args, unit_float


def _store(args, read_only: bool = False):
    from fclip_workbench.labelling.labels import LabelStore
    from fclip_workbench.paths import default_labels_path

    return LabelStore(args.store or default_labels_path(), read_only=read_only)


def cmd_team_grant(args) -> int:
    with _store(args) as store:
        (store.revoke if args.revoke else store.grant)(args.name, args.role, by=args.by)
        roles = store.roles()
    print("\n".join(f"{r.annotator}: {r.role} (granted by {r.granted_by})" for r in roles.itertuples()) or "no roles")
    return 0


def cmd_team_link(args) -> int:
    from fclip_workbench.labelling.store.links import create_link, parse_duration, revoke_links

    with _store(args) as store:
        if args.revoke:
            print(f"{revoke_links(store, args.name)} link(s) of {args.name} revoked")
            return 0
        days = parse_duration(args.expires)
        secret = create_link(store, args.name, role=args.role, days=days, by=args.by)
    base = args.url if args.url.endswith("/") else args.url + "/"
    until = "never expires" if days is None else f"valid {args.expires}"
    print(f"{base}?token={secret}")
    print(f"{args.name} ({args.role}), {until}; shown once: send it to {args.name} only", flush=True)
    return 0


def cmd_team_overlap(args) -> int:
    with _store(args, read_only=args.share is None) as store:
        share = store.overlap_share(args.field) if args.share is None else \
            store.set_overlap(args.field, args.share, by=args.by)
    print(f"{args.field}: {share:.0%} of the products are answered by two annotators independently")
    return 0


def cmd_team_status(args) -> int:
    from fclip_workbench.labelling.dashboard import remaining_counts

    with _store(args, read_only=True) as store:
        ag = store.agreement(args.field)
        counts = remaining_counts(store.labels(args.field), store.answers(args.field), ag.pending, None)
        share = store.overlap_share(args.field)
    print(f"{args.field}: overlap {share:.0%}; " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    print(ag)
    return 0


def cmd_team_pending(args) -> int:
    with _store(args, read_only=True) as store:
        pending = store.pending_adjudication(args.field)
    for r in pending.itertuples():
        print(f"{r.item_id}\t" + "\t".join(f"{k}: {v}" for k, v in r.answers.items()))
    print(f"{len(pending)} products wait for an adjudicator")
    return 0


def cmd_team_consensus(args) -> int:
    with _store(args) as store:
        if args.data is None:
            table = store.consensus(args.field)
        else:
            from fclip_workbench.labelling.annotate import AnnotationSession
            from fclip_workbench.workshop import resolve_model

            catalog = open_from_args(args)
            model = resolve_model(args.model, catalog, device=args.device, progress=not args.quiet)
            session = AnnotationSession.from_catalog(catalog, args.field, model=model, store=store,
                                                     progress=not args.quiet, background=False)
            try:
                table = session.consensus()
            finally:
                session.close()
    table = table.sort_values("quality")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    if not len(table):
        print(f"no labelled products of {args.field} yet")
    else:
        print(f"{len(table)} products, consensus by {table['method'].iloc[0]}; lowest quality first:")
        print(table.head(args.show).to_string(index=False))
    if args.out:
        print(f"written: {args.out}")
    return 0


def add_team_parser(sub) -> None:
    """`fclip team ...` on the `fclip` parser's subcommands."""
    p = sub.add_parser("team", help="labelling as a team: roles, overlap, agreement, adjudication, consensus")
    tsub = p.add_subparsers(dest="team_command", required=True, metavar="TEAM_COMMAND")

    def with_store(q):
        q.add_argument("--store", default=None, help="label store: SQLite file or SQLAlchemy URL "
                                                    "(default: data/labels.sqlite)")
        return q

    q = with_store(tsub.add_parser("grant", help="give (or --revoke) a role: lead, adjudicator"))
    q.add_argument("name")
    q.add_argument("role", choices=["lead", "adjudicator"])
    q.add_argument("--by", required=True, help="the lead who grants it (the team's first role: anyone)")
    q.add_argument("--revoke", action="store_true", help="take the role back")
    q.set_defaults(func=cmd_team_grant)

    q = with_store(tsub.add_parser("link", help="print an annotator's own link to the team server (fclip label "
                                                "--host ...); only its hash is stored"))
    q.add_argument("name")
    q.add_argument("--role", default="annotator", choices=["annotator", "adjudicator", "lead"],
                   help="the link's role (adjudicator/lead: granted first with fclip team grant)")
    q.add_argument("--expires", default="7d", help="7d, 12h, 30m, 2w or never (default 7d)")
    q.add_argument("--url", default="http://127.0.0.1:8866/", help="the server's address as annotators reach it")
    q.add_argument("--by", default=None, help="who made the link (kept in the store)")
    q.add_argument("--revoke", action="store_true", help="revoke every live link of NAME instead")
    q.set_defaults(func=cmd_team_link)

    q = with_store(tsub.add_parser("overlap", help="show or set the share of a field's products answered twice"))
    q.add_argument("field")
    q.add_argument("share", nargs="?", type=unit_float, default=None,
                   help="0..1 (0.1: one product in ten); omitted: show the current share")
    q.add_argument("--by", default=None, help="the lead who sets it")
    q.set_defaults(func=cmd_team_overlap)

    q = with_store(tsub.add_parser("status", help="agreement (kappa, alpha, accuracy) and what is left"))
    q.add_argument("field")
    q.set_defaults(func=cmd_team_status)

    q = with_store(tsub.add_parser("pending", help="the products whose answers disagree, with the answers"))
    q.add_argument("field")
    q.set_defaults(func=cmd_team_pending)

    q = with_store(tsub.add_parser("consensus", help="the consensus label and a quality score per product"))
    q.add_argument("field")
    add_data_args(q)
    q.set_defaults(data=None)
    q.add_argument("--out", default=None, help="write the whole table as CSV")
    q.add_argument("--show", type=int, default=10, help="rows printed (lowest quality first)")
    q.set_defaults(func=cmd_team_consensus)
