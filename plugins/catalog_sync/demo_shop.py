"""The demo shop: a Laravel-style catalog schema and a reproducible data generator.

The schema is SQLAlchemy Core metadata so one definition creates the same tables on
SQLite, PostgreSQL and MariaDB. It imitates what a Laravel shop looks like (plural
snake_case tables, `id` bigint keys, `created_at`/`updated_at`/`deleted_at`, DECIMAL
money, HTML text, JSON columns, pivot tables) because that is what the entity map and
the extraction have to cope with in real life.

Timestamps are naive and hold UTC (Laravel's default `APP_TIMEZONE=UTC`); on MariaDB
they are `DATETIME(6)`, never `TIMESTAMP`, so the session time zone cannot shift them
and keyset paging keeps microsecond order.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from catalog_sync.errors import ConfigurationError

#: Primary keys: BIGINT everywhere, but SQLite only auto-increments `INTEGER PRIMARY KEY`.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Microsecond timestamps (naive, UTC) on every dialect.
Stamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Money = sa.Numeric(12, 2, asdecimal=True)
Html = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

metadata = sa.MetaData()

_TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", Stamp, nullable=True),
        sa.Column("updated_at", Stamp, nullable=True),
        sa.Column("deleted_at", Stamp, nullable=True),
    ]


def _table(name: str, *columns: sa.Column | sa.Index | sa.Constraint) -> sa.Table:
    """A Laravel-style table: `id`, the columns, timestamps, and a keyset index.

    The `(updated_at, id)` index is what makes delta windows a range scan.
    """
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        *columns,
        *_timestamps(),
        **_TABLE_OPTIONS,
    )
    sa.Index(f"ix_{name}_updated_at_id", table.c.updated_at, table.c.id)
    return table


site_settings = _table(
    "site_settings",
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("url", sa.String(255), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("locale", sa.String(10), nullable=False),
    sa.Column("locales", sa.JSON, nullable=True),  # e.g. ["en", "uk"]
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("email", sa.String(255), nullable=True),
    sa.Column("phone", sa.String(50), nullable=True),
)

products = _table(
    "products",
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("sku", sa.String(64), nullable=False, unique=True),
    sa.Column("slug", sa.String(191), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),  # "simple" | "variable"
    sa.Column("description", Html, nullable=True),
    sa.Column("short_description", sa.Text, nullable=True),
    sa.Column("price", Money, nullable=False),
    sa.Column("regular_price", Money, nullable=False),
    sa.Column("sale_price", Money, nullable=True),
    sa.Column("stock_quantity", sa.Integer, nullable=False),
    sa.Column("in_stock", sa.Boolean, nullable=False),
    sa.Column("attributes", sa.JSON, nullable=True),  # [{"name": "Color", "values": ["Red"]}]
    sa.Column("name_uk", sa.String(255), nullable=True),
    sa.Column("description_uk", Html, nullable=True),
    sa.Column("weight", sa.Numeric(8, 3), nullable=True),
    sa.Column("meta", sa.JSON, nullable=True),  # {"brand": ..., "seo": {"title": ...}}
)

product_variations = _table(
    "product_variations",
    sa.Column("product_id", Id, sa.ForeignKey("products.id"), nullable=False, index=True),
    sa.Column("sku", sa.String(64), nullable=False, unique=True),
    sa.Column("price", Money, nullable=False),
    sa.Column("regular_price", Money, nullable=True),
    sa.Column("sale_price", Money, nullable=True),
    sa.Column("stock_quantity", sa.Integer, nullable=False),
    sa.Column("in_stock", sa.Boolean, nullable=False),
    sa.Column("options", sa.JSON, nullable=False),  # {"Color": "Red", "Size": "M"}
    sa.Column("position", sa.Integer, nullable=False, server_default="0"),
)

categories = _table(
    "categories",
    sa.Column("parent_id", Id, sa.ForeignKey("categories.id"), nullable=True, index=True),
    sa.Column("slug", sa.String(191), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("description", Html, nullable=True),
    sa.Column("name_uk", sa.String(255), nullable=True),
    sa.Column("position", sa.Integer, nullable=False, server_default="0"),
)

tags = _table(
    "tags",
    sa.Column("slug", sa.String(191), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False),
)

category_product = sa.Table(
    "category_product",
    metadata,
    sa.Column("product_id", Id, sa.ForeignKey("products.id"), primary_key=True),
    sa.Column("category_id", Id, sa.ForeignKey("categories.id"), primary_key=True, index=True),
    **_TABLE_OPTIONS,
)

product_tag = sa.Table(
    "product_tag",
    metadata,
    sa.Column("product_id", Id, sa.ForeignKey("products.id"), primary_key=True),
    sa.Column("tag_id", Id, sa.ForeignKey("tags.id"), primary_key=True, index=True),
    **_TABLE_OPTIONS,
)

attributes = _table(
    "attributes",
    sa.Column("slug", sa.String(191), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("values", sa.JSON, nullable=False),  # ["Red", "Blue"]
)

pages = _table(
    "pages",
    sa.Column("slug", sa.String(191), nullable=False, unique=True),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("content", Html, nullable=True),
    sa.Column("excerpt", sa.Text, nullable=True),
    sa.Column("title_uk", sa.String(255), nullable=True),
    sa.Column("content_uk", Html, nullable=True),
)

posts = _table(
    "posts",
    sa.Column("slug", sa.String(191), nullable=False, unique=True),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("content", Html, nullable=True),
    sa.Column("excerpt", sa.Text, nullable=True),
    sa.Column("published_at", Stamp, nullable=True),
)

menus = _table(
    "menus",
    sa.Column("slug", sa.String(191), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("location", sa.String(64), nullable=True),  # "header" | "footer"
)

menu_items = _table(
    "menu_items",
    sa.Column("menu_id", Id, sa.ForeignKey("menus.id"), nullable=False, index=True),
    sa.Column("parent_id", Id, sa.ForeignKey("menu_items.id"), nullable=True),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("url", sa.String(255), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
)

shipping_methods = _table(
    "shipping_methods",
    sa.Column("code", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("price", Money, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
)

payment_methods = _table(
    "payment_methods",
    sa.Column("code", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
)


def create_schema(engine: sa.Engine, *, replace: bool = False) -> None:
    """Create every demo table; existing demo tables are dropped only when `replace` is set.

    Refusing by default protects a real shop database given by mistake.
    """
    existing = sorted(set(sa.inspect(engine).get_table_names()) & set(metadata.tables))
    if existing and not replace:
        raise ConfigurationError(
            f"the database already has demo shop tables ({', '.join(existing)}); "
            "pass --replace to drop and recreate them, or use an empty database"
        )
    metadata.drop_all(engine)
    metadata.create_all(engine)


# --- the generator ---------------------------------------------------------------------
#
# Every value comes from one `random.Random(seed)` and fixed base timestamps, and rows are
# produced in primary-key order, so the same seed and size give the same content on every
# database. Rows are generated and written in chunks: memory stays flat at any size.

BASE_TIME = dt.datetime(2024, 1, 1, 8, 0, 0)
#: Created/updated stamps spread over this many seconds after BASE_TIME (about a year).
_SPREAD_S = 365 * 24 * 3600
CHUNK = 10_000

_ADJECTIVES = (
    "Classic",
    "Modern",
    "Rustic",
    "Smart",
    "Compact",
    "Deluxe",
    "Eco",
    "Vintage",
    "Urban",
    "Silky",
    "Bold",
    "Cozy",
    "Sleek",
    "Sturdy",
    "Bright",
    "Quiet",
    "Swift",
    "Gentle",
)
_NOUNS = (
    "Coffee Grinder",
    "Kettle",
    "Backpack",
    "Desk Lamp",
    "Sneakers",
    "Teapot",
    "Mug",
    "Blanket",
    "Jacket",
    "Headphones",
    "Notebook",
    "Water Bottle",
    "Chair",
    "Scarf",
    "Wallet",
    "Umbrella",
    "Candle",
    "Pillow",
    "Watch",
    "Bicycle Bell",
)
_UK_NOUNS = (
    "Кавомолка",
    "Чайник",
    "Рюкзак",
    "Лампа",
    "Кросівки",
    "Заварник",
    "Чашка",
    "Плед",
    "Куртка",
    "Навушники",
    "Блокнот",
    "Пляшка",
    "Стілець",
    "Шарф",
    "Гаманець",
    "Парасолька",
    "Свічка",
    "Подушка",
    "Годинник",
    "Дзвоник",
)
_BRANDS = ("Acme", "Nordwind", "Kyiv Craft", "Lumen", "Oakline", "Tern")
_COLORS = ("Red", "Blue", "Green", "Black", "White", "Yellow")
_SIZES = ("XS", "S", "M", "L", "XL")
_MATERIALS = ("Cotton", "Wool", "Steel", "Oak", "Ceramic", "Leather")
_WORDS = (
    "fresh",
    "durable",
    "handmade",
    "everyday",
    "premium",
    "lightweight",
    "warm",
    "soft",
    "reliable",
    "elegant",
    "practical",
    "colourful",
    "local",
    "seasonal",
    "quality",
    "simple",
)
_CATEGORY_ROOTS = ("Kitchen", "Clothing", "Home", "Outdoor", "Office", "Gifts", "Kava", "Napoi")
_CATEGORY_SUBS = ("Accessories", "Sale", "New", "Essentials", "Premium", "Kids", "Bundles")
_PAGES = (
    ("about", "About us"),
    ("contact", "Contact"),
    ("delivery", "Delivery"),
    ("payment", "Payment"),
    ("returns", "Returns & refunds"),
    ("privacy", "Privacy policy"),
    ("terms", "Terms of service"),
    ("faq", "FAQ"),
    ("stores", "Our stores"),
    ("careers", "Careers"),
)
_SHIPPING = (
    ("nova_poshta", "Nova Poshta", "70.00", True),
    ("courier", "Courier to the door", "120.00", True),
    ("pickup", "Pick up in store", "0.00", True),
    ("ukrposhta", "Ukrposhta", "45.50", False),
)
_PAYMENT = (
    ("card", "Card online", True),
    ("cod", "Cash on delivery", True),
    ("bank_transfer", "Bank transfer", False),
    ("crypto", "Crypto", True),
)


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


class _Clock:
    """Reproducible created/updated/deleted stamps (microseconds, naive UTC)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def stamps(self, deleted_share: float) -> tuple[dt.datetime, dt.datetime, dt.datetime | None]:
        rng = self.rng
        created = BASE_TIME + dt.timedelta(microseconds=rng.randrange(_SPREAD_S * 1_000_000))
        updated = created + dt.timedelta(microseconds=rng.randrange(30 * 24 * 3600 * 1_000_000))
        deleted = None
        if rng.random() < deleted_share:
            deleted = updated + dt.timedelta(seconds=rng.randrange(1, 86_400))
            updated = deleted  # Laravel's SoftDeletes touches updated_at too
        return created, updated, deleted


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _html_paragraphs(rng: random.Random, name: str, n: int) -> str:
    parts = [f"<h2>{name}</h2>"]
    for _ in range(n):
        words = " ".join(rng.choice(_WORDS) for _ in range(12))
        parts.append(f"<p>A {words} choice for every day &amp; every home.</p>")
    parts.append("<ul><li>Free delivery</li><li>2-year warranty</li></ul>")
    return "\n".join(parts)


