"""The state database: watermarks, pending windows, the dead letter, the run ledger, the lock.

It lives in the database of the Airflow connection `catalog_sync_state` (default: a
SQLite file under `AIRFLOW_HOME`), never in Airflow's metadata database, so upgrading or
resetting Airflow never loses a watermark. Every row is keyed by target (the VoiceBot
connection id) and kind.

Correctness rests on the database, not on the worker: the watermark moves by
compare-and-set, the dead letter has at most one live entry per op identity (a unique
index), and the lock is a lease row whose expiry is read from the database clock, so
several processes on several machines agree. Datetimes are timezone-aware UTC in Python;
SQLite and MySQL have no time zone in their DATETIME, so they are stored as naive UTC
(MySQL with microseconds, `DATETIME(6)`) and turned back into aware UTC on the way out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from catalog_sync import protocol
from catalog_sync.db import byte_text, configure_sqlite
from catalog_sync.errors import CatalogSyncError, ConfigurationError, TransientError
from catalog_sync.source import create_source_engine, database_now, normalize_url, safe_url

log = logging.getLogger(__name__)

#: The Airflow connection id of the state database.
STATE_CONN_ID = "catalog_sync_state"
#: Where the state lives when that connection is not defined (relative to AIRFLOW_HOME).
DEFAULT_SQLITE_PATH = Path("catalog-sync") / "state.sqlite"

OP_TYPES: frozenset[str] = frozenset({"upsert", "delete"})
RUN_MODES: frozenset[str] = frozenset({"delta", "full", "dry_run"})
DEFAULT_MAX_ATTEMPTS = 5

#: Airflow ids (connection, DAG, run) are at most 250 characters.
_ID_LENGTH = 250
_KIND_LENGTH = 64
#: Ids per `IN (...)`: far below every database's bound-parameter limit.
_ID_CHUNK = 500
#: How often a waiting `target_lock` asks again.
DEFAULT_LOCK_POLL_S = 1.0


class WatermarkConflict(CatalogSyncError):
    """The stored watermark is not the one this run planned from: its window is not committed.

    Another run moved it in between (crossing windows) or the new value lies behind it.
    Retrying the same commit cannot help; the next run plans from the stored value.
    """


# --- types -------------------------------------------------------------------------


def _aware_utc(value: dt.datetime, name: str) -> dt.datetime:
    """Refuse naive datetimes: a naive value is ambiguous, and guessing moves windows."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} ({value.isoformat()}) has no time zone; pass an aware datetime "
            "(naive UTC values: value.replace(tzinfo=datetime.UTC))"
        )
    return value.astimezone(dt.UTC)


def _optional_utc(value: dt.datetime | None, name: str) -> dt.datetime | None:
    return None if value is None else _aware_utc(value, name)


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Aware UTC in Python; `timestamptz` on PostgreSQL, naive UTC elsewhere (MySQL: fsp=6)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.DateTime(timezone=True))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        utc = _aware_utc(value, "a state timestamp")
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def _long_text() -> sa.types.TypeEngine[str]:
    """Unbounded text: MySQL's TEXT stops at 64 KB, a payload may be larger."""
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- schema ------------------------------------------------------------------------

metadata = sa.MetaData()

