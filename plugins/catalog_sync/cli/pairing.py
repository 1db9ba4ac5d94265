"""`catalog-sync pair` and `catalog-sync unpair`."""

from __future__ import annotations

import argparse

DEFAULT_CONN_ID = "voicebot_default"


def register(subparsers: argparse._SubParsersAction) -> None:
    pair = subparsers.add_parser(
        "pair",
        help="pair with an ingest backend and store the credentials in an Airflow Connection",
        description="Exchange a one-time pair code for credentials, stored (Fernet-encrypted) "
        "in an Airflow Connection. Prints the tenant id and ingest URL, never the secret.",
    )
    pair.add_argument("code", help="the one-time pair code, e.g. VB-ABCD-EFGH")
    pair.add_argument("--base-url", required=True, help="the backend's base URL (https://)")
    pair.add_argument("--site-url", default="", help="the shop's public URL")
    pair.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="Airflow connection id")
    pair.set_defaults(handler=_pair)

    unpair = subparsers.add_parser(
        "unpair",
        help="disconnect from the backend and delete the local credentials",
        description="Call the signed unpair, then delete the Airflow Connection even if the "
        "remote call failed (exit 1 then).",
    )
    unpair.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="Airflow connection id")
    unpair.set_defaults(handler=_unpair)


def _pair(args: argparse.Namespace) -> int:
    from catalog_sync import pairing

    return pairing.pair_command(
        code=args.code, base_url=args.base_url, site_url=args.site_url, conn_id=args.conn_id
    )


def _unpair(args: argparse.Namespace) -> int:
    from catalog_sync import pairing

    return pairing.unpair_command(conn_id=args.conn_id)