def _generate(seed: int, products_n: int) -> Iterator[tuple[sa.Table, list[tuple[Any, ...]]]]:
    """Yield (table, rows in column order) chunks; parents always before children."""
    rng = random.Random(seed)
    clock = _Clock(rng)

    created, updated, _ = clock.stamps(0)
    yield (
        site_settings,
        [
            (
                1,
                "Demo Shop",
                "https://shop.example.com",
                "UAH",
                "en",
                _json(["en", "uk"]),
                "<p>Everything for a <b>cozy</b> home.</p>",
                "hello@shop.example.com",
                "+380 44 000 0000",
                created,
                updated,
                None,
            ),
        ],
    )

    n_categories = len(_CATEGORY_ROOTS) + max(8, min(492, products_n // 100))
    rows = []
    for i in range(1, n_categories + 1):
        c, u, d = clock.stamps(0 if i <= len(_CATEGORY_ROOTS) else 0.03)
        if i <= len(_CATEGORY_ROOTS):
            parent, name = None, _CATEGORY_ROOTS[i - 1]
        else:
            parent = rng.randint(1, i - 1)
            name = f"{rng.choice(_CATEGORY_SUBS)} {i}"
        uk = f"{name} (uk)" if rng.random() < 0.5 else None
        slug = name.lower().replace(" ", "-")
        rows.append((i, parent, slug, name, f"<p>All about <em>{name}</em>.</p>", uk, i, c, u, d))
    yield categories, rows

    n_tags = max(10, min(300, products_n // 200))
    rows = []
    for i in range(1, n_tags + 1):
        c, u, d = clock.stamps(0.03)
        word = _WORDS[i % len(_WORDS)]
        rows.append((i, f"{word}-{i}", f"{word.title()} {i}", c, u, d))
    yield tags, rows

    attribute_values = (("color", "Color", _COLORS), ("size", "Size", _SIZES),
                        ("material", "Material", _MATERIALS))  # fmt: skip
    rows = []
    for i, (slug, name, values) in enumerate(attribute_values, 1):
        c, u, _ = clock.stamps(0)
        rows.append((i, slug, name, _json(list(values)), c, u, None))
    yield attributes, rows

    yield from _generate_products(rng, clock, products_n, n_categories, n_tags)

    rows = []
    for i, (slug, title) in enumerate(_PAGES, 1):
        c, u, d = clock.stamps(0.1)
        content = _html_paragraphs(rng, title, 3)
        title_uk = f"{title} (uk)" if i % 2 else None
        content_uk = f"<p>{title} українською.</p>" if i % 2 else None
        rows.append((i, slug, title, content, f"{title}: the short version.", title_uk,
                     content_uk, c, u, d))  # fmt: skip
    yield pages, rows

    rows = []
    for i in range(1, max(5, min(200, products_n // 1000)) + 1):
        c, u, d = clock.stamps(0.05)
        title = f"{rng.choice(_ADJECTIVES)} ideas for your {rng.choice(_NOUNS).lower()} #{i}"
        published = None if rng.random() < 0.1 else u
        rows.append((i, f"post-{i}", title, _html_paragraphs(rng, title, 4),
                     f"Read about {title.lower()}.", published, c, u, d))  # fmt: skip
    yield posts, rows

    rows = []
    for i, (slug, name) in enumerate((("header", "Main menu"), ("footer", "Footer menu")), 1):
        c, u, _ = clock.stamps(0)
        rows.append((i, slug, name, slug, c, u, None))
    yield menus, rows

    rows = []
    item = 0
    for menu_id, labels in ((1, ("Shop", "Kitchen", "Clothing", "Sale", "Blog", "Contact")),
                            (2, ("About", "Delivery", "Returns", "Privacy"))):  # fmt: skip
        top = None
        for position, label in enumerate(labels):
            item += 1
            c, u, d = clock.stamps(0.1 if position else 0)
            parent = top if menu_id == 1 and label in {"Kitchen", "Clothing", "Sale"} else None
            if position == 0:
                top = item
            url = f"/{label.lower()}"
            rows.append((item, menu_id, parent, label, url, position, c, u, d))
    yield menu_items, rows

    rows = []
    for i, (code, label, price, enabled) in enumerate(_SHIPPING, 1):
        c, u, _ = clock.stamps(0)
        rows.append((i, code, label, price, enabled, f"<p>{label}</p>", c, u, None))
    yield shipping_methods, rows

    rows = []
    for i, (code, label, enabled) in enumerate(_PAYMENT, 1):
        c, u, d = clock.stamps(0)
        d = u if code == "crypto" else None  # one soft-deleted method
        rows.append((i, code, label, enabled, f"<p>{label}</p>", c, u, d))
    yield payment_methods, rows


def _generate_products(
    rng: random.Random, clock: _Clock, n: int, n_categories: int, n_tags: int
) -> Iterator[tuple[sa.Table, list[tuple[Any, ...]]]]:
    """Products with their variations and pivot rows, CHUNK products at a time."""
    variation_id = 0
    random_ = rng.random
    randrange = rng.randrange
    choice = rng.choice
    for start in range(1, n + 1, CHUNK):
        product_rows: list[tuple[Any, ...]] = []
        variation_rows: list[tuple[Any, ...]] = []
        category_rows: list[tuple[Any, ...]] = []
        tag_rows: list[tuple[Any, ...]] = []
        for i in range(start, min(start + CHUNK, n + 1)):
            c, u, d = clock.stamps(0.02)
            noun_i = randrange(len(_NOUNS))
            name = f"{choice(_ADJECTIVES)} {_NOUNS[noun_i]} {i}"
            variable = random_() < 0.1
            regular = randrange(100, 500_000)
            sale = regular - regular * randrange(5, 40) // 100 if random_() < 0.2 else None
            quantity = randrange(0, 60) if random_() < 0.9 else 0
            words = " ".join([choice(_WORDS), choice(_WORDS), choice(_WORDS), choice(_WORDS)])
            description = (
                f"<h2>{name}</h2>\n<p>A {words} <b>{_NOUNS[noun_i].lower()}</b> "
                f"for every day &amp; every home.</p>\n<ul><li>Free delivery</li>"
                f"<li>2-year warranty</li></ul>"
            )
            color = choice(_COLORS)
            attrs: list[dict[str, Any]] = [{"name": "Color", "values": [color]}]
            if variable:
                sizes = rng.sample(_SIZES, randrange(2, 5))
                attrs = [{"name": "Color", "values": [color]}, {"name": "Size", "values": sizes}]
                for position, size in enumerate(sizes):
                    variation_id += 1
                    vc, vu, vd = clock.stamps(0.02)
                    v_cents = regular + 500 * position
                    v_qty = randrange(0, 20)
                    variation_rows.append(
                        (
                            variation_id,
                            i,
                            f"SKU-{i:07d}-{size}",
                            _money(v_cents),
                            _money(v_cents),
                            None,
                            v_qty,
                            v_qty > 0,
                            _json({"Color": color, "Size": size}),
                            position,
                            vc,
                            vu,
                            vd,
                        )
                    )
            elif random_() < 0.3:
                attrs.append({"name": "Material", "values": [choice(_MATERIALS)]})
            translated = random_() < 0.3
            product_rows.append(
                (
                    i,
                    str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    f"SKU-{i:07d}",
                    f"{name.lower().replace(' ', '-')}",
                    name,
                    "variable" if variable else "simple",
                    description,
                    f"<p>{words.capitalize()}.</p>",
                    _money(sale if sale is not None else regular),
                    _money(regular),
                    None if sale is None else _money(sale),
                    quantity,
                    quantity > 0,
                    _json(attrs),
                    f"{_UK_NOUNS[noun_i]} {i}" if translated else None,
                    f"<p>{_UK_NOUNS[noun_i]}: опис українською.</p>" if translated else None,
                    f"{randrange(50, 20_000) / 1000:.3f}",
                    _json({"brand": choice(_BRANDS), "seo": {"title": name}}),
                    c,
                    u,
                    d,
                )
            )
            first = randrange(1, n_categories + 1)
            category_rows.append((i, first))
            if random_() < 0.5:
                second = randrange(1, n_categories + 1)
                if second != first:
                    category_rows.append((i, second))
            for tag in {randrange(1, n_tags + 1) for _ in range(randrange(0, 3))}:
                tag_rows.append((i, tag))
        tag_rows.sort()
        yield products, product_rows
        if variation_rows:
            yield product_variations, variation_rows
        yield category_product, category_rows
        yield product_tag, tag_rows


# --- writing -----------------------------------------------------------------------------


def _insert_sql(table: sa.Table, placeholder: str, quote: str) -> str:
    columns = ", ".join(f"{quote}{c.name}{quote}" for c in table.columns)
    marks = ", ".join(placeholder for _ in table.columns)
    return f"INSERT INTO {quote}{table.name}{quote} ({columns}) VALUES ({marks})"


def _sqlite_value(value: Any) -> Any:
    """The text SQLAlchemy itself would store, so the ORM reads the rows back unchanged."""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


def _write_postgresql(dbapi: Any, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
    """COPY: an order of magnitude faster than INSERT for the million-row case."""
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    with dbapi.cursor() as cur, cur.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)


def _write_mysql(dbapi: Any, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
    """PyMySQL turns executemany of one INSERT into multi-row INSERT statements."""
    with dbapi.cursor() as cur:
        cur.executemany(_insert_sql(table, "%s", "`"), rows)


def _write_sqlite(dbapi: Any, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
    cur = dbapi.cursor()
    try:
        cur.executemany(
            _insert_sql(table, "?", '"'), [tuple(map(_sqlite_value, row)) for row in rows]
        )
    finally:
        cur.close()


def _reset_sequences(dbapi: Any) -> None:
    """Rows were written with explicit ids: move PostgreSQL sequences past them."""
    with dbapi.cursor() as cur:
        for table in metadata.sorted_tables:
            if "id" in table.c:
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', 'id'), "
                    f'COALESCE((SELECT max(id) FROM "{table.name}"), 0) + 1, false)'
                )


def create_demo_shop(
    engine: sa.Engine,
    products_n: int,
    *,
    seed: int = 0,
    replace: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Create the schema and fill it reproducibly; returns the row count per table."""
    if products_n < 0:
        raise ConfigurationError("--products must be zero or more")
    writers = {"postgresql": _write_postgresql, "mysql": _write_mysql, "mariadb": _write_mysql}
    write = writers.get(engine.dialect.name, _write_sqlite)
    create_schema(engine, replace=replace)
    counts: dict[str, int] = dict.fromkeys(metadata.tables, 0)
    started = time.perf_counter()
    reported = 0
    with engine.begin() as conn:  # commits at the end (writes go through the raw DBAPI)
        dbapi = conn.connection.driver_connection
        for table, rows in _generate(seed, products_n):
            write(dbapi, table, rows)
            counts[table.name] += len(rows)
            if progress and table is products and counts["products"] - reported >= 100_000:
                reported = counts["products"]
                elapsed = time.perf_counter() - started
                progress(f"products {reported:,}/{products_n:,} ({elapsed:.1f} s)")
        if engine.dialect.name == "postgresql":
            _reset_sequences(dbapi)
    if progress:
        total = sum(counts.values())
        progress(f"done: {total:,} rows in {time.perf_counter() - started:.1f} s")
    return counts


def content_hash(engine: sa.Engine) -> str:
    """SHA-256 over every demo table's rows in key order, normalized across dialects.

    Equal hashes mean equal content, whatever database holds it.
    """
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for name in sorted(metadata.tables):
            table = metadata.tables[name]
            digest.update(f"\n#{name}\n".encode())
            stmt = sa.select(table).order_by(*table.primary_key.columns)
            result = conn.execution_options(yield_per=CHUNK).execute(stmt)
            for row in result:
                digest.update(orjson.dumps([_normal(v) for v in row], option=orjson.OPT_SORT_KEYS))
                digest.update(b"\n")
    return digest.hexdigest()


def _normal(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def change_some_products(engine: sa.Engine) -> dict[str, int]:
    """One insert, one update, one soft delete and one hard delete of products.

    What the demo and the end-to-end tests do between two syncs; returns the ids touched.
    """
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        live = products.c.deleted_at.is_(None)
        ids = conn.execute(sa.select(products.c.id).where(live).order_by(products.c.id).limit(3))
        updated, soft, hard = ids.scalars().all()
        template = conn.execute(sa.select(products).where(products.c.id == updated)).one()
        new_id = conn.execute(sa.select(sa.func.max(products.c.id))).scalar_one() + 1
        conn.execute(
            products.insert().values(
                {
                    **template._asdict(),
                    "id": new_id,
                    "uuid": f"00000000-0000-4000-8000-{new_id:012d}",
                    "sku": f"DEMO-NEW-{new_id}",
                    "slug": f"demo-new-product-{new_id}",
                    "name": "Demo product added after the snapshot",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        )
        conn.execute(
            products.update()
            .where(products.c.id == updated)
            .values(name="Renamed by the demo", price="12.34", updated_at=now)
        )
        conn.execute(
            products.update().where(products.c.id == soft).values(deleted_at=now, updated_at=now)
        )
        for table in metadata.sorted_tables:
            if "product_id" in table.c and table is not products:
                conn.execute(table.delete().where(table.c.product_id == hard))
        conn.execute(products.delete().where(products.c.id == hard))
    return {"inserted": new_id, "updated": updated, "soft_deleted": soft, "hard_deleted": hard}


def belongs_to_product(line: Mapping[str, Any], product: str | None) -> bool:
    """True for a mapped line of `product` (external id): itself, translations, variations."""
    if product is None:
        return False
    external_id = line["external_id"]
    return (
        external_id == product
        or external_id.startswith(f"{product}:")
        or line["payload"].get("parent_external_id") == product
    )
