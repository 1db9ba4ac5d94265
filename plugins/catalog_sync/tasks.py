"""The bodies of the DAG tasks: plain functions over small dicts, testable without Airflow.

Each function takes what its upstream task returned (XCom: URIs, counts, checksums,
windows; never payloads, never the secret) and returns the same kind of dict. Every
dict carries the run's identity (`run_id`, `dag_id`, `run_key`) and its `target`, so a
mapped task needs nothing else. `dag_factory` wraps them in `@task`s and turns a
ConfigurationError into Airflow's fail-fast exception.

Order of effects, so that a crash anywhere loses nothing and applies nothing twice:
extract stages batches (deterministic batch ids) -> push sends the staged bytes (the
receiver replays a batch id it already applied) -> commit moves the watermark with a
compare-and-set. Push records the window as pending (state database) before its first
batch; a crash before commit leaves that record, and the next run resumes it: the same
window and the same staged batches (same batch ids, answered as replays), then commits.

Targets (docs/targets.md): plan makes one item per (target, kind) of every target that
is not paused; each item stages under its own key and reads the kind through its target's
filter, so targets share nothing but the run.

The target lock (state database) is held from the first push (delta) or `init` (full)
until `report`, so a delta and a full of the same target never interleave their push
and commit steps; the same run re-acquires its own lease at once, and a crashed run's
lease expires after `CATALOG_SYNC_LOCK_LEASE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from catalog_sync import extract, params, protocol, staging
from catalog_sync.crashpoints import crash_after_first, crash_point
from catalog_sync.errors import CatalogSyncError, ConfigurationError
from catalog_sync.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: How many staged ops a dry run logs per kind.
SAMPLES = 3
#: Ledger statuses of a kind whose part of the run did what it should.
DONE = frozenset({"committed", "superseded", "sent_since", "dry_run"})
#: What `commit_delta` reads of an item whose window held nothing to send.
NOTHING_SENT: dict[str, Any] = {
    "manifest": {"upserts": 0, "deletes": 0},
    "tally": {},
    "unmappable": 0,
}


class RunFailed(CatalogSyncError):
    """Some kind did not finish: `report` fails the run (the cause failed its own task)."""


# --- shared resources -------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextlib.contextmanager
def _state() -> Iterator[Any]:
    from catalog_sync.state import StateStore

    store = StateStore.from_airflow()
    try:
        yield store
    finally:
        store.dispose()


@contextlib.contextmanager
def _engine() -> Iterator[Any]:
    from catalog_sync.source import create_source_engine

    engine = create_source_engine()
    try:
        yield engine
    finally:
        engine.dispose()


def _catalog() -> Any:
    from catalog_sync.config import load_config

    return load_config()


def _hook(target: str) -> Any:
    from catalog_sync.hooks import VoiceBotHook

    return VoiceBotHook(target)


def run_key(dag_id: str, run_id: str) -> str:
    """Names the run's staging folder and lease: stable across retries of its tasks."""
    return staging.safe_segment(f"{dag_id}__{run_id}")


def _hold_lock(state: Any, item: Mapping[str, Any], settings: Settings) -> None:
    """Take (or take back) this run's lease of the target; see the module docstring."""
    state.acquire_lock(
        item["target"],
        item["run_key"],
        timeout_s=settings.lock_timeout_s,
        lease_s=settings.lock_lease_s,
    )


def _run_identity(conf_mode: str, dag_id: str, run_id: str) -> dict[str, Any]:
    return {
        "mode": conf_mode,
        "dag_id": dag_id,
        "run_id": run_id,
        "run_key": run_key(dag_id, run_id),
        "started_at": _now().isoformat(),
    }


def _for_target(identity: Mapping[str, Any], target: str, catalog: Any) -> dict[str, Any]:
    """The run's identity for one target; `stage_key` names its staging folder and batch ids.

    Without a `targets:` section the one target stages under the run key, as it always did.
    """
    key = identity["run_key"]
    stage_key = key if catalog.targets is None else f"{key}__{target}"
    return {**identity, "target": target, "stage_key": staging.safe_segment(stage_key)}


def _stage_key(item: Mapping[str, Any]) -> str:
    return item.get("stage_key") or item["run_key"]


