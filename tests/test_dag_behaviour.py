"""Behaviour of the DAGs under `dag.test()`: retries, fail-fast, dry runs, since, guards.

SQLite source, the real receiver, one kind (`product`) per run to keep each test short.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow.exceptions import ParamValidationError

import task_runs
from catalog_sync import demo_shop, protocol, tasks
from catalog_sync.config import load_config
from dag_support import SyncEnv, make_sync_env

PRODUCT = {"kinds": ["product"]}


@pytest.fixture
def env(
    receiver, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env
) -> SyncEnv:
    monkeypatch.setenv("CATALOG_SYNC_RETRIES", "1")
    return make_sync_env(receiver, sqlite_url, tmp_path, monkeypatch)


def calls(env: SyncEnv, path: str) -> list[dict]:
    return [r for r in env.receiver.requests() if r["path"] == path]


def held_products(env: SyncEnv) -> list[dict]:
    return [line for line in env.held() if line["kind"] == "product"]


def expected_products(env: SyncEnv) -> list[dict]:
    return [line for line in env.expected() if line["kind"] == "product"]


def watermark(env: SyncEnv, kind: str = "product") -> dt.datetime | None:
    state = env.state()
    try:
        return state.watermark("voicebot_default", kind)
    finally:
        state.dispose()


def test_push_retries_after_a_transient_failure_and_applies_the_batch_once(env: SyncEnv) -> None:
    """The receiver answers 500 to every attempt the hook makes (5): the push task fails,
    Airflow retries it (dag.test runs retries in-process), the same staged batch is re-sent
    with the same batch id and applied once."""
    env.receiver.add_fault(
        method="POST",
        path=protocol.EVENTS_PATH,
        action="status",
        status=500,
        retry_after="0",
        times=5,
    )
    run = env.run("delta", PRODUCT)
    assert run.state == "success", env.states(run)
    push = next(ti for ti in run.get_task_instances() if ti.task_id == "per_kind.push")
    assert push.try_number == 2
    events = calls(env, protocol.EVENTS_PATH)
    assert [e["status"] for e in events] == [500] * 5 + [200]
    assert len({e["idempotency_key"] for e in events}) == 1
    assert held_products(env) == expected_products(env)


def test_push_fails_at_once_on_a_400_and_keeps_the_watermark(env: SyncEnv) -> None:
    env.receiver.add_fault(method="POST", path=protocol.EVENTS_PATH, action="status", status=400)
    run = env.run("delta", PRODUCT)
    assert run.state == "failed"
    push = next(ti for ti in run.get_task_instances() if ti.task_id == "per_kind.push")
    assert push.state == "failed"
    assert push.try_number == 1  # retries=1 was not used
    assert len(calls(env, protocol.EVENTS_PATH)) == 1
    assert watermark(env) is None


def test_a_delta_dry_run_pushes_nothing_and_moves_no_watermark(env: SyncEnv) -> None:
    run = env.run("delta", {**PRODUCT, "dry_run": True})
    assert run.state == "success", env.states(run)
    assert calls(env, protocol.EVENTS_PATH) == []
    assert watermark(env) is None


def test_a_full_dry_run_sends_no_snapshot_and_moves_no_watermark(env: SyncEnv) -> None:
    run = env.run("full", {**PRODUCT, "dry_run": True})
    assert run.state == "success", env.states(run)
    assert calls(env, protocol.INIT_PATH) == []
    assert env.receiver.requests() == []
    assert watermark(env) is None


def _change_the_first_product(env: SyncEnv, name: str, stamp: dt.datetime) -> None:
    """Rename the first product, stamped `stamp` (naive UTC), then wait out the lag."""
    products = demo_shop.products
    with env.engine.begin() as conn:
        first = conn.execute(sa.select(sa.func.min(products.c.id))).scalar_one()
        conn.execute(
            products.update().where(products.c.id == first).values(name=name, updated_at=stamp)
        )
    env.wait_safety_lag()


def test_since_resends_the_window_from_that_instant(env: SyncEnv) -> None:
    """A change stamped a day ago is older than the normal window; `since` re-sends it."""
    assert env.run("delta", PRODUCT).state == "success"
    day_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=1)
    _change_the_first_product(env, "Back-dated change", day_ago)
    assert env.run("delta", PRODUCT).state == "success"
    assert held_products(env) != expected_products(env)  # the normal window missed it

    since = (day_ago - dt.timedelta(hours=1)).replace(tzinfo=dt.UTC).isoformat()
    run = env.run("delta", {**PRODUCT, "since": since})
    assert run.state == "success", env.states(run)
    assert held_products(env) == expected_products(env)


def _run_ledger(env: SyncEnv, run_id: str) -> dict[str, str]:
    state = env.state()
    try:
        return {line.kind: line.status for line in state.ledger(limit=100) if line.run_id == run_id}
    finally:
        state.dispose()


def test_a_delta_starts_tasks_only_for_the_kinds_that_changed(env: SyncEnv) -> None:
    task_runs.delta_run()  # the first run: every kind from the start
    kinds = list(load_config().kinds)
    before = {kind: watermark(env, kind) for kind in kinds}
    _change_the_first_product(env, "Touched", dt.datetime.now(dt.UTC).replace(tzinfo=None))

    run = env.run("delta")

    assert run.state == "success", env.states(run)
    extracts = [ti for ti in run.get_task_instances() if ti.task_id == "per_kind.extract"]
    assert len(extracts) == 2  # product (changed) and host_profile (static: always sent)
    ledger = _run_ledger(env, run.run_id)
    assert ledger == dict.fromkeys(kinds, "committed")
    assert all(watermark(env, kind) > before[kind] for kind in kinds)  # every one moved on
    assert held_products(env) == expected_products(env)


def test_a_delta_with_nothing_changed_is_plan_and_report_and_succeeds(env: SyncEnv) -> None:
    task_runs.delta_run(PRODUCT)
    before, sent = watermark(env), len(calls(env, protocol.EVENTS_PATH))
    env.wait_safety_lag()

    run = env.run("delta", PRODUCT)

    assert run.state == "success", env.states(run)
    ran = {ti.task_id for ti in run.get_task_instances() if ti.state == "success"}
    assert ran == {"plan", "report"}
    assert len(calls(env, protocol.EVENTS_PATH)) == sent  # nothing more sent
    assert _run_ledger(env, run.run_id) == {"product": "committed"}
    assert watermark(env) > before


def test_an_unchanged_kind_with_dead_letters_to_redrive_is_still_extracted(
    env: SyncEnv,
) -> None:
    task_runs.delta_run()
    state = env.state()
    state.dead_letter_record(
        "voicebot_default", "category", "laravel:category:1", "upsert", None, "rejected: x"
    )
    state.dispose()

    plan = tasks.plan_delta({}, dag_id="catalog_delta", run_id="after-dead-letter")

    assert {item["kind"] for item in plan} == {"category", "host_profile"}


def test_a_dry_run_moves_no_watermark_of_an_unchanged_kind(env: SyncEnv) -> None:
    task_runs.delta_run()
    before = watermark(env)

    plan = tasks.plan_delta({**PRODUCT, "dry_run": True}, dag_id="catalog_delta", run_id="dry")

    assert plan == []
    assert watermark(env) == before
    assert _run_ledger(env, "dry") == {"product": "dry_run"}


def test_invalid_params_are_refused_before_any_task_runs(env: SyncEnv) -> None:
    with pytest.raises(ParamValidationError, match="kinds"):
        env.run("delta", {"kinds": ["no_such_kind"]})
    assert env.receiver.requests() == []


def test_an_unknown_key_fails_the_plan_at_once(env: SyncEnv) -> None:
    run = env.run("delta", {"sincee": "2024-01-01T00:00:00Z"})
    states = env.states(run)
    assert run.state == "failed"
    assert states["plan"] == "failed"
    plan = next(ti for ti in run.get_task_instances() if ti.task_id == "plan")
    assert plan.try_number == 1
    assert env.receiver.requests() == []


def _soft_delete_products(env: SyncEnv, share: float) -> None:
    products = demo_shop.products
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with env.engine.begin() as conn:
        ids = conn.execute(
            sa.select(products.c.id).where(products.c.deleted_at.is_(None)).order_by(products.c.id)
        ).scalars()
        doomed = list(ids)
        doomed = doomed[: int(len(doomed) * share)]
        conn.execute(
            products.update()
            .where(products.c.id.in_(doomed))
            .values(deleted_at=now, updated_at=now)
        )


def test_the_shrink_guard_refuses_a_snapshot_that_lost_most_of_a_kind(env: SyncEnv) -> None:
    assert env.run("full", PRODUCT).state == "success"
    before = held_products(env)
    _soft_delete_products(env, 0.7)
    run = env.run("full", PRODUCT)
    states = env.states(run)
    assert run.state == "failed"
    assert states["guards"] == "failed"
    assert states["init"] == "upstream_failed"
    assert held_products(env) == before


def test_force_sends_a_shrunk_snapshot(env: SyncEnv) -> None:
    assert env.run("full", PRODUCT).state == "success"
    _soft_delete_products(env, 0.7)
    run = env.run("full", {**PRODUCT, "force": True})
    assert run.state == "success", env.states(run)
    assert held_products(env) == expected_products(env)


def test_the_empty_snapshot_guard_refuses_even_with_force(env: SyncEnv) -> None:
    _soft_delete_products(env, 1.0)
    run = env.run("full", {**PRODUCT, "force": True})
    assert run.state == "failed"
    assert env.states(run)["guards"] == "failed"
    assert calls(env, protocol.INIT_PATH) == []


def _split_products(env: SyncEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few rows per part: the demo shop's products split into three extract tasks."""
    monkeypatch.setenv("CATALOG_SYNC_SNAPSHOT_PARTS", "3")
    monkeypatch.setenv("CATALOG_SYNC_SNAPSHOT_PART_ROWS", "5")


