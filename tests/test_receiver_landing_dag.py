"""Landing handlers end to end: the real DAGs push the demo shop, the receiver lands products.

The target application's `products` table lives in the receiver's database (SQLite,
PostgreSQL, MariaDB); products are matched by their uuid (an entity map with
`external_id: uuid`), not by either side's auto-increment id.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from catalog_sync import demo_shop
from dag_support import fast_map, make_sync_env
from landing_support import create_target, expected_rows, landing_file, products, target_rows


def uuid_map(path: Path) -> Path:
    """The demo map with products only, identified by their uuid column."""
    data = yaml.safe_load(fast_map(path).read_text())
    data["kinds"] = {"product": {**data["kinds"]["product"], "external_id": "uuid"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def source_uuid(engine: sa.Engine, product_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(demo_shop.products.c.uuid).where(demo_shop.products.c.id == product_id)
        ).scalar_one()


@pytest.mark.slow
def test_the_dags_land_products_by_uuid_and_soft_delete_what_goes(
    make_receiver, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env
) -> None:
    target = create_target(database_url)
    landing = landing_file(tmp_path / "landing.yaml", deleted_column="deleted_at")
    receiver = make_receiver(database_url, ["--landing", str(landing)])
    env = make_sync_env(receiver, f"sqlite:///{tmp_path / 'source.sqlite'}", tmp_path, monkeypatch)
    monkeypatch.setenv("CATALOG_SYNC_CONFIG", str(uuid_map(tmp_path / "uuid_map.yaml")))

    first = env.run("full")
    assert first.state == "success", env.states(first)
    landed = target_rows(target)
    assert landed == expected_rows(env.expected())
    assert len(landed) > 10

    changed = demo_shop.change_some_products(env.engine)
    soft = source_uuid(env.engine, changed["soft_deleted"])
    expected = expected_rows(env.expected())
    (hard,) = set(landed) - set(expected) - {soft}
    env.wait_safety_lag()
    delta = env.run("delta")
    assert delta.state == "success", env.states(delta)
    # The delta lands the insert and the update and soft-deletes the soft-deleted row;
    # it cannot see the hard delete (the row is gone at the source): the full does.
    assert target_rows(target) == {**expected, hard: landed[hard]}
    assert soft in target_rows(target, live_only=False)

    second = env.run("full")
    assert second.state == "success", env.states(second)
    assert target_rows(target) == expected_rows(env.expected())
    with target.connect() as conn:
        kept = conn.execute(sa.select(sa.func.count()).select_from(products)).scalar_one()
    assert kept == len(landed) + 1  # soft deletes keep their rows; one product was added
    target.dispose()
