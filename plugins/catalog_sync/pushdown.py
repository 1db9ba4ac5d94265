"""Snapshot lines built by PostgreSQL: the SQL writes most of each NDJSON line.

A full snapshot of a big catalog is CPU-bound in Python: a dict per entity, a getter
per key, then the encoder. On PostgreSQL a kind's snapshot instead runs one SELECT
whose columns are the values of each line, ready to write. PostgreSQL computes what it
can compute exactly: the text of text values, templates and refs, the JSON of integers,
booleans, money and decimals (numeric `round` is half away from zero) and of slug lists
aggregated per key. What it cannot stays Python: a *slot* runs the map's own getter on
the few columns it reads (`html_text`, `attributes`, ...). `join_line` (compiled where
it is built) then writes the line: constants, the JSON PostgreSQL printed, texts as JSON
strings (as orjson writes them), and the slots' JSON.

A row the SQL cannot vouch for goes the ordinary way (`KindMapper.map_rows`): an
amount that is NaN or absurd, an empty required key, inline variations, a slot that
fails. Its line, or its dead-letter failure, is then exactly the Python path's.
`tests/test_pushdown.py` compares the two paths byte for byte.

A kind whose map needs what is not supported here (a `call:`, a template with
`{locale}`, a translations table, an external id template, another database) is
extracted the ordinary way; `extract._line_plan` logs why.
"""

from __future__ import annotations

import json
import logging
import string
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from catalog_sync import mapping, protocol, values
from catalog_sync.config import PAYLOAD_PREFIX
from catalog_sync.mapping import (
    Getter,
    KindMapper,
    MapContext,
    MappingFailure,
    column_conversion,
    encoded,
    spec_reads,
)

log = logging.getLogger(__name__)

#: Distinct JSON inputs whose slot text a kind keeps (attribute sets repeat across products).
CACHE_SIZE = 4096

#: A related table of slugs with at most this many live rows is read whole when a kind's
#: snapshot starts: PostgreSQL then aggregates only the pivot's keys, which costs it a
#: third of joining and aggregating the slugs. A bigger table is joined as before.
SLUG_TABLE_ROWS = 100_000

#: What a JSON fragment of an empty required key looks like (`_payload`'s rule).
_EMPTY_JSON = ("null", '""', "[]", "{}")


#: A result row of the plan's SELECT, and a slot's compiled text function.
ResultRow = Sequence[Any]
SlotText = Callable[[ResultRow, MapContext], str | bytes]


class NotPushable(Exception):
    """This kind's lines cannot be built in SQL; the message says why."""


class _Slot:
    """A value Python computes: the map's getter on the columns it reads.

    The variations slot (`variations=True`) gives `,"variations":[...],"variant_axes":[...]`
    (or nothing) from the relations of the page (`KindMapper.new_context`). A slot of
    one JSON column keeps its texts by input (attribute sets repeat across products).
    `text(row, ctx)` is compiled once, wrapped only in the steps this slot needs (its
    cache, the scanned JSON path, rows with variations): it runs for several values of
    every row. A slot given its `text` (slug lists) has no getter.
    """

    __slots__ = ("children", "columns", "getter", "path", "required", "text", "variations", "when")

    def __init__(
        self,
        getter: Getter | None,
        columns: tuple[tuple[str, int, bool], ...],
        json_loads: Callable[[Any], Any],
        *,
        required: bool = False,
        variations: bool = False,
        when: int | None = None,
        path: tuple[str, ...] | None = None,
        children: _Children | None = None,
        text: SlotText | None = None,
    ) -> None:
        self.getter = getter
        #: (column name, index in the result row, arrives as JSON text to decode)
        self.columns = columns
        self.required = required
        self.variations = variations
        self.when = when  # result column: only rows where it is true have a value
        self.path = path  # a JSON path that `json_path_text` may answer first
        self.children = children  # inline variations selected with their values
        self.text = text if text is not None else self._compile(json_loads)

    @property
    def key(self) -> tuple[Any, ...]:
        """Slots with equal keys give equal values for a row (a translation reuses them)."""
        return (
            self.getter,
            self.columns,
            self.required,
            self.variations,
            self.when,
            self.path,
            self.children,
            self.text if self.getter is None else None,
        )

    def _compile(self, json_loads: Callable[[Any], Any]) -> SlotText:
        """`text(row, ctx)`: the slot's JSON text; _Fallback when the row must go the
        Python way (the getter fails, or a required value is empty)."""
        getter, columns, required, variations = (
            self.getter,
            self.columns,
            self.required,
            self.variations,
        )
        if self.children is not None:
            assert self.when is not None
            return _only_when(_children_text(self.children, columns[0][1], json_loads), self.when)
        assert getter is not None
        direct = column_conversion(getter)
        if direct is not None and len(columns) == 1 and not columns[0][2]:
            # `convert(row[column])` on the result column: no row mapping to build.
            convert, index = direct[1], columns[0][1]

            def value(row: ResultRow, ctx: MapContext) -> Any:
                return convert(row[index])
        else:

            def value(row: ResultRow, ctx: MapContext) -> Any:
                return getter(
                    {
                        name: (json_loads(row[i]) if is_json and row[i] is not None else row[i])
                        for name, i, is_json in columns
                    },
                    ctx,
                )

        def text(row: ResultRow, ctx: MapContext) -> str:
            try:
                result = value(row, ctx)
                if variations:
                    items, axes = result
                    if not items:
                        return ""
                    return f',"variations":{_encode(items)},"variant_axes":{_encode(axes)}'
                if required and (result is None or result in ("", [], {})):
                    raise _Fallback
                return _encoded(result)
            except Exception as exc:
                raise _Fallback from exc

        compiled = text
        if len(columns) == 1 and columns[0][2] and not variations:
            compiled = _cached(text, columns[0][1])
        if self.path is not None and json_path_text is not None:
            compiled = _or_scanned(compiled, columns[0][1], self.path, required)
        if self.when is not None:
            compiled = _only_when(compiled, self.when)
        return compiled


