"""The mapping engine: rows of the source database -> canonical entities.

`compile_mappers` turns the entity map into plain closures once per kind, after
checking every table and column against the live schema, so mapping a row is a few
dict look-ups and function calls with no YAML interpretation. Relations (slug lists
through pivot tables, inline variations, translation tables) are loaded once per page
with `IN (...)`, never once per row.
"""

from __future__ import annotations

import contextlib
import copy
import string
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from catalog_sync import protocol, values
from catalog_sync.config import (
    PAYLOAD_PREFIX,
    CatalogConfig,
    KindConfig,
    VariationsConfig,
    did_you_mean,
    format_key_path,
    resolve_dotted,
)
from catalog_sync.errors import ConfigurationError

Row = Mapping[str, Any]
Getter = Callable[[Row, "MapContext"], Any]

#: Ids per `IN (...)` query: far below every driver's bind-parameter limit.
IN_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Entity:
    kind: str
    external_id: str
    payload: dict[str, Any]
    lang: str | None = None
    translation_of: str | None = None

    def upsert_op(self) -> dict[str, Any]:
        return protocol.upsert_op(
            self.kind, self.external_id, self.payload, self.lang, self.translation_of
        )

    def snapshot_line(self) -> dict[str, Any]:
        return protocol.snapshot_line(
            self.kind, self.external_id, self.payload, self.lang, self.translation_of
        )


def encoded(items: Iterable[Entity | MappingFailure]) -> Iterator[bytes | MappingFailure]:
    """Snapshot items as staged: an entity as its encoded NDJSON line, a failure as it is."""
    for item in items:
        yield protocol.dumps(item.snapshot_line()) if isinstance(item, Entity) else item


@dataclass(frozen=True, slots=True)
class Deletion:
    kind: str
    external_id: str

    def delete_op(self) -> dict[str, Any]:
        return protocol.delete_op(self.kind, self.external_id)


@dataclass(frozen=True, slots=True)
class MappingFailure:
    """A row that cannot be mapped: it goes to the dead letter, it is never dropped."""

    kind: str
    primary_key: Any
    external_id: str | None
    error: str


class MapContext:
    """What a value spec sees besides the row; `call:` callables get it as 2nd argument.

    `locale` is the locale being mapped (None without translations), `vars` the map's
    variables (producer, currency, `vars:`), `page` the relation data of the page.
    """

    __slots__ = ("kind", "locale", "page", "producer", "vars")

    def __init__(
        self, kind: str, producer: str, variables: Mapping[str, Any], locale: str | None = None
    ) -> None:
        self.kind = kind
        self.producer = producer
        self.vars = variables
        self.locale = locale
        self.page: list[Any] = []


class _RowError(Exception):
    """A value spec failed for one row; `key` says which payload key."""

    def __init__(self, key: str, cause: Exception) -> None:
        super().__init__(f"{key}: {cause}")
        self.key = key
        self.cause = cause


# --- schema -------------------------------------------------------------------------------


