"""`catalog-sync sync`: run the delta (or full) DAG once, in this process, and say how it went.

The run is the DAG itself (`dag.test`), with its params validated like a triggered run
and without Airflow's retries: at a terminal, a transient failure exits 1 so the caller
retries later. Exit codes: 0 success; 1 transient failure or dead-lettered ops; 2 a
configuration error or invalid params.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from catalog_sync.cli import EXIT_CONFIG, EXIT_OK, EXIT_TRANSIENT


def register(subparsers: argparse._SubParsersAction) -> None:
    sync = subparsers.add_parser(
        "sync", help="run the delta (or --full) sync once, in-process, through the DAG"
    )
    sync.add_argument("--full", action="store_true", help="send a full snapshot")
    sync.add_argument("--since", help="re-send changes from this RFC 3339 instant (delta only)")
    sync.add_argument(
        "--dry-run", action="store_true", help="stage everything and log samples; send nothing"
    )
    sync.add_argument("--kinds", nargs="+", metavar="KIND", help="only these kinds")
    sync.add_argument(
        "--targets", nargs="+", metavar="TARGET", help="only these targets (of the map's targets:)"
    )
    sync.add_argument("--force", action="store_true", help="full: override the guards")
    sync.set_defaults(handler=_sync)


def conf_of(args: argparse.Namespace) -> dict[str, Any]:
    """The run conf the arguments stand for (only what was given: defaults stay the DAG's)."""
    conf: dict[str, Any] = {}
    if args.since is not None:
        conf["since"] = args.since
    if args.dry_run:
        conf["dry_run"] = True
    if args.kinds:
        conf["kinds"] = list(args.kinds)
    if args.targets:
        conf["targets"] = list(args.targets)
    if args.force:
        conf["force"] = True
    return conf


def _sync(args: argparse.Namespace) -> int:
    from catalog_sync.runner import run_once

    outcome = run_once(full=args.full, conf=conf_of(args))
    for line in outcome.ledger:
        print(
            f"{line.target:<20}{line.kind:<18}{line.status:>12}  extracted {line.extracted:>7}  "
            f"accepted {line.accepted:>7}  dead-lettered {line.dead_lettered:>5}"
        )
    if not outcome.succeeded:
        config = outcome.configuration_errors
        for exc in (config or outcome.failures)[:5]:
            print(f"error: {exc}", file=sys.stderr)
        if config:
            return EXIT_CONFIG
        print(f"error: the {outcome.dag_id} run failed; try again later", file=sys.stderr)
        return EXIT_TRANSIENT
    if outcome.dead_lettered:
        print(
            f"{outcome.dead_lettered} op(s) were dead-lettered; "
            "see `catalog-sync dead-letter list`",
            file=sys.stderr,
        )
        return EXIT_TRANSIENT
    return EXIT_OK