def _break_last_product(env: SyncEnv) -> int:
    """An empty name: the row cannot map. The plan's map check (up to `SAMPLE_ROWS` rows)
    still passes, since the other sampled rows map: one bad row is data, not a bad map."""
    products = demo_shop.products
    with env.engine.begin() as conn:
        last = conn.execute(sa.select(sa.func.max(products.c.id))).scalar_one()
        conn.execute(products.update().where(products.c.id == last).values(name=""))
    return last


def test_mapping_failures_stop_a_full_before_it_can_delete_their_rows(env: SyncEnv) -> None:
    assert env.run("full", PRODUCT).state == "success"
    before = held_products(env)
    _break_last_product(env)
    receiver_calls = len(env.receiver.requests())
    run = env.run("full", PRODUCT)
    assert run.state == "failed"
    assert env.states(run)["guards"] == "failed"
    assert len(env.receiver.requests()) == receiver_calls  # no init, no finalize
    assert held_products(env) == before


@pytest.mark.parametrize("split", [False, True], ids=["whole", "in_parts"])
def test_force_sends_a_snapshot_with_mapping_failures_and_dead_letters_them(
    env: SyncEnv, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    if split:  # the failure is in the last of three parts
        _split_products(env, monkeypatch)
    last = _break_last_product(env)
    run = env.run("full", {**PRODUCT, "force": True})
    assert run.state == "success", env.states(run)
    state = env.state()
    try:
        entries = state.dead_letter_list("voicebot_default")
    finally:
        state.dispose()
    assert [e.external_id for e in entries] == [f"laravel:product:{last}"]


def test_xcom_carries_no_payload_and_no_secret(env: SyncEnv) -> None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    run = env.run("delta", PRODUCT)
    assert run.state == "success", env.states(run)
    secret = json.loads(env.vars["AIRFLOW_CONN_VOICEBOT_DEFAULT"])["password"]
    with create_session() as session:
        values = [
            json.dumps(x.value)
            for x in session.query(XComModel).filter(XComModel.run_id == run.run_id)
        ]
    assert values
    text = "\n".join(values)
    assert secret not in text
    assert '"payload"' not in text
    assert '"name"' not in text


def _extract_results(run: object) -> list[dict]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.run_id == run.run_id,  # type: ignore[attr-defined]
            XComModel.task_id == "extract",
            XComModel.key == "return_value",
        )
        return [x.value if isinstance(x.value, dict) else json.loads(x.value) for x in rows]


def test_a_big_kind_is_extracted_in_parts_and_lands_whole(
    env: SyncEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    _split_products(env, monkeypatch)
    run = env.run("full", PRODUCT)
    assert run.state == "success", env.states(run)
    parts = _extract_results(run)
    assert sorted(p["part_index"] for p in parts) == [0, 1, 2]
    assert all(p["part"]["lines"] for p in parts)
    assert held_products(env) == expected_products(env)
    # The kind's watermark is its earliest part's point: nothing changed while a later
    # part started can fall behind it.
    earliest = min(dt.datetime.fromisoformat(p["point"]) for p in parts)
    assert watermark(env) == earliest