class _Schema:
    """Tables and columns of the live database, read once through SQLAlchemy inspection."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.inspector = sa.inspect(engine)
        self._tables: set[str] | None = None
        self._columns: dict[str, dict[str, Any]] = {}

    def table_names(self) -> set[str]:
        if self._tables is None:
            self._tables = set(self.inspector.get_table_names())
            with contextlib.suppress(NotImplementedError):
                self._tables |= set(self.inspector.get_view_names())
        return self._tables

    def columns(self, table: str, config: CatalogConfig, key_path: list[Any]) -> dict[str, Any]:
        if table not in self._columns:
            if table not in self.table_names():
                raise config.error(
                    key_path,
                    f"unknown table {table!r}{did_you_mean(table, self.table_names())}",
                    "name a table that exists in the source database",
                )
            self._columns[table] = {
                str(col["name"]): col["type"] for col in self.inspector.get_columns(table)
            }
        return self._columns[table]

    def select_columns(self, select: str, config: CatalogConfig, key_path: list[Any]) -> dict:
        probe = sa.text(f"SELECT * FROM ({select}) AS src WHERE 1 = 0")
        try:
            with self.engine.connect() as conn:
                keys = conn.execute(probe).keys()
        except sa.exc.DBAPIError as exc:
            raise config.error(
                key_path,
                f"the select fails on the source database: {str(exc.orig).strip()[:300]}",
                "correct the SQL (it runs as a subquery `(...) AS src`)",
            ) from None
        return {str(key): None for key in keys}


# --- relation loaders: one query per page ----------------------------------------------


class _Loader:
    """Loads what a page of rows needs from other tables, with `IN` on the page's keys.

    On PostgreSQL the keys go as one array parameter (`= ANY(:keys)`): the statement's
    text is the same for every page, so it is parsed and planned once rather than once
    per page with a thousand placeholders.
    """

    key: str  # column of the page's rows whose values are looked up
    query: sa.Select  # WHERE ... IN (:keys) (expanding)
    query_any: sa.Select  # WHERE ... = ANY(:keys), for PostgreSQL

    @staticmethod
    def _key_filters(column: Any) -> tuple[Any, Any]:
        """(IN with an expanding list, = ANY of one array) on `column`."""
        return (
            column.in_(sa.bindparam("keys", expanding=True)),
            column == sa.any_(sa.bindparam("keys")),
        )

    def _execute(self, conn: sa.Connection, keys: list[Any]) -> sa.CursorResult[Any]:
        query = self.query_any if conn.dialect.name == "postgresql" else self.query
        return conn.execute(query, {"keys": keys})

    def load(self, conn: sa.Connection, keys: list[Any]) -> dict[Any, Any]:
        raise NotImplementedError

    def load_page(self, conn: sa.Connection, rows: Sequence[Row]) -> dict[Any, Any]:
        keys = list(dict.fromkeys(row[self.key] for row in rows if row[self.key] is not None))
        result: dict[Any, Any] = {}
        for start in range(0, len(keys), IN_CHUNK):
            result.update(self.load(conn, keys[start : start + IN_CHUNK]))
        return result


def not_deleted(table: sa.TableClause, column: str | None) -> list[Any]:
    return [table.c[column].is_(None)] if column else []


class _SlugLoader(_Loader):
    def __init__(self, spec: Mapping[str, Any], key: str) -> None:
        self.key = key
        related_key = spec.get("related_key", "id")
        slug = spec.get("slug_column", "slug")
        deleted = spec.get("deleted_column")
        pivot = sa.table(
            spec["through"], sa.column(spec["local_key"]), sa.column(spec["foreign_key"])
        )
        related = sa.table(
            spec["slugs"], *(sa.column(c) for c in dict.fromkeys([related_key, slug, deleted]) if c)
        )
        local = pivot.c[spec["local_key"]]
        self.query, self.query_any = (
            sa.select(local, related.c[slug])
            .select_from(
                pivot.join(related, related.c[related_key] == pivot.c[spec["foreign_key"]])
            )
            .where(keys, *not_deleted(related, deleted))
            .order_by(local, related.c[related_key])
            for keys in self._key_filters(local)
        )

    def load(self, conn: sa.Connection, keys: list[Any]) -> dict[Any, Any]:
        found: dict[Any, list[str]] = {}
        for local, slug in self._execute(conn, keys).all():
            if slug is not None:
                found.setdefault(local, []).append(slug)
        return found


class _RowsLoader(_Loader):
    """Whole rows of a child table grouped by their foreign key, in the given order."""

    def __init__(
        self,
        table: str,
        foreign_key: str,
        order: Sequence[str],
        key: str,
        where: Sequence[Callable[[sa.TableClause], Any]] = (),
        deleted_column: str | None = None,
        columns: Sequence[str] | None = None,
    ) -> None:
        """`columns`: the only ones to read (None: all, `*`)."""
        self.key = key
        self.foreign_key = foreign_key
        names = dict.fromkeys([foreign_key, *order, deleted_column, *(columns or ())])
        child = sa.table(table, *(sa.column(c) for c in names if c))
        read = (
            [sa.literal_column("*")]
            if columns is None
            else [child.c[c] for c in dict.fromkeys([foreign_key, *columns])]
        )
        self.query, self.query_any = (
            sa.select(*read)
            .select_from(child)
            .where(
                keys,
                *not_deleted(child, deleted_column),
                *(clause(child) for clause in where),
            )
            .order_by(*(child.c[c] for c in [foreign_key, *order]))
            for keys in self._key_filters(child.c[foreign_key])
        )

    def load(self, conn: sa.Connection, keys: list[Any]) -> dict[Any, Any]:
        found: dict[Any, list[dict[str, Any]]] = {}
        result = self._execute(conn, keys)
        names = list(map(str, result.keys()))
        index = names.index(self.foreign_key)
        for record in result.all():  # one fetch, not a fetch per row
            found.setdefault(record[index], []).append(dict(zip(names, record, strict=True)))
        return found


# --- compiling value specs ---------------------------------------------------------------


class _KindCompiler:
    """Compiles one kind's map; records every column it reads to check them all at once."""

    def __init__(
        self,
        catalog: CatalogConfig,
        kind: KindConfig,
        columns: dict[str, Any] | None,
        schema: _Schema | None,
    ) -> None:
        self.catalog = catalog
        self.kind = kind
        self.columns = columns  # None: a custom source, columns unknown
        self.schema = schema
        self.loaders: list[_Loader] = []

    def error(self, key_path: Sequence[Any], problem: str, fix: str) -> ConfigurationError:
        return self.catalog.error(key_path, problem, fix)

    def need(self, column: str, key_path: list[Any], columns: dict[str, Any] | None = None) -> None:
        available = self.columns if columns is None else columns
        if available is not None and column not in available:
            where = self.kind.table or "the select"
            raise self.error(
                key_path,
                f"unknown column {column!r} in {where}{did_you_mean(column, list(available))}",
                "name an existing column (columns: " + ", ".join(sorted(available)) + ")",
            )

    def add_loader(self, loader: _Loader) -> int:
        self.loaders.append(loader)
        return len(self.loaders) - 1

    def template(
        self, template: str, key_path: list[Any], columns: dict[str, Any] | None = None
    ) -> Callable[[Row, MapContext], str | None]:
        """`str.format` over row columns, variables and {locale}; None if a column is NULL."""
        available = self.columns if columns is None else columns
        fields = [
            name for _t, name, _s, _c in string.Formatter().parse(template) if name is not None
        ]
        row_fields: list[str] = []
        constants: dict[str, Any] = {}
        uses_locale = False
        for name in dict.fromkeys(fields):
            if available is not None and name in available:
                row_fields.append(name)
            elif name == "locale":
                uses_locale = True
            elif name in self.catalog.vars:
                constants[name] = self.catalog.vars[name]
            elif available is None:
                row_fields.append(name)
            else:
                self.need(name, key_path, columns)
        fmt = template.format
        fields_t = tuple(row_fields)

        def render(row: Row, ctx: MapContext) -> str | None:
            args = dict(constants)
            for name in fields_t:
                value = row[name]
                if value is None:
                    return None
                args[name] = value
            if uses_locale:
                args["locale"] = ctx.locale or ""
            return fmt(**args)

        return render

    def spec(
        self, spec: Mapping[str, Any], key_path: list[Any], columns: dict[str, Any] | None = None
    ) -> Getter:
        keyword = next(iter(spec))  # config puts the spec's keyword first
        return _BUILDERS[keyword](self, spec, [*key_path, keyword], columns)

    def column_type_is_numeric(self, column: str, columns: dict[str, Any] | None) -> bool:
        available = self.columns if columns is None else columns
        kind = (available or {}).get(column)
        return kind is None or isinstance(kind, sa.Numeric | sa.Integer)


