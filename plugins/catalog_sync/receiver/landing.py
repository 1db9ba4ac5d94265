"""Landing handlers: the receiver writes a kind into a real table of the target application.

Besides its generic entity store, the receiver can hand every upsert and delete of a
kind to a handler named in a YAML file (`catalog-sync receiver serve --landing FILE`).
The handler writes on the receiver's own database connection, inside the transaction
that also records the request (idempotency key, entity store), so a replayed request
lands nothing twice and a failed one lands nothing at all. The format is documented in
docs/landing.md.

The built-in handler (`handler: columns`) maps payload keys to columns and remembers a
fingerprint of what it last landed per (kind, external id): a row whose mapped columns
no longer match it was changed locally, which the conflict policy then decides about.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import inspect
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from catalog_sync import protocol, values
from catalog_sync.config import PAYLOAD_PREFIX, _Validator, did_you_mean, read_yaml, resolve_dotted
from catalog_sync.db import byte_text
from catalog_sync.receiver import validate

log = logging.getLogger("catalog_sync.receiver")

BUILT_IN = "columns"
POLICIES = ("update", "skip", "error")
TYPES = ("text", "integer", "decimal", "boolean", "timestamp", "json")
KEY_SOURCES = ("id", "external_id")
COLUMNS_KEYS = frozenset(
    {"handler", "conflict", "table", "key", "key_from", "deleted_column", "columns"}
)
CUSTOM_KEYS = frozenset({"handler", "conflict", "options"})
COLUMN_KEYS = frozenset({"from", "type", "decimals"})
#: Rows per page when the snapshot's tombstone pass walks the entity store.
TOMBSTONE_PAGE = 1000

LANDED = "landed"
SKIPPED = "skipped"

metadata = sa.MetaData()

#: What the built-in handler last landed per (kind, external id): the conflict rule's memory.
landed = sa.Table(
    "receiver_landed",
    metadata,
    sa.Column("kind", byte_text(32), primary_key=True),
    sa.Column("external_id", byte_text(validate.MAX_EXTERNAL_ID), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("landed_at", sa.Double, nullable=False),
)


class Rejected(Exception):
    """Raised by a handler to refuse one op; the sender gets it as a per-op error."""

    def __init__(self, message: str, code: str = "landing_rejected") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Handler(Protocol):
    """What a landing handler provides; conflict policies `skip` and `error` also need
    `changed(conn, kind, external_id) -> bool` (see docs/landing.md)."""

    def upsert(self, conn: Connection, kind: str, external_id: str, payload: Any) -> None: ...

    def delete(self, conn: Connection, kind: str, external_id: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class Target:
    """One landed kind: its handler and its conflict policy."""

    kind: str
    handler: Handler
    conflict: str
    name: str


@dataclasses.dataclass
class Report:
    """Per-op outcomes of one events batch, in the shape of the spec's `errors` items."""

    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rejected: set[tuple[str, str]] = dataclasses.field(default_factory=set)


def _outcome(index: int, entity: validate.Entity, code: str, message: str) -> dict[str, Any]:
    return {"index": index, "external_id": entity.external_id, "code": code, "message": message}


