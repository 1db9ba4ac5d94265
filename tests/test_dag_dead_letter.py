"""The dead letter through the delta DAG: one unmappable row among many, then its redrive."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from catalog_sync import demo_shop
from dag_support import make_sync_env


@pytest.mark.slow
def test_one_bad_row_is_dead_lettered_the_rest_applied_and_the_fix_redriven(
    receiver, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env
) -> None:
    env = make_sync_env(receiver, database_url, tmp_path, monkeypatch)
    products = demo_shop.products
    with env.engine.begin() as conn:
        # Not the first live row: that one is the map check's sample (a broken map, exit 2).
        bad = conn.execute(
            sa.select(sa.func.max(products.c.id)).where(products.c.deleted_at.is_(None))
        ).scalar_one()
        conn.execute(products.update().where(products.c.id == bad).values(name=""))
    bad_id = f"laravel:product:{bad}"

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
    with env.engine.begin() as conn:
        conn.execute(products.update().where(products.c.id == bad).values(name="Fixed"))
    second = env.run("delta", {"kinds": ["product"]})
    assert second.state == "success", env.states(second)
    assert state.dead_letter_pending("voicebot_default", "product", include_exhausted=True) == []
    state.dispose()
    fixed = [line for line in env.held() if line["external_id"] == bad_id]
    assert fixed and fixed[0]["payload"]["name"] == "Fixed"
