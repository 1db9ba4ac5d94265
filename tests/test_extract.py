"""Windows, keyset paging, soft deletes and snapshots on SQLite, PostgreSQL and MariaDB.

The kinds here map small test tables with the real entity-map engine (config + mapping),
so what is checked is exactly what the DAG tasks run.
"""

from __future__ import annotations

import datetime as dt
import gc
import gzip
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from catalog_sync import demo_shop, extract, protocol, staging
from catalog_sync.config import CatalogConfig, SyncSettings, load_config, parse_config
from catalog_sync.errors import ConfigurationError
from catalog_sync.extract import Window
from catalog_sync.mapping import Deletion, Entity, MappingFailure
from catalog_sync.source import create_source_engine, database_now

T0 = dt.datetime(2024, 5, 1, 12, 0, 0)
NOW_SQL = {
    "postgresql": "now() AT TIME ZONE 'UTC'",
    "mysql": "UTC_TIMESTAMP(6)",
    "mariadb": "UTC_TIMESTAMP(6)",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


def _table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", demo_shop.Id, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("updated_at", demo_shop.Stamp, nullable=True),
        sa.Column("deleted_at", demo_shop.Stamp, nullable=True),
    )


def _kind(table: str) -> dict[str, Any]:
    return {
        "table": table,
        "primary_key": "id",
        "watermark": "updated_at",
        "deleted_column": "deleted_at",
        "map": {"payload.name": "name"},
    }


@pytest.fixture
def shop(database_url: str, tmp_path: Path) -> Iterator[tuple[sa.Engine, dict[str, sa.Table]]]:
    """Two tables (`items` -> kind tag, `groups` -> kind category) on a fresh database."""
    engine = create_source_engine(database_url)
    metadata = sa.MetaData()
    tables = {"items": _table(metadata, "items"), "groups": _table(metadata, "groups")}
    metadata.create_all(engine)
    yield engine, tables
    engine.dispose()


def _catalog(tmp_path: Path, **sync: int) -> CatalogConfig:
    document = {
        "sync": {"page_size": 997, "safety_lag_seconds": 0, "overlap_seconds": 300, **sync},
        "kinds": {"tag": _kind("items"), "category": _kind("groups")},
    }
    return parse_config(document, tmp_path / "map.yaml")


def _insert(engine: sa.Engine, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """executemany compiles one INSERT from the first row: give every row every column."""
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"deleted_at": None, **row} for row in rows])


def _stamp_now(conn: sa.Connection, table: sa.Table, row_id: int) -> None:
    """Insert a row stamped by the database clock, as an application would."""
    conn.execute(
        sa.text(
            f"INSERT INTO {table.name} (id, name, updated_at) "
            f"VALUES (:id, :name, {NOW_SQL[conn.dialect.name]})"
        ),
        {"id": row_id, "name": f"written {row_id}"},
    )


def _changes(engine: sa.Engine, catalog: CatalogConfig, kind: str, window: Window) -> list[Any]:
    mappers = extract.prepare(engine, catalog)
    with engine.connect() as conn:
        return list(extract.iter_changes(conn, catalog, mappers[kind], window))


def _ids(items: list[Any], cls: type = Entity) -> list[str]:
    return [item.external_id for item in items if isinstance(item, cls)]


# --- windows -------------------------------------------------------------------------------


def test_window_high_is_database_clock_minus_lag_and_low_is_watermark_minus_overlap(
    shop: tuple[sa.Engine, dict[str, sa.Table]],
) -> None:
    engine, _ = shop
    settings = SyncSettings(page_size=10, safety_lag_seconds=5, overlap_seconds=300)
    watermark = dt.datetime(2024, 1, 1, 0, 0, 0, tzinfo=dt.UTC)
    with engine.connect() as conn:
        before = database_now(conn)
        window = extract.plan_window(conn, watermark, settings)
        after = database_now(conn)
    assert before - dt.timedelta(seconds=5) <= window.high <= after - dt.timedelta(seconds=5)
    assert window.low == dt.datetime(2023, 12, 31, 23, 55, 0)
    assert Window.from_dict(window.to_dict()) == window


