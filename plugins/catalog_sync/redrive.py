"""Redrive: pending dead-letter entries re-read from their CURRENT rows.

A stored payload may be stale (the row changed since) or the very thing that was wrong,
so a redrive never re-sends it: it turns each entry's external id back into the row's
key by inverting the kind's `external_id` spec (a column, or a template such as
`{sku}-{id}`; a translation suffix `:{locale}` is stripped), loads those rows with
`IN (...)` in chunks and maps them again. A row that is gone, soft-deleted, or no longer
produces the entry's id (a translation removed) becomes a Deletion. What cannot be
located becomes a MappingFailure, so it counts an attempt instead of vanishing.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from catalog_sync.config import CatalogConfig
from catalog_sync.delivery import PRIMARY_KEY_MARKER
from catalog_sync.extract import DELETED_FLAG, _KindQuery
from catalog_sync.mapping import Deletion, Entity, KindMapper, MappingFailure
from catalog_sync.state import DeadLetter, StateStore

log = logging.getLogger(__name__)

#: Entries looked up per query (`IN` list or OR of key tuples).
CHUNK = 500


@dataclass(frozen=True)
class RowKey:
    """Where an external id came from: column -> value as text (or typed, for markers)."""

    values: tuple[tuple[str, Any], ...]
    marker: bool = False

    def text(self) -> tuple[str, ...]:
        return tuple(str(value) for _column, value in self.values)


class Unlocatable(ValueError):
    """The external id cannot have come from this kind's map."""


def _template_regex(
    spec: str, mapper: KindMapper, catalog: CatalogConfig
) -> tuple[re.Pattern[str], list[str]]:
    """A regex matching what `spec` renders, with one group per row column."""
    columns = set(mapper.columns) if mapper.columns is not None else None
    pattern: list[str] = []
    fields: list[str] = []
    for literal, name, _format, _conversion in string.Formatter().parse(spec):
        pattern.append(re.escape(literal))
        if name is None:
            continue
        if (columns is None or name in columns) and not (
            columns is None and (name == "locale" or name in catalog.vars)
        ):
            if name in fields:
                pattern.append(f"(?P=f{fields.index(name)})")
            else:
                pattern.append(f"(?P<f{len(fields)}>.+?)")
                fields.append(name)
        elif name == "locale":
            pattern.append(".*?")
        else:
            pattern.append(re.escape(str(catalog.vars[name])))
    return re.compile("".join(pattern), re.DOTALL), fields


def row_key(external_id: str, mapper: KindMapper, catalog: CatalogConfig) -> RowKey:
    """The row key an external id was rendered from; raises Unlocatable."""
    config = mapper.config
    if external_id.startswith(PRIMARY_KEY_MARKER):
        try:
            value = orjson.loads(external_id[len(PRIMARY_KEY_MARKER) :])
        except orjson.JSONDecodeError:
            raise Unlocatable(f"{external_id!r} holds no JSON primary key") from None
        if value is None:
            raise Unlocatable("the row's primary key was unknown when it failed")
        return RowKey(((config.primary_key, value),), marker=True)
    prefix = f"{catalog.producer}:{config.kind}:"
    if not external_id.startswith(prefix):
        raise Unlocatable(f"it does not start with {prefix!r}")
    local = external_id[len(prefix) :]
    if config.translations is not None:
        for locale in config.translations.others:
            if local.endswith(f":{locale}"):
                local = local[: -len(locale) - 1]
                break
    spec = config.external_id
    if "{" not in spec:
        return RowKey(((spec, local),))
    regex, fields = _template_regex(spec, mapper, catalog)
    match = regex.fullmatch(local)
    if match is None:
        raise Unlocatable(f"{local!r} does not fit the external_id template {spec!r}")
    return RowKey(tuple((name, match.group(f"f{i}")) for i, name in enumerate(fields)))


def _column_types(conn: sa.Connection, table: str | None) -> dict[str, Any]:
    if table is None:
        return {}
    return {str(col["name"]): col["type"] for col in sa.inspect(conn).get_columns(table)}


def _typed(value: Any, column_type: Any) -> Any:
    """Text from an external id as the column's Python type (an int column needs an int)."""
    if not isinstance(value, str) or column_type is None:
        return value
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return value
    if python_type is int:
        if not re.fullmatch(r"-?\d+", value):
            raise Unlocatable(f"{value!r} is not an integer, unlike the key column")
        return int(value)
    return value


