"""The mapping engine against real databases: payloads, relations, translations, variations.

Database tests run on SQLite, PostgreSQL and MariaDB (`database_url`); tests that need no
relation lookups map plain dict rows without a database (`compile_mappers(..., None)`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from catalog_sync import demo_shop, protocol
from catalog_sync.config import DEFAULT_CONFIG, CatalogConfig, load_config, parse_config
from catalog_sync.errors import ConfigurationError
from catalog_sync.mapping import (
    Deletion,
    Entity,
    KindMapper,
    MapContext,
    MappingFailure,
    check_samples,
    column_conversion,
    compile_mappers,
    live_rows_query,
)

NOW = dt.datetime(2024, 1, 1, 12, 0, 0)
TS = {"created_at": NOW, "updated_at": NOW, "deleted_at": None}
MAP_FILE = Path("test_map.yaml")


def catalog_of(kinds: dict[str, Any], **top: Any) -> CatalogConfig:
    return parse_config({**top, "kinds": kinds}, MAP_FILE)


def mappers_of(
    kinds: dict[str, Any], engine: sa.Engine | None = None, **top: Any
) -> dict[str, KindMapper]:
    return compile_mappers(catalog_of(kinds, **top), engine)


def map_rows(mapper: KindMapper, rows: list[dict[str, Any]], conn: Any = None) -> list[Any]:
    return list(mapper.map_page(conn, rows))


def live_rows(conn: sa.Connection, mapper: KindMapper) -> list[Any]:
    return [row._mapping for row in conn.execute(sa.text(live_rows_query(conn, mapper.config)))]


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """The demo shop schema, empty."""
    engine = sa.create_engine(database_url)
    demo_shop.create_schema(engine)
    yield engine
    engine.dispose()


def product_row(id: int, **values: Any) -> dict[str, Any]:
    row = {
        "id": id,
        "uuid": f"uuid-{id}",
        "sku": f"SKU-{id}",
        "slug": f"product-{id}",
        "name": f"Product {id}",
        "type": "simple",
        "description": None,
        "short_description": None,
        "price": "10.00",
        "regular_price": "10.00",
        "sale_price": None,
        "stock_quantity": 1,
        "in_stock": True,
        "attributes": None,
        "name_uk": None,
        "description_uk": None,
        "weight": None,
        "meta": None,
        **TS,
    }
    row.update(values)
    return row


def variation_row(id: int, product_id: int, options: dict[str, Any], **values: Any):
    row = {
        "id": id,
        "product_id": product_id,
        "sku": f"V-{id}",
        "price": "12.50",
        "regular_price": None,
        "sale_price": None,
        "stock_quantity": 2,
        "in_stock": True,
        "options": options,
        "position": 0,
        **TS,
    }
    row.update(values)
    return row


def taxonomy(table: sa.Table, id: int, slug: str, **values: Any) -> dict[str, Any]:
    row = {"id": id, "slug": slug, "name": slug.title(), **TS}
    if table is demo_shop.categories:
        row.update(parent_id=None, description=None, name_uk=None, position=0)
    row.update(values)
    return row


PRODUCT_MAP = {
    "payload.name": "name",
    "payload.price_amount": {"money": "price"},
    "payload.categories": {
        "slugs": "categories",
        "through": "category_product",
        "local_key": "product_id",
        "foreign_key": "category_id",
        "deleted_column": "deleted_at",
    },
    "payload.tags": {
        "slugs": "tags",
        "through": "product_tag",
        "local_key": "product_id",
        "foreign_key": "tag_id",
    },
}
VARIATIONS = {
    "table": "product_variations",
    "foreign_key": "product_id",
    "options_column": "options",
    "deleted_column": "deleted_at",
    "map": {"sku": "sku", "price_amount": {"money": "price"}},
}


# --- value specs on real rows -------------------------------------------------------------


def test_value_specs_on_a_product_row(engine: sa.Engine):
    with engine.begin() as conn:
        conn.execute(
            demo_shop.products.insert(),
            product_row(
                7,
                price="199.99",
                regular_price="1.005",
                description="<p>Fresh &amp; <b>hot</b></p><p>coffee</p>",
                in_stock=False,
                attributes=[{"name": "Колір", "values": [" Red ", "Red", ""]}],
                meta={"brand": "Acme", "seo": {"title": "Best"}},
            ),
        )
        conn.execute(demo_shop.categories.insert(), taxonomy(demo_shop.categories, 3, "kava"))
        conn.execute(demo_shop.category_product.insert(), {"product_id": 7, "category_id": 3})
    mapper = mappers_of(
        {
            "product": {
                "table": "products",
                "map": {
                    "payload.name": "name",
                    "payload.price_amount": {"money": "price"},
                    "payload.regular_price_amount": {"money": "regular_price"},
                    "payload.sale_price_amount": {"money": "sale_price"},
                    "payload.price": {"decimal": "price"},
                    "payload.description": {"html_text": "description"},
                    "payload.stock_status": {"stock_status": "in_stock"},
                    "payload.stock_quantity": {"integer": "stock_quantity"},
                    "payload.attributes": {"attributes": "attributes"},
                    "payload.brand": {"column": "meta", "path": "brand"},
                    "payload.seo.title": {"column": "meta", "path": "seo.title"},
                    "payload.permalink": {"template": "{site_url}/p/{slug}"},
                    "payload.currency": {"var": "currency"},
                    "payload.source": {"const": "demo"},
                    "payload.category_id": {"ref": "category", "column": "id"},
                    "payload.categories": PRODUCT_MAP["payload.categories"],
                    "payload.updated": {"timestamp": "updated_at"},
                },
            }
        },
        engine,
        vars={"site_url": "https://shop.example"},
    )["product"]
    with engine.connect() as conn:
        [entity] = map_rows(mapper, live_rows(conn, mapper), conn)
    assert entity == Entity(
        "product",
        "laravel:product:7",
        {
            "name": "Product 7",
            "price_amount": 19999,
            "regular_price_amount": 101,
            "sale_price_amount": None,
            "price": "199.99",
            "description": "Fresh & hot coffee",
            "stock_status": "outofstock",
            "stock_quantity": 1,
            "attributes": [{"name": "Колір", "slug": "колір", "values": ["Red"]}],
            "brand": "Acme",
            "seo": {"title": "Best"},
            "permalink": "https://shop.example/p/product-7",
            "currency": "UAH",
            "source": "demo",
            "category_id": "laravel:category:7",
            "categories": ["kava"],
            "updated": "2024-01-01T12:00:00Z",
        },
    )


def test_relation_loaders_issue_the_same_number_of_queries_for_10_and_500_rows(
    engine: sa.Engine,
):
    with engine.begin() as conn:
        conn.execute(
            demo_shop.categories.insert(),
            [taxonomy(demo_shop.categories, i, f"cat-{i}") for i in (1, 2)],
        )
        conn.execute(demo_shop.tags.insert(), [taxonomy(demo_shop.tags, 1, "new")])
        conn.execute(demo_shop.products.insert(), [product_row(i) for i in range(1, 501)])
        conn.execute(
            demo_shop.category_product.insert(),
            [{"product_id": i, "category_id": 1 + i % 2} for i in range(1, 501)],
        )
        conn.execute(
            demo_shop.product_tag.insert(), [{"product_id": i, "tag_id": 1} for i in range(1, 501)]
        )
        conn.execute(
            demo_shop.product_variations.insert(),
            [variation_row(i, i, {"Size": "M"}) for i in range(1, 501)],
        )
    mapper = mappers_of(
        {"product": {"table": "products", "map": PRODUCT_MAP, "variations": VARIATIONS}}, engine
    )["product"]
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with engine.connect() as conn:
        rows = live_rows(conn, mapper)
        counts = []
        for size in (10, 500):
            del statements[:]
            entities = map_rows(mapper, rows[:size], conn)
            counts.append(len(statements))
    assert counts == [3, 3]  # categories, tags, variations: once per page each
    assert entities[499].payload["categories"] == ["cat-1"]
    assert entities[499].payload["variations"][0]["external_id"] == "laravel:variation:500"


def test_slug_lists_skip_soft_deleted_related_rows_and_default_to_empty(engine: sa.Engine):
    with engine.begin() as conn:
        conn.execute(demo_shop.products.insert(), [product_row(1), product_row(2)])
        conn.execute(
            demo_shop.categories.insert(),
            [
                taxonomy(demo_shop.categories, 1, "live"),
                taxonomy(demo_shop.categories, 2, "gone", deleted_at=NOW),
            ],
        )
        conn.execute(
            demo_shop.category_product.insert(),
            [{"product_id": 1, "category_id": 1}, {"product_id": 1, "category_id": 2}],
        )
    mapper = mappers_of({"product": {"table": "products", "map": PRODUCT_MAP}}, engine)["product"]
    with engine.connect() as conn:
        entities = map_rows(mapper, live_rows(conn, mapper), conn)
    assert [(e.payload["categories"], e.payload["tags"]) for e in entities] == [
        (["live"], []),
        ([], []),
    ]


# --- translations ------------------------------------------------------------------------

TRANSLATED_PRODUCT = {
    "table": "products",
    "translations": {
        "locales": ["en", "uk"],
        "columns": {"name": "name_{locale}", "description": "description_{locale}"},
        "present": {"column": "name"},
    },
    "map": {
        "payload.name": "name",
        "payload.description": {"html_text": "description"},
        "payload.url": {"template": "/{locale}/{slug}"},
    },
}


def test_translations_fan_out_one_entity_per_present_locale(engine: sa.Engine):
    with engine.begin() as conn:
        conn.execute(
            demo_shop.products.insert(),
            [
                product_row(1, name="Kettle", name_uk="Чайник", description="<p>Hot</p>"),
                product_row(2, name="Mug"),
            ],
        )
    mapper = mappers_of({"product": TRANSLATED_PRODUCT}, engine)["product"]
    with engine.connect() as conn:
        entities = map_rows(mapper, live_rows(conn, mapper), conn)
    assert [e.snapshot_line() for e in entities] == [
        {
            "kind": "product",
            "external_id": "laravel:product:1",
            "payload": {"name": "Kettle", "description": "Hot", "url": "/en/product-1"},
            "lang": "en",
        },
        {
            "kind": "product",
            "external_id": "laravel:product:1:uk",
            "payload": {"name": "Чайник", "description": None, "url": "/uk/product-1"},
            "lang": "uk",
            "translation_of": "laravel:product:1",
        },
        {
            "kind": "product",
            "external_id": "laravel:product:2",
            "payload": {"name": "Mug", "description": None, "url": "/en/product-2"},
            "lang": "en",
        },
    ]


def test_translation_fallback_uses_the_base_column_when_the_locale_has_none():
    kind = {**TRANSLATED_PRODUCT, "translations": {**TRANSLATED_PRODUCT["translations"]}}
    kind["translations"]["fallback"] = True
    mapper = mappers_of({"product": kind})["product"]
    row = product_row(1, name="Kettle", name_uk="Чайник", description="Hot")
    assert map_rows(mapper, [row])[1].payload["description"] == "Hot"


def sku_in_locale(row: Any, context: Any) -> str:
    return f"{row['sku']}@{context.locale}"


REUSING_PRODUCT = {
    **TRANSLATED_PRODUCT,
    "map": {
        "payload.name": "name",
        "payload.sku": "sku",
        "payload.price_amount": {"money": "price"},
        "payload.description": {"html_text": "description"},
        "payload.seo.title": {"template": "{name} | {sku}"},
        "payload.seo.brand": {"column": "meta", "path": "brand"},
        "payload.url": {"template": "/{locale}/{slug}"},
        "payload.tagline": {"call": f"{__name__}.sku_in_locale"},
        "payload.attributes": {"attributes": "attributes"},
        "payload.extra": {"const": {"badges": []}},
    },
}


def test_a_translated_line_recomputes_what_its_locale_changes_and_shares_no_object():
    mapper = mappers_of({"product": REUSING_PRODUCT})["product"]
    row = product_row(
        1,
        name="Kettle",
        name_uk="Чайник",
        description="<p>Hot &amp; fast</p>",
        description_uk="<p>Гарячий</p>",
        price="12.50",
        meta={"brand": "Oak"},
        attributes={"Color": "Red"},
    )
    en, uk = map_rows(mapper, [row])
    assert en.payload == {
        "name": "Kettle",
        "sku": "SKU-1",
        "price_amount": 1250,
        "description": "Hot & fast",
        "seo": {"title": "Kettle | SKU-1", "brand": "Oak"},
        "url": "/en/product-1",
        "tagline": "SKU-1@en",
        "attributes": [{"name": "Color", "slug": "color", "values": ["Red"]}],
        "extra": {"badges": []},
    }
    assert uk.payload == {
        "name": "Чайник",
        "sku": "SKU-1",
        "price_amount": 1250,
        "description": "Гарячий",
        "seo": {"title": "Чайник | SKU-1", "brand": "Oak"},
        "url": "/uk/product-1",
        "tagline": "SKU-1@uk",
        "attributes": [{"name": "Color", "slug": "color", "values": ["Red"]}],
        "extra": {"badges": []},
    }
    assert uk.payload["seo"] is not en.payload["seo"]
    assert uk.payload["attributes"] is not en.payload["attributes"]
    assert uk.payload["extra"] is not en.payload["extra"]


def test_a_translation_before_its_base_locale_is_mapped_in_full():
    kind = {**REUSING_PRODUCT, "translations": {**TRANSLATED_PRODUCT["translations"]}}
    kind["translations"].update(locales=["uk", "en"], base="en")
    mapper = mappers_of({"product": kind})["product"]
    row = product_row(1, name="Kettle", name_uk="Чайник", price="3.5")
    uk, en = map_rows(mapper, [row])
    assert (uk.lang, uk.payload["name"], uk.payload["price_amount"]) == ("uk", "Чайник", 350)
    assert (en.lang, en.payload["name"], en.payload["seo"]["title"]) == (
        "en",
        "Kettle",
        "Kettle | SKU-1",
    )


def test_a_bad_localized_value_fails_the_row_under_its_key():
    mapper = mappers_of({"product": REUSING_PRODUCT})["product"]
    row = product_row(1, name="Kettle", name_uk="Чайник", description_uk=b"\xff")
    [failure] = map_rows(mapper, [row])
    assert failure == MappingFailure(
        "product",
        1,
        "laravel:product:1",
        "payload.description: 'utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte",
    )


def never_present(row: Any, locale: str) -> bool:
    return False


def test_when_no_locale_is_present_one_base_entity_is_sent():
    kind = {**TRANSLATED_PRODUCT, "translations": {**TRANSLATED_PRODUCT["translations"]}}
    kind["translations"]["present"] = {"call": f"{__name__}.never_present"}
    mapper = mappers_of({"product": kind})["product"]
    [entity] = map_rows(mapper, [product_row(1, name_uk="Чайник")])
    assert (entity.external_id, entity.lang, entity.translation_of) == (
        "laravel:product:1",
        "en",
        None,
    )


def test_translations_from_a_translations_table(database_url: str):
    engine = sa.create_engine(database_url)
    meta = sa.MetaData()
    sa.Table(
        "brands",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50)),
        sa.Column("blurb", sa.String(50)),
    )
    sa.Table(
        "brand_translations",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("brand_id", sa.Integer),
        sa.Column("locale", sa.String(5)),
        sa.Column("name", sa.String(50)),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            meta.tables["brands"].insert(),
            [{"id": 1, "name": "Oak", "blurb": "b1"}, {"id": 2, "name": "Elm", "blurb": "b2"}],
        )
        conn.execute(
            meta.tables["brand_translations"].insert(),
            [
                {"id": 1, "brand_id": 1, "locale": "uk", "name": "Дуб"},
                {"id": 2, "brand_id": 1, "locale": "pl", "name": "Dąb"},
            ],
        )
    kind = {
        "table": "brands",
        "translations": {
            "locales": ["en", "pl", "uk"],
            "table": "brand_translations",
            "foreign_key": "brand_id",
        },
        "map": {"payload.name": "name", "payload.blurb": "blurb"},
    }
    mapper = mappers_of({"tag": kind}, engine)["tag"]
    with engine.connect() as conn:
        entities = map_rows(mapper, live_rows(conn, mapper), conn)
    engine.dispose()
    assert [(e.external_id, e.lang, e.payload) for e in entities] == [
        ("laravel:tag:1", "en", {"name": "Oak", "blurb": "b1"}),
        ("laravel:tag:1:pl", "pl", {"name": "Dąb", "blurb": "b1"}),
        ("laravel:tag:1:uk", "uk", {"name": "Дуб", "blurb": "b1"}),
        ("laravel:tag:2", "en", {"name": "Elm", "blurb": "b2"}),
    ]


def test_deleting_a_translated_row_deletes_every_external_id_it_produced():
    mapper = mappers_of({"product": TRANSLATED_PRODUCT})["product"]
    assert list(mapper.deletions([product_row(4)])) == [
        Deletion("product", "laravel:product:4"),
        Deletion("product", "laravel:product:4:uk"),
    ]


def test_deleting_an_untranslated_row_deletes_its_external_id():
    mapper = mappers_of({"tag": {"table": "tags", "map": {"payload.name": "name"}}})["tag"]
    assert [op.delete_op() for op in mapper.deletions([{"id": 9, "name": "x"}])] == [
        {"type": "delete", "entity_kind": "tag", "external_id": "laravel:tag:9"}
    ]


# --- variations -------------------------------------------------------------------------


def product_with_variations(engine: sa.Engine, variations: dict[str, Any]) -> KindMapper:
    kind = {"table": "products", "map": {"payload.name": "name"}, "variations": variations}
    return mappers_of({"product": kind}, engine)["product"]


def test_inline_variations_and_variant_axes(engine: sa.Engine):
    with engine.begin() as conn:
        conn.execute(demo_shop.products.insert(), [product_row(1), product_row(2)])
        conn.execute(
            demo_shop.product_variations.insert(),
            [
                variation_row(11, 1, {"Color": "Red", "Size": "M"}),
                variation_row(12, 1, {"Color": " Red ", "Size": "L"}, price="13.005"),
                variation_row(13, 1, {"Color": "Blue", "Size": ""}),
                variation_row(14, 1, {"Color": "Green"}, deleted_at=NOW),
            ],
        )
    mapper = product_with_variations(engine, VARIATIONS)
    with engine.connect() as conn:
        with_variations, without = map_rows(mapper, live_rows(conn, mapper), conn)
    assert with_variations.payload == {
        "name": "Product 1",
        "variations": [
            {
                "external_id": "laravel:variation:11",
                "attributes": {"Color": "Red", "Size": "M"},
                "sku": "V-11",
                "price_amount": 1250,
            },
            {
                "external_id": "laravel:variation:12",
                "attributes": {"Color": "Red", "Size": "L"},
                "sku": "V-12",
                "price_amount": 1301,
            },
            {
                "external_id": "laravel:variation:13",
                "attributes": {"Color": "Blue"},
                "sku": "V-13",
                "price_amount": 1250,
            },
        ],
        "variant_axes": [
            {
                "name": "Color",
                "slug": "color",
                "values": [{"label": "Red", "slug": "red"}, {"label": "Blue", "slug": "blue"}],
            },
            {
                "name": "Size",
                "slug": "size",
                "values": [{"label": "M", "slug": "m"}, {"label": "L", "slug": "l"}],
            },
        ],
    }
    assert without.payload == {"name": "Product 2"}


@pytest.mark.parametrize(
    ("extra", "read"),
    [
        ({}, ["product_id", "options", "id", "price", "sku"]),
        # A value that may read any column: the whole child row.
        ({"note": {"call": f"{__name__}.shout"}}, ["*"]),
    ],
)
def test_inline_variations_read_only_the_child_columns_their_map_reads(
    engine: sa.Engine, extra: dict[str, Any], read: list[str]
):
    variations = {**VARIATIONS, "map": {**VARIATIONS["map"], **extra}}
    mapper = product_with_variations(engine, variations)
    assert mapper.variations_loader is not None
    loader = mapper._loaders[mapper.variations_loader]
    selected = [str(column) for column in loader.query_any.selected_columns]
    assert [name.rsplit(".", 1)[-1] for name in selected] == read


def test_the_standalone_variation_kind_sends_its_price_as_a_decimal_string():
    catalog = load_config(DEFAULT_CONFIG)
    mapper = compile_mappers(catalog, None)["variation"]
    [entity] = map_rows(mapper, [variation_row(5, 1, {"Size": "M"}, price=7)])
    assert (entity.payload["parent_external_id"], entity.payload["price"]) == (
        "laravel:product:1",
        "7.00",
    )


# --- payload building and failures (no database needed) ------------------------------


def test_a_one_column_getter_offers_its_conversion_and_others_do_not():
    getters = compile_mappers(load_config(), None)["product"].getters
    ctx = MapContext("product", "laravel", {}, None)
    for key, value in [
        ("payload.description", "<p>Tea &amp; <b>cups</b></p>"),
        ("payload.sku", b"SKU-1"),  # bytes: the plain getter's text conversion
        ("payload.price_amount", "12.345"),
    ]:
        found = column_conversion(getters[key])
        assert found is not None, key
        column, convert = found
        assert convert(value) == getters[key]({column: value}, ctx)
    assert column_conversion(getters["payload.permalink"]) is None  # a template
    assert column_conversion(getters["payload.categories"]) is None  # a relation


def test_dot_paths_nest_in_map_order_and_keep_nulls():
    mapper = mappers_of(
        {
            "tag": {
                "table": "tags",
                "map": {
                    "payload.seo.title": "name",
                    "payload.name": "name",
                    "payload.seo.noindex": {"const": None},
                    "payload.a.b.c": "slug",
                },
            }
        }
    )["tag"]
    [entity] = map_rows(mapper, [{"id": 1, "name": "New", "slug": None}])
    assert protocol.dumps(entity.payload) == (
        b'{"seo":{"title":"New","noindex":null},"name":"New","a":{"b":{"c":null}}}'
    )


def test_a_bad_row_becomes_a_mapping_failure_and_the_page_goes_on():
    mapper = mappers_of(
        {"tag": {"table": "tags", "map": {"payload.name": "name", "payload.p": {"money": "p"}}}}
    )["tag"]
    results = map_rows(mapper, [{"id": 1, "name": "a", "p": "NaN"}, {"id": 2, "name": "b", "p": 1}])
    assert results == [
        MappingFailure("tag", 1, "laravel:tag:1", "payload.p: 'NaN' is not a finite amount"),
        Entity("tag", "laravel:tag:2", {"name": "b", "p": 100}),
    ]


def test_a_row_without_a_required_value_is_a_mapping_failure():
    mapper = mappers_of({"tag": {"table": "tags", "map": {"payload.name": "name"}}})["tag"]
    [failure] = map_rows(mapper, [{"id": 3, "name": ""}])
    assert failure == MappingFailure(
        "tag", 3, "laravel:tag:3", "payload.name: required for kind 'tag' and must be non-empty"
    )


def test_a_row_without_an_external_id_is_a_mapping_failure():
    mapper = mappers_of(
        {"tag": {"table": "tags", "external_id": "{slug}", "map": {"payload.name": "name"}}}
    )["tag"]
    [failure] = map_rows(mapper, [{"id": 3, "name": "x", "slug": None}])
    assert isinstance(failure, MappingFailure) and "external id template" in failure.error


def test_external_id_from_a_template_or_a_stable_key_is_wrapped():
    kinds = {
        "product": {"table": "products", "external_id": "{sku}", "map": {"payload.name": "name"}},
        "tag": {"table": "tags", "external_id": "uuid", "map": {"payload.name": "name"}},
    }
    mappers = mappers_of(kinds, producer="shop2")
    product = map_rows(mappers["product"], [{"id": 1, "sku": "A:1", "name": "x"}])[0]
    tag = map_rows(mappers["tag"], [{"id": 1, "uuid": "f00", "name": "x"}])[0]
    assert (product.external_id, tag.external_id) == ("shop2:product:A:1", "shop2:tag:f00")


def shout(row: Any, context: Any) -> str:
    return f"{row['name'].upper()} ({context.kind}, {context.vars['currency']})"


def test_a_callable_value_gets_the_row_and_the_context():
    mapper = mappers_of(
        {"tag": {"table": "tags", "map": {"payload.name": {"call": f"{__name__}.shout"}}}},
        currency="EUR",
    )["tag"]
    [entity] = map_rows(mapper, [{"id": 1, "name": "new"}])
    assert entity.payload == {"name": "NEW (tag, EUR)"}


def test_template_and_reference_give_null_when_their_column_is_null():
    mapper = mappers_of(
        {
            "category": {
                "table": "categories",
                "map": {
                    "payload.name": "name",
                    "payload.url": {"template": "/c/{slug}"},
                    "payload.parent_external_id": {"ref": "category", "column": "parent_id"},
                },
            }
        }
    )["category"]
    rows = [{"id": 1, "name": "a", "slug": None, "parent_id": None}]
    rows.append({"id": 2, "name": "b", "slug": "b", "parent_id": 1})
    assert [e.payload for e in map_rows(mapper, rows)] == [
        {"name": "a", "url": None, "parent_external_id": None},
        {"name": "b", "url": "/c/b", "parent_external_id": "laravel:category:1"},
    ]


def test_host_profile_advertises_facets_when_products_carry_attributes():
    mappers = mappers_of(
        {
            "product": {
                "table": "products",
                "map": {"payload.name": "name", "payload.attributes": {"attributes": "attrs"}},
            },
            "host_profile": {"capabilities": ["catalog.search"], "cart_endpoint": "/cart"},
        }
    )
    assert [e.upsert_op() for e in mappers["host_profile"].static_entities()] == [
        {
            "type": "upsert",
            "entity_kind": "host_profile",
            "external_id": "host",
            "payload": {
                "capabilities": ["catalog.search", "catalog.facets"],
                "cart_endpoint": "/cart",
            },
        }
    ]


def test_host_profile_without_facets_keeps_its_capabilities():
    mappers = mappers_of({"host_profile": {"capabilities": ["cart.add"], "metadata": {"a": 1}}})
    [entity] = mappers["host_profile"].static_entities()
    assert entity.payload == {"capabilities": ["cart.add"], "metadata": {"a": 1}}


class FakeSource:
    """A custom source class for the dotted-path test; never asked for rows here."""

    def __init__(self, config: Any, catalog: Any) -> None:
        self.config = config


def test_a_custom_source_class_is_loaded_by_dotted_path():
    mappers = mappers_of({"cpt": {"source": f"{__name__}.FakeSource", "options": {"x": 1}}})
    assert (mappers["cpt"].source_class, mappers["cpt"].config.options) == (FakeSource, {"x": 1})


# --- the kinds the demo map leaves out --------------------------------------------------


def test_environment_and_cpt_kinds_map_from_custom_tables(database_url: str):
    engine = sa.create_engine(database_url)
    meta = sa.MetaData()
    recipes = sa.Table(
        "recipes",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.String(50)),
        sa.Column("body", sa.Text),
        sa.Column("deleted_at", sa.DateTime, nullable=True),
    )
    settings = sa.Table(
        "env_settings",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("setting", sa.String(50)),
        sa.Column("value", sa.String(50)),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            recipes.insert(),
            [
                {"id": 1, "title": "Latte", "body": "<p>Milk &amp; coffee</p>", "deleted_at": None},
                {"id": 2, "title": "Old", "body": "", "deleted_at": NOW},
            ],
        )
        conn.execute(settings.insert(), [{"id": 1, "setting": "php", "value": "8.3"}])
    mappers = mappers_of(
        {
            "cpt": {
                "table": "recipes",
                "deleted_column": "deleted_at",
                "map": {
                    "payload.title": "title",
                    "payload.post_type": {"const": "recipe"},
                    "payload.content_text": {"html_text": "body"},
                },
            },
            "environment": {
                "select": "SELECT id, value AS php_version FROM env_settings WHERE setting = 'php'",
                "external_id": "{producer}",
                "map": {"payload.php_version": "php_version"},
            },
        },
        engine,
    )
    check_samples(mappers["cpt"].catalog, engine, mappers)
    with engine.connect() as conn:
        entities = [
            entity
            for mapper in mappers.values()
            for entity in mapper.map_page(conn, live_rows(conn, mapper))
        ]
    engine.dispose()
    assert [(e.kind, e.external_id, e.payload) for e in entities] == [
        (
            "cpt",
            "laravel:cpt:1",
            {"title": "Latte", "post_type": "recipe", "content_text": "Milk & coffee"},
        ),
        ("environment", "laravel:environment:laravel", {"php_version": "8.3"}),
    ]


# --- the demo map -------------------------------------------------------------------------


def demo_entities(url: str) -> list[Entity | MappingFailure]:
    engine = sa.create_engine(url)
    demo_shop.create_demo_shop(engine, 40, seed=7)
    catalog = load_config(DEFAULT_CONFIG)
    mappers = compile_mappers(catalog, engine)
    check_samples(catalog, engine, mappers)
    results: list[Entity | MappingFailure] = []
    with engine.connect() as conn:
        for mapper in mappers.values():
            results.extend(mapper.static_entities())
            if not mapper.config.is_static:
                results.extend(mapper.map_page(conn, live_rows(conn, mapper)))
    engine.dispose()
    return results


def test_the_demo_map_maps_every_kind_of_the_demo_shop(database_url: str):
    results = demo_entities(database_url)
    assert [r for r in results if isinstance(r, MappingFailure)] == []
    assert {r.kind for r in results} == set(load_config(DEFAULT_CONFIG).kinds)
    assert all(protocol.payload_problem(r.kind, r.payload) is None for r in results)


def test_the_demo_map_gives_identical_entities_on_every_database(
    sqlite_url: str, postgres_url: str, mariadb_url: str
):
    outputs = []
    for url in (sqlite_url, postgres_url, mariadb_url):
        entities = demo_entities(url)
        assert len({e.kind for e in entities}) == len(load_config(DEFAULT_CONFIG).kinds)
        outputs.append(b"".join(protocol.dumps(e.snapshot_line()) + b"\n" for e in entities))  # type: ignore[union-attr]
    assert outputs[0] == outputs[1] == outputs[2]


# --- bad maps against the live schema --------------------------------------------------


def compile_error(kinds: dict[str, Any], engine: sa.Engine | None) -> str:
    with pytest.raises(ConfigurationError) as info:
        mappers_of(kinds, engine)
    return str(info.value)


def test_an_unknown_table_names_the_key_and_the_fix(engine: sa.Engine):
    message = compile_error({"tag": {"table": "tgas", "map": {"payload.name": "name"}}}, engine)
    assert "test_map.yaml: kinds.tag.table: unknown table 'tgas' (did you mean 'tags'?)" in message
    assert "fix: name a table that exists" in message


def test_an_unknown_column_names_the_key_and_the_fix(engine: sa.Engine):
    message = compile_error({"tag": {"table": "tags", "map": {"payload.name": "nmae"}}}, engine)
    assert (
        "kinds.tag.map.\"payload.name\".column: unknown column 'nmae' in tags "
        "(did you mean 'name'?)" in message
    )
    assert "fix: name an existing column (columns: created_at, deleted_at, id, name" in message


def test_an_unknown_pivot_column_names_the_key(engine: sa.Engine):
    slugs = {**PRODUCT_MAP["payload.categories"], "local_key": "prod_id"}
    message = compile_error(
        {"product": {"table": "products", "map": {"payload.name": "name", "payload.c": slugs}}},
        engine,
    )
    assert "kinds.product.map.\"payload.c\".local_key: unknown column 'prod_id'" in message


def test_an_unknown_watermark_column_names_the_key(engine: sa.Engine):
    kind = {"table": "tags", "watermark": "modified_at", "map": {"payload.name": "name"}}
    message = compile_error({"tag": kind}, engine)
    assert "kinds.tag.watermark: unknown column 'modified_at'" in message


def test_money_on_a_text_column_is_refused(engine: sa.Engine):
    kind = {"table": "tags", "map": {"payload.name": "name", "payload.p": {"money": "slug"}}}
    message = compile_error({"tag": kind}, engine)
    assert "kinds.tag.map.\"payload.p\".money: column 'slug' is VARCHAR(191), not a number" in (
        message
    )
    assert "fix: point money at a numeric" in message


def test_a_missing_module_in_a_dotted_path_is_refused():
    kind = {"table": "tags", "map": {"payload.name": {"call": "no_such_pkg.fmt.name"}}}
    message = compile_error({"tag": kind}, None)
    assert 'kinds.tag.map."payload.name".call: no importable module' in message
    assert "fix: give an importable 'package.module.name'" in message


def test_a_missing_attribute_in_a_dotted_path_is_refused():
    message = compile_error({"cpt": {"source": "catalog_sync.values.NoSuchSource"}}, None)
    assert "kinds.cpt.source: module 'catalog_sync.values' has no attribute 'NoSuchSource'" in (
        message
    )


def test_a_source_that_is_not_a_class_is_refused():
    message = compile_error({"cpt": {"source": "catalog_sync.values.slugify"}}, None)
    assert "kinds.cpt.source: 'catalog_sync.values.slugify' is not a class" in message


def test_a_failing_select_is_refused_with_the_database_message(engine: sa.Engine):
    kind = {"select": "SELECT id, nam FROM tags", "map": {"payload.name": "nam"}}
    message = compile_error({"tag": kind}, engine)
    assert "kinds.tag.select: the select fails on the source database" in message


def test_a_sampled_row_without_a_required_value_stops_the_sync(engine: sa.Engine):
    with engine.begin() as conn:
        conn.execute(demo_shop.tags.insert(), taxonomy(demo_shop.tags, 1, "x", name=""))
    catalog = catalog_of({"tag": {"table": "tags", "map": {"payload.name": "name"}}})
    mappers = compile_mappers(catalog, engine)
    with pytest.raises(ConfigurationError) as info:
        check_samples(catalog, engine, mappers)
    assert 'kinds.tag.map."payload.name": the sampled row id=1 does not map' in str(info.value)
    assert "fix: map payload.name to a column that is filled for every live row" in str(info.value)


def test_a_bad_first_row_among_good_ones_is_left_to_the_dead_letter(engine: sa.Engine):
    """The map check samples several rows: one that maps proves the map right."""
    with engine.begin() as conn:
        conn.execute(demo_shop.tags.insert(), taxonomy(demo_shop.tags, 1, "x", name=""))
        conn.execute(demo_shop.tags.insert(), taxonomy(demo_shop.tags, 2, "y"))
    catalog = catalog_of({"tag": {"table": "tags", "map": {"payload.name": "name"}}})
    mappers = compile_mappers(catalog, engine)
    check_samples(catalog, engine, mappers)  # no ConfigurationError
    with engine.connect() as conn:
        first, second = map_rows(mappers["tag"], live_rows(conn, mappers["tag"]), conn)
    assert isinstance(first, MappingFailure) and "payload.name" in first.error
    assert second.payload["name"]


def test_a_map_that_fails_on_every_sampled_row_stops_the_sync(engine: sa.Engine):
    with engine.begin() as conn:
        for id in (1, 2, 3):
            conn.execute(demo_shop.tags.insert(), taxonomy(demo_shop.tags, id, f"s{id}", name=""))
    catalog = catalog_of({"tag": {"table": "tags", "map": {"payload.name": "name"}}})
    mappers = compile_mappers(catalog, engine)
    with pytest.raises(ConfigurationError) as info:
        check_samples(catalog, engine, mappers)
    assert 'kinds.tag.map."payload.name": the sampled row id=1 does not map' in str(info.value)


def test_a_sampled_money_value_that_is_not_a_number_stops_the_sync(engine: sa.Engine):
    with engine.begin() as conn:
        conn.execute(demo_shop.tags.insert(), taxonomy(demo_shop.tags, 1, "x"))
    kind = {
        "select": "SELECT id, name, slug AS price FROM tags",
        "map": {"payload.name": "name", "payload.price_amount": {"money": "price"}},
    }
    catalog = catalog_of({"tag": kind})
    mappers = compile_mappers(catalog, engine)
    with pytest.raises(ConfigurationError) as info:
        check_samples(catalog, engine, mappers)
    assert "'x' is not a number" in str(info.value)
    assert "fix: use a spec that fits the column's values" in str(info.value)


def test_bad_data_in_the_sampled_row_is_left_to_the_dead_letter(engine: sa.Engine):
    with engine.begin() as conn:
        conn.execute(demo_shop.tags.insert(), taxonomy(demo_shop.tags, 1, "x"))
    kind = {
        "select": "SELECT id, name, 'NaN' AS price FROM tags",
        "map": {"payload.name": "name", "payload.price_amount": {"money": "price"}},
    }
    catalog = catalog_of({"tag": kind})
    mappers = compile_mappers(catalog, engine)
    check_samples(catalog, engine, mappers)  # no ConfigurationError: the map is right
    with engine.connect() as conn:
        [failure] = map_rows(mappers["tag"], live_rows(conn, mappers["tag"]), conn)
    assert isinstance(failure, MappingFailure)


def test_a_task_compiles_only_its_kind_and_reflects_only_its_tables(engine: sa.Engine) -> None:
    """An extract task maps one kind: the other kinds' tables are not reflected (a kind
    whose table is missing here would fail a full compile)."""
    catalog = catalog_of(
        {
            "tag": {"table": "tags", "map": {"payload.name": "name"}},
            "page": {"table": "no_such_table", "map": {"payload.title": "name"}},
        }
    )
    with pytest.raises(ConfigurationError, match="no_such_table"):
        compile_mappers(catalog, engine)
    assert list(compile_mappers(catalog, engine, kinds=["tag"])) == ["tag"]