@dataclass(frozen=True)
class _Children:
    """Inline variations whose values PostgreSQL selects (`_Compiler.children`): a page's
    children are read by one statement, and `join_line` writes each entry, with its
    attributes (slot 0) from its options."""

    sql: str  # the children of the parents' keys (a marker), by parent and primary key
    keys: str  # the predicate on the parents' keys (`%s`: a list of them)
    ops: tuple[Any, ...]  # an entry's `join_line` ops
    guard: int  # child column: the parent goes the Python way
    options: int  # child column: the options' text
    options_json: bool  # a JSON column: decoded as the driver would first

    def statement(self, keys: str | None = None) -> str:
        """For the driver (`%` doubled), with `keys` instead of the parents' keys."""
        return _driver_sql(self.sql).replace(_KEYS_MARKER, keys or self.keys)


def _children_text(children: _Children, key: int, json_loads: Callable[[Any], Any]) -> SlotText:
    """`,"variations":[...],"variant_axes":[...]` from the page's children of the row
    (`ctx.page`: parent key -> child rows), as `mapping._compile_variations` builds it."""
    ops, guard, options = children.ops, children.guard, children.options
    attributes_of = _attributes(json_loads if children.options_json else None)
    axes_of = _axes(attributes_of)

    def text(row: ResultRow, ctx: MapContext) -> str:
        found = ctx.page.get(row[key])  # type: ignore[union-attr]
        if not found:
            return ""
        entries = []
        for child in found:
            if child[guard]:
                raise _Fallback
            encoded_attributes = attributes_of(child[options])[1]
            entries.append(join_line(child, ops, [encoded_attributes], (None,), ctx))
        return (
            ',"variations":['
            + b",".join(entries).decode()
            + '],"variant_axes":'
            + axes_of(tuple([child[options] for child in found]))
        )

    return text


def _axes(
    attributes_of: Callable[[str | None], tuple[dict[str, str], str]],
) -> Callable[[tuple[str | None, ...]], str]:
    """The JSON of `variant_axes` of the children's options (their texts, in order): the
    same few sets of options repeat across products, so up to CACHE_SIZE are kept."""
    cache: dict[tuple[str | None, ...], str] = {}

    def axes_of(options: tuple[str | None, ...]) -> str:
        found = cache.get(options)
        if found is None:
            axes: dict[str, dict[str, None]] = {}
            for text in options:
                for axis, label in attributes_of(text)[0].items():
                    axes.setdefault(axis, {}).setdefault(label, None)
            found = _encode(mapping.variant_axes(axes))
            if len(cache) >= CACHE_SIZE:
                cache.clear()
            cache[options] = found
        return found

    return axes_of


def _attributes(
    json_loads: Callable[[Any], Any] | None,
) -> Callable[[str | None], tuple[dict[str, str], str]]:
    """A variation's attributes and their JSON, by the options' text (they repeat)."""
    cache: dict[str | None, tuple[dict[str, str], str]] = {}

    def attributes(text: str | None) -> tuple[dict[str, str], str]:
        found = cache.get(text)
        if found is None:
            try:
                decoded = json_loads(text) if json_loads is not None and text is not None else text
                options = values.variant_options(decoded)
            except Exception as exc:
                raise _Fallback from exc
            found = (options, _encode(options))
            if len(cache) >= CACHE_SIZE:
                cache.clear()
            cache[text] = found
        return found

    return attributes


def _slug_list_py(keys: str, slugs: dict[int, str]) -> str:
    """The JSON list of the slugs of `keys`, the related keys of a row's pivot rows
    (integers as PostgreSQL prints them, comma-separated, in no order): by key, each its
    slug's JSON (`slugs`). A key with no live related row or a NULL slug is not in `slugs`,
    and is left out as the mapper's join leaves it. `_speedups.slug_list`, where it is
    built, does the same in C."""
    found = [slugs.get(key) for key in sorted(map(int, keys.split(",")))]
    return "[" + ",".join([slug for slug in found if slug is not None]) + "]"


def _slug_list(index: int, slugs: dict[int, str]) -> SlotText:
    """A slug list's slot: `slug_list` of result column `index` (NULL: no pivot rows)."""

    def text(row: ResultRow, ctx: MapContext) -> str:
        keys = row[index]
        return "[]" if keys is None else slug_list(keys, slugs)  # type: ignore[no-any-return]

    return text


def _cached(text: SlotText, index: int) -> SlotText:
    """Keep the texts of up to CACHE_SIZE inputs (the JSON column's text), then start over."""
    cache: dict[Any, str | bytes] = {}

    def cached(row: ResultRow, ctx: MapContext) -> str | bytes:
        raw = row[index]
        found = cache.get(raw)
        if found is None:
            found = text(row, ctx)
            if len(cache) >= CACHE_SIZE:
                cache.clear()
            cache[raw] = found
        return found

    return cached


def _or_scanned(text: SlotText, index: int, path: tuple[str, ...], required: bool) -> SlotText:
    """The value at `path` in the JSON text of result column `index`, as the compiled
    scanner finds it, where it can vouch for it (a string, a boolean or null)."""
    scan = json_path_text
    assert scan is not None

    def or_scanned(row: ResultRow, ctx: MapContext) -> str:
        found = scan(row[index], path)
        if found is None:
            return text(row, ctx)
        if required and found in _EMPTY_JSON:
            raise _Fallback
        return found  # type: ignore[no-any-return]

    return or_scanned


def _only_when(text: SlotText, index: int) -> SlotText:
    """Nothing for rows whose result column `index` is false."""

    def only_when(row: ResultRow, ctx: MapContext) -> str:
        return text(row, ctx) if row[index] else ""

    return only_when


#: What `join_line` writes for each (op, argument) of a line: a constant text, a result
#: column as it is (JSON that PostgreSQL printed), a result column's text as a JSON string
#: (NULL: null), or a slot's text (`LinePlan.slots`, computed once for a row's lines).
CONST, RAW, ESCAPED, SLOT = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class _Line:
    """One locale's line: constants, result columns and Python slots, in order."""

    locale: str | None
    present: int | None  # result column: is the locale present (None: always)
    ops: tuple[Any, ...]  # op, argument, op, argument... (CONST, RAW, ESCAPED, SLOT)


