"""Extraction: lossless delta windows, consistent snapshots, keyset paging.

The delta window (design notes, "The delta window"):
- `high` = the source database's clock minus `sync.safety_lag_seconds`;
- `low` = the kind's watermark minus `sync.overlap_seconds` (no lower bound on a first run);
- rows with `low <= watermark < high`, paged by a keyset on (watermark, primary key),
  never OFFSET, so 10,000 rows sharing one timestamp page correctly;
- soft-deleted rows of the window become delete ops (`KindMapper.deletions`).
A row stamped before `high` but committed after the extraction read the window (a late
commit) is picked up by the next window, because its `low` is the previous `high`
minus the overlap: the overlap must exceed the longest write transaction.

Time zones: windows are naive UTC datetimes. The source engine pins the session time
zone to UTC (see `catalog_sync.source`), so `timestamptz`/`TIMESTAMP` columns compare
correctly; naive watermark columns (`timestamp`, `DATETIME`, SQLite text) are assumed to
hold UTC, which is Laravel's default. A shop that stores local time in naive columns
must widen `overlap_seconds` by its UTC offset or its windows lag by that offset.
Rows whose watermark is NULL are never in a delta window (they reach the receiver
through the full snapshot).

A full snapshot reads every kind in ONE transaction that sees one point in time
(PostgreSQL REPEATABLE READ, MariaDB/MySQL a consistent snapshot, SQLite a read
transaction). Its point in time, the database clock read before the snapshot is
taken, becomes the watermark: a row committed after the snapshot carries a stamp
after `point - overlap`, so the next window delivers it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from catalog_sync import mapping, pushdown, staging
from catalog_sync.config import (
    CatalogConfig,
    KindConfig,
    MembershipConfig,
    RouteFilter,
    SyncSettings,
    TargetConfig,
)
from catalog_sync.errors import CatalogSyncError
from catalog_sync.mapping import Deletion, Entity, KindMapper, MappingFailure
from catalog_sync.source import database_now
from catalog_sync.sources import FIRST_RUN_LOW, load_source

log = logging.getLogger(__name__)

#: Name of the computed "is this row deleted" column added to every extraction query.
DELETED_FLAG = "_cs_deleted"

Item = Entity | Deletion | MappingFailure
_T = TypeVar("_T")
#: A part of a kind's snapshot: `low <= primary key < high`, None for an open end.
PkRange = tuple[Any, Any]
WHOLE: PkRange = (None, None)


def utc_naive(value: dt.datetime) -> dt.datetime:
    """Aware datetimes to naive UTC; naive ones are taken as UTC already."""
    if value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def to_iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 with an explicit UTC offset, for XCom and the state database."""
    return None if value is None else utc_naive(value).replace(tzinfo=dt.UTC).isoformat()


def from_iso(value: str | None) -> dt.datetime | None:
    return None if value is None else utc_naive(dt.datetime.fromisoformat(value))


@dataclass(frozen=True)
class Window:
    """`low <= watermark < high`; `low` None is a first run (everything below `high`)."""

    low: dt.datetime | None
    high: dt.datetime

    @property
    def key(self) -> str:
        """Identifies the window in batch ids: the same window gives the same ids."""
        return f"{to_iso(self.low) or '-'}..{to_iso(self.high)}"

    def to_dict(self) -> dict[str, str | None]:
        return {"low": to_iso(self.low), "high": to_iso(self.high)}

    @classmethod
    def from_dict(cls, data: Mapping[str, str | None]) -> Window:
        high = from_iso(data["high"])
        assert high is not None
        return cls(low=from_iso(data.get("low")), high=high)


def plan_window(
    conn: sa.Connection, watermark: dt.datetime | None, settings: SyncSettings
) -> Window:
    """Fix a window from the database clock: see the module docstring."""
    high = database_now(conn) - dt.timedelta(seconds=settings.safety_lag_seconds)
    low = None
    if watermark is not None:
        low = utc_naive(watermark) - dt.timedelta(seconds=settings.overlap_seconds)
    return Window(low=low, high=high)


