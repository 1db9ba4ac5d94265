"""Snapshot lines built by PostgreSQL (`catalog_sync.pushdown`) equal the Python path's.

The ordinary mapper is the reference: for the same rows, `extract_snapshot(in_sql=True)`
must stage byte for byte what `in_sql=False` stages, lines and dead-letter failures
alike. Each test also checks that the SQL path really ran, so that a kind silently
falling back to Python cannot make the comparison pass.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from catalog_sync import demo_shop, extract, mapping, pushdown
from catalog_sync.config import CatalogConfig, load_config, parse_config
from catalog_sync.source import create_source_engine


def _staged(uri: str | None) -> list[bytes]:
    if uri is None:
        return []
    with gzip.open(uri.removeprefix("file://"), "rb") as stream:
        return stream.read().splitlines()


def _both_ways(
    engine: sa.Engine, catalog: CatalogConfig, tmp_path: Path, **options: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same snapshot built by PostgreSQL and by Python."""
    mappers = mapping.compile_mappers(catalog, engine)
    common = {"mappers": mappers, "root": tmp_path.as_uri(), **options}
    in_sql = extract.extract_snapshot(engine, catalog, run_key="sql", in_sql=True, **common)
    python = extract.extract_snapshot(engine, catalog, run_key="py", in_sql=False, **common)
    return in_sql, python


def _assert_same(in_sql: dict[str, Any], python: dict[str, Any]) -> None:
    assert in_sql["counts"] == python["counts"]
    for ours, reference in zip(in_sql["parts"], python["parts"], strict=True):
        assert ours["kind"] == reference["kind"]
        assert _staged(ours["uri"]) == _staged(reference["uri"]), ours["kind"]
        assert ours["sha256"] == reference["sha256"]
        assert ours["failures"]["count"] == reference["failures"]["count"]
        assert _staged(ours["failures"]["uri"]) == _staged(reference["failures"]["uri"])


def _planned(engine: sa.Engine, catalog: CatalogConfig) -> dict[str, bool]:
    """Kind -> are its lines built by PostgreSQL."""
    mappers = mapping.compile_mappers(catalog, engine)
    with engine.connect() as conn:
        return {kind: extract._line_plan(conn, m) is not None for kind, m in mappers.items()}


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[sa.Engine]:
    engine = create_source_engine(postgres_url)
    yield engine
    engine.dispose()


def test_every_table_kind_of_the_demo_map_is_built_by_postgresql(pg_engine: sa.Engine) -> None:
    demo_shop.create_demo_shop(pg_engine, 20, seed=4)
    planned = _planned(pg_engine, load_config())
    assert planned.pop("host_profile") is False  # no table: nothing to select
    assert planned and all(planned.values()), planned
    assert _children(pg_engine, load_config()) is not None  # inline variations too


def test_a_piece_of_constant_text_is_added_by_python_not_selected(pg_engine: sa.Engine) -> None:
    """PostgreSQL would send it with every row (and the driver decode it) for nothing."""
    demo_shop.create_demo_shop(pg_engine, 5, seed=4)
    mapper = mapping.compile_mappers(load_config(), pg_engine)["product"]
    with pg_engine.connect() as conn:
        plan = pushdown.compile_plan(mapper, conn)
    constants = [arg for line in plan.lines for op, arg in _ops(line) if op == pushdown.CONST]
    assert any(b',"short_description":' in constant for constant in constants)
    assert ',"short_description":' not in plan.sql


def test_an_integer_external_id_is_its_digits_between_constants(pg_engine: sa.Engine) -> None:
    """No `'laravel:product:' || id` per row and line for PostgreSQL to concatenate and the
    driver to decode: the id's digits need no escaping (the lines are compared byte for
    byte with the Python path's in the tests below)."""
    demo_shop.create_demo_shop(pg_engine, 5, seed=4)
    mapper = mapping.compile_mappers(load_config(), pg_engine)["product"]
    with pg_engine.connect() as conn:
        plan = pushdown.compile_plan(mapper, conn)
    assert "'laravel:product:' ||" not in plan.sql
    base, translated = (_ops(line) for line in plan.lines)
    assert base[0] == (pushdown.CONST, b'{"kind":"product","external_id":"laravel:product:')
    assert base[1][0] == pushdown.RAW and base[1] == translated[1]  # one column, both lines
    assert "(src.id)::text" in plan.sql
    assert translated[2][1].startswith(b':uk","payload":')


