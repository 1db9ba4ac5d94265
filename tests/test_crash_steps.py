"""A worker SIGKILLed at every step of a sync: the next runs converge with no loss, no
double apply, and the watermark never ahead of what the receiver acknowledged.

Each crash is exact: the real `catalog-sync sync` process runs with the test-only
`CATALOG_SYNC_TEST_CRASH_AT=<step>` (`catalog_sync.crashpoints`) and SIGKILLs itself at
that step, so no `finally`, no `report` and no lock release runs. The next run waits for
the dead run's lock lease (3 s here) to expire, as it would after a real crash. The runs
around the crash that only set the scene go through the same task bodies in this process
(`task_runs`), which is quicker than a process per run.

Steps: after extract, in the middle of a push (the first of two batches acknowledged),
after a push before its commit, in the middle of a snapshot upload (part of the body on
the wire), and between finalize and commit.
"""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from catalog_sync import demo_shop, protocol
from catalog_sync.crashpoints import ENV_CRASH_AT
from catalog_sync.demo import sorted_lines
from catalog_sync.demo_shop import belongs_to_product, change_some_products
from dag_support import SyncEnv, make_sync_env
from task_runs import delta_run, full_run

TARGET = "voicebot_default"
KIND = "product"
ONLY = {"kinds": [KIND]}
DELTA = ("sync", "--kinds", KIND)
FULL = ("sync", "--full", "--kinds", KIND)
LEASE_S = "3"
#: Enough products that touching all of them makes more than one events batch (500 ops).
PRODUCTS = 450
KILLED = -signal.SIGKILL

pytestmark = pytest.mark.slow
#: Each of these tests takes about a minute: the default run keeps the mid-push one, the
#: others run with `make test-long`.
long = pytest.mark.long


