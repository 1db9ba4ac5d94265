"""`catalog-sync demo-shop create`: build and fill the demo shop database."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    shop = subparsers.add_parser("demo-shop", help="the demo shop database (schema and data)")
    actions = shop.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="create the demo shop tables and fill them reproducibly",
        description="Same --seed and --products give the same content on every database.",
    )
    create.add_argument(
        "--url",
        default=None,
        help="database URL (postgresql://, mysql://, mariadb://, sqlite:///path) or an "
        "Airflow connection id; default: the connection catalog_source",
    )
    create.add_argument("--products", type=int, required=True, metavar="N")
    create.add_argument("--seed", type=int, default=0, metavar="S")
    create.add_argument(
        "--replace", action="store_true", help="drop existing demo shop tables first"
    )
    create.set_defaults(handler=_create)


def _create(args: argparse.Namespace) -> int:
    from catalog_sync import demo_shop, source

    engine = source.create_source_engine(args.url)
    print(f"creating the demo shop in {source.safe_url(engine)}", flush=True)
    try:
        counts = demo_shop.create_demo_shop(
            engine,
            args.products,
            seed=args.seed,
            replace=args.replace,
            progress=lambda line: print(line, flush=True),
        )
    finally:
        engine.dispose()
    print(", ".join(f"{name} {count:,}" for name, count in counts.items()))
    return 0