def _category(column_type: Any) -> str | None:
    """How PostgreSQL may encode a column: 'text', 'int', 'bool', 'numeric', or not at all."""
    if column_type is None:
        return None
    if isinstance(column_type, sa.Boolean):
        return "bool"
    if isinstance(column_type, sa.Integer):
        return "int"
    if isinstance(column_type, sa.Float):  # a float's digits differ between the two
        return None
    if isinstance(column_type, sa.Numeric):
        return "numeric"
    if isinstance(column_type, sa.Uuid):
        return "text"
    if isinstance(column_type, sa.String) and not isinstance(column_type, sa.CHAR | sa.Enum):
        return "text"  # CHAR is blank-padded in Python, trimmed by ::text
    return None


class _Literal(str):
    """A SQL string literal that remembers its text: in a line it is a constant, which
    Python adds instead of PostgreSQL sending it with every row."""

    text: str


def _literal(text: str) -> _Literal:
    if "\\" in text or "\x00" in text or _MARK in text:
        raise NotPushable("a literal holds a backslash or a control character")
    literal = _Literal("'" + text.replace("'", "''") + "'")
    literal.text = text
    return literal


#: Marks where `LinePlan.statement` puts the live-row predicate and a part's key range,
#: and `_Children.statement` the parents' keys; no literal holds it.
_MARK = "\x01"
_LIVE_MARKER = f"{_MARK}live{_MARK}"
_KEYS_MARKER = f"{_MARK}keys{_MARK}"


def _range_marker(column: str) -> str:
    return f"{_MARK}range:{column}{_MARK}"


class _Escaped(str):
    """SQL of a text value that Python writes as a JSON string (`join_line`'s ESCAPED):
    the driver decodes the text either way, and `to_json` plus `||` per value is most of
    PostgreSQL's work for a line."""


def _json_text(expr: str) -> _Escaped:
    return _Escaped(f"({expr})::text")


