"""`fclip compare A B`: two models on the same held-out products, as a report (HTML + Markdown).

    fclip compare fclip-mini@1 fclip-mini@2 --data ../shared/data/kagl --out results/compare-v1-v2 \
        [--fmnist /usr/share/datasets/fashion-mnist] [--ccp ../shared/data/ccp] [--fields articleType]

Models are loaded and the fields checked before anything is embedded: an unknown model, a field the
catalog lacks, or the same model twice is one line and exit 1.

Example:
    >>> from fclip_workbench.cli import main
    >>> main(["compare", "fclip-mini@1", "nonexistent-model", "--data", "teaching"])  # doctest: +SKIP
"""
from __future__ import annotations

import sys
import time

from fclip_workbench.cli_args import add_data_args, open_from_args, positive_int


def cmd_compare(args) -> int:
    from fclip_workbench.analysis.compare import check_inputs, compare
    from fclip_workbench.analysis.compare_report import to_markdown, write_report
    from fclip_workbench.analysis.evaluate import default_fields
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.workshop import resolve_model

    t0 = time.perf_counter()
    if args.out is not None:
        from fclip_workbench.paths import check_output_folder
        check_output_folder(args.out)
    models = [resolve_model(spec, None, device=args.device, progress=not args.quiet) for spec in (args.a, args.b)]
    cat = open_from_args(args)
    fields = default_fields(cat) if args.fields is None else args.fields
    check_inputs(models[0], models[1], cat, fields)
    fmnist = None
    if args.fmnist is not None:
        from fclip_workbench.data.datasets import open_catalog
        fmnist = open_catalog(args.fmnist, "fmnist", split="test", limit=args.fmnist_limit)
    report = compare(models[0], models[1], cat, fields, store=EmbeddingStore(args.cache), n_boot=args.n_boot,
                     seed=args.seed, n_retrieval=args.n_retrieval, fmnist=fmnist, ccp=args.ccp,
                     progress=not args.quiet)
    if args.out is None:
        print(to_markdown(report))
    else:
        paths = write_report(report, args.out, plotlyjs=args.plotlyjs)
        print("\n".join(report.findings()) or "no significant difference")
        print("wrote " + ", ".join(map(str, paths)))
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare two models on the same held-out products (HTML + Markdown report)")
    p.add_argument("a", help="model A (the one in use): preset, hf-hub:..., or a local path")
    p.add_argument("b", help="model B (the candidate)")
    add_data_args(p, model=False)
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--fields", nargs="*", default=None, help="label fields (default: as `fclip eval`)")
    p.add_argument("--fmnist", default=None, help="Fashion-MNIST folder: forgetting on its test split")
    p.add_argument("--fmnist-limit", type=positive_int, default=None, help="first N Fashion-MNIST test images")
    p.add_argument("--ccp", default=None, help="CCP folder: street-photo slice and CCP→KAGL cross-domain P@10")
    p.add_argument("--n-boot", type=positive_int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--n-retrieval", type=positive_int, default=1000, help="held-out products in the gallery")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--plotlyjs", default="directory", choices=["directory", "inline"],
                   help="plotly.js beside the page (default) or inlined; never a CDN")
    p.add_argument("--out", default=None, help="report folder (default: Markdown on stdout)")
    p.set_defaults(func=cmd_compare)