def test_a_text_value_is_written_as_json_by_python_not_by_to_json(pg_engine: sa.Engine) -> None:
    """`to_json` and `||` per value were most of PostgreSQL's work for a line; the driver
    decodes the text either way."""
    demo_shop.create_demo_shop(pg_engine, 5, seed=4)
    mapper = mapping.compile_mappers(load_config(), pg_engine)["product"]
    with pg_engine.connect() as conn:
        plan = pushdown.compile_plan(mapper, conn)
    assert "to_json((src.name)::text)" not in plan.sql
    assert "(src.name)::text" in plan.sql
    assert all(pushdown.ESCAPED in [op for op, _arg in _ops(line)] for line in plan.lines)


def _ops(line: Any) -> list[tuple[int, Any]]:
    return list(zip(line.ops[::2], line.ops[1::2], strict=True))


def test_the_demo_shop_snapshot_is_byte_identical_both_ways(
    pg_engine: sa.Engine, tmp_path: Path
) -> None:
    # Small pages: rows that go the Python way (inline variations are computed by the
    # mapper) fall on page edges too.
    demo_shop.create_demo_shop(pg_engine, 300, seed=5)
    in_sql, python = _both_ways(pg_engine, load_config(), tmp_path, page_size=37)
    _assert_same(in_sql, python)
    lines = _staged(in_sql["parts"][0]["uri"])
    assert any(b'"variations":' in line for line in lines)  # inline variations covered
    assert any(b'"translation_of":' in line for line in lines)  # translations covered


def test_a_key_range_part_is_byte_identical_both_ways(pg_engine: sa.Engine, tmp_path: Path) -> None:
    demo_shop.create_demo_shop(pg_engine, 120, seed=6)
    catalog = load_config()
    for index, key_range in enumerate([(None, 40), (40, 90), (90, None)]):
        in_sql, python = _both_ways(
            pg_engine, catalog, tmp_path / str(index), kinds=["product"], part=(index, key_range)
        )
        _assert_same(in_sql, python)
        assert in_sql["parts"][0]["lines"] > 0


# --- adversarial rows ---------------------------------------------------------------------

_DDL = """
CREATE TABLE items (
    id integer PRIMARY KEY, name text, name_uk text, sku varchar(40), code char(4),
    price numeric, cost double precision, qty integer, active boolean, uid uuid,
    meta jsonb, info json, attrs json, html text, slug text, parent_id integer,
    updated_at timestamp, deleted_at timestamp
);
CREATE TABLE cats (id integer PRIMARY KEY, slug text, deleted_at timestamp);
CREATE TABLE item_cat (item_id integer, cat_id integer);
"""