class Landing:
    """The configured kinds and the rules every handler shares (policy, translations)."""

    def __init__(self, targets: Mapping[str, Target], path: Path) -> None:
        self.targets = dict(targets)
        self.path = path

    def describe(self) -> str:
        targets = self.targets.values()
        return ", ".join(f"{t.kind} -> {t.name} (conflict: {t.conflict})" for t in targets)

    def handles(self, entity: validate.Entity) -> bool:
        """Base entities of configured kinds; translations stay in the entity store only."""
        return entity.kind in self.targets and entity.translation_of is None

    def apply(self, conn: Connection, entity: validate.Entity) -> str:
        """Land one upsert (payload set) or delete; returns LANDED or SKIPPED.

        Raises `Rejected` for a refused op (a conflict under `error`, a bad value).
        """
        target = self.targets[entity.kind]
        handler = target.handler
        if target.conflict != "update" and handler.changed(conn, entity.kind, entity.external_id):
            if target.conflict == "skip":
                return SKIPPED
            raise Rejected(
                f"the target row of {entity.external_id} was changed locally since it was last "
                "landed (conflict policy 'error'); keep or revert the local change at the "
                "target, then redrive the dead letter",
                "landing_conflict",
            )
        if entity.payload is None:
            handler.delete(conn, entity.kind, entity.external_id)
        else:
            handler.upsert(conn, entity.kind, entity.external_id, entity.payload)
        return LANDED

    def _apply_or_refuse(self, conn: Connection, entity: validate.Entity) -> str:
        """`apply`, with the target database's refusal of a row (a unique clash, a value
        too long) as a `Rejected` too: the op is at fault, retrying cannot help."""
        try:
            return self.apply(conn, entity)
        except (sa.exc.IntegrityError, sa.exc.DataError) as exc:
            raise Rejected(
                f"the target database refused the row: {exc.orig}", "landing_failed"
            ) from None

    def _snapshot_apply(self, conn: Connection, entity: validate.Entity) -> str:
        """`apply` for a snapshot: a refusal names the record and fails the whole finalize."""
        try:
            return self._apply_or_refuse(conn, entity)
        except Rejected as exc:
            raise Rejected(f"{entity.external_id}: {exc.message}", exc.code) from None

    def land_events(self, conn: Connection, ops: Iterable[tuple[int, validate.Entity]]) -> Report:
        """Land a batch's final ops one by one, each in a savepoint.

        A refused op (or one the target database refuses, e.g. a unique clash) is rolled
        back alone and reported as a per-op error; the others still land.
        """
        report = Report()
        for index, entity in ops:
            if self.handles(entity):
                try:
                    with conn.begin_nested():
                        outcome = self._apply_or_refuse(conn, entity)
                except Rejected as exc:
                    report.errors.append(_outcome(index, entity, exc.code, exc.message))
                    report.rejected.add((entity.kind, entity.external_id))
                    continue
                if outcome == SKIPPED:
                    message = "kept the locally changed target row (conflict policy 'skip')"
                    report.skipped.append(_outcome(index, entity, "landing_skipped", message))
        for what, items in (
            ("skipped (target row changed locally)", report.skipped),
            ("refused", report.errors),
        ):
            if items:
                ids = ", ".join(item["external_id"] for item in items[:5])
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                log.warning("landing %s: %d op(s), %s%s", what, len(items), ids, more)
        return report

    def land_snapshot(
        self, conn: Connection, entities: Iterable[validate.Entity], summary: dict[str, Any]
    ) -> Iterator[validate.Entity]:
        """Land snapshot lines as they stream past; counts go to `summary` per kind."""
        for entity in entities:
            if self.handles(entity):
                _count(summary, entity.kind, self._snapshot_apply(conn, entity))
            yield entity

    def land_tombstones(
        self, conn: Connection, gone: Iterable[tuple[str, str]], summary: dict[str, Any]
    ) -> None:
        """Delete (or soft-delete) the targets of records the snapshot no longer holds."""
        for kind, external_id in gone:
            entity = validate.Entity(kind, external_id, None, None, None)
            outcome = self._snapshot_apply(conn, entity)
            _count(summary, kind, "deleted" if outcome == LANDED else SKIPPED)


def _count(summary: dict[str, Any], kind: str, outcome: str) -> None:
    counts = summary.setdefault(kind, {LANDED: 0, SKIPPED: 0, "deleted": 0})
    counts[outcome] += 1


# --- the built-in handler -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Column:
    """One mapped column: where its value comes from and how it is coerced."""

    name: str
    source: str
    path: tuple[str, ...]
    type: str
    decimals: int
    nullable: bool
    native_json: bool
    aware: bool


def _coerce(column: Column, value: Any) -> Any:
    """`value` as the column's type; raises ValueError with what is wrong."""
    if value is None:
        return None
    kind = column.type
    if kind == "json":
        return value if column.native_json else protocol.dumps(value).decode("utf-8")
    if isinstance(value, dict | list):
        raise ValueError(f"is a JSON {type(value).__name__}; map it with type: json")
    if isinstance(value, float) and kind in ("decimal", "text"):
        raise ValueError("is a float; amounts travel as integer minor units or decimal strings")
    if kind == "text":
        return ("true" if value else "false") if isinstance(value, bool) else values.to_text(value)
    if kind == "integer":
        return int(value) if isinstance(value, bool) else values.to_int(value)
    if kind == "decimal":
        if isinstance(value, int) and not isinstance(value, bool):
            return Decimal(value).scaleb(-column.decimals)
        return values.to_decimal(value)
    if kind == "boolean":
        if value in ("instock", "outofstock"):
            return value == "instock"
        if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
            return value.strip().lower() == "yes"
        return values.to_bool(value)
    return _timestamp(value, column.aware)