def test_ties_on_one_timestamp_are_all_delivered_once(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    _insert(
        engine,
        tables["items"],
        [{"id": i, "name": f"n{i}", "updated_at": T0} for i in range(1, 10_001)],
    )
    items = _changes(engine, _catalog(tmp_path), "tag", Window(T0, T0 + dt.timedelta(seconds=1)))
    ids = _ids(items)
    assert len(ids) == 10_000
    assert set(ids) == {f"laravel:tag:{i}" for i in range(1, 10_001)}


def test_window_bounds_are_low_inclusive_high_exclusive(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    stamps = {
        1: T0 - dt.timedelta(microseconds=1),
        2: T0,
        3: T0 + dt.timedelta(seconds=9),
        4: T0 + dt.timedelta(seconds=10),
    }
    _insert(
        engine,
        tables["items"],
        [{"id": i, "name": "n", "updated_at": s} for i, s in stamps.items()],
    )
    items = _changes(engine, _catalog(tmp_path), "tag", Window(T0, T0 + dt.timedelta(seconds=10)))
    assert _ids(items) == ["laravel:tag:2", "laravel:tag:3"]


def test_first_run_delivers_everything_below_high(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    old = dt.datetime(2001, 1, 1)
    _insert(
        engine,
        tables["items"],
        [{"id": 1, "name": "old", "updated_at": old}, {"id": 2, "name": "new", "updated_at": T0}],
    )
    items = _changes(engine, _catalog(tmp_path), "tag", Window(None, T0))
    assert _ids(items) == ["laravel:tag:1"]


def test_soft_deleted_rows_become_deletes_in_the_window(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    _insert(
        engine,
        tables["items"],
        [
            {"id": 1, "name": "live", "updated_at": T0},
            {"id": 2, "name": "gone", "updated_at": T0, "deleted_at": T0},
        ],
    )
    items = _changes(engine, _catalog(tmp_path), "tag", Window(T0, T0 + dt.timedelta(seconds=1)))
    assert _ids(items, Deletion) == ["laravel:tag:2"]
    assert _ids(items, Entity) == ["laravel:tag:1"]
    delete = next(item for item in items if isinstance(item, Deletion)).delete_op()
    assert delete == {"type": "delete", "entity_kind": "tag", "external_id": "laravel:tag:2"}


def test_deleted_when_predicate_turns_rows_into_deletes(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    kind = {**_kind("items"), "deleted_column": None, "deleted_when": "name = 'hidden'"}
    catalog = parse_config({"kinds": {"tag": kind}}, tmp_path / "map.yaml")
    _insert(
        engine,
        tables["items"],
        [
            {"id": 1, "name": "shown", "updated_at": T0},
            {"id": 2, "name": "hidden", "updated_at": T0},
        ],
    )
    items = _changes(engine, catalog, "tag", Window(T0, T0 + dt.timedelta(seconds=1)))
    assert (_ids(items, Deletion), _ids(items, Entity)) == (["laravel:tag:2"], ["laravel:tag:1"])
    manifest = extract.extract_snapshot(engine, catalog, run_key="r", root=tmp_path.as_uri())
    assert _snapshot_ids(manifest)["tag"] == {"laravel:tag:1"}


def test_select_kind_is_paged_like_a_table(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    kind = {**_kind("items"), "table": None, "select": "SELECT * FROM items WHERE id <= 2500"}
    catalog = parse_config(
        {"sync": {"page_size": 100}, "kinds": {"tag": kind}}, tmp_path / "m.yaml"
    )
    _insert(
        engine,
        tables["items"],
        [
            {"id": i, "name": "n", "updated_at": T0 + dt.timedelta(seconds=i % 7)}
            for i in range(1, 3001)
        ],
    )
    items = _changes(engine, catalog, "tag", Window(T0, T0 + dt.timedelta(days=1)))
    assert sorted(_ids(items)) == sorted(f"laravel:tag:{i}" for i in range(1, 2501))


def test_kind_without_watermark_is_extracted_whole_every_delta(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    kind = {**_kind("items"), "watermark": None}
    catalog = parse_config({"sync": {"page_size": 2}, "kinds": {"tag": kind}}, tmp_path / "m.yaml")
    old = dt.datetime(2001, 1, 1)
    _insert(
        engine,
        tables["items"],
        [
            {"id": 1, "name": "a", "updated_at": old},
            {"id": 2, "name": "b", "updated_at": None},
            {"id": 3, "name": "c", "updated_at": old, "deleted_at": old},
            {"id": 4, "name": "d", "updated_at": old},
        ],
    )
    items = _changes(engine, catalog, "tag", Window(T0, T0 + dt.timedelta(seconds=1)))
    assert _ids(items) == ["laravel:tag:1", "laravel:tag:2", "laravel:tag:4"]
    assert _ids(items, Deletion) == ["laravel:tag:3"]


def test_a_window_is_empty_exactly_when_its_extract_finds_nothing(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    _insert(
        engine,
        tables["items"],
        [
            {"id": 1, "name": "live", "updated_at": T0},
            {
                "id": 2,
                "name": "gone",
                "updated_at": T0 + dt.timedelta(seconds=20),
                "deleted_at": T0,
            },
        ],
    )
    catalog = _catalog(tmp_path)
    config = catalog.kinds["tag"]
    windows = [
        Window(T0 - dt.timedelta(seconds=10), T0),  # ends before the live row: empty
        Window(T0, T0 + dt.timedelta(seconds=1)),  # the live row
        Window(T0 + dt.timedelta(seconds=20), T0 + dt.timedelta(seconds=21)),  # the delete
        Window(T0 + dt.timedelta(seconds=30), T0 + dt.timedelta(seconds=40)),  # empty
    ]
    with engine.connect() as conn:
        empty = [extract.window_is_empty(conn, config, window) for window in windows]
    found = [_changes(engine, catalog, "tag", window) for window in windows]
    assert empty == [True, False, False, True]
    assert [not items for items in found] == empty


def test_a_first_run_or_a_kind_without_watermark_is_never_called_empty(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    """Both read every row (a first run warns about NULL watermarks too): no shortcut."""
    engine, _ = shop  # no rows at all
    config = _catalog(tmp_path).kinds["tag"]
    unwatermarked = parse_config(
        {"kinds": {"tag": {**_kind("items"), "watermark": None}}}, tmp_path / "m.yaml"
    ).kinds["tag"]
    later = Window(T0, T0 + dt.timedelta(seconds=1))
    with engine.connect() as conn:
        assert extract.window_is_empty(conn, config, later)
        assert not extract.window_is_empty(conn, config, Window(None, T0))
        assert not extract.window_is_empty(conn, unwatermarked, later)


def test_late_commit_is_delivered_by_the_next_window(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    """A second connection holds an open transaction whose row is stamped before `high`."""
    engine, tables = shop
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer and no concurrent open write transaction to race")
    catalog = _catalog(tmp_path)
    writer = engine.connect()
    try:
        _stamp_now(writer, tables["items"], 1)  # stamped now, not committed yet
        with engine.connect() as conn:
            first = extract.plan_window(conn, None, catalog.sync)
        stamp_row = "SELECT updated_at FROM items WHERE id = 1"
        assert writer.execute(sa.text(stamp_row)).scalar_one() < first.high
        assert _ids(_changes(engine, catalog, "tag", first)) == []
        writer.commit()
    finally:
        writer.close()
    with engine.connect() as conn:
        second = extract.plan_window(conn, first.high, catalog.sync)
    assert _ids(_changes(engine, catalog, "tag", second)) == ["laravel:tag:1"]


def test_bad_map_fails_before_anything_is_extracted(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, _ = shop
    document = {"kinds": {"tag": {**_kind("items"), "map": {"payload.name": "nmae"}}}}
    catalog = parse_config(document, tmp_path / "map.yaml")
    root = (tmp_path / "staging").as_uri()
    with pytest.raises(ConfigurationError, match="nmae"):
        extract.extract_snapshot(engine, catalog, run_key="r", root=root)
    assert not (tmp_path / "staging").exists()


# --- snapshots -----------------------------------------------------------------------------


def _snapshot_ids(manifest: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for part in manifest["parts"]:
        lines = staging.iter_lines(part["uri"])
        found[part["kind"]] = {protocol.loads(line)["external_id"] for line in lines}
    return found


def test_snapshot_and_next_window_lose_no_concurrent_write(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    """Writes committed while the snapshot streams are in it or in the next window.

    Overlap 0 makes the test sharp: it fails if the snapshot's point were taken late.
    """
    engine, tables = shop
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:  # WAL: a writer may commit while a reader reads
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    catalog = _catalog(tmp_path, page_size=50, overlap_seconds=0)
    for name in ("items", "groups"):
        _insert(
            engine, tables[name], [{"id": i, "name": "n", "updated_at": T0} for i in range(1, 301)]
        )
    mappers = extract.prepare(engine, catalog)
    written = []
    snapshot: dict[str, set[str]] = {"tag": set(), "category": set()}
    with extract.snapshot_transaction(engine) as (conn, point):
        for kind in ("tag", "category"):
            for n, item in enumerate(extract.iter_snapshot(conn, catalog, mappers[kind])):
                snapshot[kind].add(item.external_id)
                if kind == "tag" and n in (10, 120):  # a writer commits mid-snapshot
                    # SQLite compares stamps as text at millisecond precision: a row of
                    # the point's own millisecond ('..01.123') sorts before the bound
                    # ('..01.123000'). With overlap 0 only; real overlaps cover it.
                    time.sleep(0.002)
                    with engine.begin() as other:
                        for table in ("items", "groups"):
                            row_id = 1000 + n
                            _stamp_now(other, tables[table], row_id)
                            written.append((table, row_id))
    with engine.connect() as conn:
        window = extract.plan_window(conn, point, catalog.sync)
    delivered = {kind: set(snapshot[kind]) for kind in snapshot}
    for kind in delivered:
        delivered[kind] |= set(_ids(_changes(engine, catalog, kind, window)))
    for table, row_id in written:
        kind = "tag" if table == "items" else "category"
        assert f"laravel:{kind}:{row_id}" in delivered[kind]


def test_snapshot_sees_one_point_in_time_across_kinds(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    catalog = _catalog(tmp_path, page_size=50)
    for name in ("items", "groups"):
        _insert(
            engine, tables[name], [{"id": i, "name": "n", "updated_at": T0} for i in range(1, 101)]
        )
    mappers = extract.prepare(engine, catalog)
    with extract.snapshot_transaction(engine) as (conn, _point):
        tags = list(extract.iter_snapshot(conn, catalog, mappers["tag"]))
        with engine.begin() as other:
            _stamp_now(other, tables["groups"], 5000)
            other.execute(sa.text("UPDATE groups SET deleted_at = updated_at WHERE id = 1"))
        categories = list(extract.iter_snapshot(conn, catalog, mappers["category"]))
    assert len(tags) == 100
    assert _ids(categories) == [f"laravel:category:{i}" for i in range(1, 101)]


def test_two_snapshots_of_an_unchanged_database_are_byte_identical(
    database_url: str, tmp_path: Path
) -> None:
    engine = create_source_engine(database_url)
    demo_shop.create_demo_shop(engine, 150, seed=2)
    catalog = load_config()
    mappers = extract.prepare(engine, catalog)
    runs = []
    for run in ("one", "two"):
        root = (tmp_path / run).as_uri()
        runs.append(
            extract.extract_snapshot(engine, catalog, run_key="r", root=root, mappers=mappers)
        )
    engine.dispose()
    assert [p["sha256"] for p in runs[0]["parts"]] == [p["sha256"] for p in runs[1]["parts"]]
    for part in runs[0]["parts"]:
        data = Path(part["uri"].removeprefix("file://")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
    assert runs[0]["counts"]["product"] > 150  # translations fan out


def test_snapshot_parts_concatenate_into_one_valid_upload(sqlite_url: str, tmp_path: Path) -> None:
    engine = create_source_engine(sqlite_url)
    demo_shop.create_demo_shop(engine, 40, seed=4)
    catalog = load_config()
    manifest = extract.extract_snapshot(engine, catalog, run_key="r", root=tmp_path.as_uri())
    upload = staging.assemble_snapshot(manifest["parts"], (tmp_path / "upload.gz").as_uri())
    joined = Path(upload["uri"].removeprefix("file://")).read_bytes()
    assert (len(joined), hashlib.sha256(joined).hexdigest()) == (upload["bytes"], upload["sha256"])
    lines = gzip.decompress(joined).splitlines()
    assert len(lines) == upload["lines"]
    kinds = [protocol.loads(line)["kind"] for line in lines]
    assert {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)} == manifest["counts"]
    first = protocol.loads(lines[0])
    assert list(first)[:3] == ["kind", "external_id", "payload"]
    assert manifest["point"].endswith("+00:00")


# --- custom sources ------------------------------------------------------------------------


class ListSource:
    """A custom source of fixed entities (named by dotted path in the map below)."""

    def __init__(self, config: Any, catalog: CatalogConfig) -> None:
        self.kind = config.kind
        self.count = int(config.options["count"])

    def changes(self, conn: sa.Connection, low: dt.datetime, high: dt.datetime) -> Iterator[Any]:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        yield Entity(self.kind, f"laravel:{self.kind}:changed", {"title": f"{low} {high}"})
        yield Deletion(self.kind, f"laravel:{self.kind}:gone")
        yield MappingFailure(self.kind, 7, None, "cannot express item 7")

    def snapshot(self, conn: sa.Connection) -> Iterator[Any]:
        for i in range(self.count):
            yield Entity(self.kind, f"laravel:{self.kind}:{i}", {"title": f"item {i}"})


def _custom_catalog(tmp_path: Path) -> CatalogConfig:
    document = {
        "kinds": {
            "cpt": {"source": f"{__name__}.ListSource", "options": {"count": 3}},
            "tag": _kind("items"),
        }
    }
    return parse_config(document, tmp_path / "map.yaml")


def test_custom_source_plugs_into_the_snapshot(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, _ = shop
    manifest = extract.extract_snapshot(
        engine, _custom_catalog(tmp_path), run_key="r", root=tmp_path.as_uri()
    )
    assert manifest["counts"] == {"cpt": 3}
    assert _snapshot_ids(manifest)["cpt"] == {f"laravel:cpt:{i}" for i in range(3)}


def test_custom_source_plugs_into_the_delta(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, _ = shop
    window = Window(None, T0)
    manifest = extract.extract_delta(
        engine, _custom_catalog(tmp_path), "cpt", window, run_key="r", root=tmp_path.as_uri()
    )
    assert (manifest["upserts"], manifest["deletes"], manifest["failures"]["count"]) == (1, 1, 1)
    ((_batch_id, body),) = staging.iter_batches(manifest["uri"])
    events = protocol.loads(body)["events"]
    assert [op["type"] for op in events] == ["upsert", "delete"]
    assert events[0]["payload"]["title"] == "1970-01-01 00:00:00 2024-05-01 12:00:00"


def test_a_custom_source_or_a_static_kind_is_never_called_empty(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    """Only their own code knows what changed: the extract must ask it."""
    engine, _ = shop
    custom = _custom_catalog(tmp_path).kinds["cpt"]
    static = load_config().kinds["host_profile"]
    assert static.is_static
    window = Window(T0, T0 + dt.timedelta(seconds=1))
    with engine.connect() as conn:
        assert not extract.window_is_empty(conn, custom, window)
        assert not extract.window_is_empty(conn, static, window)


class NoSnapshotSource:
    def __init__(self, config: Any, catalog: CatalogConfig) -> None:
        pass

    def changes(self, conn: sa.Connection, low: dt.datetime, high: dt.datetime) -> Iterator[Any]:
        return iter(())


def test_custom_source_without_snapshot_is_a_configuration_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = create_source_engine(sqlite_url)
    document = {"kinds": {"cpt": {"source": f"{__name__}.NoSnapshotSource"}}}
    catalog = parse_config(document, tmp_path / "map.yaml")
    with pytest.raises(ConfigurationError, match=r"kinds\.cpt\.source.*no snapshot method"):
        extract.extract_snapshot(engine, catalog, run_key="r", root=tmp_path.as_uri())


# --- snapshot parts (a big kind split by primary key across extract tasks) ------------------


def _ranges(engine: sa.Engine, catalog: CatalogConfig, kind: str, **split: int) -> list[Any]:
    with engine.connect() as conn:
        return extract.snapshot_ranges(conn, catalog.kinds[kind], **split)


def test_a_kind_too_small_for_two_parts_stays_whole(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    _insert(engine, tables["items"], [{"id": i, "name": "n"} for i in range(1, 20)])
    catalog = _catalog(tmp_path)
    assert _ranges(engine, catalog, "tag", parts=4, min_rows=10) == [extract.WHOLE]
    assert _ranges(engine, catalog, "tag", parts=1, min_rows=1) == [extract.WHOLE]
    assert _ranges(engine, catalog, "category", parts=4, min_rows=1) == [extract.WHOLE]  # empty


def test_a_big_kind_splits_into_contiguous_key_ranges_open_at_both_ends(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    _insert(engine, tables["items"], [{"id": i, "name": "n"} for i in range(101, 401)])
    ranges = _ranges(engine, _catalog(tmp_path), "tag", parts=3, min_rows=50)
    assert ranges == [(None, 201), (201, 301), (301, None)]


def test_a_text_primary_key_is_never_split(sqlite_url: str, tmp_path: Path) -> None:
    engine = create_source_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE notes (code TEXT PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql("INSERT INTO notes VALUES ('a', 'x'), ('b', 'y'), ('c', 'z')")
    kind = {"table": "notes", "primary_key": "code", "map": {"payload.name": "name"}}
    catalog = parse_config({"kinds": {"tag": kind}}, tmp_path / "map.yaml")
    assert _ranges(engine, catalog, "tag", parts=3, min_rows=1) == [extract.WHOLE]
    engine.dispose()


def test_the_parts_of_a_split_kind_hold_exactly_the_whole_snapshot_in_order(
    database_url: str, tmp_path: Path
) -> None:
    engine = create_source_engine(database_url)
    demo_shop.create_demo_shop(engine, 150, seed=3)
    catalog = load_config()
    mappers = extract.prepare(engine, catalog)
    ranges = _ranges(engine, catalog, "product", parts=3, min_rows=20)
    assert len(ranges) == 3

    def lines(manifest: dict[str, Any]) -> list[bytes]:
        return [line for part in manifest["parts"] for line in staging.iter_lines(part["uri"])]

    common = {"run_key": "r", "root": tmp_path.as_uri(), "mappers": mappers, "page_size": 7}
    whole = extract.extract_snapshot(engine, catalog, kinds=["product"], **common)
    parts = [
        extract.extract_snapshot(engine, catalog, kinds=["product"], part=(i, r), **common)
        for i, r in enumerate(ranges)
    ]
    engine.dispose()
    assert len({part["parts"][0]["uri"] for part in parts}) == 3  # a file per part
    assert all(part["parts"][0]["lines"] for part in parts)
    assert [line for part in parts for line in lines(part)] == lines(whole)


def test_a_row_inserted_after_planning_lands_in_the_open_last_part(
    shop: tuple[sa.Engine, dict[str, sa.Table]], tmp_path: Path
) -> None:
    engine, tables = shop
    _insert(engine, tables["items"], [{"id": i, "name": "n"} for i in range(1, 101)])
    catalog = _catalog(tmp_path)
    ranges = _ranges(engine, catalog, "tag", parts=2, min_rows=10)
    _insert(engine, tables["items"], [{"id": 5000, "name": "late"}])
    mappers = extract.prepare(engine, catalog)
    with extract.snapshot_transaction(engine) as (conn, _point):
        seen = [
            _ids(list(extract.iter_snapshot(conn, catalog, mappers["tag"], pk_range=r)))
            for r in ranges
        ]
    assert "laravel:tag:5000" in seen[-1]
    every = [external_id for part in seen for external_id in part]
    assert sorted(every) == sorted(f"laravel:tag:{i}" for i in [*range(1, 101), 5000])


def test_the_cycle_collector_runs_rarer_while_a_snapshot_streams_then_as_before() -> None:
    before = gc.get_threshold()
    with extract._rarer_collections():
        assert gc.get_threshold()[0] == max(before[0], extract.SNAPSHOT_GC_THRESHOLD)
        assert gc.get_threshold()[1:] == before[1:]
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), extract._rarer_collections():
        raise RuntimeError("a failed snapshot restores it too")
    assert gc.get_threshold() == before