_MAP = {
    "producer": "shop",
    "vars": {"site_url": "https://x.example"},
    "kinds": {
        "product": {
            "table": "items",
            "watermark": "updated_at",
            "deleted_column": "deleted_at",
            "translations": {
                "locales": ["en", "uk"],
                "columns": {"name": "name_{locale}"},
                "present": {"column": "name"},
            },
            "map": {
                "payload.name": "name",
                "payload.sku": "sku",
                "payload.code": "code",
                "payload.price_amount": {"money": "price"},
                "payload.price": {"decimal": "price"},
                "payload.price_mills": {"money": "price", "decimals": 3},
                "payload.whole": {"decimal": "price", "decimals": 0},
                "payload.cost": "cost",
                "payload.qty": {"integer": "qty"},
                "payload.stock_status": {"stock_status": "active"},
                "payload.stock_by_qty": {"stock_status": "qty"},
                "payload.enabled": {"boolean": "active"},
                "payload.permalink": {"template": "{site_url}/p/{slug}?off=10%&q='a'"},
                "payload.label": {"template": "{name} #{id}"},
                "payload.parent_external_id": {"ref": "product", "column": "parent_id"},
                "payload.uid": "uid",
                "payload.brand": {"column": "meta", "path": "brand"},
                "payload.seo.title": {"column": "meta", "path": "seo.title"},
                "payload.seo.first": {"column": "meta", "path": "list.0"},
                "payload.info": {"column": "info", "path": "seo.title"},
                "payload.attributes": {"attributes": "attrs"},
                "payload.text": {"html_text": "html"},
                "payload.fixed": {"const": {"a": [1, "x"], "b": None}},
                "payload.categories": {
                    "slugs": "cats",
                    "through": "item_cat",
                    "local_key": "item_id",
                    "foreign_key": "cat_id",
                    "deleted_column": "deleted_at",
                },
            },
        }
    },
}

_TEXT = "quote \" backslash \\ slash / tab \t nl \n ctl \x01\x1f del \x7f ls \u2028 é 😀 ' %"
_ROWS: list[dict[str, Any]] = [
    {"id": 1, "name": "Plain", "price": "19.99", "qty": 3, "active": True, "slug": "plain"},
    {"id": 2, "name": _TEXT, "name_uk": _TEXT[::-1], "sku": _TEXT[:40], "html": _TEXT},
    {"id": 3, "name": "Halves", "price": "-2.505", "cost": 0.1 + 0.2, "qty": 0},
    {"id": 4, "name": "Tiny", "price": "0.0049999", "active": False, "qty": -1},
    {"id": 5, "name": "NaN", "price": "NaN"},  # a row error: dead-lettered both ways
    {"id": 6, "name": "Huge", "price": "1e17"},  # absurd amount: a row error
    {"id": 7, "name": "", "name_uk": "Тільки українською"},  # only the uk line
    {"id": 8, "name": None, "name_uk": ""},  # no locale present: a failing base line
    {"id": 9, "name": "Char", "code": "ab", "uid": "6f1c9a4e-0000-4000-8000-00000000000a"},
    {"id": 10, "name": "Json", "meta": '{"brand": 5, "seo": {"title": "T"}, "list": ["a"]}'},
    {"id": 11, "name": "Json2", "meta": '{"brand": {"x": 1}, "seo": null, "list": []}'},
    {"id": 12, "name": "Json3", "meta": '{"brand": "B", "brand": true, "seo": {"title": 1.50}}'},
    {"id": 13, "name": "Json4", "info": '{"seo": {"title": "a", "title": "b"}}', "meta": "{}"},
    {"id": 14, "name": "Attrs", "attrs": '[{"name": " Colour ", "values": [" Red ", "Red", ""]}]'},
    {"id": 15, "name": "Bad attrs", "attrs": '[{"values": ["x"]}]'},  # no name: a row error
    {"id": 16, "name": "Html", "html": "<p>a&nbsp;b &lt;i&gt; &amp;amp; &#x1F600; <br>c</p>"},
    {"id": 17, "name": "Ref", "parent_id": 1, "slug": None, "price": "5"},
    {"id": 18, "name": "Gone", "deleted_at": "2020-01-01"},  # soft-deleted: no line
    {"id": 19, "name": "Bools", "active": None, "qty": None, "price": "-0.004"},
]


@pytest.fixture
def odd_shop(pg_engine: sa.Engine) -> sa.Engine:
    columns = ["id", "name", "name_uk", "sku", "code", "price", "cost", "qty", "active"]
    columns += ["uid", "meta", "info", "attrs", "html", "slug", "parent_id", "deleted_at"]
    with pg_engine.begin() as conn:
        for statement in _DDL.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
        conn.execute(
            sa.text(
                f"INSERT INTO items ({', '.join(columns)}, updated_at) VALUES "
                f"({', '.join(':' + c for c in columns)}, now())"
            ),
            [{column: row.get(column) for column in columns} for row in _ROWS],
        )
        conn.exec_driver_sql(
            "INSERT INTO cats VALUES (1, 'b-cat', NULL), (2, 'a-cat', NULL), "
            "(3, 'gone', '2020-01-01'), (4, NULL, NULL)"
        )
        conn.exec_driver_sql(
            "INSERT INTO item_cat VALUES (1, 2), (1, 1), (1, 1), (1, 3), (1, 4), (2, 4), (3, 1)"
        )
    return pg_engine