class _Compiler:
    """One kind's line plan: result columns, joins, guards, lines."""

    def __init__(
        self,
        mapper: KindMapper,
        conn: sa.Connection,
        alias: str = "src",
        types: dict[str, Any] | None = None,
    ) -> None:
        """`alias` and `types`: another table's (inline variations'), without translations."""
        self.mapper = mapper
        self.config = mapper.config
        self.catalog = mapper.catalog
        self.alias = alias
        self.types = mapper.column_types if types is None else types
        self.conn = conn
        self.quote = conn.dialect.identifier_preparer.quote
        self.inspector = sa.inspect(conn)
        # The engine's JSON decoder, as the driver would use it.
        self.json_loads = getattr(conn.dialect, "_json_deserializer", None) or json.loads
        self.columns: list[str] = []  # result columns (SQL expressions)
        self.slots: list[_Slot] = []  # distinct slots (a translation shares the base's)
        self.slug_slots: dict[tuple[str, str], int] = {}  # a slug list's join -> its slot
        self.joins: list[tuple[str, str]] = []  # (subquery with a column k, key it joins)
        self.guards: list[tuple[str, str | None]] = []
        translations = self.config.translations if types is None else None
        self.localized: dict[str, dict[str, str]] = {}
        if translations is not None:
            if translations.table is not None:
                raise NotPushable("translations come from a table")
            for base_column, template in translations.columns.items():
                for locale in translations.others:
                    localized = template.format(locale=locale)
                    self.localized.setdefault(locale, {})[base_column] = localized

    # -- result columns ------------------------------------------------------------------

    def add(self, expr: str) -> int:
        if expr not in self.columns:
            self.columns.append(expr)
        return self.columns.index(expr)

    def slot(self, slot: _Slot) -> int:
        for index, known in enumerate(self.slots):
            if known.key == slot.key:
                return index
        self.slots.append(slot)
        return len(self.slots) - 1

    def src(self, column: str) -> str:
        return f"{self.alias}.{self.quote(column)}"

    def column(self, name: str, locale: str | None) -> tuple[str, str | None]:
        """(SQL of column `name` as locale `locale` sees it, its encoding category)."""
        category = _category((self.types or {}).get(name))
        localized = self.localized.get(locale or "", {}).get(name)
        if localized is None:
            return self.src(name), category
        assert self.config.translations is not None
        if _category((self.types or {}).get(localized)) != category:
            category = None
        if self.config.translations.fallback:
            if any(isinstance((self.types or {}).get(n), sa.JSON) for n in (name, localized)):
                # The driver gives a JSON null as None, which falls back; COALESCE keeps it.
                raise NotPushable(f"the translated JSON column {name!r} falls back")
            return f"COALESCE({self.src(localized)}, {self.src(name)})", category
        return self.src(localized), category

    # -- value specs -----------------------------------------------------------------------

    def leaf(
        self, key: str, spec: dict[str, Any], getter: Getter, locale: str | None, required: bool
    ) -> str | int:
        """A payload value: SQL returning its JSON text, or a slot (its index)."""
        sql = self.value(key, spec, locale, required)
        if sql is not None:
            return sql
        keyword = next(iter(spec))
        reads = spec_reads(spec, self.config.primary_key)
        if reads is None:
            raise NotPushable(f"{key} ({keyword}:) may read more than its columns")
        columns = []
        for name in sorted(reads):
            if name not in (self.types or {}):
                if name in self.catalog.vars:
                    continue  # a template's variable: the getter has it
                raise NotPushable(f"{key} reads {name!r}, which is not a column")
            expr, _category = self.column(name, locale)
            is_json = self.is_json(name, locale)
            # JSON arrives as text: decoded only when Python computes (see _Slot).
            columns.append((name, self.add(f"({expr})::text" if is_json else expr), is_json))
        path = self.json_path(spec, locale, columns) if keyword == "column" else None
        slot = _Slot(getter, tuple(columns), self.json_loads, required=required, path=path)
        return self.slot(slot)

    def value(
        self, key: str, spec: dict[str, Any], locale: str | None, required: bool
    ) -> str | int | None:
        """A value PostgreSQL computes: a literal, or SQL of its JSON or text; a slug list's
        slot (`slugs`); else None."""
        keyword = next(iter(spec))
        if keyword in ("const", "var"):
            value = spec["const"] if keyword == "const" else self.catalog.vars[spec["var"]]
            try:
                encoded = protocol.dumps(value).decode()
            except ValueError as exc:
                raise NotPushable(f"{key}: {exc}") from None
            if required and encoded in _EMPTY_JSON:
                raise NotPushable(f"{key} is required and empty")
            return _literal(encoded)
        if keyword == "slugs":
            return self.slugs(spec, locale, required)
        sql = self.sql_value(keyword, spec, locale)
        if sql is not None and required:
            self.guard(self.empty(keyword, spec, locale, sql), locale)
        return sql

    def empty(self, keyword: str, spec: dict[str, Any], locale: str | None, sql: str) -> str:
        """SQL: the value of a required key is empty (`KindMapper._payload`'s rule); on the
        column itself where that is the same, it is much cheaper than on the JSON."""
        if keyword in ("column", "text") and "path" not in spec:
            expr, category = self.column(spec[keyword], locale)
            if category == "text":
                return f"{expr} IS NULL OR ({expr})::text = ''"
        if isinstance(sql, _Escaped):  # null or "" (a string is never [] or {})
            return f"({sql}) IS NULL OR ({sql}) = ''"
        return f"({sql}) IN ({', '.join(map(_literal, _EMPTY_JSON))})"

    def is_json(self, name: str, locale: str | None) -> bool:
        names = [name, self.localized.get(locale or "", {}).get(name)]
        return all(isinstance((self.types or {}).get(n), sa.JSON) for n in names if n)

    def json_path(
        self, spec: dict[str, Any], locale: str | None, columns: list[tuple[str, int, bool]]
    ) -> tuple[str, ...] | None:
        """A JSON path's steps, where the compiled scanner (`json_path_text`) may find its
        value in the column's text before the slot decodes it: a JSON column, not
        localized, and no array index on the way (Python walks those)."""
        name, steps = spec["column"], tuple(str(spec.get("path", "")).split("."))
        if self.localized.get(locale or "", {}).get(name):
            return None  # a localized JSON column: `column` refuses those with fallback
        if len(columns) != 1 or not columns[0][2]:
            return None  # not a JSON column: the slot does not decode it
        if any(not step or step.lstrip("-+").isdigit() for step in steps):
            return None
        return steps

    def sql_value(self, keyword: str, spec: dict[str, Any], locale: str | None) -> str | None:
        """SQL giving exactly the JSON text the Python getter's value encodes to, or None."""
        if keyword == "template":
            return self.template(spec["template"], locale)
        if keyword == "column" and "path" in spec:
            return None  # a slot, with `json_path` for what the compiled scanner finds
        if keyword not in (
            "column",
            "text",
            "integer",
            "boolean",
            "money",
            "decimal",
            "stock_status",
            "ref",
        ):
            return None
        name = spec["column"] if keyword in ("column", "ref") else spec[keyword]
        expr, category = self.column(name, locale)
        if keyword == "column":
            keyword = {"text": "text", "int": "integer", "bool": "boolean"}.get(category or "", "")
        if keyword == "text" and category == "text":
            return _json_text(expr)
        if keyword == "integer" and category == "int":
            return f"COALESCE(({expr})::text, 'null')"
        if keyword == "boolean" and category == "bool":
            return f"CASE WHEN {expr} IS NULL THEN 'null' WHEN {expr} THEN 'true' ELSE 'false' END"
        if keyword in ("money", "decimal") and category in ("int", "numeric"):
            return self.amount(expr, spec.get("decimals", 2), keyword == "money", locale)
        if keyword == "stock_status" and category in ("bool", "int"):
            test = expr if category == "bool" else f"{expr} > 0"
            return (
                f"CASE WHEN {expr} IS NULL THEN 'null' WHEN {test} THEN '\"instock\"' "
                "ELSE '\"outofstock\"' END"
            )
        if keyword == "ref" and category in ("text", "int"):
            prefix = _literal(f"{self.catalog.producer}:{spec['ref']}:")
            return _Escaped(
                f"CASE WHEN {expr} IS NULL OR ({expr})::text = '' THEN NULL "
                f"ELSE {prefix} || ({expr})::text END"
            )
        return None

    def amount(self, expr: str, decimals: Any, minor_units: bool, locale: str | None) -> str:
        """`values.money_minor` / `decimal_string`; NaN, infinite or absurd goes to Python."""
        if not isinstance(decimals, int) or isinstance(decimals, bool) or decimals < 0:
            raise NotPushable(f"decimals {decimals!r}")
        minor = f"round(({expr})::numeric * {10**decimals})"
        # Below this bound the rounded amount is safe; NaN and infinity are not below it.
        bound = values.MAX_SAFE_INTEGER // 10**decimals
        self.guard(f"NOT COALESCE(abs({expr}) < {bound}, TRUE)", locale)
        if minor_units:
            return f"COALESCE(({minor})::text, 'null')"
        return _json_text(f"round(({expr})::numeric, {decimals})")

    def template(self, template: str, locale: str | None) -> str | None:
        """`str.format` over text and integer columns and variables; NULL column -> null."""
        parts: list[str] = []
        for literal, name, format_spec, conversion in string.Formatter().parse(template):
            if literal:
                parts.append(_literal(literal))
            if name is None:
                continue
            if format_spec or conversion:
                return None
            if self.types is not None and name in self.types:
                expr, category = self.column(name, locale)
                if category not in ("text", "int"):
                    return None
                parts.append(f"({expr})::text")
            elif name in self.catalog.vars and self.types is not None:
                parts.append(_literal(format(self.catalog.vars[name], "")))
            else:
                return None  # {locale}, or a custom select's unknown columns
        return _json_text(" || ".join(parts) or "''")

    def slugs(self, spec: dict[str, Any], locale: str | None, required: bool) -> str | int:
        """The slug list through a pivot table, by key in one hash join: the pivot's
        related keys aggregated by PostgreSQL and their slugs written by Python (a slot,
        `_slug_list`), where the related table is small and keyed by integers; else the
        slugs aggregated in SQL, as JSON."""
        key = spec.get("key", self.config.primary_key)
        expr, category = self.column(key, locale)
        related_key = spec.get("related_key", "id")
        slug = spec.get("slug_column", "slug")
        related = spec["slugs"]
        primary = self.inspector.get_pk_constraint(related).get("constrained_columns")
        related_types = {c["name"]: c["type"] for c in self.inspector.get_columns(related)}
        if primary != [related_key] or _category(related_types.get(slug)) != "text":
            # Ties in the order, or a slug PostgreSQL would print differently.
            raise NotPushable(f"slugs of {related}: {related_key} is not its primary key")
        pivot = {c["name"]: c["type"] for c in self.inspector.get_columns(spec["through"])}
        if category is None or _category(pivot.get(spec["local_key"])) != category:
            # The mapper looks up the row's values as they are (CHAR padding and all).
            raise NotPushable(f"slugs through {spec['through']}: {key} and local_key differ")
        q = self.quote
        local, through, foreign = q(spec["local_key"]), q(spec["through"]), q(spec["foreign_key"])
        in_range = [_range_marker(f"p.{local}")] if key == self.config.primary_key else []
        integers = {
            _category(related_types.get(related_key)),
            _category(pivot.get(spec["foreign_key"])),
        }
        if not required and integers == {"int"}:
            subquery = (
                f"(SELECT p.{local} AS k, string_agg((p.{foreign})::text, ',') AS j "
                f"FROM {through} AS p"
                + (f" WHERE {in_range[0]}" if in_range else "")
                + f" GROUP BY p.{local})"
            )
            if (subquery, expr) not in self.slug_slots:  # a translation shares the base's
                slugs = self.slug_table(spec)
                if slugs is not None:
                    column = self.add(f"{self.join(subquery, expr)}.j")
                    slot = _Slot(None, (), self.json_loads, text=_slug_list(column, slugs))
                    self.slug_slots[subquery, expr] = self.slot(slot)
            if (subquery, expr) in self.slug_slots:
                return self.slug_slots[subquery, expr]
        where = [f"r.{q(spec['deleted_column'])} IS NULL"] if spec.get("deleted_column") else []
        where += in_range
        subquery = (
            f"(SELECT p.{local} AS k, '[' || string_agg(to_json(r.{q(slug)})::text, ',' "
            f"ORDER BY r.{q(related_key)}) FILTER (WHERE r.{q(slug)} IS NOT NULL) || ']' AS j "
            f"FROM {through} AS p JOIN {q(related)} AS r "
            f"ON r.{q(related_key)} = p.{foreign}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" GROUP BY p.{local})"
        )
        return f"COALESCE({self.join(subquery, expr)}.j, '[]')"

    def slug_table(self, spec: dict[str, Any]) -> dict[int, str] | None:
        """The JSON of each live slug of the related table by its key, read in the
        snapshot's transaction; None where it has more than SLUG_TABLE_ROWS (memory stays
        flat: PostgreSQL aggregates the slugs then)."""
        related_key = spec.get("related_key", "id")
        slug = spec.get("slug_column", "slug")
        deleted = spec.get("deleted_column")
        columns = dict.fromkeys([related_key, slug, deleted])
        table = sa.table(spec["slugs"], *(sa.column(c) for c in columns if c))
        rows = self.conn.execute(
            sa.select(table.c[related_key], table.c[slug])
            .where(table.c[slug].is_not(None), *mapping.not_deleted(table, deleted))
            .limit(SLUG_TABLE_ROWS + 1)
        ).all()
        if len(rows) > SLUG_TABLE_ROWS:
            return None
        return {key: _encode(text) for key, text in rows}

    def join(self, subquery: str, key: str) -> str:
        """LEFT JOIN `subquery` (column `k`) on `key`, once; returns its alias."""
        on = (subquery, key)
        if on not in self.joins:
            self.joins.append(on)
        return f"j{self.joins.index(on)}"

    def guard(self, condition: str, locale: str | None) -> None:
        """Rows where `condition` holds (for `locale`'s line) go the Python way."""
        self.guards.append((condition, locale))

    # -- lines ----------------------------------------------------------------------------

    def external_id(self, suffix: str = "") -> list[str]:
        """Parts of the JSON string `producer:kind:id` + `suffix` (an empty id column goes
        the Python way): an integer id's digits between two constants, nothing for
        PostgreSQL to concatenate or Python to escape; else SQL of the text."""
        spec = self.config.external_id
        if "{" in spec:
            raise NotPushable("the external id is a template")
        expr, category = self.column(spec, None)
        if category not in ("text", "int"):
            raise NotPushable(f"the external id column {spec!r} is not text or an integer")
        self.guard(
            f"{expr} IS NULL" + (f" OR ({expr})::text = ''" if category == "text" else ""), None
        )
        prefix = f"{self.catalog.producer}:{self.config.kind}:"
        head, tail = protocol.dumps(prefix).decode(), protocol.dumps(suffix).decode()
        if category == "int" and head == f'"{prefix}"' and tail == f'"{suffix}"':
            return [_literal(head[:-1]), f"({expr})::text", _literal(tail[1:])]
        text = f"{_literal(prefix)} || ({expr})::text"
        return [_Escaped(text + (f" || {_literal(suffix)}" if suffix else ""))]

    def payload(self, locale: str | None) -> list[str | int]:
        """The payload object in map order (dot paths nest), as SQL and slots."""
        required = set(protocol.REQUIRED_PAYLOAD_KEYS.get(self.config.kind, ()))
        getters = self.mapper.getters
        tree: dict[str, Any] = {}
        for key, spec in self.config.map.items():
            parts = key[len(PAYLOAD_PREFIX) :].split(".")
            node = tree
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            is_required = len(parts) == 1 and parts[0] in required
            node[parts[-1]] = self.leaf(key, spec, getters[key], locale, is_required)
        out: list[str | int] = []

        def emit(node: dict[str, Any]) -> None:
            for n, (name, value) in enumerate(node.items()):
                out.append(_literal(("{" if n == 0 else ",") + protocol.dumps(name).decode() + ":"))
                if isinstance(value, dict):
                    emit(value)
                else:
                    out.append(value)
            out.append(_literal("}") if node else _literal("{}"))

        emit(tree)
        if self.config.variations is not None:
            closing = out.pop()
            out.append(self.variations_slot())
            out.append(closing)
        return out

    def line(self, locale: str | None, present: int | None) -> _Line:
        """`locale`'s line, made when `present` is true."""
        translations = self.config.translations
        head = '{"kind":' + protocol.dumps(self.config.kind).decode() + ',"external_id":'
        parts: list[str | int] = [_literal(head)]
        if translations is not None and locale != translations.base:
            parts += self.external_id(f":{locale}")
        else:
            parts += self.external_id()
        parts.append(_literal(',"payload":'))
        parts += self.payload(locale)
        if translations is not None:
            parts.append(_literal(',"lang":' + protocol.dumps(locale).decode()))
            if locale != translations.base:
                parts += [_literal(',"translation_of":'), *self.external_id()]
        parts.append(_literal("}"))
        return _Line(locale, present, self.ops(parts))

    def ops(self, parts: list[str | int]) -> tuple[Any, ...]:
        """`join_line`'s ops for literals, SQL (result columns) and slots, in order."""
        ops: list[Any] = []
        for part in parts:
            if isinstance(part, _Literal):
                if ops and ops[-2] == CONST:
                    ops[-1] += part.text.encode()
                else:
                    ops += (CONST, part.text.encode())
            elif isinstance(part, str):
                # A column both locales share is selected once (`add`), so it is not
                # computed only where the locale is present.
                ops += (ESCAPED if isinstance(part, _Escaped) else RAW, self.add(part))
            else:
                ops += (SLOT, part)
        return tuple(ops)

    def present(self, locale: str) -> int | None:
        """Result column: is `locale` present for the row (translations' `present:`)."""
        translations = self.config.translations
        assert translations is not None
        spec = translations.present
        if spec is None:
            return None
        if "column" not in spec:
            raise NotPushable("translations.present is a call")
        name = spec["column"]
        column = name if locale == translations.base else self.localized[locale].get(name)
        if column is None:
            return self.add("FALSE")
        if _category((self.types or {}).get(column)) not in ("text", "int"):
            raise NotPushable(f"translations.present column {column!r}")
        expr = self.src(column)
        return self.add(f"({expr} IS NOT NULL AND ({expr})::text <> '')")

    def variations_slot(self) -> int:
        """Inline variations: the mapper's own getter, over the page's relations, for the
        rows that have live variations (found by one hash join)."""
        variations = self.config.variations
        assert variations is not None
        if not self.config.map:
            raise NotPushable("the map is empty besides variations")
        q = self.quote
        foreign_key = f"v.{q(variations.foreign_key)}"
        # Only the part's key range: the whole child table would be read for every part.
        where = [_range_marker(foreign_key)]
        if variations.deleted_column:
            where.append(f"v.{q(variations.deleted_column)} IS NULL")
        alias = self.join(
            f"(SELECT DISTINCT {foreign_key} AS k FROM {q(variations.table)} AS v "
            f"WHERE {' AND '.join(where)})",
            self.src(self.config.primary_key),
        )
        pk = self.config.primary_key  # what the variations loader looks up
        keys = ((pk, self.add(self.src(pk)), False),)
        when = self.add(f"{alias}.k IS NOT NULL")
        getter = self.mapper.getters["payload.variations"]
        try:
            children = self.children()
        except NotPushable as exc:
            log.info("inline variations of %s built in Python (%s)", self.config.kind, exc)
            children = None
        slot = _Slot(getter, keys, self.json_loads, variations=True, when=when, children=children)
        return self.slot(slot)

    def children(self) -> _Children:
        """Inline variations' values selected by PostgreSQL, as a line's are; Python adds
        each entry's attributes and the axes (`_children_text`)."""
        variations = self.config.variations
        assert variations is not None
        table = variations.table
        types = {column["name"]: column["type"] for column in self.inspector.get_columns(table)}
        c = _Compiler(self.mapper, self.conn, alias="v", types=types)
        c.add(c.src(variations.foreign_key))  # result column 0: the parent's key
        id_spec = mapping.variation_id_spec(self.catalog, variations)
        if "{" in id_spec:
            raise NotPushable("the variations' external id is a template")
        expr, category = c.column(id_spec, None)
        if category not in ("text", "int"):
            raise NotPushable(f"the variations' external id column {id_spec!r}")
        c.guard(f"{expr} IS NULL OR ({expr})::text = ''", None)
        prefix = _literal(f"{self.catalog.producer}:variation:")
        parts: list[str | int] = [
            _literal('{"external_id":'),
            _Escaped(f"{prefix} || ({expr})::text"),
            _literal(',"attributes":'),
            0,  # slot 0: the attributes, from the options
        ]
        for name, spec in variations.map.items():
            if name in ("external_id", "attributes"):
                raise NotPushable(f"a variation's {name!r} is also in its map")
            parts.append(_literal("," + protocol.dumps(name).decode() + ":"))
            value = c.value(f"variations.map.{name}", spec, None, False)
            if value is None:
                raise NotPushable(f"a variation's {name!r} is computed in Python")
            parts.append(value)
        parts.append(_literal("}"))
        if c.joins:
            raise NotPushable("a variation's value needs another table")
        ops = c.ops(parts)  # adds their result columns
        options = c.add(f"({c.src(variations.options_column)})::text")
        guard = c.add(" OR ".join(f"COALESCE({term}, FALSE)" for term, _ in c.guards))
        q = self.quote
        where = [_KEYS_MARKER]
        if variations.deleted_column:
            where.append(f"{c.src(variations.deleted_column)} IS NULL")
        order = ", ".join(c.src(name) for name in (variations.foreign_key, variations.primary_key))
        sql = (
            f"SELECT {', '.join(c.columns)} FROM {q(table)} AS v "
            f"WHERE {' AND '.join(where)} ORDER BY {order}"
        )
        return _Children(
            sql=sql,
            keys=f"{c.src(variations.foreign_key)} = ANY(%s)",
            ops=ops,
            guard=guard,
            options=options,
            options_json=isinstance(types.get(variations.options_column), sa.JSON),
        )


