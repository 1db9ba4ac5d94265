"""The state store on SQLite, PostgreSQL and MariaDB: schema, watermarks, dead letter, ledger."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from catalog_sync import state
from catalog_sync.errors import ConfigurationError, TransientError
from catalog_sync.state import RunLedgerEntry, StateStore, WatermarkConflict

TARGET = "voicebot_default"
T0 = dt.datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=15, microseconds=1)
T2 = T1 + dt.timedelta(minutes=15, microseconds=1)


def _version_rows(store: StateStore) -> list[int]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(state.versions.c.version)).scalars())


# --- schema --------------------------------------------------------------------------


def test_ensure_schema_is_idempotent(store: StateStore) -> None:
    store.ensure_schema()
    store.ensure_schema()
    assert _version_rows(store) == [state.latest_version()]
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"schema_version", "sync_state", "dead_letter", "sync_runs", "target_lock"} <= tables


def test_ensure_schema_from_two_processes_at_once(database_url: str) -> None:
    stores = [StateStore(database_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def create(store: StateStore) -> None:
        barrier.wait()
        try:
            store.ensure_schema()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert _version_rows(stores[0]) == [state.latest_version()]
    for s in stores:
        s.dispose()


def test_upgrade_applies_new_migrations_once_in_order(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at the latest version meets a release with one more step: it runs once."""
    calls: list[int] = []
    current = state.latest_version()

    def add_note(conn: sa.Connection) -> None:
        calls.append(current + 1)
        conn.execute(sa.text("ALTER TABLE sync_state ADD COLUMN note VARCHAR(20)"))

    upgraded = [*state.MIGRATIONS, state.Migration(current + 1, "sync_state.note", add_note)]
    monkeypatch.setattr(state, "MIGRATIONS", upgraded)
    newer = StateStore(store.engine)
    newer.ensure_schema()
    newer.ensure_schema()
    assert calls == [current + 1]
    assert _version_rows(store) == [current, current + 1]
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("sync_state")}
    assert "note" in columns


def test_newer_schema_version_is_refused(store: StateStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            state.versions.insert().values(version=99, description="future", applied_at=T0)
        )
    older_release = StateStore(store.engine)
    with pytest.raises(ConfigurationError, match=r"schema version 99.*upgrade airflow-catalog"):
        older_release.ensure_schema()
    with pytest.raises(ConfigurationError, match="schema version 99"):
        StateStore(store.engine).watermark(TARGET, "product")


def test_missing_schema_says_to_call_ensure_schema(sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"no sync state schema.*ensure_schema"):
        StateStore(sqlite_url).watermark(TARGET, "product")


def test_unreachable_database_is_transient_and_hides_the_password() -> None:
    store = StateStore("postgresql://syncer:s3cret-pw@127.0.0.1:1/state")
    with pytest.raises(TransientError, match="retry") as caught:
        store.ensure_schema()
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)


# --- watermarks ----------------------------------------------------------------------


def test_watermark_round_trip_keeps_microseconds_and_utc(store: StateStore) -> None:
    berlin = dt.timezone(dt.timedelta(hours=2))
    high = dt.datetime(2026, 7, 1, 12, 30, 45, 654321, tzinfo=berlin)
    assert store.watermark(TARGET, "product") is None
    store.advance_watermark(TARGET, "product", high, expected_low=None)
    stored = store.watermark(TARGET, "product")
    assert stored == high
    assert stored is not None
    assert stored.tzinfo is dt.UTC
    assert (stored.hour, stored.microsecond) == (10, 654321)


def test_naive_datetime_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match=r"no time zone.*replace\(tzinfo=datetime.UTC\)"):
        store.advance_watermark(TARGET, "product", dt.datetime(2026, 1, 1), expected_low=None)
    assert store.watermark(TARGET, "product") is None


def test_advance_moves_from_expected_low(store: StateStore) -> None:
    store.advance_watermark(TARGET, "product", T0, expected_low=None)
    store.advance_watermark(TARGET, "product", T1, expected_low=T0)
    assert store.watermark(TARGET, "product") == T1
    assert store.watermark(TARGET, "category") is None


def test_advance_refuses_a_stale_expected_low(store: StateStore) -> None:
    """Two runs planned from T0; the one committing second must not overwrite the first."""
    store.advance_watermark(TARGET, "product", T0, expected_low=None)
    store.advance_watermark(TARGET, "product", T2, expected_low=T0)
    with pytest.raises(WatermarkConflict, match="another run committed"):
        store.advance_watermark(TARGET, "product", T1, expected_low=T0)
    assert store.watermark(TARGET, "product") == T2


def test_first_advance_refused_when_another_run_committed_first(store: StateStore) -> None:
    store.advance_watermark(TARGET, "product", T1, expected_low=None)
    with pytest.raises(WatermarkConflict, match=r"not none as this run planned"):
        store.advance_watermark(TARGET, "product", T2, expected_low=None)
    assert store.watermark(TARGET, "product") == T1