class World:
    """One shop, one state database, one receiver tenant, and the `sync` command."""

    def __init__(self, env: SyncEnv, run_cli: Any) -> None:
        self.env = env
        self.receiver = env.receiver
        self.variables = {**env.vars, "CATALOG_SYNC_LOCK_LEASE_SECONDS": LEASE_S}
        self._run_cli = run_cli
        self.state = env.state()

    def sync(self, *args: str, crash_at: str | None = None) -> int:
        variables = dict(self.variables)
        if crash_at is not None:
            variables[ENV_CRASH_AT] = crash_at
        done = self._run_cli(*args, env=variables, timeout=180)
        if crash_at is None:
            assert done.returncode == 0, done.stderr[-3000:]
        return done.returncode

    def watermark(self) -> dt.datetime | None:
        return self.state.watermark(TARGET, KIND)

    def events(self) -> list[dict[str, Any]]:
        return [r for r in self.receiver.requests() if r["path"] == protocol.EVENTS_PATH]

    def applied_batches(self) -> set[str]:
        """Batch ids the receiver applied (its idempotency table: one row per applied key)."""
        from catalog_sync.receiver.store import idempotency

        with self.receiver.store.engine.connect() as conn:
            return set(
                conn.execute(
                    sa.select(idempotency.c.idempotency_key).where(
                        idempotency.c.endpoint == "events"
                    )
                ).scalars()
            )

    def last_line(self) -> Any:
        return next(e for e in self.state.ledger(target=TARGET) if e.kind == KIND)

    def held(self, *gone: str) -> list[dict[str, Any]]:
        """The receiver's products, but for those of the `gone` (hard-deleted) products."""
        lines = self.receiver.store.dump_lines(kind=KIND)
        return [
            line
            for line in sorted_lines(protocol.loads(raw) for raw in lines)
            if not any(belongs_to_product(line, g) for g in gone)
        ]

    def expected(self) -> list[dict[str, Any]]:
        return [line for line in self.env.expected() if line["kind"] == KIND]

    def change_everything(self) -> str:
        """Touch every product (more than one batch), plus an insert, update, soft and hard
        delete; returns the hard-deleted product's external id."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.env.engine.begin() as conn:
            conn.execute(demo_shop.products.update().values(updated_at=now))
        changed = change_some_products(self.env.engine)
        self.env.wait_safety_lag()
        return f"laravel:product:{changed['hard_deleted']}"


@pytest.fixture
def world(
    receiver, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli
) -> Iterator[World]:
    env = make_sync_env(receiver, sqlite_url, tmp_path, monkeypatch)
    monkeypatch.setenv("CATALOG_SYNC_LOCK_LEASE_SECONDS", LEASE_S)
    demo_shop.create_demo_shop(env.engine, PRODUCTS, seed=5, replace=True)
    made = World(env, run_cli)
    yield made
    made.state.dispose()


def _crash_delta(world: World, step: str) -> tuple[dt.datetime, str, set[str]]:
    """Sync once, change rows, run a delta killed at `step`; returns (watermark before the
    crash, the hard-deleted product, batch ids the receiver applied during the crash)."""
    delta_run(ONLY)
    before = world.watermark()
    assert before is not None
    hard = world.change_everything()
    applied_before = world.applied_batches()
    world.receiver.clear()
    assert world.sync(*DELTA, crash_at=step) == KILLED
    # Never ahead of the receiver: a killed delta leaves the watermark where it was.
    assert world.watermark() == before
    return before, hard, world.applied_batches() - applied_before


def _recover_delta(world: World, hard: str, applied_in_crash: set[str]) -> list[str]:
    """The next delta converges (but for the hard delete, which only a full sees); the
    batches applied during the crash come back as replays, the others are applied once."""
    world.receiver.clear()
    applied_before = world.applied_batches()
    world.sync(*DELTA)
    sent = [r["idempotency_key"] for r in world.events() if r["status"] == 200]
    line = world.last_line()
    assert line.status == "committed"
    assert line.replayed == len(set(sent) & applied_in_crash)
    newly_applied = world.applied_batches() - applied_before
    assert newly_applied == set(sent) - applied_in_crash
    assert world.state.pending_window(TARGET, KIND) is None
    assert world.held(hard) == world.expected()
    return sent


def _a_full_reconciles(world: World) -> None:
    """The hard delete too: after the next full the receiver holds exactly the source."""
    full_run(ONLY)
    assert world.held() == world.expected()


@long
def test_killed_after_extract_sends_nothing_and_the_next_delta_sends_it_all(
    world: World,
) -> None:
    before, hard, applied = _crash_delta(world, "after_extract")
    assert world.events() == [] and applied == set()
    assert world.state.pending_window(TARGET, KIND) is None  # nothing was pushed
    _recover_delta(world, hard, applied)
    assert world.watermark() > before
    _a_full_reconciles(world)


def test_killed_mid_push_replays_the_applied_batch_and_applies_the_rest(world: World) -> None:
    before, hard, applied = _crash_delta(world, "mid_push")
    assert [r["status"] for r in world.events()] == [200]  # one batch acknowledged
    assert len(applied) == 1
    pending = world.state.pending_window(TARGET, KIND)
    assert pending is not None and pending["manifest"]["batches"] >= 2
    sent = _recover_delta(world, hard, applied)
    assert applied < set(sent)  # the applied batch replayed, the rest sent for the first time
    assert world.watermark() == dt.datetime.fromisoformat(pending["window"]["high"]) > before
    _a_full_reconciles(world)


@long
def test_killed_after_push_before_commit_replays_every_batch(world: World) -> None:
    before, hard, applied = _crash_delta(world, "after_push")
    pending = world.state.pending_window(TARGET, KIND)
    assert pending is not None and len(applied) == pending["manifest"]["batches"] >= 2
    sent = _recover_delta(world, hard, applied)
    assert set(sent) == applied  # every batch answered from the receiver's stored response
    assert world.watermark() == dt.datetime.fromisoformat(pending["window"]["high"]) > before
    _a_full_reconciles(world)


def _crash_full(world: World, step: str) -> tuple[dt.datetime, str, list[dict[str, Any]]]:
    """Full sync, change rows, run a full killed at `step`; returns (watermark before,
    hard-deleted product, what the receiver held before the crashed run)."""
    full_run(ONLY)
    before = world.watermark()
    assert before is not None
    hard = world.change_everything()
    held_before = world.held()
    world.receiver.clear()
    assert world.sync(*FULL, crash_at=step) == KILLED
    assert world.watermark() == before
    return before, hard, held_before


def _syncs(world: World) -> list[Any]:
    from catalog_sync.receiver.store import syncs

    with world.receiver.store.engine.connect() as conn:
        return list(conn.execute(sa.select(syncs).order_by(syncs.c.created_at)))


@long
def test_killed_mid_snapshot_upload_applies_nothing_and_the_next_full_reinits(
    world: World,
) -> None:
    before, hard, held_before = _crash_full(world, "mid_upload")
    [upload] = [r for r in world.receiver.requests() if r["method"] == "PUT"]
    assert 0 < upload["body_bytes"] < upload["content_length"]  # cut off mid-body
    assert world.held() == held_before  # nothing of the cut snapshot was applied
    crashed = _syncs(world)[-1]
    assert crashed.finalized_at is None

    world.receiver.clear()
    world.sync(*FULL)
    inits = [r for r in world.receiver.requests() if r["path"] == protocol.INIT_PATH]
    assert len(inits) == 1  # a fresh sync with a fresh upload URL, not the dead one
    assert _syncs(world)[-1].sync_id != crashed.sync_id
    assert _syncs(world)[-1].finalized_at is not None
    assert world.held() == world.expected()
    assert hard not in {line["external_id"] for line in world.held()}
    assert world.watermark() > before


@long
def test_killed_between_finalize_and_commit_leaves_the_watermark_behind(
    world: World,
) -> None:
    before, _, _ = _crash_full(world, "after_finalize")
    # The receiver applied the snapshot; the state did not record it: behind, never ahead.
    assert _syncs(world)[-1].finalized_at is not None
    assert world.held() == world.expected()

    world.sync(*DELTA)  # from the old watermark: re-sends the overlap, loses nothing
    assert world.held() == world.expected()
    assert world.watermark() > before
    _a_full_reconciles(world)
