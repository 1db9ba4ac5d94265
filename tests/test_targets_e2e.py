"""Many targets end to end: the real DAGs (runner.run_once) into two real receivers.

Three products are routed to shop_a only, two to shop_b only, one to both and one to
neither (tests/targets_support.py); on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import targets_support
from catalog_sync import protocol
from targets_support import TwoTargets, external_id, make_two_targets, secrets_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def target_receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two receivers for the whole module: each test pairs its own tenants."""
    yield from targets_support.target_receivers(tmp_path_factory)


@pytest.fixture(params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest,
    target_receivers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    airflow_env,
) -> TwoTargets:
    source_url = request.getfixturevalue(f"{request.param}_url")
    return make_two_targets(target_receivers, source_url, tmp_path, monkeypatch)


@pytest.fixture
def sqlite_world(
    target_receivers,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    airflow_env,
) -> TwoTargets:
    """For behaviour that does not depend on the source database (pausing, the command)."""
    return make_two_targets(target_receivers, sqlite_url, tmp_path, monkeypatch)


def _synced(world: TwoTargets, *, full: bool) -> None:
    outcome = world.run(full=full)
    assert outcome.succeeded, outcome.failures


def test_each_target_holds_exactly_its_products_after_a_full_and_a_delta(
    world: TwoTargets,
) -> None:
    _synced(world, full=True)
    assert world.names("shop_a") == world.expected("shop_a")
    assert world.names("shop_b") == world.expected("shop_b")
    assert set(world.names("shop_a")) == {external_id(n) for n in (1, 2, 3, 6)}
    assert set(world.names("shop_b")) == {external_id(n) for n in (4, 5, 6)}

    world.rename(1, "Product 1, renamed")  # routed to A only
    world.rename(7, "Product 7, renamed")  # routed to nobody
    world.wait_safety_lag()
    _synced(world, full=False)
    assert world.names("shop_a") == world.expected("shop_a")
    assert world.names("shop_b") == world.expected("shop_b")
    assert world.names("shop_a")[external_id(1)] == "Product 1, renamed"
    assert external_id(7) not in {**world.held("shop_a"), **world.held("shop_b")}


def test_both_targets_key_a_shared_product_by_its_uuid_not_its_auto_increment_id(
    world: TwoTargets,
) -> None:
    _synced(world, full=True)
    shared = external_id(6)  # laravel:product:<uuid>; its auto-increment id is 60
    assert shared in world.held("shop_a")
    assert shared in world.held("shop_b")
    assert "laravel:product:60" not in {**world.held("shop_a"), **world.held("shop_b")}


def test_moving_a_product_from_a_to_b_deletes_it_at_a_and_upserts_it_at_b(
    world: TwoTargets,
) -> None:
    _synced(world, full=True)
    assert external_id(2) in world.held("shop_a")
    assert external_id(2) not in world.held("shop_b")

    world.move(2, "a", "b")  # only the membership rows change, not the product row
    world.wait_safety_lag()
    _synced(world, full=False)
    assert external_id(2) not in world.held("shop_a")
    assert world.held("shop_b")[external_id(2)]["name"] == "Product 2"
    assert world.names("shop_a") == world.expected("shop_a")
    assert world.names("shop_b") == world.expected("shop_b")

    world.move(2, "b", "a")  # and back: an upsert at A again, a delete at B
    world.wait_safety_lag()
    _synced(world, full=False)
    assert world.names("shop_a") == world.expected("shop_a")
    assert world.names("shop_b") == world.expected("shop_b")
    assert external_id(2) in world.held("shop_a")