def _as_is(value: Any) -> Any:
    # Bytes (a BLOB, or text SQLite stored as one) are text or a row error naming the
    # key; raw bytes would break the JSON of the whole batch.
    return values.to_text(value) if isinstance(value, bytes) else value


def _column_getter(column: str, convert: Callable[[Any], Any] | None) -> Getter:
    if convert is None:

        def get(row: Row, ctx: MapContext) -> Any:
            value = row[column]  # `_as_is`, inlined: this is the commonest getter
            return values.to_text(value) if isinstance(value, bytes) else value
    else:

        def get(row: Row, ctx: MapContext) -> Any:
            return convert(row[column])

    get.column_conversion = (column, convert or _as_is)  # type: ignore[attr-defined]
    return get


def column_conversion(getter: Getter) -> tuple[str, Callable[[Any], Any]] | None:
    """(column, convert) when `getter(row, ctx)` is `convert(row[column])`: a caller that
    holds the column's value calls `convert` without building a row (`pushdown`)."""
    return getattr(getter, "column_conversion", None)


def _b_column(c: _KindCompiler, spec: Mapping[str, Any], at: list[Any], cols: Any) -> Getter:
    column = spec["column"]
    c.need(column, at, cols)
    if "path" not in spec:
        return _column_getter(column, None)
    path = tuple(str(spec["path"]).split("."))
    return _column_getter(column, lambda value: values.json_path(value, path))


def _simple(convert: Callable[[Any], Any]) -> Callable[..., Getter]:
    def build(c: _KindCompiler, spec: Mapping[str, Any], at: list[Any], cols: Any) -> Getter:
        column = spec[at[-1]]
        c.need(column, at, cols)
        return _column_getter(column, convert)

    return build


def _b_const(c: _KindCompiler, spec: Mapping[str, Any], at: list[Any], cols: Any) -> Getter:
    constant = spec["const"]
    if isinstance(constant, dict | list):
        return lambda row, ctx: copy.deepcopy(constant)
    return lambda row, ctx: constant


def _b_var(c: _KindCompiler, spec: Mapping[str, Any], at: list[Any], cols: Any) -> Getter:
    constant = c.catalog.vars[spec["var"]]
    return lambda row, ctx: constant


def _b_money(c: _KindCompiler, spec: Mapping[str, Any], at: list[Any], cols: Any) -> Getter:
    keyword = at[-1]
    column = spec[keyword]
    c.need(column, at, cols)
    if not c.column_type_is_numeric(column, cols):
        available = c.columns if cols is None else cols
        raise c.error(
            at,
            f"column {column!r} is {available[column]}, not a number",
            f"point {keyword} at a numeric (DECIMAL/INTEGER) column, or convert it with call:",
        )
    decimals = spec.get("decimals", 2)
    convert = values.money_minor if keyword == "money" else values.decimal_string
    return _column_getter(column, lambda value: convert(value, decimals))


def _b_template(c: _KindCompiler, spec: Mapping[str, Any], at: list[Any], cols: Any) -> Getter:
    return c.template(spec["template"], at, cols)


def _b_ref(c: _KindCompiler, spec: Mapping[str, Any], at: list[Any], cols: Any) -> Getter:
    column = spec["column"]
    c.need(column, [*at[:-1], "column"], cols)
    prefix = f"{c.catalog.producer}:{spec['ref']}:"

    def get(row: Row, ctx: MapContext) -> str | None:
        value = row[column]
        return None if value is None or value == "" else f"{prefix}{value}"

    return get