def paused_targets(catalog: Any, settings: Settings, state: Any) -> dict[str, str]:
    """Paused target -> reason: `paused:` in the map, else `catalog-sync targets pause`."""
    stored = state.paused()
    paused = {}
    for target in catalog.target_list(settings.target):
        reason = target.paused or stored.get(target.name, (None, None))[0]
        if reason:
            paused[target.name] = reason
    return paused


def _run_targets(catalog: Any, settings: Settings, state: Any, run: params.RunParams) -> list:
    """The targets of this run: every one not paused, or those the run names (`targets`).

    A paused target is logged and keeps its watermarks. A run that names a paused target
    fails: sending to it would skip its pause, and leaving it out silently would hide
    that nothing was sent."""
    paused = paused_targets(catalog, settings, state)
    named = [f"{name} ({paused[name]})" for name in run.targets if name in paused]
    if named:
        raise ConfigurationError(
            f"target(s) {', '.join(named)} are paused; resume them first "
            "(catalog-sync targets resume NAME) or leave them out of targets"
        )
    for name, reason in paused.items():
        log.warning(
            "target %s is paused (%s): skipped; its watermarks stay, so it catches up on resume",
            name,
            reason,
        )
    return [
        t
        for t in catalog.target_list(settings.target)
        if t.name not in paused and (not run.targets or t.name in run.targets)
    ]


def _routed(item: Mapping[str, Any]) -> Any:
    """The map as the item's target sees it (its filters on its kinds); without a
    `targets:` section there are no filters."""
    catalog = _catalog()
    if catalog.targets is None:
        return catalog
    return catalog.for_target(catalog.target(item["target"], load_settings().target))


def _ledger(state: Any, item: Mapping[str, Any], *, status: str, **counts: Any) -> None:
    from catalog_sync.state import RunLedgerEntry

    window = item.get("window") or {}
    state.ledger_record(
        RunLedgerEntry(
            run_id=item["run_id"],
            dag_id=item["dag_id"],
            target=item["target"],
            kind=item["kind"],
            mode="dry_run" if item.get("dry_run") else item["mode"],
            status=status,
            started_at=dt.datetime.fromisoformat(item["started_at"]),
            window_low=_aware(window.get("low")),
            window_high=_aware(window.get("high")),
            finished_at=_now(),
            **counts,
        )
    )


def _aware(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value).astimezone(dt.UTC)


def _log_samples(kind: str, lines: Iterator[bytes]) -> None:
    for line in itertools.islice(lines, SAMPLES):
        log.info("dry run sample of %s: %s", kind, line.decode("utf-8")[:2000])


# --- delta --------------------------------------------------------------------------------


def _staged_by(item: Mapping[str, Any]) -> str:
    """The run key whose staged batches this item sends (a resumed window's: the crashed run's)."""
    return item.get("staged_by") or item["run_key"]


def _pending_record(item: Mapping[str, Any]) -> dict[str, Any]:
    """What the state keeps to resume the item's window (small: URIs and counts)."""
    return {
        "run_key": _staged_by(item),
        "window": item["window"],
        "expected_low": item["expected_low"],
        "commit": item["commit"],
        "manifest": item["manifest"],
    }


def _staged_file_exists(uri: str) -> bool:
    try:
        with staging.open_uri(uri, "rb"):
            return True
    except CatalogSyncError:
        return False


def _resume(
    state: Any, target: str, kind: str, stored: dt.datetime | None
) -> dict[str, Any] | None:
    """The kind's pending window if it can be re-sent as staged, else None (record cleared).

    Usable only while the watermark is still the window's low (else a full or a `since`
    run moved it: the window is superseded) and its batch file still exists (else plan a
    fresh window from the unmoved watermark: nothing is lost, its ops are sent again).
    """
    pending = state.pending_window(target, kind)
    if pending is None:
        return None
    staged_by = pending["run_key"]
    if _aware(pending["expected_low"]) != stored:
        log.warning(
            "pending window of %s from run %s is superseded (the watermark moved since); "
            "planning a fresh window",
            kind,
            staged_by,
        )
    elif not _staged_file_exists(pending["manifest"]["uri"]):
        log.warning(
            "pending window of %s from run %s cannot be resumed: its staged batches %s are "
            "gone; planning a fresh window from the unmoved watermark (its ops are sent again)",
            kind,
            staged_by,
            pending["manifest"]["uri"],
        )
    else:
        return pending
    state.clear_pending_window(target, kind, staged_by)
    return None