@dataclass(frozen=True)
class LinePlan:
    """A kind's snapshot as one SELECT of line pieces; `iter_lines` turns rows into lines."""

    mapper: KindMapper
    sql: str  # with markers for the live-row predicate and a part's key range
    pk_index: int
    guard_index: int  # result column: the row goes the Python way
    lines: tuple[_Line, ...]
    slots: tuple[_Slot, ...]
    base: str | None  # the base locale, with translations
    relations: _Slot | None  # the variations slot, if any
    texts: tuple[SlotText, ...]  # each slot's text function, by slot index

    def statement(self, live: str, pk_range: tuple[Any, Any]) -> str:
        """The SELECT of the live rows (`live`, a predicate on `src`) in `pk_range`."""
        low, high = pk_range
        for bound in (low, high):
            if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool)):
                raise NotPushable(f"key range bound {bound!r} is not an integer")
        head, *rest = self.sql.replace(_LIVE_MARKER, f"({live})").split(_MARK + "range:")
        out = [head]
        for chunk in rest:
            column, tail = chunk.split(_MARK, 1)
            terms = [f"{column} >= {low}"] if low is not None else []
            terms += [f"{column} < {high}"] if high is not None else []
            out += [" AND ".join(terms) or "TRUE", tail]
        return "".join(out)