def test_odd_values_and_row_errors_are_byte_identical_both_ways(
    odd_shop: sa.Engine, tmp_path: Path
) -> None:
    catalog = parse_config(_MAP, tmp_path / "map.yaml")
    assert _planned(odd_shop, catalog) == {"product": True}
    in_sql, python = _both_ways(odd_shop, catalog, tmp_path, page_size=4)
    _assert_same(in_sql, python)
    failures = in_sql["parts"][0]["failures"]["count"]
    assert failures == 4  # NaN, absurd, no locale with a name, attribute without a name
    lines = _staged(in_sql["parts"][0]["uri"])
    # By the related key, a duplicate pivot row twice, deleted and NULL slugs left out.
    assert b'"categories":["b-cat","b-cat","a-cat"]' in lines[0]


def _plan_sql(engine: sa.Engine, catalog: CatalogConfig) -> str:
    mapper = mapping.compile_mappers(catalog, engine)["product"]
    with engine.connect() as conn:
        return pushdown.compile_plan(mapper, conn).sql


def test_slugs_of_a_small_related_table_are_written_by_python_from_aggregated_keys(
    odd_shop: sa.Engine, tmp_path: Path
) -> None:
    """PostgreSQL aggregates the pivot's keys only (no join, no sort, no JSON per slug);
    Python writes the list: deleted and NULL slugs, dangling keys and duplicate pivot rows
    as the mapper's join has them."""
    with odd_shop.begin() as conn:
        conn.exec_driver_sql("INSERT INTO item_cat VALUES (2, 99), (3, NULL), (10, 2), (10, 1)")
    catalog = parse_config(_MAP, tmp_path / "map.yaml")
    sql = _plan_sql(odd_shop, catalog)
    assert "string_agg((p.cat_id)::text, ',')" in sql and "to_json(r.slug)" not in sql
    in_sql, python = _both_ways(odd_shop, catalog, tmp_path, page_size=4)
    _assert_same(in_sql, python)
    lines = _staged(in_sql["parts"][0]["uri"])
    assert b'"categories":["b-cat","b-cat","a-cat"]' in lines[0]
    assert any(b'"categories":["b-cat","a-cat"]' in line for line in lines)  # sorted by key


