"""Pending windows in the state store: record, read, clear, and the v1 -> v2 migration."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from catalog_sync import state
from catalog_sync.state import StateStore

TARGET = "voicebot_default"
T0 = dt.datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=15)
T2 = T1 + dt.timedelta(minutes=15)


def _item(run_key: str, low: dt.datetime | None, high: dt.datetime) -> dict:
    return {
        "run_key": run_key,
        "window": {"low": None if low is None else low.isoformat(), "high": high.isoformat()},
        "expected_low": None if low is None else low.isoformat(),
        "commit": True,
        "manifest": {
            "uri": f"file:///staging/{run_key}/delta/product.batches.ndjson.gz",
            "batches": 2,
            "upserts": 3,
            "deletes": 1,
            "failures": {"count": 0, "uri": "file:///staging/x/product.failures.ndjson.gz"},
        },
    }


def test_pending_window_round_trip_and_replace(store: StateStore) -> None:
    assert store.pending_window(TARGET, "product") is None
    first = _item("catalog_delta__run-1", T0, T1)
    store.set_pending_window(TARGET, "product", first)
    assert store.pending_window(TARGET, "product") == first
    assert store.pending_window(TARGET, "category") is None
    assert store.pending_window("voicebot_other", "product") is None

    second = _item("catalog_delta__run-2", T0, T2)
    store.set_pending_window(TARGET, "product", second)
    assert store.pending_window(TARGET, "product") == second


def test_clear_only_removes_the_named_runs_record(store: StateStore) -> None:
    store.set_pending_window(TARGET, "product", _item("catalog_delta__run-1", T0, T1))
    assert not store.clear_pending_window(TARGET, "product", "catalog_delta__run-0")
    assert store.pending_window(TARGET, "product") is not None
    assert store.clear_pending_window(TARGET, "product", "catalog_delta__run-1")
    assert store.pending_window(TARGET, "product") is None
    assert not store.clear_pending_window(TARGET, "product", "catalog_delta__run-1")


def test_set_pending_window_needs_the_run_key(store: StateStore) -> None:
    item = _item("catalog_delta__run-1", T0, T1)
    del item["run_key"]
    with pytest.raises(ValueError, match="run_key"):
        store.set_pending_window(TARGET, "product", item)


def test_advance_watermark_clears_the_pending_window_with_the_commit(store: StateStore) -> None:
    store.advance_watermark(TARGET, "product", T0, expected_low=None)
    store.set_pending_window(TARGET, "product", _item("run-1", T0, T1))
    store.advance_watermark(TARGET, "product", T1, expected_low=T0, clear_pending="run-1")
    assert store.watermark(TARGET, "product") == T1
    assert store.pending_window(TARGET, "product") is None


def test_first_commit_clears_the_pending_window(store: StateStore) -> None:
    store.set_pending_window(TARGET, "product", _item("run-1", None, T1))
    store.advance_watermark(TARGET, "product", T1, expected_low=None, clear_pending="run-1")
    assert store.pending_window(TARGET, "product") is None


def test_an_already_done_commit_still_clears(store: StateStore) -> None:
    """Commit happened, then the process died before the clear: a retry cleans up."""
    store.advance_watermark(TARGET, "product", T0, expected_low=None)
    store.advance_watermark(TARGET, "product", T1, expected_low=T0)
    store.set_pending_window(TARGET, "product", _item("run-1", T0, T1))
    store.advance_watermark(TARGET, "product", T1, expected_low=T0, clear_pending="run-1")
    assert store.pending_window(TARGET, "product") is None


def test_a_refused_commit_keeps_the_pending_window(store: StateStore) -> None:
    store.advance_watermark(TARGET, "product", T2, expected_low=None)
    store.set_pending_window(TARGET, "product", _item("run-1", T0, T1))
    with pytest.raises(state.WatermarkConflict):
        store.advance_watermark(TARGET, "product", T1, expected_low=T0, clear_pending="run-1")
    assert store.pending_window(TARGET, "product") is not None


def _make_v1(url: str) -> None:
    """A database as release 1 left it: the v1 tables, stamped version 1."""
    engine = sa.create_engine(url)
    later = {"pending_windows", "paused_targets"}  # tables of later versions
    v1 = [t for name, t in state.metadata.tables.items() if name not in later]
    with engine.begin() as conn:
        state.metadata.create_all(conn, tables=v1)
        conn.execute(
            state.versions.insert().values(version=1, description="initial schema", applied_at=T0)
        )
    engine.dispose()


def test_v1_database_gets_pending_windows_on_ensure_schema(database_url: str) -> None:
    _make_v1(database_url)
    store = StateStore(database_url)
    try:
        assert store.schema_version() == 1
        assert "pending_windows" not in sa.inspect(store.engine).get_table_names()
        store.ensure_schema()
        store.ensure_schema()
        assert store.schema_version() == state.latest_version()
        with store.engine.connect() as conn:
            rows = list(conn.execute(sa.select(state.versions.c.version)).scalars())
        assert rows == list(range(1, state.latest_version() + 1))
        store.set_pending_window(TARGET, "product", _item("run-1", T0, T1))
        assert store.pending_window(TARGET, "product") == _item("run-1", T0, T1)
    finally:
        store.dispose()


def test_v1_store_without_upgrade_is_told_to_ensure_schema(sqlite_url: str) -> None:
    _make_v1(sqlite_url)
    with pytest.raises(state.ConfigurationError, match=r"has schema v1.*ensure_schema"):
        StateStore(sqlite_url).pending_window(TARGET, "product")


def test_fresh_database_is_created_at_the_latest_version_with_the_table(
    store: StateStore,
) -> None:
    assert state.latest_version() >= 2
    assert store.schema_version() == state.latest_version()
    assert "pending_windows" in sa.inspect(store.engine).get_table_names()


# --- the delta tasks with a pending window (real receiver, SQLite state) -------------

PRODUCT = {"kinds": ["product"]}


@pytest.fixture
def env(
    receiver, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env
) -> Any:
    from dag_support import make_sync_env

    return make_sync_env(receiver, sqlite_url, tmp_path, monkeypatch)


def _pushed_not_committed(env: Any, run_id: str) -> dict:
    """Plan, extract and push one window, then "crash": no commit, the lease ends."""
    from catalog_sync import tasks

    [item] = tasks.plan_delta(PRODUCT, dag_id="catalog_delta", run_id=run_id)
    pushed = tasks.push_delta(tasks.extract_delta(item))
    # The run dies here; its lease ends (as it would expire).
    store = env.state()
    store.release_lock(TARGET, item["run_key"])
    store.dispose()
    return pushed


def test_resumed_window_is_resent_as_staged_and_committed(env: Any) -> None:
    from catalog_sync import tasks

    crashed = _pushed_not_committed(env, "run-1")
    state_ = env.state()
    assert state_.pending_window(TARGET, "product")["run_key"] == crashed["run_key"]

    dry = tasks.plan_delta({**PRODUCT, "dry_run": True}, dag_id="catalog_delta", run_id="dry")
    assert not dry[0].get("resumed")  # a dry run ignores the pending window and keeps it
    assert state_.pending_window(TARGET, "product") is not None

    [item] = tasks.plan_delta(PRODUCT, dag_id="catalog_delta", run_id="run-2")
    assert item["resumed"] and item["staged_by"] == crashed["run_key"]
    assert (item["window"], item["manifest"]) == (crashed["window"], crashed["manifest"])
    pushed = tasks.push_delta(tasks.extract_delta(item))
    assert pushed["tally"]["replayed_batches"] == crashed["manifest"]["batches"]
    assert tasks.commit_delta(pushed)["status"] == "committed"
    assert state_.watermark(TARGET, "product") == dt.datetime.fromisoformat(
        crashed["window"]["high"]
    )
    assert state_.pending_window(TARGET, "product") is None
    state_.dispose()


def test_gone_staged_batches_plan_a_fresh_window_from_the_unmoved_watermark(env: Any) -> None:
    from urllib.parse import urlsplit

    from catalog_sync import tasks

    crashed = _pushed_not_committed(env, "run-1")
    Path(urlsplit(crashed["manifest"]["uri"]).path).unlink()

    [item] = tasks.plan_delta(PRODUCT, dag_id="catalog_delta", run_id="run-2")
    assert not item.get("resumed")
    assert item["expected_low"] == crashed["expected_low"]
    assert item["window"]["low"] == crashed["window"]["low"]
    state_ = env.state()
    assert state_.pending_window(TARGET, "product") is None
    state_.dispose()