def compile_plan(mapper: KindMapper, conn: sa.Connection) -> LinePlan:
    """Compile `mapper`'s kind into a LinePlan; NotPushable says why it cannot be."""
    config = mapper.config
    if conn.dialect.name != "postgresql":
        raise NotPushable(f"the source is {conn.dialect.name}")
    if config.is_static or config.source is not None:
        raise NotPushable("the kind has no table")
    if mapper.column_types is None:
        raise NotPushable("the column types are unknown")
    if config.table is None:
        raise NotPushable("the kind is a select")
    c = _Compiler(mapper, conn)
    primary = c.inspector.get_pk_constraint(config.table).get("constrained_columns")
    if primary != [config.primary_key]:
        # Rows that go the Python way are found again by their key: it must be unique.
        raise NotPushable(f"{config.primary_key!r} is not the primary key of {config.table}")
    pk_index = c.add(c.src(config.primary_key))
    translations = config.translations
    lines: list[_Line] = []
    if translations is None:
        lines.append(c.line(None, None))
    else:
        for locale in translations.locales:
            lines.append(c.line(locale, c.present(locale)))
    presence = {line.locale: line.present for line in lines}
    locales: dict[str, set[str | None]] = {}
    for condition, locale in c.guards:
        locales.setdefault(condition, set()).add(locale)
    terms = []
    for condition, where in locales.items():
        term = f"COALESCE({condition}, FALSE)"
        present = presence.get(next(iter(where))) if len(where) == 1 else None
        if present is not None:  # only that locale's line can fail: only when it is made
            term = f"({c.columns[present]} AND {term})"
        terms.append(term)
    guard_index = c.add(" OR ".join(terms) or "FALSE")
    source = c.quote(config.table)
    pk = c.src(config.primary_key)
    sql = (
        f"SELECT {', '.join(c.columns)} FROM {source} AS src "
        + "".join(
            f"LEFT JOIN {sub} AS j{n} ON j{n}.k = {key} " for n, (sub, key) in enumerate(c.joins)
        )
        + f"WHERE {_LIVE_MARKER} AND {_range_marker(pk)} ORDER BY {pk}"
    )
    return LinePlan(
        mapper=mapper,
        sql=sql,
        pk_index=pk_index,
        guard_index=guard_index,
        lines=tuple(lines),
        slots=tuple(c.slots),
        base=translations.base if translations is not None else None,
        relations=next((slot for slot in c.slots if slot.variations), None),
        texts=tuple(slot.text for slot in c.slots),
    )