def test_slugs_of_a_big_related_table_are_aggregated_by_postgresql(
    odd_shop: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays flat: a related table over SLUG_TABLE_ROWS is not read whole."""
    monkeypatch.setattr(pushdown, "SLUG_TABLE_ROWS", 2)  # `cats` has 2 live slugs, then 3
    catalog = parse_config(_MAP, tmp_path / "map.yaml")
    assert "to_json(r.slug)" not in _plan_sql(odd_shop, catalog)
    with odd_shop.begin() as conn:
        conn.exec_driver_sql("INSERT INTO cats VALUES (5, 'c-cat', NULL)")
    sql = _plan_sql(odd_shop, catalog)
    assert "to_json(r.slug)" in sql and "string_agg((p.cat_id)::text" not in sql
    in_sql, python = _both_ways(odd_shop, catalog, tmp_path, page_size=4)
    _assert_same(in_sql, python)
    assert b'"categories":["b-cat","b-cat","a-cat"]' in _staged(in_sql["parts"][0]["uri"])[0]


def test_json_paths_are_scanned_by_python_not_cast_by_postgresql(
    odd_shop: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A jsonb cast and path per row cost PostgreSQL more than the whole line; the
    compiled scanner answers from the column's text (the odd rows' duplicate keys, nested
    objects, numbers and NULs are checked byte for byte above)."""
    catalog = parse_config(_MAP, tmp_path / "map.yaml")
    sql = _plan_sql(odd_shop, catalog)
    assert "jsonb" not in sql and "#>" not in sql
    if pushdown.json_path_text is None:
        pytest.skip("catalog_sync._speedups is not built: Python walks every JSON path")
    scanned: list[tuple[str, ...]] = []
    scan = pushdown.json_path_text

    def counted(text: Any, steps: tuple[str, ...]) -> str | None:
        scanned.append(steps)
        return scan(text, steps)

    monkeypatch.setattr(pushdown, "json_path_text", counted)
    with odd_shop.begin() as conn:
        conn.exec_driver_sql(
            'UPDATE items SET meta = \'{"brand": "Acme", "seo": {"title": "T é"}}\' WHERE id = 1'
        )
    in_sql, python = _both_ways(odd_shop, catalog, tmp_path, page_size=4)
    _assert_same(in_sql, python)
    assert b'"brand":"Acme","seo":{"title":"T \xc3\xa9"' in _staged(in_sql["parts"][0]["uri"])[0]
    assert ("brand",) in scanned and ("seo", "title") in scanned


def shout(row: Any, context: Any) -> str:
    return str(row["name"] or "-").upper()


def test_a_kind_with_a_call_spec_is_built_by_python_with_the_reason_logged(
    odd_shop: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    document = {**_MAP, "kinds": {"product": dict(_MAP["kinds"]["product"])}}
    document["kinds"]["product"]["map"] = {"payload.name": {"call": f"{__name__}.shout"}}
    catalog = parse_config(document, tmp_path / "map.yaml")
    with caplog.at_level("INFO", logger="catalog_sync.extract"):
        assert _planned(odd_shop, catalog) == {"product": False}
    assert "may read more than its columns" in caplog.text
    in_sql, python = _both_ways(odd_shop, catalog, tmp_path)
    _assert_same(in_sql, python)


def test_a_plan_refuses_a_key_range_bound_that_is_not_an_integer(odd_shop: sa.Engine) -> None:
    catalog = parse_config(_MAP, Path("map.yaml"))
    mapper = mapping.compile_mappers(catalog, odd_shop)["product"]
    with odd_shop.connect() as conn:
        plan = pushdown.compile_plan(mapper, conn)
    with pytest.raises(pushdown.NotPushable, match="is not an integer"):
        plan.statement("TRUE", ("1; DROP TABLE items", None))


# --- cases found by review: each differed (or failed) before its fix -----------------------


def _pages(columns: str, rows: str) -> str:
    return f"CREATE TABLE pages (id serial PRIMARY KEY, title text, {columns}); {rows}"


def _page_map(extra: dict[str, Any], **kind: Any) -> dict[str, Any]:
    map_ = {"payload.title": "title", **extra}
    return {"kinds": {"page": {"table": "pages", "map": map_, **kind}}}


_PRODUCTS = "CREATE TABLE products (id serial PRIMARY KEY, name text, sku varchar(10));"
_CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "inline variations without a deleted column": (
        _PRODUCTS + "CREATE TABLE variants (id serial PRIMARY KEY, product_id int, options jsonb);"
        "INSERT INTO products (name) VALUES ('P1'), ('P2');"
        """INSERT INTO variants (product_id, options) VALUES (1, '{"Color": "Red"}');""",
        {
            "kinds": {
                "product": {
                    "table": "products",
                    "map": {"payload.name": "name"},
                    "variations": {
                        "table": "variants",
                        "foreign_key": "product_id",
                        "options_column": "options",
                    },
                }
            }
        },
        True,
    ),
    "json path steps PostgreSQL's array syntax would read as NULL or trim": (
        _pages(
            "meta jsonb",
            """INSERT INTO pages (title, meta) VALUES """
            """('t', '{"null": "v", "\\tb": "tab", "b": "plain"}');""",
        ),
        _page_map(
            {
                "payload.v": {"column": "meta", "path": "null"},
                "payload.w": {"column": "meta", "path": "\tb"},
            }
        ),
        True,
    ),
    "a duplicate key on the way down a json column": (
        _pages(
            "meta json",
            """INSERT INTO pages (title, meta) VALUES """
            """('t', '{"a": {"b": "x"}, "a": {"c": 2}}');""",
        ),
        _page_map({"payload.v": {"column": "meta", "path": "a.b"}}),
        True,
    ),
    "a JSON string where the path expects an object": (
        _pages(
            "meta jsonb",
            """INSERT INTO pages (title, meta) VALUES ('t', '"plain"'), """
            """('t', '"{\\"a\\": \\"z\\"}"');""",
        ),
        _page_map({"payload.v": {"column": "meta", "path": "a"}}),
        True,
    ),
    "a json column holding an escaped NUL": (
        _pages(
            "meta json", """INSERT INTO pages (title, meta) VALUES ('t', '{"a": "x\\u0000y"}');"""
        ),
        _page_map({"payload.v": {"column": "meta", "path": "a"}}),
        True,
    ),
    "a translated JSON column whose fallback sees a JSON null": (
        _pages(
            "meta jsonb, meta_uk jsonb",
            """INSERT INTO pages (title, meta, meta_uk) """
            """VALUES ('t', '{"b": "x"}', 'null');""",
        ),
        _page_map(
            {"payload.b": {"column": "meta", "path": "b"}, "payload.m": {"json": "meta"}},
            translations={
                "locales": ["en", "uk"],
                "columns": {"meta": "meta_{locale}"},
                "fallback": True,
            },
        ),
        False,
    ),
    "a key that is not the table's primary key": (
        "CREATE TABLE pages (k int, n int, title text); "
        "INSERT INTO pages VALUES (1, 1, ''), (1, 2, 'a'), (NULL, 3, '');",
        {
            "kinds": {
                "page": {
                    "table": "pages",
                    "primary_key": "k",
                    "external_id": "n",
                    "map": {"payload.title": "title"},
                }
            }
        },
        False,
    ),
    "slugs through a CHAR key the mapper looks up padded": (
        _PRODUCTS + "CREATE TABLE tags (id int PRIMARY KEY, slug text);"
        "CREATE TABLE product_tag (product_sku char(6), tag_id int);"
        "INSERT INTO products (name, sku) VALUES ('A', 'ab'); INSERT INTO tags VALUES (1, 't1');"
        "INSERT INTO product_tag VALUES ('ab', 1);",
        {
            "kinds": {
                "product": {
                    "table": "products",
                    "map": {
                        "payload.name": "name",
                        "payload.tags": {
                            "slugs": "tags",
                            "through": "product_tag",
                            "local_key": "product_sku",
                            "foreign_key": "tag_id",
                            "key": "sku",
                        },
                    },
                }
            }
        },
        False,
    ),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_a_reviewed_edge_case_is_byte_identical_both_ways(
    pg_engine: sa.Engine, tmp_path: Path, case: str
) -> None:
    ddl, document, built_in_sql = _CASES[case]
    with pg_engine.begin() as conn:
        for statement in ddl.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    catalog = parse_config(document, tmp_path / "map.yaml")
    assert set(_planned(pg_engine, catalog).values()) == {built_in_sql}
    _assert_same(*_both_ways(pg_engine, catalog, tmp_path, page_size=2))


def test_a_part_with_text_key_bounds_is_built_by_python(
    pg_engine: sa.Engine, tmp_path: Path
) -> None:
    with pg_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE pages (k text PRIMARY KEY, title text)")
        conn.exec_driver_sql("INSERT INTO pages VALUES ('a', 'A'), ('b', 'B')")
    document = {
        "kinds": {"page": {"table": "pages", "primary_key": "k", "map": {"payload.title": "title"}}}
    }
    catalog = parse_config(document, tmp_path / "map.yaml")
    in_sql, python = _both_ways(pg_engine, catalog, tmp_path, part=(0, ("a", "b")))
    _assert_same(in_sql, python)
    assert in_sql["parts"][0]["lines"] == 1


# --- inline variations whose values PostgreSQL selects ---------------------------------------

_KIDS_DDL = """
CREATE TABLE parents (id integer PRIMARY KEY, name text, updated_at timestamp);
CREATE TABLE kids (
    id integer PRIMARY KEY, parent_id integer, code text, sku text, price numeric,
    options json, options_text text, deleted_at timestamp
);
INSERT INTO parents SELECT n, 'P' || n, now() FROM generate_series(1, 9) AS n;
INSERT INTO kids VALUES
    (1, 1, 'a', 'S"1\\', 10.5, '{"Color": " Red ", "Size": "M"}', NULL, NULL),
    (2, 1, 'b', NULL, 10, '{"Color": "Red", "Size": null, "": "x"}', NULL, NULL),
    (3, 1, 'c', 'é 😀', NULL, '{"Size": "L", "Size": "XL"}', NULL, NULL),
    (4, 2, 'd', 'nested', 1, '{"Color": {"x": 1}}', NULL, NULL),
    (5, 3, 'e', 'nan', 'NaN', '{}', NULL, NULL),
    (6, 4, 'f', 'gone', 1, '{"Color": "Red"}', NULL, '2020-01-01'),
    (7, 5, 'g', 'string', 1, '"{\\"Color\\": \\"Blue\\"}"', NULL, NULL),
    (8, 6, 'h', 'null options', 1, NULL, NULL, NULL),
    (9, 7, '', 'empty id', 1, '{}', NULL, NULL),
    (10, 8, 'i', 'a list', 1, '["Red"]', NULL, NULL),
    (11, 9, 'j', 'text options', 2, NULL, '{"Colour": " Ж "}', NULL)
"""


def _kids_map(options_column: str = "options", **fields: Any) -> dict[str, Any]:
    variations = {
        "table": "kids",
        "foreign_key": "parent_id",
        "options_column": options_column,
        "external_id": "code",
        "deleted_column": "deleted_at",
        "map": {"sku": "sku", "price_amount": {"money": "price"}, "fixed": {"const": 1}, **fields},
    }
    product = {"table": "parents", "map": {"payload.name": "name"}, "variations": variations}
    return {"producer": "shop", "kinds": {"product": product}}


@pytest.fixture
def kids_shop(pg_engine: sa.Engine) -> sa.Engine:
    with pg_engine.begin() as conn:
        for statement in _KIDS_DDL.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    return pg_engine


def _children(engine: sa.Engine, catalog: CatalogConfig) -> Any:
    mapper = mapping.compile_mappers(catalog, engine)["product"]
    with engine.connect() as conn:
        relations = pushdown.compile_plan(mapper, conn).relations
    assert relations is not None
    return relations.children


@pytest.mark.parametrize("options_column", ["options", "options_text"])
def test_inline_variations_selected_by_postgresql_are_byte_identical_both_ways(
    kids_shop: sa.Engine, tmp_path: Path, options_column: str
) -> None:
    catalog = parse_config(_kids_map(options_column), tmp_path / "map.yaml")
    assert _children(kids_shop, catalog) is not None  # the entries' values came from SQL
    in_sql, python = _both_ways(kids_shop, catalog, tmp_path, page_size=3)
    _assert_same(in_sql, python)
    lines = _staged(in_sql["parts"][0]["uri"])
    assert any(b'"variant_axes":' in line for line in lines)
    assert in_sql["parts"][0]["failures"]["count"] > 0  # nested options, NaN, empty id...


def test_inline_variations_with_a_python_only_value_are_built_by_the_mapper(
    kids_shop: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = parse_config(_kids_map(text={"html_text": "sku"}), tmp_path / "map.yaml")
    with caplog.at_level("INFO", logger="catalog_sync.pushdown"):
        assert _children(kids_shop, catalog) is None
    assert "inline variations of product built in Python" in caplog.text
    _assert_same(*_both_ways(kids_shop, catalog, tmp_path, page_size=3))
