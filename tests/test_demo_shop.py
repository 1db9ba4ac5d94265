"""The demo shop: schema on every database, reproducible content, the command line."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from catalog_sync import demo_shop
from catalog_sync.errors import ConfigurationError


def _create(url: str, products: int, seed: int) -> str:
    engine = sa.create_engine(url)
    try:
        demo_shop.create_demo_shop(engine, products, seed=seed, replace=True)
        return demo_shop.content_hash(engine)
    finally:
        engine.dispose()


def test_same_seed_gives_the_same_content(database_url: str) -> None:
    first = _create(database_url, 300, seed=7)
    assert _create(database_url, 300, seed=7) == first
    assert _create(database_url, 300, seed=8) != first


def test_content_is_the_same_on_every_database(
    sqlite_url: str, postgres_url: str, mariadb_url: str
) -> None:
    hashes = {
        url.split(":")[0]: _create(url, 200, seed=3)
        for url in (sqlite_url, postgres_url, mariadb_url)
    }
    assert len(set(hashes.values())) == 1, hashes


def test_demo_data_has_the_shapes_the_map_must_handle(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    demo_shop.create_demo_shop(engine, 500, seed=1)
    one = {
        "soft-deleted products": "SELECT count(*) FROM products WHERE deleted_at IS NOT NULL",
        "variable products": "SELECT count(*) FROM products WHERE type = 'variable'",
        "variations": "SELECT count(*) FROM product_variations",
        "translated products": "SELECT count(*) FROM products WHERE name_uk IS NOT NULL",
        "untranslated products": "SELECT count(*) FROM products WHERE name_uk IS NULL",
        "products on sale": "SELECT count(*) FROM products WHERE sale_price IS NOT NULL",
        "child categories": "SELECT count(*) FROM categories WHERE parent_id IS NOT NULL",
        "category links": "SELECT count(*) FROM category_product",
        "tag links": "SELECT count(*) FROM product_tag",
        "menu item children": "SELECT count(*) FROM menu_items WHERE parent_id IS NOT NULL",
        "site rows": "SELECT count(*) FROM site_settings",
        "shipping methods": "SELECT count(*) FROM shipping_methods",
        "payment methods": "SELECT count(*) FROM payment_methods",
        "html descriptions": "SELECT count(*) FROM products WHERE description LIKE '<h2>%'",
    }
    with engine.connect() as conn:
        counts = {label: conn.execute(sa.text(sql)).scalar_one() for label, sql in one.items()}
    assert all(counts.values()), counts
    assert counts["site rows"] == 1


def test_existing_tables_are_kept_without_replace(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    demo_shop.create_demo_shop(engine, 5)
    with pytest.raises(ConfigurationError, match="--replace"):
        demo_shop.create_demo_shop(engine, 5)


def test_cli_creates_the_shop_and_reports_progress_and_time(sqlite_url: str, run_cli) -> None:
    done = run_cli("demo-shop", "create", "--url", sqlite_url, "--products", "120", "--seed", "5")
    assert done.returncode == 0, done.stderr
    assert "done:" in done.stdout and " s" in done.stdout
    assert "products 120" in done.stdout
    engine = sa.create_engine(sqlite_url)
    expected = sa.create_engine(sqlite_url.replace("shop.sqlite", "expected.sqlite"))
    demo_shop.create_demo_shop(expected, 120, seed=5)
    assert demo_shop.content_hash(engine) == demo_shop.content_hash(expected)


def test_cli_refuses_to_overwrite_without_replace(sqlite_url: str, run_cli) -> None:
    assert run_cli("demo-shop", "create", "--url", sqlite_url, "--products", "2").returncode == 0
    again = run_cli("demo-shop", "create", "--url", sqlite_url, "--products", "2")
    assert again.returncode == 2
    assert "--replace" in again.stderr