class _Fallback(Exception):
    """This row goes the Python way."""


def _encoded(value: Any) -> bytes:
    """The JSON of a slot's value, as `join_line` takes it: no str to decode and encode."""
    return protocol.dumps(value) if type(value) is not str else orjson.dumps(value)


def _encode(value: Any) -> str:
    return _encoded(value).decode()


def _join_line_py(
    row: ResultRow,
    ops: Sequence[Any],
    texts: list[str | bytes | None],
    functions: Sequence[SlotText],
    ctx: MapContext,
) -> bytes:
    """The line `ops` (`_Line.ops`) of `row`, encoded. A slot's text is computed by
    `functions[slot](row, ctx)` the first time a row's lines need it, then kept in
    `texts` (a translation reuses the base line's). Constants and slot texts are str or
    UTF-8 bytes. `_speedups.join_line`, where it is built, does the same in C."""
    parts: list[bytes] = []
    for at in range(0, len(ops), 2):
        op, arg = ops[at], ops[at + 1]
        if op == CONST:
            parts.append(_utf8(arg))
        elif op == RAW:
            parts.append(row[arg].encode())
        elif op == ESCAPED:
            value = row[arg]
            parts.append(b"null" if value is None else orjson.dumps(value))
        else:
            text = texts[arg]
            if text is None:
                text = texts[arg] = functions[arg](row, ctx)
            parts.append(_utf8(text))
    return b"".join(parts)


def _utf8(text: str | bytes) -> bytes:
    return text if type(text) is bytes else text.encode()  # type: ignore[union-attr]


try:  # built by `pip install` where a C compiler is present (setup.py)
    from catalog_sync._speedups import join_line, json_path_text, slug_list
except ImportError:  # pragma: no cover - the same functions, in Python; no scanner
    join_line = _join_line_py
    slug_list = _slug_list_py
    json_path_text = None