def test_advance_never_moves_backwards(store: StateStore) -> None:
    store.advance_watermark(TARGET, "product", T1, expected_low=None)
    with pytest.raises(WatermarkConflict, match="backwards"):
        store.advance_watermark(TARGET, "product", T0, expected_low=T1)
    assert store.watermark(TARGET, "product") == T1


def test_retried_commit_of_the_same_window_is_a_noop(store: StateStore) -> None:
    store.advance_watermark(TARGET, "product", T0, expected_low=None)
    store.advance_watermark(TARGET, "product", T1, expected_low=T0)
    store.advance_watermark(TARGET, "product", T1, expected_low=T0)  # Airflow retried commit
    assert store.watermark(TARGET, "product") == T1


def test_set_snapshot_sets_watermark_even_backwards_and_remembers_counts(
    store: StateStore,
) -> None:
    """Rows changed after the snapshot's point must be re-sent by the next delta."""
    store.advance_watermark(TARGET, "product", T2, expected_low=None)
    store.set_snapshot(TARGET, "product", T1, 1200)
    store.set_snapshot(TARGET, "category", T1, 40)
    store.set_snapshot("voicebot_other", "product", T1, 7)
    assert store.watermark(TARGET, "product") == T1
    assert store.watermark(TARGET, "category") == T1
    assert store.last_snapshot_counts(TARGET) == {"product": 1200, "category": 40}


def test_delta_commits_do_not_count_as_snapshots(store: StateStore) -> None:
    store.advance_watermark(TARGET, "product", T0, expected_low=None)
    assert store.last_snapshot_counts(TARGET) == {}


# --- dead letter ---------------------------------------------------------------------


def test_dead_letter_record_keeps_op_payload_and_error(store: StateStore) -> None:
    payload = {"name": "Gr\u00f6\u00dfe \u2013 \U0001d518", "price": "9.90", "tags": [1, None]}
    entry_id = store.dead_letter_record(
        TARGET, "product", "laravel:product:1", "upsert", payload, "name too long"
    )
    [entry] = store.dead_letter_pending(TARGET)
    assert entry.id == entry_id
    assert (entry.kind, entry.external_id, entry.op_type) == (
        "product",
        "laravel:product:1",
        "upsert",
    )
    assert entry.payload == payload
    assert (entry.error, entry.attempts, entry.exhausted, entry.status) == (
        "name too long",
        1,
        False,
        "pending",
    )
    assert entry.first_seen.tzinfo is dt.UTC


def test_dead_letter_repeat_updates_the_live_entry(store: StateStore) -> None:
    first = store.dead_letter_record(
        TARGET, "product", "laravel:product:1", "upsert", {"a": 1}, "e1"
    )
    again = store.dead_letter_record(
        TARGET, "product", "laravel:product:1", "upsert", {"a": 2}, "e2"
    )
    assert again == first
    [entry] = store.dead_letter_list(TARGET)
    assert (entry.attempts, entry.error, entry.payload) == (2, "e2", {"a": 2})
    assert entry.last_seen >= entry.first_seen


def test_dead_letter_identity_includes_kind_and_op_type(store: StateStore) -> None:
    ids = {
        store.dead_letter_record(TARGET, "product", "laravel:product:1", "upsert", {}, "x"),
        store.dead_letter_record(TARGET, "product", "laravel:product:1", "delete", None, "x"),
        store.dead_letter_record(TARGET, "page", "laravel:product:1", "upsert", {}, "x"),
        store.dead_letter_record(
            "voicebot_other", "product", "laravel:product:1", "upsert", {}, "x"
        ),
    }
    assert len(ids) == 4
    assert [e.kind for e in store.dead_letter_pending(TARGET, "page")] == ["page"]


def test_dead_letter_takes_an_over_long_external_id(store: StateStore) -> None:
    """The op may have been rejected for exactly that id: it must still be kept."""
    long_id = "laravel:product:" + "x" * 2000
    first = store.dead_letter_record(TARGET, "product", long_id, "upsert", None, "id too long")
    assert store.dead_letter_record(TARGET, "product", long_id, "upsert", None, "again") == first
    [entry] = store.dead_letter_pending(TARGET)
    assert entry.external_id == long_id


def test_dead_letter_exhausts_at_max_attempts(store: StateStore) -> None:
    for _ in range(3):
        store.dead_letter_record(
            TARGET, "tag", "laravel:tag:9", "upsert", {}, "bad", max_attempts=3
        )
    assert store.dead_letter_pending(TARGET) == []
    [entry] = store.dead_letter_pending(TARGET, include_exhausted=True)
    assert (entry.attempts, entry.exhausted, entry.status) == (3, True, "exhausted")


def test_dead_letter_not_exhausted_below_max_attempts(store: StateStore) -> None:
    for _ in range(2):
        store.dead_letter_record(
            TARGET, "tag", "laravel:tag:9", "upsert", {}, "bad", max_attempts=3
        )
    [entry] = store.dead_letter_pending(TARGET)
    assert (entry.attempts, entry.exhausted) == (2, False)


