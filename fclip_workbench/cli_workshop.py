"""`fclip workshop`: the offline room kit for a class (see workshop_kit.py).

    fclip workshop pack /media/usb/fclip-kit                        # wheels for Linux, macOS, Windows + data
    fclip workshop pack kit --platforms linux-x86_64 --kagl-rows 2000
    fclip workshop pack kit --platforms linux-x86_64 --torch-index https://download.pytorch.org/whl/cpu  # CPU-only torch
    fclip workshop unpack /media/usb/fclip-kit                      # its data sets into data/ (make lab KIT=... does it)

Example:
    >>> from fclip_workbench.cli import main
    >>> main(["workshop", "unpack", "/nonexistent"])  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path


def cmd_workshop_pack(args) -> int:
    from fclip_workbench.workshop_kit import check_torch_index, pack_kit

    torch_index = None if args.torch_index is None else check_torch_index(args.torch_index)
    report = pack_kit(Path(args.out), platforms=tuple(args.platforms), kagl_rows=args.kagl_rows,
                      torch_index=torch_index)
    for part, mb in report.parts_mb.items():
        print(f"{part}: {mb:,.1f} MB")
    for platform, missing in report.missing.items():
        if missing:
            print(f"{platform}: no wheel on PyPI for {', '.join(missing)} (install those from source or leave them out)")
    print(f"kit: {report.out}, {report.total_mb:,.1f} MB in {report.seconds:.0f} s (kit.json, README.txt)")
    return 0


def cmd_workshop_unpack(args) -> int:
    from fclip_workbench.paths import data_home
    from fclip_workbench.workshop_kit import unpack_kit_data

    copied = unpack_kit_data(Path(args.kit), data_home())
    print(f"copied into {data_home()}: {', '.join(copied)}" if copied else f"{data_home()} already has the kit's data")
    return 0


def add_workshop_parser(sub) -> None:
    """`fclip workshop ...` on the `fclip` parser's subcommands."""
    from fclip_workbench.workshop_kit import PLATFORMS

    p = sub.add_parser("workshop", help="an offline room kit for a class: wheels, data, the project")
    wsub = p.add_subparsers(dest="workshop_command", required=True, metavar="WORKSHOP_COMMAND")
    q = wsub.add_parser("pack", help="write the kit into a folder (USB stick, file server)")
    q.add_argument("out", help="folder for the kit (created; an existing kit is completed)")
    q.add_argument("--platforms", nargs="+", default=list(PLATFORMS), choices=list(PLATFORMS),
                   help="whose wheels to include (default: all)")
    q.add_argument("--kagl-rows", type=int, default=3000, help="KAGL products in the kit (0: none)")
    q.add_argument("--torch-index", default=None,
                   help="index for the Linux torch pair, e.g. https://download.pytorch.org/whl/cpu (CPU-only wheels; "
                        "default: pip's index, where Linux torch is the CUDA build)")
    q.set_defaults(func=cmd_workshop_pack)
    q = wsub.add_parser("unpack", help="copy a kit's data sets into data/ (existing ones kept)")
    q.add_argument("kit", help="the kit's folder")
    q.set_defaults(func=cmd_workshop_unpack)
