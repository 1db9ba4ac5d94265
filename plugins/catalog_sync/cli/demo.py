"""`catalog-sync demo`: the end-to-end demo that `make demo` runs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the demo on embedded defaults (a local receiver on loopback)"
    )
    demo.add_argument("--workdir", default="demo-run", help="where the demo keeps its files")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from catalog_sync import demo

    return demo.run_demo(workdir=args.workdir)
