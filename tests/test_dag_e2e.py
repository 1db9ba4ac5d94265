"""The DAGs end to end: `dag.test()` against the real receiver, on each source database."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog_sync.demo_shop import belongs_to_product, change_some_products
from dag_support import make_sync_env


@pytest.mark.slow
def test_full_delta_full_keeps_the_receiver_equal_to_the_mapped_source(
    receiver, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env
) -> None:
    env = make_sync_env(receiver, database_url, tmp_path, monkeypatch)

    first = env.run("full")
    assert first.state == "success", env.states(first)
    assert env.held() == env.expected()
    state = env.state()
    ledger = [line for line in state.ledger(limit=100) if line.run_id == first.run_id]
    state.dispose()
    assert {line.accepted for line in ledger} != {0}
    assert all(line.accepted == line.extracted for line in ledger)
    assert sum(line.accepted for line in ledger) == len(env.held())

    changed = change_some_products(env.engine)
    env.wait_safety_lag()
    delta = env.run("delta")
    assert delta.state == "success", env.states(delta)
    # A delta cannot see a hard delete (the row is gone): only the next full removes it.
    hard = f"laravel:product:{changed['hard_deleted']}"
    held = env.held()
    assert [line for line in held if not belongs_to_product(line, hard)] == env.expected()
    assert any(belongs_to_product(line, hard) for line in held)

    second = env.run("full")
    assert second.state == "success", env.states(second)
    assert env.held() == env.expected()
