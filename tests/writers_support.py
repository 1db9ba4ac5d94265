"""Seeded concurrent writers on the demo shop's `products` table, for the reliability tests.

One `random.Random(seed)` decides everything before any thread starts: the starting
products, how many writers, and each writer's list of operations (insert, update, an
update whose transaction stays open for seconds after stamping `updated_at`, a burst of
rows stamped with one identical timestamp, soft delete, restore, hard delete) with the
pause before each. Each writer owns its own rows (disjoint ids), so the final content of
the shop is the same on every run of a seed whatever the thread interleaving. What no
seed fixes is the timing: where the back-to-back delta windows fall between the writes,
and which writes share a whole second, depends on the machine's scheduling.

Stamps follow Laravel: the application clock, naive UTC; some are truncated to the whole
second (as a `DATETIME` without fraction stores them), which makes rows of different
writers share a timestamp.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import threading
import time
from typing import Any

import sqlalchemy as sa

from catalog_sync.demo_shop import category_product, product_tag, product_variations, products

#: Longest time a writer's transaction stays open after stamping `updated_at`. With
#: stamps truncated to the second, a row can commit up to HOLD_MAX_S + 1 s after its
#: stamp: the map's `overlap_seconds` must exceed that (see OVERLAP_S).
HOLD_MAX_S = 2.5
#: The test map's overlap: the longest write transaction plus a margin for a loaded machine.
OVERLAP_S = 6
#: Small keyset pages, so a burst of identical timestamps spans several pages.
PAGE_SIZE = 3
#: Ids of rows a writer inserts: writer w uses INSERTED_BASE * (w + 1) + k.
INSERTED_BASE = 10_000

OPS = ("insert", "update", "held_update", "burst", "soft_delete", "restore", "hard_delete")
WEIGHTS = (3, 3, 2, 2, 2, 1, 1)


@dataclasses.dataclass(frozen=True)
class Op:
    """One write: `kind` (one of OPS) on `ids`, after `pause_s`, holding `hold_s` open."""

    kind: str
    ids: tuple[int, ...]
    pause_s: float
    hold_s: float = 0.0
    whole_second: bool = False
    name: str = ""
    name_uk: str | None = None
    price_cents: int = 0


@dataclasses.dataclass(frozen=True)
class Scenario:
    seed: int
    initial: tuple[int, ...]
    writers: tuple[tuple[Op, ...], ...]

    def hard_deleted(self) -> set[int]:
        return {i for ops in self.writers for op in ops if op.kind == "hard_delete" for i in op.ids}

    def describe(self) -> str:
        counts = {kind: 0 for kind in OPS}
        for ops in self.writers:
            for op in ops:
                counts[op.kind] += 1
        done = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        held = sum(1 for ops in self.writers for op in ops if op.hold_s)
        return (
            f"{len(self.initial)} products, {len(self.writers)} writers: {done} ({held} held open)"
        )


def plan_scenario(seed: int) -> Scenario:
    """Everything the scenario will do, from its seed alone."""
    rng = random.Random(seed)
    initial = tuple(range(1, rng.randint(6, 16) + 1))
    n_writers = rng.randint(2, 4)
    writers = []
    for w in range(n_writers):
        live = [i for i in initial if i % n_writers == w]
        soft: list[int] = []
        next_id = INSERTED_BASE * (w + 1)
        ops: list[Op] = []
        for _ in range(rng.randint(3, 8)):
            kind = rng.choices(OPS, WEIGHTS)[0]
            pause = round(rng.uniform(0, 0.4), 3)
            whole = rng.random() < 0.4
            text = {
                "name": f"w{w} {rng.getrandbits(24):06x}",
                "name_uk": rng.choice([None, f"uk {rng.getrandbits(16):04x}"]),
                "price_cents": rng.randint(1, 99_999),
            }
            if kind == "insert" or not (live or soft):
                next_id += 1
                live.append(next_id)
                ops.append(Op("insert", (next_id,), pause, whole_second=whole, **text))
            elif kind == "restore" and soft:
                target = soft.pop(rng.randrange(len(soft)))
                live.append(target)
                ops.append(Op("restore", (target,), pause, whole_second=whole))
            elif kind in ("update", "held_update", "restore") and live:
                hold = round(rng.uniform(1.0, HOLD_MAX_S), 3) if kind == "held_update" else 0.0
                target = rng.choice(live)
                ops.append(Op("update", (target,), pause, hold, whole, **text))
            elif kind == "burst" and live:
                chosen = tuple(sorted(rng.sample(live, min(len(live), rng.randint(2, 6)))))
                ops.append(Op("burst", chosen, pause, whole_second=whole, **text))
            elif kind == "soft_delete" and live:
                target = live.pop(rng.randrange(len(live)))
                soft.append(target)
                ops.append(Op("soft_delete", (target,), pause, whole_second=whole))
            else:  # a hard delete (or nothing else applies): of a live or soft-deleted row
                pool = live if live and (not soft or rng.random() < 0.5) else soft
                target = pool.pop(rng.randrange(len(pool)))
                ops.append(Op("hard_delete", (target,), pause))
        writers.append(tuple(ops))
    return Scenario(seed, initial, tuple(writers))


def _stamp(whole_second: bool) -> dt.datetime:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now.replace(microsecond=0) if whole_second else now


def _product_row(product_id: int, name: str, name_uk: str | None, cents: int) -> dict[str, Any]:
    price = f"{cents / 100:.2f}"
    return {
        "id": product_id,
        "uuid": f"00000000-0000-4000-8000-{product_id:012d}",
        "sku": f"W-{product_id}",
        "slug": f"writer-product-{product_id}",
        "name": name,
        "name_uk": name_uk,
        "type": "simple",
        "price": price,
        "regular_price": price,
        "stock_quantity": cents % 50,
        "in_stock": cents % 50 > 0,
    }


def reset_products(engine: sa.Engine, scenario: Scenario) -> None:
    """The scenario's starting shop: its initial products only, stamped an hour ago."""
    stamp = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(hours=1)
    with engine.begin() as conn:
        for table in (category_product, product_tag, product_variations, products):
            conn.execute(table.delete())
        rows = [
            {
                **_product_row(i, f"start {i}", f"uk {i}" if i % 3 else None, 100 * i),
                "created_at": stamp,
                "updated_at": stamp,
            }
            for i in scenario.initial
        ]
        conn.execute(products.insert(), rows)