def _timestamp(value: Any, aware: bool) -> dt.datetime:
    """ISO 8601 text or epoch seconds; naive values are UTC (as `values.timestamp` reads)."""
    if isinstance(value, bool):
        raise ValueError("is a boolean, not a timestamp")
    if isinstance(value, int | float):
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    elif isinstance(value, str):
        text = value.strip()
        moment = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    else:
        raise ValueError(f"a {type(value).__name__} is not a timestamp")
    moment = moment.astimezone(dt.UTC)
    return moment if aware else moment.replace(tzinfo=None)


def _fingerprint(row: Any) -> str:
    """sha256 of a row's mapped values as read back: the same read gives the same digest."""
    data = protocol.dumps([_plain(value) for value in row])
    return hashlib.sha256(data).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal | dt.date | dt.time):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Upsert:
    """UPDATE by key, INSERT when no row matched: portable (no unique index needed by the
    statement), built once with bind parameters so each row only binds values."""

    def __init__(self, table: sa.Table, keys: list[str], columns: list[str]) -> None:
        self.keys = keys
        match = [table.c[name] == sa.bindparam(f"b_{name}") for name in keys]
        self.update = table.update().where(*match).values({c: sa.bindparam(c) for c in columns})
        self.insert = table.insert().values(
            {**{k: sa.bindparam(f"b_{k}") for k in keys}, **{c: sa.bindparam(c) for c in columns}}
        )

    def __call__(self, conn: Connection, where: Mapping[str, Any], row: Mapping[str, Any]) -> None:
        params = {**{f"b_{k}": where[k] for k in self.keys}, **row}
        if conn.execute(self.update, params).rowcount == 0:
            conn.execute(self.insert, params)


_remember = _Upsert(landed, ["kind", "external_id"], ["fingerprint", "landed_at"])
_landed_match = (
    landed.c.kind == sa.bindparam("b_kind"),
    landed.c.external_id == sa.bindparam("b_external_id"),
)
_remembered = sa.select(landed.c.fingerprint).where(*_landed_match)
_forget = landed.delete().where(*_landed_match)


