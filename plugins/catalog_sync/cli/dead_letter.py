"""`catalog-sync dead-letter list | replay | purge`: the dead letter, for people.

`replay` does what a delta run does first, but now and on request: it re-arms the
entries (attempts back to 0), re-reads their current rows, and delivers them to the
target under the target's lock, so it never interleaves with a DAG's push.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from catalog_sync.cli import print_table
from catalog_sync.errors import ConfigurationError

#: Characters of the error shown per entry in `list`.
ERROR_WIDTH = 80


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dead-letter",
        help="list, replay or purge ops the backend rejected",
        description="Inspect and act on the dead letter of a target (default: "
        "$CATALOG_SYNC_TARGET, else voicebot_default).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="show the live entries (with --all: every entry)")
    _target_option(listing)
    listing.add_argument("--all", action="store_true", help="include resolved and purged entries")
    listing.set_defaults(handler=_list)

    replay = actions.add_parser(
        "replay",
        help="re-arm entries and deliver their current rows now",
        description="Re-arm the live entries (or one), re-read their current rows and "
        "deliver them. Exit 0 when all were accepted, 1 when some were rejected again or "
        "delivery failed for now, 2 on a configuration error.",
    )
    _target_option(replay)
    replay.add_argument("--id", type=int, help="only this entry")
    replay.set_defaults(handler=_replay)

    purge = actions.add_parser(
        "purge",
        help="give up on live entries (kept for audit, with the reason)",
    )
    _target_option(purge)
    purge.add_argument("--id", type=int, help="only this entry")
    purge.add_argument("--reason", required=True, help="why (kept with the entries)")
    purge.set_defaults(handler=_purge)


def _target_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        help="the VoiceBot connection id (default: $CATALOG_SYNC_TARGET or voicebot_default)",
    )


def _target(args: argparse.Namespace) -> str:
    from catalog_sync.settings import load_settings

    return args.target or load_settings().target


def _state() -> Any:
    from catalog_sync.state import StateStore

    state = StateStore.from_airflow()
    state.ensure_schema()
    return state


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _list(args: argparse.Namespace) -> int:
    target = _target(args)
    entries = _state().dead_letter_list(target, include_resolved=args.all)
    if not entries:
        print(f"no {'' if args.all else 'live '}dead-letter entries for target {target!r}")
        return 0
    header = ("id", "target", "kind", "external id", "op", "attempts", "status", "error")
    rows = [
        (
            str(e.id),
            e.target,
            e.kind,
            e.external_id,
            e.op_type,
            str(e.attempts),
            e.status,
            _one_line(e.error, ERROR_WIDTH),
        )
        for e in entries
    ]
    print_table(header, rows)
    return 0


def _purge(args: argparse.Namespace) -> int:
    target = _target(args)
    state = _state()
    ids = None if args.id is None else [args.id]
    purged = state.dead_letter_purge(args.reason, entry_ids=ids, target=target)
    if args.id is not None and not purged:
        raise ConfigurationError(
            f"there is no live dead-letter entry {args.id} for target {target!r}; "
            "see `catalog-sync dead-letter list`"
        )
    print(f"purged {purged} dead-letter entr{'y' if purged == 1 else 'ies'} of {target!r}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from catalog_sync import extract, staging
    from catalog_sync.config import load_config
    from catalog_sync.delivery import deliver_batches, record_failures
    from catalog_sync.hooks import VoiceBotHook
    from catalog_sync.redrive import redrive_items
    from catalog_sync.settings import load_settings
    from catalog_sync.source import create_source_engine

    settings = load_settings()
    target = args.target or settings.target
    state = _state()
    entries = state.dead_letter_list(target)
    if args.id is not None:
        entries = [e for e in entries if e.id == args.id]
        if not entries:
            raise ConfigurationError(
                f"there is no live dead-letter entry {args.id} for target {target!r}; "
                "see `catalog-sync dead-letter list --all`"
            )
    if not entries:
        print(f"nothing to replay: target {target!r} has no live dead-letter entries")
        return 0
    catalog = load_config()
    if catalog.targets is not None:  # the target's filters: never send a row it is not routed
        catalog = catalog.for_target(catalog.target(target, settings.target))
    by_kind: dict[str, list[int]] = {}
    for entry in entries:
        by_kind.setdefault(entry.kind, []).append(entry.id)
    unknown = sorted(set(by_kind) - set(catalog.kinds))
    for kind in unknown:
        print(
            f"{kind}: {len(by_kind[kind])} entr(y/ies) left as they are: the entity map has "
            f"no kind {kind!r} (purge them if the kind is gone for good)"
        )
    hook = VoiceBotHook(target)
    engine = create_source_engine()
    try:
        mappers = extract.prepare(engine, catalog)
        state.dead_letter_rearm([e.id for e in entries if e.kind in catalog.kinds])
        run_key = "dead-letter-replay-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        base = staging.join(staging.staging_root(), run_key)
        clean = not unknown
        with state.target_lock(
            target, run_key, timeout_s=settings.lock_timeout_s, lease_s=settings.lock_lease_s
        ):
            for kind in (k for k in catalog.kinds if k in by_kind):
                with engine.connect() as conn:
                    manifest = staging.write_delta_batches(
                        staging.join(base, f"{kind}.batches.ndjson.gz"),
                        kind,
                        redrive_items(
                            conn,
                            catalog,
                            mappers[kind],
                            state,
                            target=target,
                            kind=kind,
                            entry_ids=by_kind[kind],
                        ),
                        run_key=run_key,
                        window_key="dead-letter-replay",
                        failures_uri=staging.join(base, f"{kind}.failures.ndjson.gz"),
                    )
                    conn.rollback()
                tally = deliver_batches(
                    hook,
                    state,
                    target=target,
                    kind=kind,
                    batches=staging.iter_batches(manifest["uri"]),
                    max_attempts=settings.dead_letter_max_attempts,
                )
                unmappable = record_failures(
                    state,
                    target=target,
                    kind=kind,
                    failures_uri=manifest["failures"]["uri"],
                    max_attempts=settings.dead_letter_max_attempts,
                )
                clean &= tally.dead_lettered == 0 and unmappable == 0
                print(
                    f"{kind}: {len(by_kind[kind])} entr(y/ies) replayed: {tally.ops} op(s) sent, "
                    f"{tally.accepted} accepted, {tally.dead_lettered} rejected again, "
                    f"{unmappable} still unmappable"
                )
    finally:
        engine.dispose()
    left = len(state.dead_letter_list(target))
    print(f"target {target!r}: {left} live dead-letter entr{'y' if left == 1 else 'ies'} left")
    return 0 if clean else 1