def prepare(engine: sa.Engine, catalog: CatalogConfig) -> dict[str, KindMapper]:
    """Compile every kind and map a sample row each: a bad map fails before extracting."""
    mappers = mapping.compile_mappers(catalog, engine)
    mapping.check_samples(catalog, engine, mappers)
    for mapper in mappers.values():
        if mapper.config.source is not None:  # a broken custom source fails here too
            load_source(mapper.config, catalog, mapper)
    return mappers


# --- queries -------------------------------------------------------------------------------


class _KindQuery:
    """SELECT statements over a kind's table or select, aliased `src`.

    With a target's route (`config.route`), a row the target is not routed is flagged
    like a deleted one: a delta sends it as a delete, a snapshot leaves it out.
    """

    def __init__(self, dialect: sa.Dialect, config: KindConfig) -> None:
        quote = dialect.identifier_preparer.quote
        self.config = config
        if config.table is not None:
            self.source = sa.text(f"{quote(config.table)} AS src")
        else:
            self.source = sa.text(f"({config.select}) AS src")
        self.pk = sa.literal_column(f"src.{quote(config.primary_key)}")
        self.watermark = (
            sa.literal_column(f"src.{quote(config.watermark)}") if config.watermark else None
        )
        deleted = None
        if config.deleted_column:
            deleted = f"src.{quote(config.deleted_column)} IS NOT NULL"
        elif config.deleted_when:
            deleted = config.deleted_when
        self.membership = None
        member = None
        if config.route is not None:
            member, self.membership = _route_predicate(config.route, self.pk)
        # CASE turns a NULL predicate into "not deleted" and a NULL membership into "not a
        # member" (a predicate on a NULL column routes nothing).
        one, zero = sa.literal_column("1"), sa.literal_column("0")
        whens: list[tuple[Any, Any]] = []
        if deleted:
            whens.append((sa.literal_column(f"({deleted})", sa.Boolean), one))
        if member is not None:
            whens.append((member, zero))
        self.flag = None
        if whens:
            self.flag = sa.case(*whens, else_=one if member is not None else zero)

    def membership_page(self, window: Window, after: Any, limit: int) -> sa.Select | None:
        """Rows outside `window` whose membership rows changed in it, keyset on the primary key.

        None when nothing can be found this way (no membership watermark, or a first run,
        whose window already holds every row).
        """
        member = self.membership
        if member is None or window.low is None:
            return None
        table, config = member
        changed = (
            sa.exists()
            .where(table.c[config.local_key] == self.pk)
            .where(table.c[config.watermark] >= sa.bindparam("m_low", window.low, sa.DateTime))
            .where(table.c[config.watermark] < sa.bindparam("m_high", window.high, sa.DateTime))
        )
        stmt = self.select(with_flag=True).where(changed)
        if self.watermark is not None:  # the window's own pages hold those rows already
            wm = self.watermark
            stmt = stmt.where(
                sa.or_(
                    wm.is_(None),
                    wm < sa.bindparam("low", window.low, sa.DateTime),
                    wm >= sa.bindparam("high", window.high, sa.DateTime),
                )
            )
        if after is not None:
            stmt = stmt.where(self.pk > sa.bindparam("after_pk", after))
        return stmt.order_by(self.pk).limit(limit)

    def select(self, *, with_flag: bool) -> sa.Select:
        columns: list[Any] = [sa.literal_column("src.*")]
        if with_flag and self.flag is not None:
            columns.append(self.flag.label(DELETED_FLAG))
        return sa.select(*columns).select_from(self.source)

    def window_page(
        self, window: Window | None, after: tuple[Any, Any] | None, limit: int
    ) -> sa.Select:
        """One keyset page of a window (or of the whole kind when it has no watermark)."""
        stmt = self.select(with_flag=True)
        if self.watermark is None:
            if after is not None:
                stmt = stmt.where(self.pk > sa.bindparam("after_pk", after[1]))
            return stmt.order_by(self.pk).limit(limit)
        wm = self.watermark
        if window is not None:
            stmt = stmt.where(wm < sa.bindparam("high", window.high, type_=sa.DateTime))
            if window.low is not None:
                stmt = stmt.where(wm >= sa.bindparam("low", window.low, type_=sa.DateTime))
        if after is not None:
            # `wm >= a AND (wm > a OR pk > b)`: a range scan on the (wm, pk) index everywhere
            # (row-value comparisons are not optimized by every MariaDB version).
            after_wm = sa.bindparam("after_wm", after[0])
            stmt = stmt.where(
                wm >= after_wm, sa.or_(wm > after_wm, self.pk > sa.bindparam("after_pk", after[1]))
            )
        return stmt.order_by(wm, self.pk).limit(limit)

    def _live(self, stmt: sa.Select, pk_range: PkRange) -> sa.Select:
        if self.flag is not None:
            stmt = stmt.where(self.flag == 0)
        low, high = pk_range
        if low is not None:
            stmt = stmt.where(self.pk >= sa.bindparam("range_low", low))
        if high is not None:
            stmt = stmt.where(self.pk < sa.bindparam("range_high", high))
        return stmt

    def live_by_pk(
        self, after: Any = None, limit: int | None = None, pk_range: PkRange = WHOLE
    ) -> sa.Select:
        stmt = self._live(self.select(with_flag=False), pk_range)
        if after is not None:
            stmt = stmt.where(self.pk > sa.bindparam("after_pk", after))
        stmt = stmt.order_by(self.pk)
        return stmt.limit(limit) if limit is not None else stmt

    def live_extent(self) -> sa.Select:
        """Count, lowest and highest primary key of the live rows."""
        columns = (sa.func.count(), sa.func.min(self.pk), sa.func.max(self.pk))
        return self._live(sa.select(*columns).select_from(self.source), WHOLE)