class ColumnsHandler:
    """`handler: columns`: payload keys to columns of an existing table, by a key column."""

    def __init__(
        self,
        table: sa.Table,
        key: str,
        key_from: str,
        columns: list[Column],
        deleted_column: str | None,
    ) -> None:
        self.table = table
        self.key = table.c[key]
        self.key_from = key_from
        self.columns = columns
        self.deleted = table.c[deleted_column] if deleted_column else None
        match = self.key == sa.bindparam("b_key")
        self._current = sa.select(*(table.c[c.name] for c in columns)).where(match)
        written = [c.name for c in columns] + ([deleted_column] if deleted_column else [])
        self._upsert = _Upsert(table, [key], written)
        self._delete = table.delete().where(match)
        self._soft_delete: Any = None
        if self.deleted is not None:
            mark = sa.bindparam("b_mark")
            if isinstance(self.deleted.type, sa.DateTime):
                # The first delete's time stays: a repeated delete does not move it.
                match = sa.and_(match, self.deleted.is_(None))
            self._soft_delete = table.update().where(match).values({self.deleted.name: mark})

    def key_value(self, external_id: str) -> str | int:
        """The id part of `producer:kind:id` (or the whole external id), as the key's type."""
        key = external_id
        if self.key_from == "id":
            match = protocol.EXTERNAL_ID_RE.match(external_id)
            key = match.group(3) if match else external_id
        if not isinstance(self.key.type, sa.Integer):
            return key
        if not key.isascii() or not key.isdigit():
            raise Rejected(
                f"the key {key!r} of {external_id} is not a whole number, but the key column "
                f"{self.table.name}.{self.key.name} is an integer",
                "landing_invalid_value",
            )
        return int(key)

    def row_values(self, payload: Any) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for column in self.columns:
            value = values.json_path(payload, column.path)
            try:
                row[column.name] = _coerce(column, value)
            except (ValueError, ArithmeticError) as exc:
                raise Rejected(
                    f"{column.source} ({str(value)[:60]!r}) cannot land in column "
                    f"{self.table.name}.{column.name} as {column.type}: {exc}",
                    "landing_invalid_value",
                ) from None
            if row[column.name] is None and not column.nullable:
                raise Rejected(
                    f"{column.source} is missing or null, but column "
                    f"{self.table.name}.{column.name} is NOT NULL",
                    "landing_invalid_value",
                )
        return row

    def _row(self, conn: Connection, external_id: str) -> Any:
        return conn.execute(self._current, {"b_key": self.key_value(external_id)}).first()

    def changed(self, conn: Connection, kind: str, external_id: str) -> bool:
        """A row that exists and differs from what was last landed (or was never landed)."""
        current = self._row(conn, external_id)
        if current is None:
            return False
        remembered = conn.execute(
            _remembered, {"b_kind": kind, "b_external_id": external_id}
        ).scalar_one_or_none()
        return remembered != _fingerprint(current)

    def upsert(self, conn: Connection, kind: str, external_id: str, payload: Any) -> None:
        row = self.row_values(payload)
        if self.deleted is not None:
            row[self.deleted.name] = None if self.deleted.nullable else False
        self._upsert(conn, {self.key.name: self.key_value(external_id)}, row)
        fingerprint = _fingerprint(self._row(conn, external_id))
        _remember(
            conn,
            {"kind": kind, "external_id": external_id},
            {"fingerprint": fingerprint, "landed_at": time.time()},
        )

    def delete(self, conn: Connection, kind: str, external_id: str) -> None:
        key = {"b_key": self.key_value(external_id)}
        if self.deleted is None:
            conn.execute(self._delete, key)
            conn.execute(_forget, {"b_kind": kind, "b_external_id": external_id})
            return
        mark: Any = True
        if isinstance(self.deleted.type, sa.DateTime):
            mark = _timestamp(time.time(), bool(self.deleted.type.timezone))
        conn.execute(self._soft_delete, {**key, "b_mark": mark})


# --- configuration --------------------------------------------------------------------------


def _inferred_type(column: sa.Column[Any]) -> str | None:
    """The coercion a column's reflected type implies (None: say `type:`)."""
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return "boolean"
    if isinstance(kind, sa.Integer):
        return "integer"
    if isinstance(kind, sa.Numeric):
        return "decimal"
    if isinstance(kind, sa.DateTime):
        return "timestamp"
    if isinstance(kind, sa.JSON):
        return "json"
    if isinstance(kind, sa.String):
        return "text"
    return None


def _is_unique(table: sa.Table, inspector: Any, column: str) -> bool:
    """True when `column` alone is the primary key or carries a unique constraint or index."""
    if [c.name for c in table.primary_key.columns] == [column]:
        return True
    constraints = inspector.get_unique_constraints(table.name)
    indexes = [i for i in inspector.get_indexes(table.name) if i.get("unique")]
    return any(list(c["column_names"]) == [column] for c in [*constraints, *indexes])


