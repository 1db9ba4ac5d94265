"""The dead letter through the delta DAG: one unmappable row among many, then its redrive."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog_sync import demo_shop
from dag_support import blank_a_product_name, make_sync_env


@pytest.mark.slow
def test_one_bad_row_is_dead_lettered_the_rest_applied_and_the_fix_redriven(
    receiver, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env
) -> None:
    env = make_sync_env(receiver, database_url, tmp_path, monkeypatch)
    bad_id = blank_a_product_name(env.engine)

    first = env.run("delta", {"kinds": ["product"]})
    assert first.state == "success", env.states(first)
    state = env.state()
    [entry] = state.dead_letter_pending("voicebot_default", "product")
    assert entry.external_id == bad_id and "name" in entry.error
    assert state.watermark("voicebot_default", "product") is not None  # the window moved on
    held = {line["external_id"] for line in env.held() if line["kind"] == "product"}
    expected = {line["external_id"] for line in env.expected() if line["kind"] == "product"}
    assert held == expected - {bad_id}  # every other product arrived

    # Fixed without touching updated_at: only the redrive (not the window) can deliver it.
    products = demo_shop.products
    with env.engine.begin() as conn:
        row = products.c.id == int(bad_id.rsplit(":", 1)[1])
        conn.execute(products.update().where(row).values(name="Fixed"))
    second = env.run("delta", {"kinds": ["product"]})
    assert second.state == "success", env.states(second)
    assert state.dead_letter_pending("voicebot_default", "product", include_exhausted=True) == []
    state.dispose()
    fixed = [line for line in env.held() if line["external_id"] == bad_id]
    assert fixed and fixed[0]["payload"]["name"] == "Fixed"