def iter_window_pages(
    conn: sa.Connection, config: KindConfig, window: Window, page_size: int
) -> Iterator[Sequence[sa.RowMapping]]:
    """Keyset pages of the rows in `window`, deleted (or no longer routed) ones flagged.

    Then, for a target routed by a membership table, the rows whose membership rows
    changed in the window: they joined or left the target.
    """
    query = _KindQuery(conn.dialect, config)
    if window.low is None and config.watermark is not None:
        _warn_null_watermarks(conn, query)
    after: tuple[Any, Any] | None = None
    while True:
        rows = conn.execute(query.window_page(window, after, page_size)).mappings().all()
        if rows:
            yield rows
        if len(rows) < page_size:
            break
        last = rows[-1]
        after = (last[config.watermark] if config.watermark else None, last[config.primary_key])
    after_pk = None
    while (stmt := query.membership_page(window, after_pk, page_size)) is not None:
        rows = conn.execute(stmt).mappings().all()
        if rows:
            yield rows
        if len(rows) < page_size:
            return
        after_pk = rows[-1][config.primary_key]


def window_is_empty(conn: sa.Connection, config: KindConfig, window: Window) -> bool:
    """The kind has certainly nothing to send in `window` (the extract would find no row).

    Asks the window's own queries for one row. Only kinds read by those queries can be
    certain: a static kind or a custom source is always extracted, and a first run or a
    kind without a watermark reads every row.
    """
    if config.is_static or config.source is not None:
        return False
    if config.watermark is None or window.low is None:
        return False
    query = _KindQuery(conn.dialect, config)
    # Unordered: any row will do, so no sort where the watermark has no index.
    if conn.execute(query.window_page(window, None, 1).order_by(None)).first() is not None:
        return False
    members = query.membership_page(window, None, 1)
    return members is None or conn.execute(members.order_by(None)).first() is None