class _Loader(_Validator):
    """Validation of the landing file with the entity map's error shape (file, key path, fix)."""

    def __init__(self, path: Path, engine: sa.Engine) -> None:
        super().__init__(path)
        self.path = path
        self.engine = engine
        self.inspector = sa.inspect(engine)

    def choice(
        self,
        raw: Mapping[Any, Any],
        key: str,
        path: list[Any],
        allowed: tuple[str, ...],
        default: str,
    ) -> str:
        value = raw.get(key, default)
        if value not in allowed:
            raise self.error(
                [*path, key],
                f"{value!r} is not one of {', '.join(allowed)}",
                f"give {key}: " + " | ".join(allowed),
            )
        return value

    def document(self, document: Any) -> Landing:
        top = self.mapping(document, [], "the file must be a mapping with a `kinds:` section")
        self.known_keys(top, [], frozenset({"kinds"}))
        kinds = self.mapping(top.get("kinds"), ["kinds"], "give `kinds:` kind -> handler settings")
        if not kinds:
            raise self.error(["kinds"], "no kinds configured", "configure at least one kind")
        targets: dict[str, Target] = {}
        for kind, raw in kinds.items():
            if kind not in protocol.KINDS:
                raise self.error(
                    ["kinds", kind],
                    f"unknown kind {kind!r}{did_you_mean(str(kind), protocol.KINDS)}",
                    "use one of " + ", ".join(protocol.KINDS),
                )
            targets[kind] = self.target(kind, raw)
        return Landing(targets, self.path)

    def target(self, kind: str, raw_value: Any) -> Target:
        path: list[Any] = ["kinds", kind]
        fix = f"give `handler: {BUILT_IN}` or `handler: package.module:Class`"
        raw = self.mapping(raw_value, path, fix)
        handler_name = raw.get("handler")
        if not isinstance(handler_name, str) or not handler_name:
            raise self.error(
                [*path, "handler"],
                "missing",
                f"give `handler: {BUILT_IN}` (map payload keys to columns) or a custom class "
                "`handler: package.module:Class`",
            )
        conflict = self.choice(raw, "conflict", path, POLICIES, "update")
        if handler_name == BUILT_IN:
            self.known_keys(raw, path, COLUMNS_KEYS)
            handler: Any = self.columns_handler(raw, path)
            name = f"table {handler.table.name} ({BUILT_IN})"
        else:
            self.known_keys(raw, path, CUSTOM_KEYS)
            handler = self.custom_handler(handler_name, raw, path, conflict)
            name = handler_name
        return Target(kind, handler, conflict, name)

    def custom_handler(
        self, dotted: str, raw: Mapping[Any, Any], path: list[Any], conflict: str
    ) -> Any:
        cls = resolve_dotted(dotted, self.path, [*path, "handler"])
        if not inspect.isclass(cls):
            raise self.error([*path, "handler"], f"{dotted!r} is not a class", "name a class")
        options = dict(self.mapping(raw.get("options", {}), [*path, "options"], "give a mapping"))
        try:
            handler = cls(options)
        except Exception as exc:
            raise self.error(
                [*path, "options"],
                f"{dotted}({options!r}) failed: {type(exc).__name__}: {exc}",
                "give the options the class expects",
            ) from None
        needed = ["upsert", "delete"] + (["changed"] if conflict != "update" else [])
        missing = [name for name in needed if not callable(getattr(handler, name, None))]
        if missing:
            raise self.error(
                [*path, "handler"],
                f"{dotted} has no method(s) {', '.join(missing)}",
                "implement upsert(conn, kind, external_id, payload) and delete(conn, kind, "
                "external_id); conflict: skip or error also needs changed(conn, kind, external_id)",
            )
        return handler

    def columns_handler(self, raw: Mapping[Any, Any], path: list[Any]) -> ColumnsHandler:
        table_name = raw.get("table")
        if not isinstance(table_name, str) or not table_name:
            raise self.error([*path, "table"], "missing", "name the target table, e.g. products")
        if not self.inspector.has_table(table_name):
            tables = self.inspector.get_table_names()
            raise self.error(
                [*path, "table"],
                f"no table {table_name!r} in the receiver database"
                f"{did_you_mean(table_name, tables)}",
                "create the target table first (the receiver lands into existing tables only)",
            )
        table = sa.Table(table_name, sa.MetaData(), autoload_with=self.engine)
        key = raw.get("key")
        if not isinstance(key, str) or key not in table.c:
            raise self.error(
                [*path, "key"],
                f"{key!r} is not a column of {table_name}{did_you_mean(str(key), table.c.keys())}",
                "name the column that holds the external id (e.g. key: uuid)",
            )
        if not _is_unique(table, self.inspector, key):
            raise self.error(
                [*path, "key"],
                f"column {table_name}.{key} is not unique",
                f"add a unique index on {table_name}({key}) or make it the primary key",
            )
        key_from = self.choice(raw, "key_from", path, KEY_SOURCES, "id")
        deleted = raw.get("deleted_column")
        if deleted is not None:
            if deleted not in table.c:
                raise self.error(
                    [*path, "deleted_column"],
                    f"{deleted!r} is not a column of {table_name}",
                    "name a nullable timestamp or boolean column, or drop the key for hard deletes",
                )
            column = table.c[deleted]
            usable = isinstance(column.type, sa.Boolean) or (
                isinstance(column.type, sa.DateTime) and column.nullable
            )
            if not usable:
                raise self.error(
                    [*path, "deleted_column"],
                    f"{table_name}.{deleted} is neither a nullable timestamp nor a boolean",
                    "soft-delete into a nullable timestamp (set on delete) or a boolean column",
                )
        columns = self.column_maps(raw.get("columns"), table, [*path, "columns"])
        for column in columns:
            if column.name in (key, deleted):
                raise self.error(
                    [*path, "columns", column.name],
                    f"{column.name} is the {'key' if column.name == key else 'deleted_column'}",
                    "the handler writes that column itself; drop it from columns",
                )
        handled = {key, deleted, *(c.name for c in columns)}
        for column in table.columns:
            generated = column.primary_key and isinstance(column.type, sa.Integer)
            if (
                column.name not in handled
                and not column.nullable
                and column.server_default is None
                and not generated
            ):
                raise self.error(
                    [*path, "columns"],
                    f"column {table_name}.{column.name} is NOT NULL without a default and not "
                    "mapped, so no new row could be inserted",
                    f"map it (`{column.name}: payload.<key>`) or give it a default",
                )
        return ColumnsHandler(table, key, key_from, columns, deleted)

    def column_maps(self, raw_value: Any, table: sa.Table, path: list[Any]) -> list[Column]:
        raw = self.mapping(raw_value, path, "give `columns:` column -> payload.key")
        if not raw:
            raise self.error(path, "no columns mapped", "map at least one column")
        columns = []
        for name, spec in raw.items():
            where = [*path, name]
            if name not in table.c:
                raise self.error(
                    where,
                    f"{name!r} is not a column of {table.name}"
                    f"{did_you_mean(str(name), table.c.keys())}",
                    "map existing columns only",
                )
            if isinstance(spec, str):
                spec = {"from": spec}
            spec = self.mapping(spec, where, "give `payload.key` or {from: payload.key, type: ...}")
            self.known_keys(spec, where, COLUMN_KEYS)
            source = spec.get("from")
            if (
                not isinstance(source, str)
                or not source.startswith(PAYLOAD_PREFIX)
                or (source == PAYLOAD_PREFIX)
            ):
                raise self.error(
                    [*where, "from"], f"{source!r} is not a payload path", "give e.g. payload.name"
                )
            column = table.c[name]
            inferred = _inferred_type(column)
            kind = spec.get("type", inferred)
            if kind not in TYPES:
                raise self.error(
                    [*where, "type"],
                    f"{kind!r} is not a coercion"
                    if kind
                    else f"cannot tell the coercion from the column type {column.type}",
                    "give type: " + " | ".join(TYPES),
                )
            decimals = spec.get("decimals", 2)
            if type(decimals) is not int or not 0 <= decimals <= 12:
                raise self.error(
                    [*where, "decimals"], f"{decimals!r} is not 0..12", "give the minor-unit digits"
                )
            columns.append(
                Column(
                    name=name,
                    source=source,
                    path=tuple(source[len(PAYLOAD_PREFIX) :].split(".")),
                    type=kind,
                    decimals=decimals,
                    nullable=bool(column.nullable),
                    native_json=isinstance(column.type, sa.JSON),
                    aware=isinstance(column.type, sa.DateTime) and bool(column.type.timezone),
                )
            )
        return columns


def load(path: str | Path, engine: sa.Engine) -> Landing:
    """Read and check the landing file against the live database; create the side table."""
    file = Path(path)
    document = read_yaml(file, "the landing file", "--landing")
    result = _Loader(file, engine).document(document)
    metadata.create_all(engine)
    return result


def tombstone_pages(
    conn: Connection, query: sa.Select[Any], kind_column: Any, id_column: Any
) -> Iterator[tuple[str, str]]:
    """(kind, external id) of `query`'s rows in keyset pages: memory stays flat."""
    last: tuple[str, str] | None = None
    while True:
        page = query.order_by(kind_column, id_column).limit(TOMBSTONE_PAGE)
        if last is not None:
            page = page.where(sa.tuple_(kind_column, id_column) > sa.tuple_(*last))
        rows = [(row[0], row[1]) for row in conn.execute(page)]
        yield from rows
        if len(rows) < TOMBSTONE_PAGE:
            return
        last = rows[-1]
