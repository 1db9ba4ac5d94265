"""The DAGs end to end: `dag.test()` against the real receiver, on each source database."""

from __future__ import annotations

from pathlib import Path

import pytest

from dag_support import belongs_to, change_rows, make_sync_env


@pytest.mark.slow
def test_full_delta_full_keeps_the_receiver_equal_to_the_mapped_source(
    receiver, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env
) -> None:
    env = make_sync_env(receiver, database_url, tmp_path, monkeypatch)

    first = env.run("full")
    assert first.state == "success", env.states(first)
    assert env.held() == env.expected()

    changed = change_rows(env.engine)
    env.wait_safety_lag()
    delta = env.run("delta")
    assert delta.state == "success", env.states(delta)
    # A delta cannot see a hard delete (the row is gone): only the next full removes it.
    hard = f"laravel:product:{changed['hard_deleted']}"
    held = env.held()
    assert [line for line in held if not belongs_to(line, hard)] == env.expected()
    assert any(belongs_to(line, hard) for line in held)

    second = env.run("full")
    assert second.state == "success", env.states(second)
    assert env.held() == env.expected()