def test_a_failing_target_does_not_delay_the_other_and_catches_up_when_it_recovers(
    world: TwoTargets,
) -> None:
    _synced(world, full=True)
    # An "hour" of delta runs (4 at the 15-minute schedule) while B answers 500 to every
    # events request (Retry-After 0: the hook's retries do not sleep).
    world.receivers["shop_b"].add_fault(
        method="POST",
        path=protocol.EVENTS_PATH,
        action="status",
        status=500,
        retry_after="0",
        times=10_000,
    )
    stuck = world.watermark("shop_b")
    for run in range(4):
        before = world.watermark("shop_a")
        world.rename(1, f"A, run {run}")
        world.rename(4, f"B, run {run}")
        world.wait_safety_lag()
        outcome = world.run(full=False)
        assert not outcome.succeeded  # B's part failed: the run says so
        status = {(line.target, line.kind): line.status for line in outcome.ledger}
        assert status[("shop_a", "product")] == "committed"
        assert status[("shop_b", "product")] == "failed"
        assert world.watermark("shop_a") > before
        assert world.names("shop_a") == world.expected("shop_a")
        assert world.watermark("shop_b") == stuck
    assert world.names("shop_b")[external_id(4)] == "Product 4"

    world.receivers["shop_b"].clear()  # B recovers
    _synced(world, full=False)  # resumes B's pending window, then ...
    world.wait_safety_lag()
    _synced(world, full=False)  # ... the changes since
    assert world.names("shop_b") == world.expected("shop_b")
    assert world.names("shop_b")[external_id(4)] == "B, run 3"
    assert world.names("shop_a") == world.expected("shop_a")


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`catalog-sync ARGS` in this process (the same code as the executable, without the
    Airflow start-up a subprocess pays): (exit code, stdout, stderr)."""
    from catalog_sync.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_paused_target_is_skipped_keeps_its_watermark_and_catches_up_on_resume(
    sqlite_world: TwoTargets, capsys: pytest.CaptureFixture[str]
) -> None:
    _synced(sqlite_world, full=True)
    assert _cli(capsys, "targets", "pause", "shop_b", "--reason", "site migration")[0] == 0
    stuck = sqlite_world.watermark("shop_b")
    sqlite_world.rename(4, "B, while paused")
    sqlite_world.wait_safety_lag()
    outcome = sqlite_world.run(full=False)
    assert outcome.succeeded, outcome.failures
    assert {line.target for line in outcome.ledger} == {"shop_a"}
    assert sqlite_world.watermark("shop_b") == stuck
    assert sqlite_world.names("shop_b")[external_id(4)] == "Product 4"

    assert _cli(capsys, "targets", "resume", "shop_b")[0] == 0
    _synced(sqlite_world, full=False)
    assert sqlite_world.names("shop_b")[external_id(4)] == "B, while paused"


def test_targets_command_shows_pairing_pause_last_success_watermark_and_dead_letter(
    sqlite_world: TwoTargets, capsys: pytest.CaptureFixture[str], run_cli
) -> None:
    _synced(sqlite_world, full=True)
    assert _cli(capsys, "targets", "pause", "shop_b", "--reason", "audit")[0] == 0
    code, shown, errors = _cli(capsys, "targets", "--json")
    assert code == 0, errors
    by_name = {t["target"]: t for t in json.loads(shown)["targets"]}
    assert set(by_name) == {"shop_a", "shop_b"}
    a, b = by_name["shop_a"], by_name["shop_b"]
    assert a["paired"] and b["paired"]
    assert not a["paused"]
    assert (b["paused"], b["paused_reason"], b["paused_by"]) == (True, "audit", "command")
    [kind] = a["kinds"]
    assert kind["kind"] == "product"
    assert kind["last_success"] is not None
    assert 0 <= kind["watermark_age_seconds"] < 600
    assert kind["dead_letter"] == 0

    # The human table, from the real executable (what an operator types).
    table = run_cli("targets", env=sqlite_world.vars)
    assert table.returncode == 0, table.stderr
    assert "target shop_b  paired: yes  paused: YES by command: audit" in table.stdout
    for secret in secrets_of(sqlite_world):
        assert secret not in shown + errors + table.stdout + table.stderr


def test_a_run_naming_one_target_sends_to_it_alone_and_refuses_a_paused_one(
    sqlite_world: TwoTargets, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = sqlite_world.run(full=True, conf={"targets": ["shop_b"]})
    assert outcome.succeeded, outcome.failures
    assert {line.target for line in outcome.ledger} == {"shop_b"}
    assert sqlite_world.names("shop_b") == sqlite_world.expected("shop_b")
    assert sqlite_world.held("shop_a") == {}
    assert sqlite_world.watermark("shop_a") is None

    assert _cli(capsys, "targets", "pause", "shop_b", "--reason", "site migration")[0] == 0
    refused = sqlite_world.run(full=False, conf={"targets": ["shop_b"]})
    assert not refused.succeeded
    [error] = refused.configuration_errors
    assert "shop_b (site migration) are paused" in str(error)