def _warn_null_watermarks(conn: sa.Connection, query: _KindQuery) -> None:
    """A first run skips rows without a watermark: say so instead of skipping silently."""
    assert query.watermark is not None
    stmt = sa.select(sa.func.count()).select_from(query.source).where(query.watermark.is_(None))
    count = conn.execute(stmt).scalar_one()
    if count:
        log.warning(
            "kind %s: %d row(s) have a NULL %s; delta windows never include them, the next "
            "full snapshot does",
            query.config.kind,
            count,
            query.config.watermark,
        )


def _route_predicate(
    route: RouteFilter, pk: sa.ColumnElement[Any]
) -> tuple[sa.ColumnElement[bool], tuple[sa.TableClause, MembershipConfig] | None]:
    """The SQL for "this row goes to the target", and the membership table when there is one."""
    conditions: list[sa.ColumnElement[bool]] = []
    if route.where is not None:
        conditions.append(sa.literal_column(f"({route.where})", sa.Boolean))
    membership = None
    config = route.membership
    if config is not None:
        names = [config.local_key, config.column, config.watermark, config.deleted_column]
        table = sa.table(
            config.table, *(sa.column(name) for name in dict.fromkeys(n for n in names if n))
        ).alias("cs_member")
        live = (
            sa.exists()
            .where(table.c[config.local_key] == pk)
            .where(table.c[config.column] == sa.literal(config.value))
        )
        if config.deleted_column is not None:
            live = live.where(table.c[config.deleted_column].is_(None))
        conditions.append(live)
        if config.watermark is not None:
            membership = (table, config)
    return sa.and_(*conditions), membership


def check_routes(
    engine: sa.Engine, catalog: CatalogConfig, targets: Sequence[TargetConfig]
) -> None:
    """Run each target's filters once against the live database: a typo fails the plan."""
    with engine.connect() as conn:
        for target in targets:
            routed = catalog.for_target(target)
            for kind in target.filters:
                query = _KindQuery(conn.dialect, routed.kinds[kind])
                try:
                    conn.execute(query.live_by_pk(limit=1)).all()
                except sa.exc.DBAPIError as exc:
                    conn.rollback()
                    first = next(iter(str(exc.orig).strip().splitlines()), "")
                    raise catalog.error(
                        ["targets", target.name, "filters", kind],
                        f"the filter fails on the source database ({type(exc.orig).__name__}: "
                        f"{first})",
                        "fix the predicate or the membership table and columns",
                    ) from None
        conn.rollback()