def test_dead_letter_resolve_closes_and_a_new_rejection_opens_a_new_entry(
    store: StateStore,
) -> None:
    first = store.dead_letter_record(TARGET, "tag", "laravel:tag:9", "upsert", {}, "bad")
    other = store.dead_letter_record(TARGET, "tag", "laravel:tag:10", "upsert", {}, "bad")
    store.dead_letter_resolve([first])
    assert [e.id for e in store.dead_letter_pending(TARGET)] == [other]
    closed = {e.id: e for e in store.dead_letter_list(TARGET, include_resolved=True)}
    assert closed[first].status == "resolved"
    assert closed[first].resolved_at is not None
    reopened = store.dead_letter_record(TARGET, "tag", "laravel:tag:9", "upsert", {}, "bad again")
    assert reopened not in {first, other}


def test_dead_letter_purge_requires_a_reason(store: StateStore) -> None:
    entry_id = store.dead_letter_record(TARGET, "tag", "laravel:tag:9", "upsert", {}, "bad")
    with pytest.raises(ConfigurationError, match="needs a reason"):
        store.dead_letter_purge("  ", entry_ids=[entry_id])
    assert [e.id for e in store.dead_letter_pending(TARGET)] == [entry_id]


def test_dead_letter_purge_keeps_entries_with_the_reason(store: StateStore) -> None:
    a = store.dead_letter_record(TARGET, "tag", "laravel:tag:1", "upsert", {}, "bad")
    b = store.dead_letter_record(TARGET, "tag", "laravel:tag:2", "upsert", {}, "bad")
    c = store.dead_letter_record("voicebot_other", "tag", "laravel:tag:3", "upsert", {}, "bad")
    assert store.dead_letter_purge("row deleted at the source", entry_ids=[a]) == 1
    assert store.dead_letter_purge("target retired", target=TARGET) == 1  # only b is live
    assert [e.id for e in store.dead_letter_list()] == [c]
    closed = {e.id: e for e in store.dead_letter_list(include_resolved=True)}
    assert closed[a].purged_reason == "row deleted at the source"
    assert closed[b].purged_reason == "target retired"
    assert closed[a].status == "purged"


def test_dead_letter_rearm_resets_exhausted_entries(store: StateStore) -> None:
    a = store.dead_letter_record(
        TARGET, "tag", "laravel:tag:1", "upsert", {}, "bad", max_attempts=1
    )
    b = store.dead_letter_record(
        TARGET, "tag", "laravel:tag:2", "upsert", {}, "bad", max_attempts=1
    )
    assert store.dead_letter_pending(TARGET) == []
    assert store.dead_letter_rearm([a]) == 1
    [entry] = store.dead_letter_pending(TARGET)
    assert (entry.id, entry.attempts, entry.exhausted) == (a, 0, False)
    assert store.dead_letter_rearm() == 1  # b; a has nothing left to reset
    assert {e.id for e in store.dead_letter_pending(TARGET)} == {a, b}


# --- ledger --------------------------------------------------------------------------


def _entry(**overrides: object) -> RunLedgerEntry:
    values: dict[str, object] = {
        "run_id": "scheduled__2026-03-01T10:00:00+00:00",
        "dag_id": "catalog_delta",
        "target": TARGET,
        "kind": "product",
        "mode": "delta",
        "status": "running",
        "started_at": T0,
        "window_low": T0 - dt.timedelta(minutes=5),
        "window_high": T1,
    }
    return RunLedgerEntry(**{**values, **overrides})  # type: ignore[arg-type]


def test_ledger_record_upserts_by_run_target_and_kind(store: StateStore) -> None:
    store.ledger_record(_entry())
    done = _entry(
        status="success", extracted=10, accepted=7, replayed=2, dead_lettered=1, finished_at=T2
    )
    store.ledger_record(done)
    store.ledger_record(_entry(kind="category"))
    lines = {e.kind: e for e in store.ledger(target=TARGET)}
    assert set(lines) == {"product", "category"}
    assert lines["product"] == done
    assert lines["category"].status == "running"


def test_ledger_lists_newest_first_within_limit(store: StateStore) -> None:
    for n in range(3):
        store.ledger_record(_entry(run_id=f"run{n}", started_at=T0 + dt.timedelta(minutes=n)))
    store.ledger_record(_entry(run_id="elsewhere", target="voicebot_other", started_at=T2))
    assert [e.run_id for e in store.ledger(target=TARGET, limit=2)] == ["run2", "run1"]
    assert store.ledger(limit=1)[0].run_id == "elsewhere"


def test_ledger_refuses_an_unknown_mode(store: StateStore) -> None:
    with pytest.raises(ValueError, match=r"mode 'incremental' is not one of"):
        store.ledger_record(_entry(mode="incremental"))
    assert store.ledger() == []