def _load_rows(
    conn: sa.Connection, mapper: KindMapper, keys: Sequence[RowKey], types: dict[str, Any]
) -> list[sa.RowMapping]:
    """The rows (deleted ones flagged) whose key is one of `keys`, in one query."""
    query = _KindQuery(conn.dialect, mapper.config)
    quote = conn.dialect.identifier_preparer.quote
    columns = [name for name, _value in keys[0].values]
    refs = [sa.literal_column(f"src.{quote(name)}") for name in columns]
    if len(refs) == 1:
        condition = refs[0].in_([_typed(key.values[0][1], types.get(columns[0])) for key in keys])
    else:
        condition = sa.or_(
            *(
                sa.and_(
                    *(
                        ref == sa.bindparam(None, _typed(value, types.get(name)))
                        for ref, (name, value) in zip(refs, key.values, strict=True)
                    )
                )
                for key in keys
            )
        )
    stmt = query.select(with_flag=True).where(condition).order_by(query.pk)
    return list(conn.execute(stmt).mappings())


def redrive_items(
    conn: sa.Connection,
    catalog: CatalogConfig,
    mapper: KindMapper,
    state: StateStore,
    *,
    target: str,
    kind: str,
    entry_ids: Collection[int] | None = None,
) -> Iterator[Entity | Deletion | MappingFailure]:
    """The kind's pending, not exhausted entries as items built from their current rows.

    `entry_ids` limits the redrive to those entries (`dead-letter replay --id`). Staged
    with the window's changes, the items are delivered like any other: accepted ops
    close their entries, rejected ones count an attempt.
    """
    entries = state.dead_letter_pending(target, kind)
    if entry_ids is not None:
        wanted = set(entry_ids)
        entries = [entry for entry in entries if entry.id in wanted]
    if not entries:
        return
    log.info("%s: redriving %d dead-letter entr(y/ies)", kind, len(entries))
    config = mapper.config
    if config.is_static:
        yield from mapper.static_entities()
        return
    if config.source is not None:
        for entry in entries:
            yield MappingFailure(
                kind,
                None,
                entry.external_id,
                f"kind {kind!r} comes from the custom source {config.source}, whose rows "
                "cannot be re-read one by one: fix the data, then run a full sync, or purge "
                "the entry (catalog-sync dead-letter purge)",
            )
        return
    located: list[tuple[DeadLetter, RowKey]] = []
    for entry in entries:
        try:
            located.append((entry, row_key(entry.external_id, mapper, catalog)))
        except Unlocatable as exc:
            yield MappingFailure(
                kind, None, entry.external_id, f"cannot locate the row of this entry: {exc}"
            )
    types = _column_types(conn, config.table)
    by_shape: dict[tuple[str, ...], list[tuple[DeadLetter, RowKey]]] = {}
    for entry, key in located:
        by_shape.setdefault(tuple(name for name, _value in key.values), []).append((entry, key))
    for group in by_shape.values():
        for start in range(0, len(group), CHUNK):
            yield from _redrive_chunk(conn, mapper, state, group[start : start + CHUNK], types)


def _redrive_chunk(
    conn: sa.Connection,
    mapper: KindMapper,
    state: StateStore,
    chunk: list[tuple[DeadLetter, RowKey]],
    types: dict[str, Any],
) -> Iterator[Entity | Deletion | MappingFailure]:
    kind = mapper.kind
    usable: list[tuple[DeadLetter, RowKey]] = []
    for entry, key in chunk:
        try:
            for name, value in key.values:
                _typed(value, types.get(name))
        except Unlocatable as exc:
            yield MappingFailure(kind, None, entry.external_id, f"cannot locate its row: {exc}")
            continue
        usable.append((entry, key))
    if not usable:
        return
    columns = [name for name, _value in usable[0][1].values]
    rows: dict[tuple[str, ...], sa.RowMapping] = {}
    for row in _load_rows(conn, mapper, [key for _entry, key in usable], types):
        rows[tuple(str(row[name]) for name in columns)] = row
    live = [row for row in rows.values() if not row.get(DELETED_FLAG)]
    pk = mapper.config.primary_key
    produced: set[str] = set()
    failed: set[str] = set()  # primary keys (as text) of rows that do not map
    for item in mapper.map_page(conn, live) if live else ():
        if isinstance(item, Entity):
            produced.add(item.external_id)
        else:
            failed.add(str(item.primary_key))
        yield item
    handed_over: list[int] = []
    for entry, key in usable:
        row = rows.get(key.text())
        if key.marker:
            # No external id was known: the row's ops are staged above under their real
            # ids (or its failure again, under its id once it has one), so this stand-in
            # entry has done its job.
            if row is not None and row.get(DELETED_FLAG):
                yield from mapper.deletions([row])
            if row is None or str(row[pk]) not in failed:
                handed_over.append(entry.id)
            continue
        alive = row is not None and not row.get(DELETED_FLAG)
        if alive and (entry.external_id in produced or str(row[pk]) in failed):
            continue  # re-sent, or its MappingFailure was yielded (counts an attempt)
        yield Deletion(kind, entry.external_id)
    if handed_over:
        state.dead_letter_resolve(handed_over)
