"""`catalog-sync targets [--json] | pause NAME --reason TEXT | resume NAME`.

Lists every target of the entity map (without a `targets:` section: the one target
$CATALOG_SYNC_TARGET) with what an operator asks first: is it paired (its Airflow
connection exists and holds a secret; the secret itself is never printed), is it paused
and why, when did each kind last succeed, how old is each kind's watermark, how deep is
its dead letter. `pause` and `resume` keep their state in the state database; a pause in
the map (`paused:`) can only be lifted by editing the map.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from catalog_sync.cli import print_table
from catalog_sync.errors import ConfigurationError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "targets",
        help="list the targets and their state; pause or resume one",
        description="List every target with its state: paired, paused (and why), last "
        "success, watermark age and dead-letter depth per kind.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (for tools)")
    parser.set_defaults(handler=_list)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    pause = actions.add_parser(
        "pause", help="stop sending to a target (its watermarks stay: it catches up on resume)"
    )
    pause.add_argument("name", help="the target (its Airflow connection id)")
    pause.add_argument("--reason", required=True, help="why (shown by `catalog-sync targets`)")
    pause.set_defaults(handler=_pause)

    resume = actions.add_parser("resume", help="send to a paused target again")
    resume.add_argument("name", help="the target (its Airflow connection id)")
    resume.set_defaults(handler=_resume)


def _context() -> tuple[Any, Any, Any]:
    """(entity map, settings, state store with its schema ensured)."""
    from catalog_sync.config import load_config
    from catalog_sync.settings import load_settings
    from catalog_sync.state import StateStore

    state = StateStore.from_airflow()
    state.ensure_schema()
    return load_config(), load_settings(), state


def _pairing(name: str) -> tuple[bool, str]:
    """(paired, what is missing): looked up like the DAG's tasks do, secret never read out."""
    from catalog_sync.connections import find_connection

    conn = find_connection(name)
    if conn is None:
        return False, f"no Airflow connection {name!r}: pair it with --conn-id {name}"
    if conn.conn_type != "voicebot":
        return False, f"connection {name!r} has conn type {conn.conn_type!r}, not voicebot"
    if not conn.password or not conn.login or not conn.host:
        return False, f"connection {name!r} lacks the ingest URL, tenant id or secret: re-pair"
    return True, ""


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat()


def _age(seconds: float | None) -> str:
    """12m05s, 3h07m: an age at a glance ("-" before the first run)."""
    if seconds is None:
        return "-"
    hours, rest = divmod(max(int(seconds), 0), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def describe(catalog: Any, settings: Any, state: Any) -> list[dict[str, Any]]:
    """Every target's state as plain data (the `--json` output)."""
    stored = state.paused()
    now = dt.datetime.now(dt.UTC)
    described = []
    for target in catalog.target_list(settings.target):
        paired, problem = _pairing(target.name)
        reason, since, paused_by = target.paused, None, "map" if target.paused else None
        if reason is None and target.name in stored:
            (reason, since), paused_by = stored[target.name], "command"
        watermarks = state.watermarks(target.name)
        successes = state.last_successes(target.name)
        depth = state.dead_letter_depth(target.name)
        described.append(
            {
                "target": target.name,
                "paired": paired,
                "pairing_problem": problem or None,
                "paused": reason is not None,
                "paused_reason": reason,
                "paused_by": paused_by,
                "paused_since": _iso(since),
                "kinds": [
                    {
                        "kind": kind,
                        "last_success": _iso(successes.get(kind)),
                        "watermark": _iso(watermarks.get(kind)),
                        "watermark_age_seconds": (
                            None
                            if kind not in watermarks
                            else round((now - watermarks[kind]).total_seconds(), 1)
                        ),
                        "dead_letter": depth.get(kind, 0),
                    }
                    for kind in target.kinds
                ],
            }
        )
    return described


def _list(args: argparse.Namespace) -> int:
    catalog, settings, state = _context()
    try:
        targets = describe(catalog, settings, state)
    finally:
        state.dispose()
    if args.json:
        print(json.dumps({"targets": targets}, indent=2))
        return 0
    for i, target in enumerate(targets):
        if i:
            print()
        paired = "yes" if target["paired"] else f"NO ({target['pairing_problem']})"
        paused = "no"
        if target["paused"]:
            paused = f"YES by {target['paused_by']}: {target['paused_reason']}"
        print(f"target {target['target']}  paired: {paired}  paused: {paused}")
        rows = [
            (
                kind["kind"],
                kind["last_success"] or "never",
                _age(kind["watermark_age_seconds"]),
                str(kind["dead_letter"]),
            )
            for kind in target["kinds"]
        ]
        print_table(("  kind", "last success", "watermark age", "dead letter"), _indent(rows))
    return 0


def _indent(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [(f"  {row[0]}", *row[1:]) for row in rows]


def _pause(args: argparse.Namespace) -> int:
    catalog, settings, state = _context()
    try:
        target = catalog.target(args.name, settings.target)
        state.pause_target(target.name, args.reason)
    finally:
        state.dispose()
    print(
        f"paused {target.name!r}: runs skip it, its watermarks stay; "
        f"`catalog-sync targets resume {target.name}` sends it the changes since"
    )
    return 0


def _resume(args: argparse.Namespace) -> int:
    catalog, settings, state = _context()
    try:
        target = catalog.target(args.name, settings.target)
        resumed = state.resume_target(target.name)
    finally:
        state.dispose()
    if target.paused:
        raise ConfigurationError(
            f"target {target.name!r} is paused in the entity map ({target.paused}); remove "
            f"`paused:` from targets.{target.name} in {catalog.path} to resume it"
        )
    print(f"resumed {target.name!r}" if resumed else f"{target.name!r} was not paused")
    return 0
