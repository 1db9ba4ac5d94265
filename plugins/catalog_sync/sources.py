"""Custom sources: a whole kind produced by Python code instead of a table or select.

When rows do not live in one table (an API, a key-value settings table, a computed
kind), the entity map names a class by dotted path under `source:`. The class streams
entities itself; the extraction hands it the same connection (and so the same
transaction) as every other kind, so a custom kind joins the snapshot's point in time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from catalog_sync.config import CatalogConfig, KindConfig, resolve_dotted

if TYPE_CHECKING:
    import sqlalchemy as sa

    from catalog_sync.mapping import Deletion, Entity, KindMapper, MappingFailure

#: `low` given to `Source.changes` on a first run (no watermark yet): "since ever".
FIRST_RUN_LOW = dt.datetime(1970, 1, 1)


@runtime_checkable
class Source(Protocol):
    """What a `source:` class implements.

    `changes` yields every upsert (Entity) and delete (Deletion) whose change time `t`
    is in `low <= t < high` (naive UTC datetimes, `low` is FIRST_RUN_LOW on a first
    run); overlapping windows are normal, so yielding an entity twice is fine, missing
    one is not. `snapshot` yields every live entity, in a stable order (the snapshot
    file must be byte-identical for unchanged data). Either may also yield a
    `MappingFailure` for an item it cannot express: it is dead-lettered, not dropped.
    """

    def __init__(self, config: KindConfig, catalog: CatalogConfig) -> None: ...

    def changes(
        self, conn: sa.Connection, low: dt.datetime, high: dt.datetime
    ) -> Iterator[Entity | Deletion | MappingFailure]: ...

    def snapshot(self, conn: sa.Connection) -> Iterator[Entity | MappingFailure]: ...


def load_source(
    config: KindConfig, catalog: CatalogConfig, mapper: KindMapper | None = None
) -> Source:
    """Instantiate the `source:` class of a kind, or say precisely what is wrong with it.

    `compile_mappers` already imported the class (`mapper.source_class`); it is reused.
    """
    key_path: list[Any] = ["kinds", config.kind, "source"]
    if config.source is None:
        raise catalog.error(key_path, "the kind has no source", "name a class under source:")
    cls = getattr(mapper, "source_class", None) or resolve_dotted(
        config.source, catalog.path, key_path
    )
    if not isinstance(cls, type):
        raise catalog.error(
            key_path,
            f"{config.source!r} is not a class",
            "name a class implementing catalog_sync.sources.Source",
        )
    try:
        instance = cls(config, catalog)
    except Exception as exc:
        raise catalog.error(
            key_path,
            f"creating {config.source} failed: {type(exc).__name__}: {exc}",
            "check the class's __init__(config, catalog) and the kind's options:",
        ) from None
    missing = [
        name for name in ("changes", "snapshot") if not callable(getattr(instance, name, None))
    ]
    if missing:
        raise catalog.error(
            key_path,
            f"{config.source} has no {' or '.join(missing)} method",
            "implement changes(conn, low, high) and snapshot(conn) (catalog_sync.sources.Source)",
        )
    return instance