def _b_slugs(c: _KindCompiler, spec: Mapping[str, Any], at: list[Any], cols: Any) -> Getter:
    base = at[:-1]
    key = spec.get("key", c.kind.primary_key)
    c.need(key, [*base, "key"], cols)
    if c.schema is not None:
        pivot = c.schema.columns(spec["through"], c.catalog, [*base, "through"])
        for option in ("local_key", "foreign_key"):
            c.need(spec[option], [*base, option], pivot)
        related = c.schema.columns(spec["slugs"], c.catalog, at)
        for option, default in (("related_key", "id"), ("slug_column", "slug")):
            c.need(spec.get(option, default), [*base, option], related)
        if spec.get("deleted_column"):
            c.need(spec["deleted_column"], [*base, "deleted_column"], related)
    index = c.add_loader(_SlugLoader(spec, key))

    def get(row: Row, ctx: MapContext) -> list[str]:
        return list(ctx.page[index].get(row[key], ()))

    return get


def _b_call(c: _KindCompiler, spec: Mapping[str, Any], at: list[Any], cols: Any) -> Getter:
    function = resolve_dotted(spec["call"], c.catalog.path, at)
    if not callable(function):
        raise c.error(at, f"{spec['call']!r} is not callable", "name a function f(row, context)")
    return function  # called as function(row, context)


_BUILDERS: dict[str, Callable[..., Getter]] = {
    "column": _b_column,
    "const": _b_const,
    "var": _b_var,
    "text": _simple(values.to_text),
    "integer": _simple(values.to_int),
    "boolean": _simple(values.to_bool),
    "money": _b_money,
    "decimal": _b_money,
    "html_text": _simple(values.html_to_text),
    "stock_status": _simple(values.stock_status),
    "template": _b_template,
    "ref": _b_ref,
    "attributes": _simple(values.attributes),
    "string_list": _simple(values.string_list),
    "json": _simple(values.json_value),
    "timestamp": _simple(values.timestamp),
    "variant_options": _simple(values.variant_options),
    "slugs": _b_slugs,
    "call": _b_call,
}


def _payload_tree(entries: Sequence[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    """`a.b`, `c`, `a.d` -> {"a": {"b", "d"}, "c"}, in map order."""
    tree: dict[str, Any] = {}
    for parts, leaf in entries:
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = leaf
    return tree


def _payload_builder(entries: Sequence[tuple[tuple[str, ...], Getter]]) -> Getter:
    """Nested dict builder in map order: `a.b`, `c`, `a.d` -> {"a": {"b", "d"}, "c"}."""

    def build(node: dict[str, Any]) -> Getter:
        items = tuple(
            (key, build(value) if isinstance(value, dict) else value) for key, value in node.items()
        )

        def make(row: Row, ctx: MapContext) -> dict[str, Any]:
            return {key: getter(row, ctx) for key, getter in items}

        return make

    return build(_payload_tree(entries))


#: Values a translated line can share with its base line: nothing can change them later.
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})

#: Specs whose value depends only on the columns they name (never on the locale).
_COLUMN_SPECS = frozenset(
    {"column", "text", "integer", "boolean", "money", "decimal", "html_text", "stock_status"}
    | {"ref", "attributes", "string_list", "json", "timestamp", "variant_options"}
)

ReusingBuilder = Callable[[Row, MapContext, dict[str, Any]], dict[str, Any]]


def spec_reads(spec: Mapping[str, Any], primary_key: str) -> set[str] | None:
    """The row columns a value spec reads, or None when it may depend on more (the
    locale, a callable, a fresh copy of a constant)."""
    keyword = next(iter(spec))
    if keyword in _COLUMN_SPECS:
        return {spec["column"] if keyword == "ref" else spec[keyword]}
    if keyword == "var":
        return set()
    if keyword == "slugs":
        return {spec.get("key", primary_key)}
    if keyword == "template":
        fields = {name for _t, name, _s, _c in string.Formatter().parse(spec["template"]) if name}
        return None if "locale" in fields else fields
    return None


def _reusing_builder(entries: Sequence[tuple[tuple[str, ...], Getter, bool]]) -> ReusingBuilder:
    """`_payload_builder` for a translated line: a key marked reusable (it reads no
    localized column) takes the base line's value when that is immutable, rather than
    computing it again (the money, HTML and templates of every translation)."""

    def build(node: dict[str, Any]) -> ReusingBuilder:
        items = tuple(
            (key, build(leaf), None) if isinstance(leaf, dict) else (key, *leaf)
            for key, leaf in node.items()
        )

        def make(row: Row, ctx: MapContext, base: dict[str, Any]) -> dict[str, Any]:
            payload: dict[str, Any] = {}
            for key, getter, reuse in items:
                if reuse is None:  # a nested object, built by the same rule
                    payload[key] = getter(row, ctx, base[key])
                elif reuse and type(value := base[key]) in _IMMUTABLE:
                    payload[key] = value
                else:
                    payload[key] = getter(row, ctx)
            return payload

        return make

    return build(_payload_tree([(parts, (getter, reuse)) for parts, getter, reuse in entries]))


# --- mappers ------------------------------------------------------------------------------