versions = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column("target", byte_text(_ID_LENGTH), primary_key=True),
    sa.Column("kind", byte_text(_KIND_LENGTH), primary_key=True),
    sa.Column("watermark", UTCDateTime, nullable=True),
    sa.Column("last_full_at", UTCDateTime, nullable=True),
    sa.Column("last_snapshot_count", sa.BigInteger, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

dead_letter = sa.Table(
    "dead_letter",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target", byte_text(_ID_LENGTH), nullable=False),
    sa.Column("kind", byte_text(_KIND_LENGTH), nullable=False),
    # Unbounded: a rejected op may carry exactly the over-long id it was rejected for.
    sa.Column("external_id", _long_text(), nullable=False),
    sa.Column("op_type", sa.String(16), nullable=False),
    sa.Column("payload", _long_text(), nullable=True),
    sa.Column("error", _long_text(), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("exhausted", sa.Boolean, nullable=False),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("purged_at", UTCDateTime, nullable=True),
    sa.Column("purged_reason", _long_text(), nullable=True),
    # sha256 of the op identity while the entry is live, NULL once resolved or purged:
    # a unique index on it allows one live entry per identity and any number of closed
    # ones, on all three databases (NULLs never collide), whatever the id's length.
    sa.Column("live_identity", sa.String(64), nullable=True),
    sa.Index("dead_letter_live_identity", "live_identity", unique=True),
    sa.Index("dead_letter_target_kind", "target", "kind"),
)

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("run_id", byte_text(_ID_LENGTH), primary_key=True),
    sa.Column("target", byte_text(_ID_LENGTH), primary_key=True),
    sa.Column("kind", byte_text(_KIND_LENGTH), primary_key=True),
    sa.Column("dag_id", sa.String(_ID_LENGTH), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("window_low", UTCDateTime, nullable=True),
    sa.Column("window_high", UTCDateTime, nullable=True),
    sa.Column("extracted", sa.BigInteger, nullable=False),
    sa.Column("accepted", sa.BigInteger, nullable=False),
    sa.Column("replayed", sa.BigInteger, nullable=False),
    sa.Column("dead_lettered", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("error", _long_text(), nullable=True),
    sa.Index("sync_runs_started_at", "started_at"),
)

target_lock = sa.Table(
    "target_lock",
    metadata,
    sa.Column("target", byte_text(_ID_LENGTH), primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("token", sa.String(32), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

#: A delta window whose batches were (being) sent but not committed: the next run re-sends
#: the same staged batches (same batch ids: the receiver replays them, applies nothing)
#: instead of planning a new window whose new batch ids would apply the ops a second time.
pending_windows = sa.Table(
    "pending_windows",
    metadata,
    sa.Column("target", byte_text(_ID_LENGTH), primary_key=True),
    sa.Column("kind", byte_text(_KIND_LENGTH), primary_key=True),
    sa.Column("run_key", byte_text(_ID_LENGTH), nullable=False),
    # The plan item needed to resume (window, expected_low, commit, manifest with URIs).
    sa.Column("item", _long_text(), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


#: Targets paused by a person (`catalog-sync targets pause`): plan skips them, their
#: watermarks stay, so they catch up on resume.
paused_targets = sa.Table(
    "paused_targets",
    metadata,
    sa.Column("target", byte_text(_ID_LENGTH), primary_key=True),
    sa.Column("reason", _long_text(), nullable=False),
    sa.Column("paused_at", UTCDateTime, nullable=False),
)


@dataclass(frozen=True)
class Migration:
    """One step from `version - 1` to `version`, written against the database as it was.

    A fresh database gets `metadata` (the current shape) at once and is stamped with the
    latest version, so steps only ever run on databases created by an older release.
    """

    version: int
    description: str
    upgrade: Callable[[sa.Connection], None]


def _initial(conn: sa.Connection) -> None:
    metadata.create_all(conn)


def _add_pending_windows(conn: sa.Connection) -> None:
    pending_windows.create(conn, checkfirst=True)


def _add_paused_targets(conn: sa.Connection) -> None:
    paused_targets.create(conn, checkfirst=True)


#: Ordered; append new steps, never edit or reorder released ones.
MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema", _initial),
    Migration(2, "pending_windows (resume a crashed delta window)", _add_pending_windows),
    Migration(3, "paused_targets (catalog-sync targets pause)", _add_paused_targets),
]


def latest_version() -> int:
    return MIGRATIONS[-1].version


# --- records -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """One rejected op: its identity, the last error, and where it stands."""

    id: int
    target: str
    kind: str
    external_id: str
    op_type: str
    payload: dict[str, Any] | None
    error: str
    attempts: int
    exhausted: bool
    first_seen: dt.datetime
    last_seen: dt.datetime
    resolved_at: dt.datetime | None = None
    purged_at: dt.datetime | None = None
    purged_reason: str | None = None

    @property
    def status(self) -> str:
        """'resolved', 'purged', 'exhausted' (no more automatic redrives) or 'pending'."""
        if self.resolved_at is not None:
            return "resolved"
        if self.purged_reason is not None:
            return "purged"
        return "exhausted" if self.exhausted else "pending"


_LEDGER_COUNTS = ("extracted", "accepted", "replayed", "dead_lettered")


@dataclass(frozen=True, kw_only=True)
class RunLedgerEntry:
    """What one run did for one target and kind (the `report` task's line)."""

    run_id: str
    dag_id: str
    target: str
    kind: str
    mode: str
    status: str
    started_at: dt.datetime
    window_low: dt.datetime | None = None
    window_high: dt.datetime | None = None
    extracted: int = 0
    accepted: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    finished_at: dt.datetime | None = None
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """The entry as column values, validated: a bad entry is refused, not stored."""
        if self.mode not in RUN_MODES:
            raise ValueError(f"ledger mode {self.mode!r} is not one of {sorted(RUN_MODES)}")
        if not self.status or len(self.status) > 32:
            raise ValueError(f"ledger status {self.status!r} must be 1 to 32 characters")
        for name in _LEDGER_COUNTS:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"ledger {name} must be a non-negative int, not {value!r}")
        _check_key(self.run_id, "run_id", _ID_LENGTH)
        _check_key(self.target, "target", _ID_LENGTH)
        _check_key(self.kind, "kind", _KIND_LENGTH)
        return {
            "run_id": self.run_id,
            "dag_id": self.dag_id,
            "target": self.target,
            "kind": self.kind,
            "mode": self.mode,
            "status": self.status,
            "started_at": _aware_utc(self.started_at, "started_at"),
            "window_low": _optional_utc(self.window_low, "window_low"),
            "window_high": _optional_utc(self.window_high, "window_high"),
            "extracted": self.extracted,
            "accepted": self.accepted,
            "replayed": self.replayed,
            "dead_lettered": self.dead_lettered,
            "finished_at": _optional_utc(self.finished_at, "finished_at"),
            "error": self.error,
        }


def _check_key(value: str, name: str, length: int) -> None:
    if not isinstance(value, str) or not value or len(value) > length:
        raise ValueError(f"{name} must be a non-empty string of at most {length} characters")


def _identity(target: str, kind: str, external_id: str, op_type: str) -> str:
    """The live-entry key; NUL-separated so no two identities share an encoding."""
    raw = "\x00".join((target, kind, external_id, op_type)).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    unique = sorted({int(i) for i in ids})
    for start in range(0, len(unique), _ID_CHUNK):
        yield unique[start : start + _ID_CHUNK]


def _dead_letter(row: sa.Row[Any]) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        target=row.target,
        kind=row.kind,
        external_id=row.external_id,
        op_type=row.op_type,
        payload=None if row.payload is None else orjson.loads(row.payload),
        error=row.error,
        attempts=row.attempts,
        exhausted=bool(row.exhausted),
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        resolved_at=row.resolved_at,
        purged_at=row.purged_at,
        purged_reason=row.purged_reason,
    )


def _ledger_entry(row: sa.Row[Any]) -> RunLedgerEntry:
    return RunLedgerEntry(**row._asdict())


def default_sqlite_url() -> sa.URL:
    """`sqlite:///$AIRFLOW_HOME/catalog-sync/state.sqlite`; creates the folder."""
    from airflow.configuration import get_airflow_home

    path = Path(get_airflow_home()) / DEFAULT_SQLITE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    return sa.URL.create("sqlite", database=str(path))


_SQLITE_CONFIGURED: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_SQLITE_CONFIGURED_LOCK = threading.Lock()


# --- the store ---------------------------------------------------------------------


class StateStore:
    """Every read and write of the sync state; safe to share between threads."""

    def __init__(self, engine_or_url: sa.Engine | str | sa.URL) -> None:
        if isinstance(engine_or_url, sa.Engine):
            self.engine = engine_or_url
        else:
            url = normalize_url(engine_or_url, what="the state database URL")
            self.engine = create_source_engine(url)
        if self.engine.dialect.name == "sqlite":
            # Writers take SQLite's lock at BEGIN: a read-then-write never deadlocks,
            # and schema creation is serialized between processes.
            with _SQLITE_CONFIGURED_LOCK:
                if self.engine not in _SQLITE_CONFIGURED:
                    configure_sqlite(self.engine)
                    _SQLITE_CONFIGURED.add(self.engine)
        self._schema_checked = False

    @classmethod
    def from_airflow(cls, conn_id: str = STATE_CONN_ID) -> StateStore:
        """The store of the Airflow connection `conn_id`, or the SQLite default without one.

        The lookup is Airflow's own (Task SDK inside a task; env, secrets backends and the
        metadata database outside one). Only a connection that does not exist falls back:
        a defined but unusable one is an error, never silently replaced.
        """
        from catalog_sync.connections import find_connection
        from catalog_sync.source import url_from_connection

        conn = find_connection(conn_id)
        if conn is None:
            url = default_sqlite_url()
            log.info("no Airflow connection %r: keeping sync state in %s", conn_id, url)
            return cls(url)
        return cls(url_from_connection(conn))

    @property
    def safe_url(self) -> str:
        """The URL for messages: the password never leaves the process."""
        return safe_url(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """A transaction; a lost or busy database becomes a TransientError (retry later)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: sa.exc.DBAPIError) -> TransientError:
        first_line = next(iter(str(exc.orig).strip().splitlines()), "")
        return TransientError(
            f"the state database {self.safe_url} failed ({type(exc.orig).__name__}: "
            f"{first_line}); retry when it is reachable"
        )

    # --- schema ----------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create or upgrade the tables; idempotent, and serialized between processes.

        PostgreSQL takes a transaction-scoped advisory lock, MySQL/MariaDB a named lock
        (its DDL commits on its own), SQLite its write lock (`BEGIN IMMEDIATE`).
        """
        dialect = self.engine.dialect.name
        if dialect in {"mysql", "mariadb"}:
            self._ensure_schema_mysql()
        else:
            with self._begin() as conn:
                if dialect == "postgresql":
                    key = zlib.crc32(b"catalog_sync.state.schema")
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
                self._migrate(conn)
        self._schema_checked = True

    def _ensure_schema_mysql(self) -> None:
        database = self.engine.url.database or ""
        name = "catalog_sync_schema:" + hashlib.sha256(database.encode()).hexdigest()[:32]
        try:
            with self.engine.connect() as conn:
                got = conn.execute(sa.select(sa.func.get_lock(name, 60))).scalar()
                conn.commit()
                if got != 1:
                    raise TransientError(
                        f"another process has been creating the state schema in "
                        f"{self.safe_url} for 60 s; retry later"
                    )
                try:
                    self._migrate(conn)
                    conn.commit()
                finally:
                    conn.execute(sa.select(sa.func.release_lock(name)))
                    conn.commit()
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise self._unreachable(exc) from exc

    def _migrate(self, conn: sa.Connection) -> None:
        versions.create(conn, checkfirst=True)
        current = self._read_version(conn)
        latest = latest_version()
        if current > latest:
            raise self._too_new(current)
        if current == 0:
            metadata.create_all(conn)
            conn.execute(
                versions.insert().values(
                    version=latest, description=f"created at version {latest}", applied_at=_now()
                )
            )
            log.info("created the sync state schema (version %d) in %s", latest, self.safe_url)
            return
        for step in MIGRATIONS:
            if step.version <= current:
                continue
            log.info(
                "upgrading the sync state schema in %s to version %d: %s",
                self.safe_url,
                step.version,
                step.description,
            )
            step.upgrade(conn)
            conn.execute(
                versions.insert().values(
                    version=step.version, description=step.description, applied_at=_now()
                )
            )

    @staticmethod
    def _read_version(conn: sa.Connection) -> int:
        return conn.execute(sa.select(sa.func.max(versions.c.version))).scalar() or 0

    def _too_new(self, current: int) -> ConfigurationError:
        return ConfigurationError(
            f"the state database {self.safe_url} has schema version {current}, but this "
            f"catalog-sync knows versions up to {latest_version()} only; upgrade "
            "airflow-catalog-sync on every Airflow worker (a newer release wrote it), or point "
            f"the connection {STATE_CONN_ID!r} at another database"
        )

    def schema_version(self) -> int:
        """The recorded version (0: no schema yet)."""
        with self._begin() as conn:
            if not sa.inspect(conn).has_table(versions.name):
                return 0
            return self._read_version(conn)

    def _require_schema(self) -> None:
        """Say what to do instead of failing on a missing table (checked once per store)."""
        if self._schema_checked:
            return
        current = self.schema_version()
        if current > latest_version():
            raise self._too_new(current)
        if current < latest_version():
            state = "has no sync state schema" if current == 0 else f"has schema v{current}"
            raise ConfigurationError(
                f"the state database {self.safe_url} {state}; this catalog-sync needs "
                f"v{latest_version()}: call StateStore.ensure_schema() first (it creates or "
                "upgrades the tables)"
            )
        self._schema_checked = True

    # --- upsert helper ---------------------------------------------------------------

    def _upsert(self, table: sa.Table, key: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        """Update the row, else insert it; a concurrent insert turns into an update.

        Portable on purpose (no dialect upsert): MySQL reports matched rows, not changed
        ones (SQLAlchemy sets FOUND_ROWS), so `rowcount` means "the row exists" everywhere.
        """
        where = [table.c[name] == value for name, value in key.items()]
        for _ in range(3):
            with self._begin() as conn:
                if conn.execute(sa.update(table).where(*where).values(**values)).rowcount:
                    return
            try:
                with self._begin() as conn:
                    conn.execute(sa.insert(table).values(**key, **values))
                return
            except sa.exc.IntegrityError:
                continue
        raise TransientError(f"could not write {table.name} for {dict(key)}; retry")

    # --- watermarks ------------------------------------------------------------------

    def watermark(self, target: str, kind: str) -> dt.datetime | None:
        """The kind's watermark (aware UTC), or None before its first committed window."""
        self._require_schema()
        with self._begin() as conn:
            return conn.execute(
                sa.select(sync_state.c.watermark).where(
                    sync_state.c.target == target, sync_state.c.kind == kind
                )
            ).scalar()

    def advance_watermark(
        self,
        target: str,
        kind: str,
        high: dt.datetime,
        *,
        expected_low: dt.datetime | None,
        clear_pending: str | None = None,
    ) -> None:
        """Commit a window: watermark `expected_low` -> `high`, or refuse.

        Compare-and-set in one UPDATE, so two runs that planned from the same watermark
        cannot both commit (crossing windows). A retried commit that already happened
        (the stored value is `high`) is a no-op. `clear_pending` (a run key) deletes that
        run's pending window in the same transaction, so a committed window is never
        resumed; also when the commit was a no-op because it had already happened.
        """
        _check_key(target, "target", _ID_LENGTH)
        _check_key(kind, "kind", _KIND_LENGTH)
        high = _aware_utc(high, "high")
        expected_low = _optional_utc(expected_low, "expected_low")
        if expected_low is not None and high < expected_low:
            raise WatermarkConflict(
                f"the watermark of {target}/{kind} would move backwards, from "
                f"{expected_low.isoformat()} to {high.isoformat()}; a window's high must not "
                "be before its low"
            )
        self._require_schema()
        now = _now()
        matches = (
            sync_state.c.watermark.is_(None)
            if expected_low is None
            else sync_state.c.watermark == expected_low
        )
        with self._begin() as conn:
            moved = conn.execute(
                sa.update(sync_state)
                .where(sync_state.c.target == target, sync_state.c.kind == kind, matches)
                .values(watermark=high, updated_at=now)
            ).rowcount
            if moved:
                self._delete_pending(conn, target, kind, clear_pending)
        if moved:
            return
        if expected_low is None:
            try:
                with self._begin() as conn:
                    conn.execute(
                        sa.insert(sync_state).values(
                            target=target, kind=kind, watermark=high, updated_at=now
                        )
                    )
                    self._delete_pending(conn, target, kind, clear_pending)
                return
            except sa.exc.IntegrityError:
                pass  # a row appeared: compare below
        stored = self.watermark(target, kind)
        if stored == high:
            if clear_pending is not None:
                self.clear_pending_window(target, kind, clear_pending)
            return
        planned = "none" if expected_low is None else expected_low.isoformat()
        found = "none" if stored is None else stored.isoformat()
        raise WatermarkConflict(
            f"the watermark of {target}/{kind} is {found}, not {planned} as this run planned: "
            f"another run committed in between, so this window (up to {high.isoformat()}) is "
            "not committed; the next run re-sends from the stored watermark"
        )

    # --- pending windows -------------------------------------------------------------

    def pending_window(self, target: str, kind: str) -> dict[str, Any] | None:
        """The kind's pushed but uncommitted window (its plan item, `run_key` set), or None."""
        self._require_schema()
        with self._begin() as conn:
            row = conn.execute(
                sa.select(pending_windows.c.run_key, pending_windows.c.item).where(
                    pending_windows.c.target == target, pending_windows.c.kind == kind
                )
            ).first()
        if row is None:
            return None
        return {**orjson.loads(row.item), "run_key": row.run_key}

    def set_pending_window(self, target: str, kind: str, item: Mapping[str, Any]) -> None:
        """Remember a window before its first batch is sent (replaces an older record).

        `item["run_key"]` is the run that staged the batches; the rest (window,
        expected_low, commit, manifest) is what the next run needs to re-send them.
        """
        _check_key(target, "target", _ID_LENGTH)
        _check_key(kind, "kind", _KIND_LENGTH)
        run_key = item.get("run_key")
        _check_key(run_key, "item['run_key']", _ID_LENGTH)
        self._require_schema()
        text = protocol.dumps(dict(item)).decode("utf-8")
        self._upsert(
            pending_windows,
            {"target": target, "kind": kind},
            {"run_key": run_key, "item": text, "created_at": _now()},
        )

    def clear_pending_window(self, target: str, kind: str, run_key: str) -> bool:
        """Forget `run_key`'s pending window (committed or given up); False if it had none.

        Keyed by run too, so a run never clears a newer run's record.
        """
        self._require_schema()
        with self._begin() as conn:
            return self._delete_pending(conn, target, kind, run_key)

    @staticmethod
    def _delete_pending(conn: sa.Connection, target: str, kind: str, run_key: str | None) -> bool:
        if run_key is None:
            return False
        return bool(
            conn.execute(
                sa.delete(pending_windows).where(
                    pending_windows.c.target == target,
                    pending_windows.c.kind == kind,
                    pending_windows.c.run_key == run_key,
                )
            ).rowcount
        )

    def set_snapshot(self, target: str, kind: str, point: dt.datetime, count: int) -> None:
        """A full run was accepted: watermark = the snapshot's point in time, remember the count.

        Unconditional, even backwards: the snapshot replaced the receiver's rows with their
        state at `point`, so changes after it must be sent again by the next delta.
        """
        _check_key(target, "target", _ID_LENGTH)
        _check_key(kind, "kind", _KIND_LENGTH)
        point = _aware_utc(point, "point")
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"the snapshot count must be a non-negative int, not {count!r}")
        self._require_schema()
        self._upsert(
            sync_state,
            {"target": target, "kind": kind},
            {
                "watermark": point,
                "last_full_at": point,
                "last_snapshot_count": count,
                "updated_at": _now(),
            },
        )

    def last_snapshot_counts(self, target: str) -> dict[str, int]:
        """Per kind, the entity count of the last accepted snapshot (the shrink guard's base)."""
        self._require_schema()
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(sync_state.c.kind, sync_state.c.last_snapshot_count).where(
                    sync_state.c.target == target,
                    sync_state.c.last_snapshot_count.is_not(None),
                )
            )
            return {row.kind: int(row.last_snapshot_count) for row in rows}

    # --- dead letter -----------------------------------------------------------------

    def dead_letter_record(
        self,
        target: str,
        kind: str,
        external_id: str,
        op_type: str,
        payload: dict[str, Any] | None,
        error: str,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> int:
        """Record a rejected op; a repeat of a live one counts an attempt. Returns the id."""
        _check_key(target, "target", _ID_LENGTH)
        _check_key(kind, "kind", _KIND_LENGTH)
        if not isinstance(external_id, str) or not external_id:
            raise ValueError("external_id must be a non-empty string")
        if op_type not in OP_TYPES:
            raise ValueError(f"op_type {op_type!r} is not one of {sorted(OP_TYPES)}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, not {max_attempts!r}")
        if payload is not None and not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict or None, not {type(payload).__name__}")
        self._require_schema()
        identity = _identity(target, kind, external_id, op_type)
        payload_text = None if payload is None else protocol.dumps(payload).decode("utf-8")
        error = str(error)
        c = dead_letter.c
        for _ in range(3):
            now = _now()
            with self._begin() as conn:
                # `exhausted` first: MySQL evaluates SET left to right with new values.
                updated = conn.execute(
                    sa.update(dead_letter)
                    .where(c.live_identity == identity)
                    .ordered_values(
                        (c.exhausted, sa.or_(c.exhausted, c.attempts + 1 >= max_attempts)),
                        (c.attempts, c.attempts + 1),
                        (c.error, error),
                        (c.payload, payload_text),
                        (c.last_seen, now),
                    )
                ).rowcount
                if updated:
                    return conn.execute(
                        sa.select(c.id).where(c.live_identity == identity)
                    ).scalar_one()
            try:
                with self._begin() as conn:
                    return conn.execute(
                        sa.insert(dead_letter).values(
                            target=target,
                            kind=kind,
                            external_id=external_id,
                            op_type=op_type,
                            payload=payload_text,
                            error=error,
                            attempts=1,
                            exhausted=max_attempts <= 1,
                            first_seen=now,
                            last_seen=now,
                            live_identity=identity,
                        )
                    ).inserted_primary_key[0]
            except sa.exc.IntegrityError:
                continue  # recorded concurrently: count this attempt on that entry
        raise TransientError(f"could not record the dead letter of {kind} {external_id}; retry")

    def dead_letter_pending(
        self, target: str, kind: str | None = None, *, include_exhausted: bool = False
    ) -> list[DeadLetter]:
        """Live entries to redrive, oldest first; exhausted ones only when asked."""
        self._require_schema()
        query = sa.select(dead_letter).where(
            dead_letter.c.target == target, dead_letter.c.live_identity.is_not(None)
        )
        if kind is not None:
            query = query.where(dead_letter.c.kind == kind)
        if not include_exhausted:
            query = query.where(dead_letter.c.exhausted.is_(False))
        with self._begin() as conn:
            return [_dead_letter(row) for row in conn.execute(query.order_by(dead_letter.c.id))]

    def dead_letter_resolve(self, entry_ids: Sequence[int]) -> None:
        """The ops were accepted later: close their entries (kept, with `resolved_at`)."""
        self._require_schema()
        now = _now()
        for chunk in _chunks(entry_ids):
            with self._begin() as conn:
                conn.execute(
                    sa.update(dead_letter)
                    .where(dead_letter.c.id.in_(chunk), dead_letter.c.live_identity.is_not(None))
                    .values(resolved_at=now, live_identity=None)
                )

    def dead_letter_list(
        self, target: str | None = None, *, include_resolved: bool = False
    ) -> list[DeadLetter]:
        """Entries for people (`dead-letter list`); closed ones (resolved or purged) on request."""
        self._require_schema()
        query = sa.select(dead_letter)
        if target is not None:
            query = query.where(dead_letter.c.target == target)
        if not include_resolved:
            query = query.where(dead_letter.c.live_identity.is_not(None))
        with self._begin() as conn:
            return [_dead_letter(row) for row in conn.execute(query.order_by(dead_letter.c.id))]

    def dead_letter_purge(
        self,
        reason: str,
        *,
        entry_ids: Sequence[int] | None = None,
        target: str | None = None,
    ) -> int:
        """Give up on live entries (all, or those ids and/or target); kept for audit.

        Returns how many were purged.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigurationError(
                "purging dead-letter entries needs a reason (e.g. --reason 'row deleted at "
                "the source'); it is kept with the entries for audit"
            )
        self._require_schema()
        conditions = [dead_letter.c.live_identity.is_not(None)]
        if target is not None:
            conditions.append(dead_letter.c.target == target)
        values = {"purged_reason": reason.strip(), "purged_at": _now(), "live_identity": None}
        return self._update_live(conditions, entry_ids, values)

    def dead_letter_rearm(self, entry_ids: Sequence[int] | None = None) -> int:
        """Make live entries (all, or those ids) eligible for redrive again: attempts 0.

        Returns how many changed.
        """
        self._require_schema()
        conditions = [
            dead_letter.c.live_identity.is_not(None),
            sa.or_(dead_letter.c.exhausted.is_(True), dead_letter.c.attempts > 0),
        ]
        return self._update_live(conditions, entry_ids, {"exhausted": False, "attempts": 0})

    def _update_live(
        self,
        conditions: list[sa.ColumnElement[bool]],
        entry_ids: Sequence[int] | None,
        values: Mapping[str, Any],
    ) -> int:
        if entry_ids is None:
            with self._begin() as conn:
                return conn.execute(
                    sa.update(dead_letter).where(*conditions).values(**values)
                ).rowcount
        changed = 0
        for chunk in _chunks(entry_ids):
            with self._begin() as conn:
                changed += conn.execute(
                    sa.update(dead_letter)
                    .where(*conditions, dead_letter.c.id.in_(chunk))
                    .values(**values)
                ).rowcount
        return changed

    # --- ledger ----------------------------------------------------------------------

    def ledger_record(self, entry: RunLedgerEntry) -> None:
        """Write (or rewrite) the line of (run_id, target, kind)."""
        row = entry.row()
        self._require_schema()
        key = {name: row.pop(name) for name in ("run_id", "target", "kind")}
        self._upsert(sync_runs, key, row)

    def ledger(self, *, target: str | None = None, limit: int = 50) -> list[RunLedgerEntry]:
        """The latest lines, newest first."""
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, not {limit!r}")
        self._require_schema()
        query = sa.select(sync_runs)
        if target is not None:
            query = query.where(sync_runs.c.target == target)
        query = query.order_by(
            sync_runs.c.started_at.desc(), sync_runs.c.run_id.desc(), sync_runs.c.kind
        ).limit(limit)
        with self._begin() as conn:
            return [_ledger_entry(row) for row in conn.execute(query)]

    def last_successes(self, target: str) -> dict[str, dt.datetime]:
        """Per kind, when its last committed run (delta or full) of `target` finished."""
        self._require_schema()
        query = (
            sa.select(sync_runs.c.kind, sa.func.max(sync_runs.c.finished_at).label("at"))
            .where(sync_runs.c.target == target, sync_runs.c.status == "committed")
            .group_by(sync_runs.c.kind)
        )
        with self._begin() as conn:
            return {row.kind: row.at for row in conn.execute(query) if row.at is not None}

    # --- targets ---------------------------------------------------------------------

    def watermarks(self, target: str) -> dict[str, dt.datetime]:
        """Every kind's watermark of `target` (kinds without one are left out)."""
        self._require_schema()
        query = sa.select(sync_state.c.kind, sync_state.c.watermark).where(
            sync_state.c.target == target, sync_state.c.watermark.is_not(None)
        )
        with self._begin() as conn:
            return {row.kind: row.watermark for row in conn.execute(query)}

    def dead_letter_depth(self, target: str) -> dict[str, int]:
        """Per kind, how many live dead-letter entries `target` has (exhausted included)."""
        self._require_schema()
        query = (
            sa.select(dead_letter.c.kind, sa.func.count().label("n"))
            .where(dead_letter.c.target == target, dead_letter.c.live_identity.is_not(None))
            .group_by(dead_letter.c.kind)
        )
        with self._begin() as conn:
            return {row.kind: int(row.n) for row in conn.execute(query)}

    def pause_target(self, target: str, reason: str) -> None:
        """Pause `target` (plan skips it) with a reason people will read; re-pausing rewords."""
        _check_key(target, "target", _ID_LENGTH)
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigurationError(
                f"pausing {target!r} needs a reason (e.g. --reason 'site migration'); it is "
                "shown by `catalog-sync targets` and in every run's log"
            )
        self._require_schema()
        self._upsert(
            paused_targets, {"target": target}, {"reason": reason.strip(), "paused_at": _now()}
        )

    def resume_target(self, target: str) -> bool:
        """Un-pause `target`; False when it was not paused here."""
        self._require_schema()
        with self._begin() as conn:
            return bool(
                conn.execute(
                    sa.delete(paused_targets).where(paused_targets.c.target == target)
                ).rowcount
            )

    def paused(self) -> dict[str, tuple[str, dt.datetime]]:
        """Targets paused here: name -> (reason, since when)."""
        self._require_schema()
        with self._begin() as conn:
            rows = conn.execute(sa.select(paused_targets))
            return {row.target: (row.reason, row.paused_at) for row in rows}

    # --- lock ------------------------------------------------------------------------

    def lock_holder(self, target: str) -> str | None:
        """Who holds (or last held, if it crashed) the target's lease; None when free."""
        self._require_schema()
        with self._begin() as conn:
            return conn.execute(
                sa.select(target_lock.c.holder).where(target_lock.c.target == target)
            ).scalar()

    @contextmanager
    def target_lock(
        self,
        target: str,
        holder: str,
        *,
        timeout_s: float = 600,
        lease_s: float = 3600,
        poll_s: float = DEFAULT_LOCK_POLL_S,
    ) -> Iterator[None]:
        """Hold the target's lease: delta and full never interleave push and commit.

        A second holder polls every `poll_s` until `timeout_s`, then raises
        TransientError naming the holder. A lease past its expiry (its holder crashed) is
        taken over; the same `holder` (a retry of the same run) takes its lease back at
        once. Expiry uses the database clock, so machines with skewed clocks agree.
        """
        token = self.acquire_lock(
            target, holder, timeout_s=timeout_s, lease_s=lease_s, poll_s=poll_s
        )
        try:
            yield
        finally:
            self._unlock(target, holder, token)

    def acquire_lock(
        self,
        target: str,
        holder: str,
        *,
        timeout_s: float = 600,
        lease_s: float = 3600,
        poll_s: float = DEFAULT_LOCK_POLL_S,
    ) -> str:
        """Take the lease like `target_lock`, but keep it: for runs whose steps are tasks.

        Returns the lease token. `release_lock(target, holder)` ends it; a crash leaves it
        to expire.
        """
        _check_key(target, "target", _ID_LENGTH)
        if not isinstance(holder, str) or not holder:
            raise ValueError("holder must be a non-empty string naming the run")
        if lease_s <= 0 or timeout_s < 0 or poll_s <= 0:
            raise ValueError("lease_s and poll_s must be > 0, timeout_s >= 0")
        self._require_schema()
        token = secrets.token_hex(16)
        deadline = time.monotonic() + timeout_s
        waiting_logged = False
        while True:
            other = self._try_lock(target, holder, token, lease_s)
            if other is None:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                who, until = other
                raise TransientError(
                    f"the target {target!r} is locked by {who!r} (lease until "
                    f"{until.isoformat()}); gave up after {timeout_s:g} s. "
                    "It is released when that run's push/commit ends, or taken over when the "
                    "lease expires"
                )
            if not waiting_logged:
                log.info("waiting for the lock of %r, held by %r", target, other[0])
                waiting_logged = True
            time.sleep(min(poll_s, remaining))
        log.info("%r holds the lock of %r", holder, target)
        return token

    def release_lock(self, target: str, holder: str) -> bool:
        """End `holder`'s lease of `target`; False when it did not hold it (any more)."""
        self._require_schema()
        with self._begin() as conn:
            return bool(
                conn.execute(
                    sa.delete(target_lock).where(
                        target_lock.c.target == target, target_lock.c.holder == holder
                    )
                ).rowcount
            )

    def _try_lock(
        self, target: str, holder: str, token: str, lease_s: float
    ) -> tuple[str, dt.datetime] | None:
        """One attempt; None when acquired, else (holder, lease end) of the current holder.

        Insert the lease row in its own short transaction; when it exists, look at it under
        a row lock and take it over if its lease ended (or it is ours). Never a locking read
        of a missing row: on MySQL that takes a gap lock and two inserters deadlock.
        """
        lease = dt.timedelta(seconds=lease_s)
        while True:
            try:
                with self._begin() as conn:
                    now = database_now(conn).replace(tzinfo=dt.UTC)
                    conn.execute(
                        sa.insert(target_lock).values(
                            target=target,
                            holder=holder,
                            token=token,
                            acquired_at=now,
                            expires_at=now + lease,
                        )
                    )
                return None
            except sa.exc.IntegrityError:
                pass  # held, or left behind by a crash: look at the lease
            with self._begin() as conn:
                now = database_now(conn).replace(tzinfo=dt.UTC)
                row = conn.execute(
                    sa.select(target_lock).where(target_lock.c.target == target).with_for_update()
                ).first()
                if row is None:
                    continue  # released in between: insert again
                if row.expires_at > now and row.holder != holder:
                    return (row.holder, row.expires_at)
                conn.execute(
                    sa.update(target_lock)
                    .where(target_lock.c.target == target, target_lock.c.token == row.token)
                    .values(holder=holder, token=token, acquired_at=now, expires_at=now + lease)
                )
            if row.holder != holder:
                log.warning(
                    "took over the lock of %r from %r, whose lease ended at %s (did it crash?)",
                    target,
                    row.holder,
                    row.expires_at.isoformat(),
                )
            return None

    def _unlock(self, target: str, holder: str, token: str) -> None:
        with self._begin() as conn:
            released = conn.execute(
                sa.delete(target_lock).where(
                    target_lock.c.target == target, target_lock.c.token == token
                )
            ).rowcount
        if not released:
            log.warning(
                "%r no longer held the lock of %r when it finished: its lease expired and "
                "another run took it over; raise lease_s above the longest push",
                holder,
                target,
            )