def plan_delta(conf: Mapping[str, Any] | None, *, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Validate the run, check the map against the live database, fix one window per
    (target, kind); commit the empty windows here, so that their kinds start no task."""
    settings = load_settings()
    catalog = _catalog()
    run = params.check_for_map(
        conf, mode=params.DELTA, catalog=catalog, default_target=settings.target
    )
    identity = _run_identity(params.DELTA, dag_id, run_id)
    items = []
    idle = []
    with _engine() as engine, _state() as state:
        state.ensure_schema()
        extract.prepare(engine, catalog)
        targets = _run_targets(catalog, settings, state, run)
        extract.check_routes(engine, catalog, targets)
        pairs = [(t, k) for t in targets for k in run.kinds if k in t.kinds]
        # No filters without a targets: section, as in plan_full.
        routed = {target.name: catalog.for_target(target) for target in targets}
        with engine.connect() as conn:
            for target, kind in pairs:
                base = _for_target(identity, target.name, catalog)
                stored = state.watermark(target.name, kind)
                # A `since` run or a dry run leaves a pending window alone (and keeps it).
                resumable = run.since is None and not run.dry_run
                pending = _resume(state, target.name, kind, stored) if resumable else None
                if pending is not None:
                    items.append(
                        {
                            **base,
                            "kind": kind,
                            "dry_run": False,
                            "window": pending["window"],
                            "expected_low": pending["expected_low"],
                            "commit": pending["commit"],
                            "manifest": pending["manifest"],
                            "resumable": True,
                            "resumed": True,
                            "staged_by": pending["run_key"],
                        }
                    )
                    continue
                window = extract.plan_window(conn, stored, catalog.sync)
                commit = True
                if run.since is not None:
                    # Re-send from `since`; commit only if that covers everything since the
                    # watermark, else the gap between them would be skipped for good.
                    commit = window.low is not None and run.since <= window.low
                    window = extract.Window(low=run.since, high=window.high)
                item = {
                    **base,
                    "kind": kind,
                    "dry_run": run.dry_run,
                    "window": window.to_dict(),
                    "expected_low": None if stored is None else stored.isoformat(),
                    "commit": commit,
                    "resumable": resumable,
                }
                config = routed[target.name].kinds[kind]
                quiet = extract.window_is_empty(conn, config, window)
                if quiet and not state.dead_letter_pending(target.name, kind):
                    idle.append(item)
                else:
                    items.append(item)
            conn.rollback()
    for item in idle:
        # Nothing to extract or push: commit here, and the kind's mapped tasks never start.
        done = commit_delta({**item, "resumable": False, **NOTHING_SENT})
        log.info(
            "plan %s/%s: nothing changed in %s .. %s; %s without extract, push or commit tasks",
            item["target"],
            item["kind"],
            item["window"]["low"],
            item["window"]["high"],
            done["status"],
        )
    for item in items:
        if item.get("resumed"):
            note = f" (resumed: re-sending the batches staged by run {item['staged_by']})"
        else:
            note = "" if item["commit"] else " (since: the watermark will not move)"
        log.info(
            "plan %s/%s: window %s .. %s%s",
            item["target"],
            item["kind"],
            item["window"]["low"] or "(first run)",
            item["window"]["high"],
            note,
        )
    return items


def extract_delta(item: Mapping[str, Any]) -> dict[str, Any]:
    """Stage the kind's dead-letter redrive, then its window's changes, as events bodies.

    A resumed window is already staged: its batches are re-sent as they are (same ids).
    """
    from catalog_sync import mapping

    if item.get("resumed"):
        log.info("resumed %s: sending the staged %s as is", item["kind"], item["manifest"]["uri"])
        return dict(item)

    catalog = _routed(item)
    kind, target = item["kind"], item["target"]
    with _engine() as engine, _state() as state:
        mappers = mapping.compile_mappers(catalog, engine, kinds=[kind])

        def redrive(conn: Any, mapper: Any) -> Iterator[Any]:
            from catalog_sync.redrive import redrive_items

            return redrive_items(conn, catalog, mapper, state, target=target, kind=kind)

        manifest = extract.extract_delta(
            engine,
            catalog,
            kind,
            extract.Window.from_dict(item["window"]),
            run_key=_stage_key(item),
            mappers=mappers,
            redrive=redrive,
        )
    log.info(
        "extracted %s for %s: %d upserts, %d deletes in %d batches, %d unmappable",
        kind,
        target,
        manifest["upserts"],
        manifest["deletes"],
        manifest["batches"],
        manifest["failures"]["count"],
    )
    crash_point("after_extract")
    return {**item, "manifest": manifest}


def push_delta(item: Mapping[str, Any]) -> dict[str, Any]:
    """Send the staged batches (same ids on a retry); rejected ops go to the dead letter."""
    manifest = item["manifest"]
    kind = item["kind"]
    if item["dry_run"]:
        _log_samples(kind, staging.iter_lines(manifest["uri"]))
        return {**item, "tally": {}, "unmappable": 0}
    from catalog_sync import delivery

    settings = load_settings()
    with _state() as state:
        try:
            _hold_lock(state, item, settings)
            if item["commit"] and item.get("resumable"):
                # Before the first batch: a crash from here on is resumed, not re-planned.
                state.set_pending_window(item["target"], kind, _pending_record(item))
            tally = delivery.deliver_batches(
                _hook(item["target"]),
                state,
                target=item["target"],
                kind=kind,
                batches=crash_after_first(staging.iter_batches(manifest["uri"]), "mid_push"),
                max_attempts=settings.dead_letter_max_attempts,
            )
            unmappable = delivery.record_failures(
                state,
                target=item["target"],
                kind=kind,
                failures_uri=manifest["failures"]["uri"],
                max_attempts=settings.dead_letter_max_attempts,
            )
        except Exception as exc:
            _ledger(state, item, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
    counts = tally.to_dict()
    log.info(
        "pushed %s to %s: %s, %d unmappable dead-lettered", kind, item["target"], counts, unmappable
    )
    crash_point("after_push")
    return {**item, "tally": counts, "unmappable": unmappable}


def commit_delta(item: Mapping[str, Any]) -> dict[str, Any]:
    """Move the kind's watermark to the window's high, if it still is where plan read it."""
    from catalog_sync.state import WatermarkConflict

    manifest, tally = item["manifest"], item["tally"]
    counts = {
        "extracted": manifest["upserts"] + manifest["deletes"],
        "accepted": tally.get("accepted", 0),
        "replayed": tally.get("replayed_batches", 0),
        "dead_lettered": tally.get("dead_lettered", 0) + item["unmappable"],
    }
    with _state() as state:
        if item["dry_run"]:
            status = "dry_run"
        elif not item["commit"]:
            status = "sent_since"
        else:
            _hold_lock(state, item, load_settings())
            pending = _staged_by(item) if item.get("resumable") else None
            try:
                state.advance_watermark(
                    item["target"],
                    item["kind"],
                    _aware(item["window"]["high"]),
                    expected_low=_aware(item["expected_low"]),
                    clear_pending=pending,
                )
                status = "committed"
            except WatermarkConflict as exc:
                # Another run (a full) moved the watermark: the next delta re-sends from there.
                log.warning("%s", exc)
                status = "superseded"
                if pending is not None:
                    state.clear_pending_window(item["target"], item["kind"], pending)
        _ledger(state, item, status=status, **counts)
    return {"target": item["target"], "kind": item["kind"], "status": status, **counts}


def _alert(dead: int, run_id: str, target: str) -> None:
    """Tell a human that ops were dead-lettered, through the configured notifiers."""
    from catalog_sync import alerts

    log.warning("run %s dead-lettered %d op(s) for %s", run_id, dead, target)
    alerts.alert_dead_letters({"dead_lettered": dead, "run_id": run_id, "target": target})


def report(plan: Sequence[Mapping[str, Any]], *, dag_id: str, run_id: str) -> dict[str, Any]:
    """Log a table of the run's ledger lines per target, release the locks, alert on dead
    letters; fail the run if a (target, kind) did not finish (the others did their part)."""
    settings = load_settings()
    catalog = _catalog()
    key = run_key(dag_id, run_id)
    targets = catalog.target_names(settings.target)
    with _state() as state:
        state.ensure_schema()
        lines = [e for e in state.ledger(limit=5000) if e.run_id == run_id]
        for target in dict.fromkeys([*targets, *(item.get("target") for item in plan)]):
            if target:
                state.release_lock(target, key)
        paused = paused_targets(catalog, settings, state)
    by_pair = {(line.target, line.kind): line for line in lines}
    # The planned pairs and those plan finished itself (idle kinds: ledger lines only).
    planned = [(item.get("target") or settings.target, item["kind"]) for item in plan]
    target_rank = {name: i for i, name in enumerate(targets)}
    kind_rank = {name: i for i, name in enumerate(catalog.kinds)}
    pairs = sorted(
        dict.fromkeys([*planned, *by_pair]),
        key=lambda p: (target_rank.get(p[0], len(target_rank)), p[0], kind_rank.get(p[1], 0), p[1]),
    )
    header = f"{'target':<20}{'kind':<18}{'status':>12}{'extracted':>11}{'accepted':>10}{'dead':>8}"
    table = [header]
    rows = []
    for target, kind in pairs:
        line = by_pair.get((target, kind))
        row = {
            "target": target,
            "kind": kind,
            "status": line.status if line else "not_run",
            "extracted": line.extracted if line else 0,
            "accepted": line.accepted if line else 0,
            "dead_lettered": line.dead_lettered if line else 0,
        }
        rows.append(row)
        table.append(
            f"{target:<20}{kind:<18}{row['status']:>12}{row['extracted']:>11}"
            f"{row['accepted']:>10}{row['dead_lettered']:>8}"
        )
    table += [f"{name:<20}{'(paused)':<18} {reason}" for name, reason in paused.items()]
    log.info("run %s of %s:\n%s", run_id, dag_id, "\n".join(table))
    dead_by_target: dict[str, int] = {}
    for row in rows:
        dead_by_target[row["target"]] = dead_by_target.get(row["target"], 0) + row["dead_lettered"]
    for target, dead in dead_by_target.items():
        if dead:
            _alert(dead, run_id, target)
    unfinished = [f"{row['target']}/{row['kind']}" for row in rows if row["status"] not in DONE]
    if unfinished:
        raise RunFailed(
            f"{', '.join(unfinished)} did not finish (the other targets and kinds did their "
            "part); their failed task's log says why"
        )
    return {"kinds": rows, "dead_lettered": sum(dead_by_target.values()), "paused": paused}


# --- full ---------------------------------------------------------------------------------


def plan_full(conf: Mapping[str, Any] | None, *, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Validate the run and the map against the live database; one item per (target, kind)."""
    settings = load_settings()
    catalog = _catalog()
    run = params.check_for_map(
        conf, mode=params.FULL, catalog=catalog, default_target=settings.target
    )
    identity = _run_identity(params.FULL, dag_id, run_id)
    with _engine() as engine, _state() as state:
        state.ensure_schema()
        extract.prepare(engine, catalog)
        targets = _run_targets(catalog, settings, state, run)
        extract.check_routes(engine, catalog, targets)
        plan = []
        with engine.connect() as conn:
            for target in targets:
                routed = catalog.for_target(target)  # no filters without a targets: section
                for kind in (k for k in run.kinds if k in target.kinds):
                    ranges = extract.snapshot_ranges(
                        conn,
                        routed.kinds[kind],
                        parts=settings.snapshot_parts,
                        min_rows=settings.snapshot_part_rows,
                    )
                    plan += [
                        {
                            **_for_target(identity, target.name, catalog),
                            "kind": kind,
                            "part_index": index,
                            "parts": len(ranges),
                            "range": list(pk_range),
                            "dry_run": run.dry_run,
                            "force": run.force,
                        }
                        for index, pk_range in enumerate(ranges)
                    ]
            conn.rollback()
    return plan


def by_target(plan: Sequence[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    """The full plan split per target, in plan order: one snapshot each."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in plan:
        groups.setdefault(item["target"], []).append(dict(item))
    return list(groups.values())


def extract_full(item: Mapping[str, Any]) -> dict[str, Any]:
    """Stage one kind's snapshot (or one key range of it) for one target in its own
    repeatable-read transaction (its own point), through the target's filter."""
    from catalog_sync import mapping

    catalog = _routed(item)
    index, parts = item.get("part_index", 0), item.get("parts", 1)
    with _engine() as engine:
        snapshot = extract.extract_snapshot(
            engine,
            catalog,
            run_key=_stage_key(item),
            kinds=[item["kind"]],
            mappers=mapping.compile_mappers(catalog, engine, kinds=[item["kind"]]),
            part=(index, tuple(item["range"])) if parts > 1 else None,
            in_sql=load_settings().snapshot_sql,
        )
    part = snapshot["parts"][0]
    log.info(
        "snapshot of %s%s for %s at %s: %d lines",
        item["kind"],
        f" (part {index + 1} of {parts}, keys {item['range']})" if parts > 1 else "",
        item["target"],
        snapshot["point"],
        part["lines"],
    )
    return {
        "target": item["target"],
        "kind": item["kind"],
        "part_index": index,
        "point": snapshot["point"],
        "part": part,
    }


def assemble(plan: Sequence[Mapping[str, Any]], parts: Sequence[Mapping[str, Any]]) -> dict:
    """Join the kinds' parts of the plan's target, in map order, into its one upload.

    `parts` may hold every target's parts (the DAG maps this over targets): only the
    plan's target's are taken.
    """
    first = plan[0]
    target = first["target"]
    mine = {
        (entry["kind"], entry.get("part_index", 0)): entry
        for entry in parts
        if entry.get("target", target) == target
    }
    ordered = [mine[(item["kind"], item.get("part_index", 0))] for item in plan]
    upload = staging.assemble_snapshot(
        [entry["part"] for entry in ordered],
        staging.join(staging.staging_root(), _stage_key(first), "snapshot.ndjson.gz"),
    )
    lines: dict[str, int] = {}
    points: dict[str, str] = {}
    failures: dict[str, dict[str, Any]] = {}
    for entry in ordered:
        kind, part = entry["kind"], entry["part"]
        lines[kind] = lines.get(kind, 0) + part["lines"]
        # A split kind's parts each have their own point: the earliest is its watermark,
        # so the next delta re-sends whatever changed while the later parts started.
        if kind not in points or _aware(entry["point"]) < _aware(points[kind]):
            points[kind] = entry["point"]
        failed = failures.setdefault(kind, {"count": 0, "uris": []})
        failed["count"] += part["failures"]["count"]
        if part["failures"]["count"]:
            failed["uris"].append(part["failures"]["uri"])
    keep = ("mode", "dag_id", "run_id", "run_key", "stage_key", "target", "started_at")
    return {
        **{k: first[k] for k in keep if k in first},
        "dry_run": first["dry_run"],
        "force": first["force"],
        "upload": upload,
        "lines": lines,
        "points": points,
        "failures": failures,
    }


def guards(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse a snapshot that would wipe or gut the receiver (force overrides the last two).

    - an empty snapshot (never: it means a broken source, and would delete nothing useful);
    - a kind whose count fell by more than the shrink share against the last accepted one;
    - rows that failed to map: absent from the snapshot, the tombstone pass would delete them.
    """
    settings = load_settings()
    lines: Mapping[str, int] = snapshot["lines"]
    if not any(lines.values()):
        raise ConfigurationError(
            "the snapshot is empty: every kind has 0 entities; refusing to send it (check the "
            "source connection catalog_source and the entity map)"
        )
    problems = []
    with _state() as state:
        last = state.last_snapshot_counts(snapshot["target"])
    shrunk = [
        f"{kind} {last[kind]} -> {count}"
        for kind, count in lines.items()
        if last.get(kind) and count < last[kind] * (1 - settings.shrink_guard)
    ]
    if shrunk:
        problems.append(
            f"kind(s) shrank by more than {settings.shrink_guard:.0%} since the last accepted "
            f"snapshot ({'; '.join(shrunk)})"
        )
    failed = {kind: f for kind, f in snapshot["failures"].items() if f["count"]}
    if failed:
        where = "; ".join(
            f"{kind}: {f['count']} in {', '.join(f['uris'])}" for kind, f in failed.items()
        )
        problems.append(
            f"rows failed to map and would be deleted at the receiver ({where}; each line of "
            "those gzipped NDJSON files names the row and its error)"
        )
    if problems and not snapshot["force"]:
        raise ConfigurationError(
            "refusing this snapshot: "
            + " and ".join(problems)
            + ". Fix the source or the map, or trigger catalog_full with force=true"
        )
    for problem in problems:
        log.warning("force: sending anyway although %s", problem)
    return dict(snapshot)


def init_full(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """Take the target's lock and announce the snapshot (a dry run logs samples instead)."""
    upload = snapshot["upload"]
    if snapshot["dry_run"]:
        _log_samples("snapshot", staging.iter_lines(upload["uri"]))
        return {**snapshot, "sync_id": None, "upload_url": None}
    with _state() as state:
        _hold_lock(state, snapshot, load_settings())
    return _announce(_hook(snapshot["target"]), snapshot)


def _announce(hook: Any, snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """`init`: the snapshot with the receiver's new `sync_id` and `upload_url`."""
    started = hook.init({k: n for k, n in snapshot["lines"].items() if n})
    return {**snapshot, "sync_id": started["sync_id"], "upload_url": started["upload_url"]}


def upload_full(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """PUT the snapshot; a spent upload URL (used or expired) gets one fresh init.

    The URL is single use and short-lived: a PUT whose answer was lost leaves it used,
    and an Airflow retry of this task may come after it expired. Both are recovered
    here, by announcing the same staged file again; finalize then takes the new
    `sync_id` from this task's result. The old sync is never finalized, so the
    receiver applies nothing twice.
    """
    from catalog_sync.hooks import UploadUrlGone

    if snapshot["dry_run"]:
        return dict(snapshot)
    with _state() as state:
        _hold_lock(state, snapshot, load_settings())
    hook = _hook(snapshot["target"])
    upload = snapshot["upload"]
    try:
        hook.upload(snapshot["upload_url"], upload["uri"], size=upload["bytes"])
    except UploadUrlGone as exc:
        log.warning("%s; announcing the snapshot again", exc)
        snapshot = _announce(hook, snapshot)
        hook.upload(snapshot["upload_url"], upload["uri"], size=upload["bytes"])
    return dict(snapshot)


def finalize_full(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    if not snapshot["dry_run"]:
        with _state() as state:
            _hold_lock(state, snapshot, load_settings())
        answer = _hook(snapshot["target"]).finalize(snapshot["sync_id"])
        log.info("finalized %s: %s", snapshot["sync_id"], protocol.dumps(answer)[:2000])
        crash_point("after_finalize")
    return dict(snapshot)


def commit_full(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """Per kind: watermark = its point in time, remember its count (the shrink guard's base);
    rows that failed to map (sent with force) wait in the dead letter."""
    from catalog_sync import delivery

    settings = load_settings()
    target = snapshot["target"]
    with _state() as state:
        if not snapshot["dry_run"]:
            _hold_lock(state, snapshot, settings)
        for kind, count in snapshot["lines"].items():
            item = {**snapshot, "kind": kind}
            failures = snapshot["failures"][kind]
            dead = 0
            if snapshot["dry_run"]:
                status = "dry_run"
            else:
                state.set_snapshot(target, kind, _aware(snapshot["points"][kind]), count)
                for failures_uri in failures["uris"]:
                    dead += delivery.record_failures(
                        state,
                        target=target,
                        kind=kind,
                        failures_uri=failures_uri,
                        max_attempts=settings.dead_letter_max_attempts,
                    )
                status = "committed"
            # finalize is all or nothing: once it answered, every line was applied.
            accepted = 0 if snapshot["dry_run"] else count
            extracted = count + failures["count"]
            _ledger(
                state,
                item,
                status=status,
                extracted=extracted,
                accepted=accepted,
                dead_lettered=dead,
            )
    return {
        "target": target,
        "committed": not snapshot["dry_run"],
        "kinds": len(snapshot["lines"]),
    }