class KindMapper:
    """One kind's compiled map. Built by `compile_mappers`; holds no per-row state."""

    def __init__(
        self,
        config: KindConfig,
        catalog: CatalogConfig,
        compiler: _KindCompiler,
    ) -> None:
        self.kind = config.kind
        self.config = config
        self.catalog = catalog
        self.columns: tuple[str, ...] | None = (
            tuple(compiler.columns) if compiler.columns is not None else None
        )
        #: Column name -> SQLAlchemy type (None for a select's); None for a custom source.
        self.column_types: dict[str, Any] | None = compiler.columns
        self.source_class: type | None = None
        self._static: Entity | None = None
        self._required = protocol.REQUIRED_PAYLOAD_KEYS.get(config.kind, ())
        self._pk = config.primary_key
        path: list[Any] = ["kinds", config.kind]
        self._external_id = self._compile_external_id(compiler, config.external_id, path)
        entries: list[tuple[tuple[str, ...], Getter]] = []
        reads: list[set[str] | None] = []
        self._flat: list[tuple[str, Getter]] = []
        for key, spec in config.map.items():
            getter = compiler.spec(spec, [*path, "map", key])
            entries.append((tuple(key[len(PAYLOAD_PREFIX) :].split(".")), getter))
            reads.append(spec_reads(spec, config.primary_key))
            self._flat.append((key, getter))
        self._variations: Getter | None = None
        self.variations_loader: int | None = None
        if config.variations is not None:
            for key in ("payload.variations", "payload.variant_axes"):
                if key in config.map:
                    raise catalog.error(
                        [*path, "map", key],
                        "also produced by `variations:`",
                        "remove it from the map or drop `variations:`",
                    )
            self._variations = _compile_variations(compiler, config.variations, path)
            self.variations_loader = len(compiler.loaders) - 1  # the one it added
            self._flat.append(("payload.variations", self._variations))
        self._build = _payload_builder(entries)
        #: Map key -> its compiled getter (`pushdown` runs some of them on their own).
        self.getters: dict[str, Getter] = dict(self._flat)
        self._localize, self._present, localized = _compile_translations(compiler, config, path)
        self._build_translated = _reusing_builder(
            [
                (parts, getter, columns is not None and not columns & localized)
                for (parts, getter), columns in zip(entries, reads, strict=True)
            ]
        )
        self._loaders = tuple(compiler.loaders)

    def _compile_external_id(
        self, compiler: _KindCompiler, spec: str, path: list[Any]
    ) -> Callable[[Row], str]:
        prefix = f"{self.catalog.producer}:{self.kind}:"
        if "{" in spec:
            render = compiler.template(spec, [*path, "external_id"])
            ctx = MapContext(self.kind, self.catalog.producer, self.catalog.vars)

            def from_template(row: Row) -> str:
                value = render(row, ctx)
                if not value:
                    raise ValueError(f"external id template {spec!r} gives nothing (a NULL column)")
                return prefix + value

            return from_template
        compiler.need(spec, [*path, "external_id"])

        def from_column(row: Row) -> str:
            value = row[spec]
            if value is None or value == "":
                raise ValueError(f"external id column {spec!r} is empty")
            return f"{prefix}{value}"

        return from_column

    # -- mapping ------------------------------------------------------------------------

    def static_entities(self) -> list[Entity]:
        """Entities made from the map alone (host_profile): no rows involved."""
        return [self._static] if self._static is not None else []

    def new_context(
        self, conn: sa.Connection | None, rows: Sequence[Row], only: int | None = None
    ) -> MapContext:
        """A context with the relations of `rows` loaded (of loader `only`, when given)."""
        ctx = MapContext(self.kind, self.catalog.producer, self.catalog.vars)
        if self._loaders and rows:
            assert conn is not None, "relation loaders need a connection"
            ctx.page = [
                loader.load_page(conn, rows) if only in (None, index) else {}
                for index, loader in enumerate(self._loaders)
            ]
        else:
            ctx.page = [{} for _ in self._loaders]
        return ctx

    def map_page(
        self, conn: sa.Connection, rows: Sequence[Row]
    ) -> Iterator[Entity | MappingFailure]:
        """Map the live rows of one page, in order; a bad row becomes a MappingFailure."""
        return self.map_rows(rows, self.new_context(conn, rows))

    def map_rows(self, rows: Sequence[Row], ctx: MapContext) -> Iterator[Entity | MappingFailure]:
        """`map_page` with the page's relations already loaded (`new_context`): no SQL."""
        for row in rows:
            try:
                yield from self.map_row(row, ctx)
            except _RowError as exc:
                yield self._failure(row, str(exc))
            except Exception as exc:
                yield self._failure(row, f"{type(exc).__name__}: {exc}")

    def _failure(self, row: Row, error: str) -> MappingFailure:
        try:
            external_id: str | None = self._external_id(row)
        except Exception:
            external_id = None
        return MappingFailure(self.kind, row.get(self._pk), external_id, error)

    def map_row(self, row: Row, ctx: MapContext) -> list[Entity]:
        """Every entity of one row (one per locale present); raises on a bad row."""
        external_id = self._external_id(row)
        if self._present is None:
            return [Entity(self.kind, external_id, self._payload(row, ctx))]
        translations = self.config.translations
        assert translations is not None
        entities = []
        base = translations.base
        base_payload: dict[str, Any] | None = None
        for locale in translations.locales:
            if not self._present(row, ctx, locale):
                continue
            ctx.locale = locale
            if locale == base:
                base_payload = self._payload(row, ctx)
                entities.append(Entity(self.kind, external_id, base_payload, base))
            else:
                localized = self._localize(row, ctx, locale)
                entities.append(
                    Entity(
                        self.kind,
                        f"{external_id}:{locale}",
                        self._payload(localized, ctx, base_payload),
                        locale,
                        external_id,
                    )
                )
        if not entities:
            ctx.locale = base
            entities.append(Entity(self.kind, external_id, self._payload(row, ctx), base))
        return entities

    def _payload(
        self, row: Row, ctx: MapContext, base: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The payload of `row`; `base`, the base locale's payload of the same row, lends
        the values that translating does not change."""
        try:
            if base is None:
                payload = self._build(row, ctx)
            else:
                payload = self._build_translated(row, ctx, base)
            if self._variations is not None:
                variations, axes = self._variations(row, ctx)
                if variations:
                    payload["variations"] = variations
                    payload["variant_axes"] = axes
        except Exception as exc:
            raise self._explain(row, ctx, exc) from exc
        for key in self._required:
            value = payload.get(key)
            if value is None or value == "" or value == [] or value == {}:
                raise _RowError(
                    f"payload.{key}",
                    ValueError(f"required for kind {self.kind!r} and must be non-empty"),
                )
        return payload

    def _explain(self, row: Row, ctx: MapContext, exc: Exception) -> _RowError:
        """Find which payload key failed (slow path, only after a failure)."""
        for key, getter in self._flat:
            try:
                getter(row, ctx)
            except Exception as cause:
                return _RowError(key, cause)
        return _RowError("payload", exc)

    def deletions(self, rows: Sequence[Row]) -> Iterator[Deletion | MappingFailure]:
        """Every external id a deleted row produced, all its translations included.

        A deleted row whose external id cannot be computed (a NULL id column) becomes
        a MappingFailure rather than vanishing.
        """
        translations = self.config.translations
        others = translations.others if translations is not None else ()
        for row in rows:
            try:
                external_id = self._external_id(row)
            except Exception as exc:
                yield MappingFailure(self.kind, row.get(self._pk), None, str(exc))
                continue
            yield Deletion(self.kind, external_id)
            for locale in others:
                yield Deletion(self.kind, f"{external_id}:{locale}")


def _compile_variations(
    compiler: _KindCompiler, variations: VariationsConfig, path: list[Any]
) -> Getter:
    """`payload.variations` and `payload.variant_axes` from a child table, per page."""
    vpath = [*path, "variations"]
    catalog = compiler.catalog
    columns: dict[str, Any] | None = None
    if compiler.schema is not None:
        columns = compiler.schema.columns(variations.table, catalog, [*vpath, "table"])
        for key in ("foreign_key", "primary_key", "options_column"):
            compiler.need(getattr(variations, key), [*vpath, key], columns)
        if variations.deleted_column:
            compiler.need(variations.deleted_column, [*vpath, "deleted_column"], columns)
    id_spec = variation_id_spec(catalog, variations)
    prefix = f"{catalog.producer}:variation:"
    if "{" in id_spec:
        render = compiler.template(id_spec, [*vpath, "external_id"], columns)
    else:
        compiler.need(id_spec, [*vpath, "external_id"], columns)
        render = _column_getter(id_spec, None)
    fields = tuple(
        (name, compiler.spec(spec, [*vpath, "map", name], columns))
        for name, spec in variations.map.items()
    )
    loader = _RowsLoader(
        variations.table,
        variations.foreign_key,
        [variations.primary_key],
        compiler.kind.primary_key,
        deleted_column=variations.deleted_column,
        columns=_variation_reads(variations, id_spec, columns),
    )
    index = compiler.add_loader(loader)
    key = compiler.kind.primary_key
    options_column = variations.options_column

    def build(row: Row, ctx: MapContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        children = ctx.page[index].get(row[key])
        if not children:
            return [], []
        result = []
        axes: dict[str, dict[str, None]] = {}
        for child in children:
            local = render(child, ctx)
            if local is None or local == "":
                raise ValueError(f"a variation of this row has no external id ({id_spec!r})")
            attributes = values.variant_options(child[options_column])
            for axis, label in attributes.items():
                axes.setdefault(axis, {}).setdefault(label, None)
            entry: dict[str, Any] = {"external_id": f"{prefix}{local}", "attributes": attributes}
            for name, getter in fields:
                entry[name] = getter(child, ctx)
            result.append(entry)
        return result, variant_axes(axes)

    return build


def variant_axes(axes: Mapping[str, Mapping[str, None]]) -> list[dict[str, Any]]:
    """`payload.variant_axes` from {axis: {label: None}} in the order first seen."""
    return [
        {
            "name": axis,
            "slug": values.slugify(axis),
            "values": [{"label": label, "slug": values.slugify(label)} for label in labels],
        }
        for axis, labels in axes.items()
    ]


def variation_id_spec(catalog: CatalogConfig, variations: VariationsConfig) -> str:
    """The column or template of an inline variation's external id: its own, else the
    standalone `variation` kind's when that reads the same table, else its primary key."""
    if variations.external_id is not None:
        return variations.external_id
    standalone = catalog.kinds.get("variation")
    if standalone is not None and standalone.table == variations.table:
        return standalone.external_id
    return variations.primary_key


def _variation_reads(
    variations: VariationsConfig, id_spec: str, columns: dict[str, Any] | None
) -> list[str] | None:
    """The child columns inline variations read, or None (all) when that is not known:
    a child's timestamps and other columns would be parsed for nothing."""
    if columns is None:
        return None
    id_as_spec = {"template": id_spec} if "{" in id_spec else {"column": id_spec}
    reads: set[str] = set()
    for spec in (id_as_spec, *variations.map.values()):
        more = spec_reads(spec, variations.primary_key)
        if more is None:
            return None
        reads |= more
    wanted = [variations.options_column, *sorted(reads)]
    return [name for name in dict.fromkeys(wanted) if name in columns]


def _compile_translations(
    compiler: _KindCompiler, config: KindConfig, path: list[Any]
) -> tuple[
    Callable[[Row, MapContext, str], Row],
    Callable[[Row, MapContext, str], bool] | None,
    frozenset[str],
]:
    """The per-locale row (localized columns overlaid), the "present" predicate and the
    columns a locale may overlay."""
    translations = config.translations
    if translations is None:
        return (lambda row, ctx, locale: row), None, frozenset()
    tpath = [*path, "translations"]
    catalog = compiler.catalog
    columns: dict[str, dict[str, str]] = {}  # locale -> {base column: localized column}
    for base_column, template in translations.columns.items():
        compiler.need(base_column, [*tpath, "columns", base_column])
        for locale in translations.others:
            localized = template.format(locale=locale)
            compiler.need(localized, [*tpath, "columns", base_column])
            columns.setdefault(locale, {})[base_column] = localized
    table_index: int | None = None
    overlay: tuple[str, ...] = ()
    if translations.table is not None:
        assert translations.foreign_key is not None
        table_columns: dict[str, Any] | None = None
        if compiler.schema is not None:
            table_columns = compiler.schema.columns(translations.table, catalog, [*tpath, "table"])
            compiler.need(translations.foreign_key, [*tpath, "foreign_key"], table_columns)
            compiler.need(translations.locale_column, [*tpath, "locale_column"], table_columns)
            skip = {
                translations.foreign_key,
                translations.locale_column,
                "id",
                "created_at",
                "updated_at",
                "deleted_at",
                config.primary_key,
                config.watermark,
                config.deleted_column,
            }
            overlay = tuple(
                c
                for c in table_columns
                if c not in skip and (compiler.columns is None or c in compiler.columns)
            )
        locale_column = translations.locale_column

        def in_locales(table: sa.TableClause) -> Any:
            return table.c[locale_column].in_(translations.others)

        loader = _RowsLoader(
            translations.table,
            translations.foreign_key,
            [locale_column],
            config.primary_key,
            where=[in_locales],
        )
        table_index = compiler.add_loader(loader)
    fallback = translations.fallback
    pk = config.primary_key

    def translation_row(row: Row, ctx: MapContext, locale: str) -> dict[str, Any] | None:
        if table_index is None:
            return None
        for child in ctx.page[table_index].get(row[pk], ()):
            if child[locale_column] == locale:
                return child
        return None

    def localize(row: Row, ctx: MapContext, locale: str) -> Row:
        result = dict(row)
        for base_column, localized in columns.get(locale, {}).items():
            value = row[localized]
            if value is not None or not fallback:
                result[base_column] = value
        child = translation_row(row, ctx, locale)
        if child is not None:
            for name in overlay:
                if child[name] is not None or not fallback:
                    result[name] = child[name]
        return result

    present_spec = translations.present
    if present_spec is not None and "call" in present_spec:
        function = resolve_dotted(present_spec["call"], catalog.path, [*tpath, "present", "call"])

        def present(row: Row, ctx: MapContext, locale: str) -> bool:
            return bool(function(row, locale))

    elif present_spec is not None:
        column = present_spec["column"]
        compiler.need(column, [*tpath, "present", "column"])

        def present(row: Row, ctx: MapContext, locale: str) -> bool:
            if locale == translations.base:
                value = row[column]
            elif column in columns.get(locale, {}):
                value = row[columns[locale][column]]
            else:
                child = translation_row(row, ctx, locale)
                if child is None:
                    return False
                value = child.get(column, row[column])
            return value is not None and value != ""

    elif table_index is not None:

        def present(row: Row, ctx: MapContext, locale: str) -> bool:
            return locale == translations.base or translation_row(row, ctx, locale) is not None

    else:

        def present(row: Row, ctx: MapContext, locale: str) -> bool:
            return True

    return localize, present, frozenset(translations.columns) | frozenset(overlay)


# --- entry points -------------------------------------------------------------------------


def _static_entity(catalog: CatalogConfig, config: KindConfig) -> Entity:
    """The host profile: capabilities, plus `catalog.facets` when products have facets."""
    capabilities = list(config.capabilities)
    product = catalog.kinds.get("product")
    has_facets = product is not None and (
        product.variations is not None or any("attributes" in spec for spec in product.map.values())
    )
    if has_facets and "catalog.facets" not in capabilities:
        capabilities.append("catalog.facets")
    payload: dict[str, Any] = {"capabilities": capabilities}
    if config.cart_endpoint:
        payload["cart_endpoint"] = config.cart_endpoint
    if config.metadata:
        payload["metadata"] = dict(config.metadata)
    return Entity("host_profile", protocol.HOST_PROFILE_EXTERNAL_ID, payload)


def compile_mappers(
    catalog: CatalogConfig, engine: sa.Engine | None, kinds: Collection[str] | None = None
) -> dict[str, KindMapper]:
    """Compile every kind (or those of `kinds`) once, checking tables, columns and dotted
    paths. A task that extracts one kind compiles only it: each kind reflects its tables.

    `engine` None skips the live-schema checks (for tools without a database).
    """
    schema = _Schema(engine) if engine is not None else None
    mappers: dict[str, KindMapper] = {}
    for kind, config in catalog.kinds.items():
        if kinds is not None and kind not in kinds:
            continue
        path: list[Any] = ["kinds", kind]
        columns: dict[str, Any] | None = None
        if schema is not None and config.table is not None:
            columns = schema.columns(config.table, catalog, [*path, "table"])
        elif schema is not None and config.select is not None:
            columns = schema.select_columns(config.select, catalog, [*path, "select"])
        compiler = _KindCompiler(catalog, config, columns, schema)
        for key in ("primary_key", "watermark", "deleted_column"):
            if getattr(config, key) is not None and not config.is_static:
                compiler.need(getattr(config, key), [*path, key])
        mapper = KindMapper(config, catalog, compiler)
        if config.source is not None:
            source_class = resolve_dotted(config.source, catalog.path, [*path, "source"])
            if not isinstance(source_class, type):
                raise catalog.error(
                    [*path, "source"],
                    f"{config.source!r} is not a class",
                    "name a class implementing catalog_sync.sources.Source",
                )
            mapper.source_class = source_class
        if config.is_static:
            mapper._static = _static_entity(catalog, config)
        mappers[kind] = mapper
    return mappers


def live_rows_query(engine: sa.Engine | sa.Connection, config: KindConfig) -> str:
    """SQL for the live rows of a table/select kind, primary-key order (no LIMIT)."""
    quote = engine.dialect.identifier_preparer.quote
    source = quote(config.table) if config.table else f"({config.select}) AS src"
    where = ""
    if config.deleted_column:
        where = f" WHERE {quote(config.deleted_column)} IS NULL"
    elif config.deleted_when:
        where = f" WHERE (CASE WHEN ({config.deleted_when}) THEN 1 ELSE 0 END) = 0"
    return f"SELECT * FROM {source}{where} ORDER BY {quote(config.primary_key)}"


#: Live rows the map check tries per kind (primary-key order).
SAMPLE_ROWS = 20


def check_samples(
    catalog: CatalogConfig, engine: sa.Engine, mappers: Mapping[str, KindMapper]
) -> None:
    """Map up to `SAMPLE_ROWS` live rows per kind; a map none of them fits stops here.

    One row that maps proves the map can produce a valid entity: the rows that do not
    are bad data, for the dead letter (a bad first row must not stop the whole kind).
    Only when every sampled row fails is the map itself taken to be wrong, and the
    first row's error is reported. Bad data that is never a map error (a NaN price)
    does not count against the map either.
    """
    with engine.connect() as conn:
        for kind, mapper in mappers.items():
            config = mapper.config
            if config.is_static or config.source is not None:
                continue
            try:
                rows = [
                    sample._mapping
                    for sample in conn.execute(
                        sa.text(live_rows_query(conn, config) + f" LIMIT {SAMPLE_ROWS}")
                    )
                ]
            except sa.exc.DBAPIError as exc:
                raise catalog.error(
                    ["kinds", kind],
                    f"reading sample rows fails: {str(exc.orig).strip()[:300]}",
                    "check the table, select and deleted_when",
                ) from None
            if not rows:
                continue
            ctx = mapper.new_context(conn, rows)
            errors = [_sample_error(catalog, mapper, kind, row, ctx) for row in rows]
            if errors[0] is not None and all(errors):
                raise errors[0]


def _sample_error(
    catalog: CatalogConfig, mapper: KindMapper, kind: str, row: Any, ctx: Any
) -> ConfigurationError | None:
    """Why this sampled row says the map is wrong, or None when it maps (or is bad data)."""
    config = mapper.config
    path: list[Any] = ["kinds", kind]
    where = f"the sampled row {config.primary_key}={row.get(config.primary_key)!r}"
    try:
        entities = mapper.map_row(row, ctx)
    except _RowError as exc:
        if isinstance(exc.cause, values.DataError):
            return None
        return catalog.error(
            [*path, "map", exc.key], f"{where} does not map: {exc.cause}", _sample_fix(exc)
        )
    except Exception as exc:
        return catalog.error(
            path, f"{where} does not map: {exc}", "check external_id and translations"
        )
    for entity in entities:
        problem = protocol.external_id_problem(kind, entity.external_id)
        if problem:
            return catalog.error([*path, "external_id"], problem, "fix external_id")
    return None


def _sample_fix(exc: _RowError) -> str:
    if isinstance(exc.cause, values.SpecMismatch):
        return "use a spec that fits the column's values, or convert them with call:"
    if "required" in str(exc.cause):
        return f"map {exc.key} to a column that is filled for every live row"
    return "fix the value spec"


__all__ = [
    "Deletion",
    "Entity",
    "KindMapper",
    "MapContext",
    "MappingFailure",
    "check_samples",
    "compile_mappers",
    "format_key_path",
    "live_rows_query",
]