def snapshot_ranges(
    conn: sa.Connection, config: KindConfig, *, parts: int, min_rows: int
) -> list[PkRange]:
    """Primary-key ranges that split a big kind's snapshot into up to `parts` parts.

    Parts run as separate extract tasks, side by side on the workers' cores: one kind
    is otherwise one Python process, however many cores there are. A part holds at least
    `min_rows` live rows on average (each costs a task and a transaction). Only integer
    keys are split, evenly by value; a gap in the keys only makes parts uneven. The
    first range is open below and the last open above, so a row inserted after
    planning still falls in exactly one part.
    """
    if parts < 2 or config.is_static or config.source is not None:
        return [WHOLE]
    count, low, high = conn.execute(_KindQuery(conn.dialect, config).live_extent()).one()
    if not isinstance(low, int) or not isinstance(high, int) or isinstance(low, bool):
        return [WHOLE]
    n = min(parts, count // max(min_rows, 1), high - low + 1)
    if n < 2:
        return [WHOLE]
    bounds = [low + (high - low + 1) * i // n for i in range(1, n)]
    return list(zip([None, *bounds], [*bounds, None], strict=True))


def iter_live_pages(
    conn: sa.Connection, config: KindConfig, page_size: int, pk_range: PkRange = WHOLE
) -> Iterator[Sequence[sa.RowMapping]]:
    """Every live row by primary key, streamed page by page (snapshots).

    PostgreSQL streams from a server-side cursor (psycopg named cursor) and SQLite from
    its lazy cursor; relation lookups of the mapper can run on the same connection in
    between. A MySQL/MariaDB streaming cursor blocks its connection until exhausted, so
    there each page is its own keyset query: inside the snapshot transaction every page
    sees the same point in time, and memory stays one page either way.
    """
    query = _KindQuery(conn.dialect, config)
    if conn.dialect.name in {"postgresql", "sqlite"}:
        result = conn.execution_options(stream_results=True, yield_per=page_size).execute(
            query.live_by_pk(pk_range=pk_range)
        )
        with result:
            yield from result.mappings().partitions()
        return
    after = None
    while True:
        rows = conn.execute(query.live_by_pk(after, page_size, pk_range)).mappings().all()
        if rows:
            yield rows
        if len(rows) < page_size:
            return
        after = rows[-1][config.primary_key]


# --- items ---------------------------------------------------------------------------------


def iter_changes(
    conn: sa.Connection,
    catalog: CatalogConfig,
    mapper: KindMapper,
    window: Window,
    page_size: int | None = None,
) -> Iterator[Item]:
    """Upserts, deletes and failures of one kind in `window`, in keyset order."""
    config = mapper.config
    page_size = page_size or catalog.sync.page_size
    if config.is_static:
        yield from mapper.static_entities()
        return
    if config.source is not None:
        source = load_source(config, catalog, mapper)
        yield from _from_source(
            config, source.changes(conn, window.low or FIRST_RUN_LOW, window.high)
        )
        return
    for rows in iter_window_pages(conn, config, window, page_size):
        live = [row for row in rows if not row.get(DELETED_FLAG)]
        if len(live) < len(rows):
            yield from mapper.deletions([row for row in rows if row.get(DELETED_FLAG)])
        if live:
            yield from mapper.map_page(conn, live)


def _from_source(config: KindConfig, items: Iterable[Item]) -> Iterator[Item]:
    """A custom source's items; its own failure is named after the kind and the class.

    Not a ConfigurationError: the cause may be passing (the source's API), so Airflow
    retries the task; nothing of the kind is committed meanwhile.
    """
    try:
        yield from items
    except CatalogSyncError:
        raise
    except Exception as exc:
        raise CatalogSyncError(
            f"kinds.{config.kind}.source: {config.source} failed while streaming: "
            f"{type(exc).__name__}: {exc}; fix the class (this kind's watermark stays put)"
        ) from exc


def iter_snapshot(
    conn: sa.Connection,
    catalog: CatalogConfig,
    mapper: KindMapper,
    page_size: int | None = None,
    pk_range: PkRange = WHOLE,
) -> Iterator[Entity | MappingFailure]:
    """Every live entity of one kind (and failures), primary-key order; of `pk_range` only
    when given (`snapshot_ranges`)."""
    config = mapper.config
    page_size = page_size or catalog.sync.page_size
    if pk_range != WHOLE and (config.is_static or config.source is not None):
        raise ValueError(f"kind {config.kind} has no rows to split into key ranges")
    if config.is_static:
        yield from mapper.static_entities()
        return
    if config.source is not None:
        yield from _from_source(config, load_source(config, catalog, mapper).snapshot(conn))
        return
    pages = (
        (rows, mapper.new_context(conn, rows))
        for rows in iter_live_pages(conn, config, page_size, pk_range)
    )
    if conn.dialect.name != "sqlite":  # pysqlite refuses a connection used by another thread
        pages = _read_ahead(pages)
    for rows, ctx in pages:
        yield from mapper.map_rows(rows, ctx)


def iter_snapshot_lines(
    conn: sa.Connection,
    catalog: CatalogConfig,
    mapper: KindMapper,
    page_size: int | None = None,
    pk_range: PkRange = WHOLE,
    *,
    in_sql: bool = True,
) -> Iterator[bytes | MappingFailure]:
    """`iter_snapshot` as encoded NDJSON lines. With `in_sql`, on PostgreSQL the database
    builds them (`pushdown`); both ways give the same bytes."""
    planned = None
    if in_sql and conn.dialect.name == "postgresql":
        planned = _line_plan(conn, mapper, pk_range)
    if planned is None:
        yield from mapping.encoded(iter_snapshot(conn, catalog, mapper, page_size, pk_range))
        return
    plan, live, query = planned

    def python_rows(keys: list[Any]) -> Sequence[sa.RowMapping]:
        stmt = query.live_by_pk().where(query.pk == sa.any_(sa.bindparam("keys", keys)))
        return conn.execute(stmt).mappings().all()

    lock = threading.Lock()  # the read-ahead thread's statements and this one's
    size = page_size or catalog.sync.page_size
    pages = pushdown.fetch_pages(conn, plan, live, size, pk_range, lock)
    yield from pushdown.iter_lines(conn, plan, _read_ahead(pages), python_rows, lock)


def _line_plan(
    conn: sa.Connection, mapper: KindMapper, pk_range: PkRange = WHOLE
) -> tuple[pushdown.LinePlan, str, _KindQuery] | None:
    """The kind's `pushdown` plan, its live-row predicate and query; None (and why, in the
    log) when its lines are built the ordinary way."""
    query = _KindQuery(conn.dialect, mapper.config)
    try:
        plan = pushdown.compile_plan(mapper, conn)
        live = "TRUE"
        if query.flag is not None:
            live = str(
                (query.flag == 0).compile(
                    dialect=conn.dialect, compile_kwargs={"literal_binds": True}
                )
            )
            if "%" in live:
                raise pushdown.NotPushable("the deleted or route predicate holds a %")
        pushdown.check(conn, plan, live, pk_range)
    except pushdown.NotPushable as exc:
        log.info("snapshot of %s: lines built in Python (%s)", mapper.kind, exc)
        return None
    log.info(
        "snapshot of %s: lines built by PostgreSQL (%d values computed in Python)",
        mapper.kind,
        len(plan.slots),
    )
    return plan, live, query


#: Pages read ahead of the mapping: memory stays a few pages whatever the catalog's size.
READ_AHEAD_PAGES = 2


def _read_ahead(pages: Iterator[_T]) -> Iterator[_T]:
    """Run `pages` (every SQL statement of a kind) in a thread, a few pages ahead.

    The database's work (the next page, its relation look-ups) then overlaps with mapping
    and encoding in this thread; the driver waits without holding the GIL. Only that
    thread touches the connection until it has finished, and it is always joined.
    """
    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=READ_AHEAD_PAGES)
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        box.put(("page", page), timeout=0.1)
                        break
                if stop.is_set():
                    return
            box.put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            box.put(("error", exc))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            tag, value = box.get()
            if tag == "end":
                return
            if tag == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting to put, then wait for it
            with contextlib.suppress(queue.Empty):
                box.get(timeout=0.1)
        thread.join()


#: Allocations between two young-generation collections while a snapshot streams (Python's
#: default is 700).
SNAPSHOT_GC_THRESHOLD = 50_000


@contextlib.contextmanager
def _rarer_collections() -> Iterator[None]:
    """A snapshot allocates a tuple or a dict per row and frees it at once (reference
    counting): none of them is cyclic garbage, yet at the default threshold the cycle
    collector ran every 700 allocations, ~4% of a snapshot's CPU. Restored afterwards."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], SNAPSHOT_GC_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


@contextlib.contextmanager
def snapshot_transaction(engine: sa.Engine) -> Iterator[tuple[sa.Connection, dt.datetime]]:
    """A read-only connection that sees one point in time, and that point (naive UTC).

    The clock is read before the snapshot is established, so the point is never later
    than what the snapshot sees (PostgreSQL's `now()` is the transaction start, which
    precedes the snapshot taken by the first query).
    """
    dialect = engine.dialect.name
    with engine.connect() as base:
        if dialect == "postgresql":
            conn = base.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            point = database_now(conn)  # the first statement begins the transaction
            try:
                yield conn, point
            finally:
                conn.rollback()
        elif dialect in {"mysql", "mariadb"}:
            conn = base.execution_options(isolation_level="REPEATABLE READ")
            point = database_now(conn)
            conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            try:
                yield conn, point
            finally:
                conn.rollback()
        else:
            # pysqlite would not begin a transaction for a SELECT: begin one explicitly.
            conn = base.execution_options(isolation_level="AUTOCOMMIT")
            point = database_now(conn)
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn, point
            finally:
                conn.exec_driver_sql("ROLLBACK")


# --- extraction + staging (what the DAG tasks call) ------------------------------------------


def extract_delta(
    engine: sa.Engine,
    catalog: CatalogConfig,
    kind: str,
    window: Window,
    *,
    run_key: str,
    mappers: Mapping[str, KindMapper] | None = None,
    root: str | None = None,
    page_size: int | None = None,
    redrive: Callable[[sa.Connection, KindMapper], Iterable[Item]] | None = None,
) -> dict[str, Any]:
    """Stage one kind's window as `events` bodies; returns a manifest small enough for XCom.

    `redrive(conn, mapper)` yields items staged before the window's changes (the dead
    letter's pending entries, re-read from their current rows).
    """
    mappers = mappers if mappers is not None else prepare(engine, catalog)
    mapper = mappers[kind]
    base = staging.join(root or staging.staging_root(), staging.safe_segment(run_key), "delta")
    with engine.connect() as conn:
        items: Iterable[Item] = iter_changes(conn, catalog, mapper, window, page_size)
        if redrive is not None:
            items = itertools.chain(redrive(conn, mapper), items)
        manifest = staging.write_delta_batches(
            staging.join(base, f"{kind}.batches.ndjson.gz"),
            kind,
            items,
            run_key=run_key,
            window_key=window.key,
            failures_uri=staging.join(base, f"{kind}.failures.ndjson.gz"),
        )
        conn.rollback()
    return {**manifest, "window": window.to_dict()}


def extract_snapshot(
    engine: sa.Engine,
    catalog: CatalogConfig,
    *,
    run_key: str,
    kinds: Sequence[str] | None = None,
    mappers: Mapping[str, KindMapper] | None = None,
    root: str | None = None,
    page_size: int | None = None,
    part: tuple[int, PkRange] | None = None,
    in_sql: bool = True,
) -> dict[str, Any]:
    """Stage a full snapshot of `kinds` (default: all, in map order) at one point in time.

    Returns {point, counts, parts}: `point` becomes every kind's watermark; `counts` is
    the `expected_counts` of `init` (kinds with at least one line, in order); the parts
    concatenate byte-wise into the upload. `part` = (index, key range) stages that part
    of a split kind (`snapshot_ranges`) under its own file names. `in_sql`: let
    PostgreSQL build the lines (`iter_snapshot_lines`).
    """
    mappers = mappers if mappers is not None else prepare(engine, catalog)
    kinds = list(kinds) if kinds is not None else list(catalog.kinds)
    base = staging.join(root or staging.staging_root(), staging.safe_segment(run_key), "snapshot")
    index, pk_range = part if part is not None else (None, WHOLE)
    suffix = "" if index is None else f".part{index:03d}"
    parts = []
    with snapshot_transaction(engine) as (conn, point), _rarer_collections():
        for kind in kinds:
            parts.append(
                staging.write_snapshot_part(
                    staging.join(base, f"{kind}{suffix}.ndjson.gz"),
                    kind,
                    iter_snapshot_lines(
                        conn, catalog, mappers[kind], page_size, pk_range, in_sql=in_sql
                    ),
                    staging.join(base, f"{kind}{suffix}.failures.ndjson.gz"),
                )
            )
    return {
        "point": to_iso(point),
        "counts": {part["kind"]: part["lines"] for part in parts if part["lines"]},
        "parts": parts,
    }