def _apply(conn: sa.Connection, op: Op) -> None:
    stamp = _stamp(op.whole_second)
    where = products.c.id.in_(op.ids)
    if op.kind == "insert":
        row = _product_row(op.ids[0], op.name, op.name_uk, op.price_cents)
        conn.execute(products.insert().values(**row, created_at=stamp, updated_at=stamp))
    elif op.kind in ("update", "burst"):
        price = f"{op.price_cents / 100:.2f}"
        conn.execute(
            products.update()
            .where(where)
            .values(name=op.name, name_uk=op.name_uk, price=price, updated_at=stamp)
        )
    elif op.kind == "soft_delete":
        conn.execute(products.update().where(where).values(deleted_at=stamp, updated_at=stamp))
    elif op.kind == "restore":
        conn.execute(products.update().where(where).values(deleted_at=None, updated_at=stamp))
    elif op.kind == "hard_delete":
        conn.execute(products.delete().where(where))
    if op.hold_s:
        time.sleep(op.hold_s)  # the open transaction itself: its rows commit this much later


class Writers:
    """The scenario's writer threads; `errors` holds what any of them raised."""

    def __init__(self, engine: sa.Engine, scenario: Scenario) -> None:
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(engine, ops), daemon=True)
            for ops in scenario.writers
        ]

    def _run(self, engine: sa.Engine, ops: tuple[Op, ...]) -> None:
        try:
            for op in ops:
                time.sleep(op.pause_s)
                with engine.begin() as conn:
                    _apply(conn, op)
        except BaseException as exc:
            self.errors.append(exc)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=60)
