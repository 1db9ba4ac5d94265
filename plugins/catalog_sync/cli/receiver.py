"""`catalog-sync receiver serve | issue-code | dump`: the reference receiver."""

from __future__ import annotations

import argparse

DEFAULT_DB = "sqlite:///receiver.sqlite"


def register(subparsers: argparse._SubParsersAction) -> None:
    receiver = subparsers.add_parser(
        "receiver", help="the reference receiver: serve, issue pair codes, dump what it holds"
    )
    commands = receiver.add_subparsers(dest="receiver_command", required=True, metavar="ACTION")

    serve = commands.add_parser("serve", help="run the receiver's HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--db", default=DEFAULT_DB, help="target database URL (SQLAlchemy)")
    serve.add_argument("--data-dir", default="receiver-data", help="where uploads are kept")
    serve.add_argument(
        "--test-control",
        action="store_true",
        help="expose /_control endpoints that inject faults and list requests (tests only)",
    )
    serve.add_argument(
        "--upload-ttl",
        type=float,
        default=3600.0,
        help="seconds an upload URL stays valid after init (default 3600)",
    )
    serve.add_argument(
        "--max-upload-bytes",
        type=int,
        default=None,
        help="largest accepted snapshot upload, gzipped (default: the protocol's 200 MiB)",
    )
    serve.add_argument(
        "--landing",
        default=None,
        metavar="FILE",
        help="YAML file naming landing handlers per kind (see docs/landing.md)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=_serve)

    issue = commands.add_parser("issue-code", help="print a fresh one-time pair code")
    issue.add_argument("--db", default=DEFAULT_DB)
    issue.add_argument("--ingest-url", required=True, help="ingest URL handed out on pairing")
    issue.set_defaults(handler=_issue_code)

    dump = commands.add_parser("dump", help="print current entities as sorted NDJSON")
    dump.add_argument("--db", default=DEFAULT_DB)
    dump.add_argument("--kind", default=None, help="only this kind")
    dump.add_argument("--tenant", default=None, help="only this tenant id")
    dump.set_defaults(handler=_dump)


def _serve(args: argparse.Namespace) -> int:
    from catalog_sync.receiver import service

    limits = {} if args.max_upload_bytes is None else {"max_upload_bytes": args.max_upload_bytes}
    return service.serve(
        host=args.host,
        port=args.port,
        db_url=args.db,
        data_dir=args.data_dir,
        test_control=args.test_control,
        upload_ttl=args.upload_ttl,
        log_level=args.log_level,
        landing=args.landing,
        **limits,
    )


def _issue_code(args: argparse.Namespace) -> int:
    from catalog_sync.receiver import store

    print(store.ReceiverStore(args.db).issue_pair_code(args.ingest_url))
    return 0


def _dump(args: argparse.Namespace) -> int:
    import sys

    from catalog_sync import protocol
    from catalog_sync.errors import ConfigurationError
    from catalog_sync.receiver import store

    if args.kind is not None and args.kind not in protocol.KINDS:
        raise ConfigurationError(f"unknown kind {args.kind!r}; one of: {', '.join(protocol.KINDS)}")
    for line in store.ReceiverStore(args.db).dump_lines(kind=args.kind, tenant_id=args.tenant):
        sys.stdout.buffer.write(line + b"\n")
    return 0