#: A line as `_row_lines` walks it: (present, its locale's context, ops).
_LineSteps = tuple[int | None, MapContext, tuple[Any, ...]]


def _line_steps(plan: LinePlan, contexts: dict[str | None, MapContext]) -> list[_LineSteps]:
    return [(line.present, contexts[line.locale], line.ops) for line in plan.lines]


def _row_lines(plan: LinePlan, row: ResultRow, lines: list[_LineSteps]) -> list[bytes]:
    """Every line of `row` (one per locale present), as `KindMapper.map_row` makes them."""
    out: list[bytes] = []
    texts: list[str | bytes | None] = [None] * len(plan.slots)
    functions = plan.texts
    for present, ctx, ops in lines:
        if present is None or row[present]:
            out.append(join_line(row, ops, texts, functions, ctx))
    if not out:  # no locale present: `map_row` makes a base line; rare, Python does it
        raise _Fallback
    return out


def _driver_sql(statement: str) -> str:
    """For the driver's execute with parameters: a literal `%` is written `%%`."""
    return statement.replace("%", "%%")


def check(conn: sa.Connection, plan: LinePlan, live: str, pk_range: tuple[Any, Any]) -> None:
    """EXPLAIN the plan's statement in a savepoint: what PostgreSQL refuses (a join of
    mismatched types, say) makes the kind NotPushable instead of failing its snapshot."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    # Connection.execution_options works in place: a streaming connection would DECLARE
    # the SAVEPOINT as a server-side cursor.
    conn.execution_options(stream_results=False)
    try:
        with conn.begin_nested(), dbapi.cursor() as cursor:
            cursor.execute(_driver_sql("EXPLAIN " + plan.statement(live, pk_range)), ())
            children = plan.relations.children if plan.relations is not None else None
            if children is not None:
                cursor.execute("EXPLAIN " + children.statement(keys="FALSE"), ())
    except dbapi.Error as exc:  # type: ignore[attr-defined]
        raise NotPushable(str(exc).strip().splitlines()[0]) from None


#: What `MapContext.page` holds for a page's inline variations: the mapper's relations,
#: or the children `_Children.sql` read, by parent key.
Relations = list[Any] | dict[Any, list[tuple[Any, ...]]]
#: A page of result rows, with its rows' inline variations if any.
Page = tuple[list[tuple[Any, ...]], Relations | None]


def fetch_pages(
    conn: sa.Connection,
    plan: LinePlan,
    live: str,
    page_size: int,
    pk_range: tuple[Any, Any],
    lock: threading.Lock,
) -> Iterator[Page]:
    """The plan's rows, a page at a time, from the driver's own server-side cursor in the
    connection's transaction (SQLAlchemy's result rows would cost a third of the time),
    each page with its inline variations.

    Another thread may run this (`extract._read_ahead`) while the connection serves
    `iter_lines`' statements: psycopg connections are thread-safe, its cursors are not,
    and SQLAlchemy's statements (variations here, rows that go the Python way there)
    take turns by `lock`.
    """
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    with dbapi.cursor(name=f"catalog_sync_{plan.mapper.kind}") as cursor:
        cursor.itersize = page_size
        cursor.execute(_driver_sql(plan.statement(live, pk_range)), ())
        while page := cursor.fetchmany(page_size):
            yield page, _variations(conn, plan, page, lock)


def _variations(
    conn: sa.Connection, plan: LinePlan, page: list[tuple[Any, ...]], lock: threading.Lock
) -> Relations | None:
    """The page's inline variations, read for the rows that have some."""
    slot = plan.relations
    if slot is None:
        return None
    when = slot.when
    assert when is not None  # the variations slot's rows with variations
    if slot.children is not None:
        index = slot.columns[0][1]
        keys = [row[index] for row in page if row[when]]
        found: dict[Any, list[tuple[Any, ...]]] = {}
        if keys:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            with lock, dbapi.cursor() as cursor:
                cursor.execute(slot.children.statement(), (keys,))
                for child in cursor.fetchall():
                    found.setdefault(child[0], []).append(child)
        return found
    keyed = [{name: row[i] for name, i, _json in slot.columns} for row in page if row[when]]
    mapper = plan.mapper
    with lock:
        return mapper.new_context(conn, keyed, only=mapper.variations_loader).page


def iter_lines(
    conn: sa.Connection,
    plan: LinePlan,
    pages: Iterable[Page],
    python_rows: Callable[[list[Any]], Sequence[Any]],
    lock: threading.Lock,
) -> Iterator[bytes | MappingFailure]:
    """Every line of the kind (and failures) from `pages` of `fetch_pages`, in order.

    `python_rows(keys)` reads those rows the ordinary way (same transaction, under
    `lock`), for the rows that go through `KindMapper.map_rows`.
    """
    mapper = plan.mapper
    catalog = mapper.catalog
    contexts = {
        line.locale: MapContext(mapper.kind, catalog.producer, catalog.vars, line.locale)
        for line in plan.lines
    }
    steps, guard = _line_steps(plan, contexts), plan.guard_index
    for page, variations in pages:
        if variations is not None:
            for ctx in contexts.values():
                ctx.page = variations
        done: list[list[bytes] | None] = []
        fallback: list[Any] = []
        for row in page:
            lines = None
            if not row[guard]:
                try:  # not contextlib.suppress: a context manager per row costs more
                    lines = _row_lines(plan, row, steps)
                except _Fallback:
                    lines = None
            if lines is None:
                fallback.append(row[plan.pk_index])
            done.append(lines)
        mapped: dict[Any, list[bytes | MappingFailure]] = {}
        if fallback:
            with lock:
                rows = python_rows(fallback)
                ctx = mapper.new_context(conn, rows)
            for source_row in rows:
                items = mapper.map_rows([source_row], ctx)
                mapped[source_row[mapper.config.primary_key]] = list(encoded(items))
        for row, lines in zip(page, done, strict=True):
            yield from lines if lines is not None else mapped.pop(row[plan.pk_index])
