"""`catalog-sync demo`: the end-to-end demo that `make demo` runs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the demo on embedded defaults (a local receiver on loopback)"
    )
    demo.add_argument("--workdir", default="demo-run", help="where the demo keeps its files")
    demo.add_argument(
        "--base-url", help="pair with this backend instead of a local receiver (needs --pair-code)"
    )
    demo.add_argument("--pair-code", help="the one-time pair code for --base-url")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from catalog_sync import demo

    return demo.run_demo(workdir=args.workdir, base_url=args.base_url, pair_code=args.pair_code)
