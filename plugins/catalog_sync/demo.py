"""`catalog-sync demo`: the whole sync, end to end, on embedded defaults.

It builds the demo shop in SQLite, starts the reference receiver on loopback, pairs with
it through the real `pair` command path, sends a full snapshot, changes rows (insert,
update, soft delete, hard delete), sends the delta, then a second full snapshot that
reconciles the hard delete, and checks after each step that the receiver holds exactly
the mapped shop. Everything lives under one work folder, Airflow home included, so the
demo never touches a real Airflow installation.

The steps call the same functions the DAG tasks are built from: extraction and staging
(`extract`, `staging`) and the hook (`VoiceBotHook`).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEMO_PRODUCTS = 300
DEMO_SEED = 7
CONN_ID = "voicebot_default"


def _say(text: str) -> None:
    print(text, flush=True)


def _isolated_airflow_home(home: Path) -> None:
    """A fresh Airflow home with a Fernet key; must run before Airflow is imported."""
    from cryptography.fernet import Fernet

    if "airflow" in sys.modules:
        raise RuntimeError("the demo must set up its Airflow home before Airflow is imported")
    home.mkdir(parents=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__FERNET_KEY"] = Fernet.generate_key().decode()
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.pop(f"AIRFLOW_CONN_{CONN_ID.upper()}", None)
    migrated = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        check=False,
    )
    if migrated.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{migrated.stderr[-2000:]}")


def _sorted_lines(lines: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(lines, key=lambda line: (line["kind"], line["external_id"]))


def _expected(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """The mapped shop, as the snapshot staged it (what the receiver should hold)."""
    from catalog_sync import protocol, staging

    return _sorted_lines(
        protocol.loads(line)
        for part in snapshot["parts"]
        for line in staging.iter_lines(part["uri"])
    )


def _held(receiver_db: str) -> list[dict[str, Any]]:
    from catalog_sync import protocol
    from catalog_sync.receiver.store import ReceiverStore

    store = ReceiverStore(receiver_db)
    try:
        return [protocol.loads(line) for line in store.dump_lines()]
    finally:
        store.dispose()


def _full_sync(hook: Any, engine: Any, catalog: Any, root: str, run_key: str) -> dict[str, Any]:
    """Snapshot, assemble, init, upload, finalize: the full DAG's steps in order."""
    from catalog_sync import extract, staging

    snapshot = extract.extract_snapshot(engine, catalog, run_key=run_key, root=root)
    upload = staging.assemble_snapshot(
        snapshot["parts"], staging.join(root, run_key, "snapshot.ndjson.gz")
    )
    started = hook.init(snapshot["counts"])
    hook.upload(started["upload_url"], upload["uri"], size=upload["bytes"])
    hook.finalize(started["sync_id"])
    return snapshot


def _delta_sync(
    hook: Any, engine: Any, catalog: Any, root: str, run_key: str, watermark: dt.datetime
) -> dict[str, Counter[str]]:
    """Per kind: plan the window, stage its batches, send them; returns the tallies."""
    from catalog_sync import extract, staging

    mappers = extract.prepare(engine, catalog)
    with engine.connect() as conn:
        window = extract.plan_window(conn, watermark, catalog.sync)
    tallies: dict[str, Counter[str]] = {}
    for kind in catalog.kinds:
        manifest = extract.extract_delta(
            engine, catalog, kind, window, run_key=run_key, mappers=mappers, root=root
        )
        tally = tallies[kind] = Counter(
            upserts=manifest["upserts"],
            deletes=manifest["deletes"],
            unmappable=manifest["failures"]["count"],
        )
        for batch_id, body in staging.iter_batches(manifest["uri"]):
            answer = hook.post_events(batch_id, body)
            tally["rejected"] += len(answer.get("errors", []))
            tally["accepted"] += answer.get("processed", 0)
    return tallies


def _change_rows(engine: Any) -> dict[str, int]:
    """One insert, one update, one soft delete and one hard delete of products."""
    import sqlalchemy as sa

    from catalog_sync import demo_shop

    products = demo_shop.products
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
        for table in demo_shop.metadata.sorted_tables:
            if "product_id" in table.c and table is not products:
                conn.execute(table.delete().where(table.c.product_id == hard))
        conn.execute(products.delete().where(products.c.id == hard))
    return {"inserted": new_id, "updated": updated, "soft_deleted": soft, "hard_deleted": hard}


def _report_full(title: str, counts: dict[str, int]) -> None:
    _say(f"\n{title}: lines per kind")
    for kind, lines in counts.items():
        _say(f"  {kind:<18}{lines:>8}")


def _report_delta(tallies: dict[str, Counter[str]]) -> None:
    columns = ("upserts", "deletes", "accepted", "rejected", "unmappable")
    _say("\ndelta: ops per kind (kinds without changes left out)")
    _say(f"  {'kind':<18}" + "".join(f"{name:>12}" for name in columns))
    for kind, tally in tallies.items():
        if any(tally.values()):
            _say(f"  {kind:<18}" + "".join(f"{tally[name]:>12}" for name in columns))


def _check(step: str, expected: list[dict[str, Any]], held: list[dict[str, Any]]) -> bool:
    if expected == held:
        _say(
            f"[ok] after {step}: the receiver holds exactly the mapped shop ({len(held)} entities)"
        )
        return True
    expected_ids = {(e["kind"], e["external_id"]) for e in expected}
    held_ids = {(e["kind"], e["external_id"]) for e in held}
    differing = sum(1 for e in expected if e not in held)
    _say(
        f"[MISMATCH] after {step}: {len(expected_ids - held_ids)} missing, "
        f"{len(held_ids - expected_ids)} extra, {differing} differing entities"
    )
    return False


def run_demo(workdir: str, products: int = DEMO_PRODUCTS, seed: int = DEMO_SEED) -> int:
    """Run the demo in `workdir` (wiped first); 0 when every check passed, else 1."""
    work = Path(workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    _say(f"demo: working in {work}")
    _isolated_airflow_home(work / "airflow")

    from catalog_sync import demo_shop, extract, pairing
    from catalog_sync.config import load_config
    from catalog_sync.hooks import VoiceBotHook
    from catalog_sync.receiver.process import ReceiverProcess
    from catalog_sync.receiver.store import ReceiverStore
    from catalog_sync.source import create_source_engine

    engine = create_source_engine(f"sqlite:///{work / 'shop.sqlite'}")
    counts = demo_shop.create_demo_shop(engine, products, seed=seed)
    _say(f"demo shop: {sum(counts.values()):,} rows in {len(counts)} tables (SQLite)")
    catalog = load_config()
    root = (work / "staging").as_uri()

    receiver_db = f"sqlite:///{work / 'receiver.sqlite'}"
    receiver = ReceiverProcess.start(receiver_db, work / "receiver")
    try:
        _say(f"receiver: listening on {receiver.base_url}")
        code = ReceiverStore(receiver_db).issue_pair_code(receiver.base_url)
        pairing.pair_command(code=code, base_url=receiver.base_url, site_url="", conn_id=CONN_ID)
        hook = VoiceBotHook(CONN_ID)
        _say(f"status: {hook.status().get('provider_status')}")

        first = _full_sync(hook, engine, catalog, root, "full-1")
        _report_full("full snapshot", first["counts"])
        ok = _check("the full snapshot", _expected(first), _held(receiver_db))

        changed = _change_rows(engine)
        _say(f"\nchanged products: {changed}")
        lag = catalog.sync.safety_lag_seconds
        _say(f"waiting {lag + 1} s: rows younger than the safety lag wait for the next window")
        time.sleep(lag + 1)
        tallies = _delta_sync(
            hook, engine, catalog, root, "delta-1", extract.from_iso(first["point"])
        )
        _report_delta(tallies)
        # A delta cannot see a hard delete (the row is gone); the next full reconciles it.
        current = _expected(extract.extract_snapshot(engine, catalog, run_key="check", root=root))
        hard = f"laravel:product:{changed['hard_deleted']}"
        ok &= _check(
            "the delta (all but the hard-deleted product)",
            current,
            [line for line in _held(receiver_db) if not _belongs_to(line, hard)],
        )

        second = _full_sync(hook, engine, catalog, root, "full-2")
        _report_full("second full snapshot (reconciles the hard delete)", second["counts"])
        ok &= _check("the second full snapshot", _expected(second), _held(receiver_db))
    finally:
        receiver.stop()
        engine.dispose()
    _say("\ndemo: " + ("every check passed" if ok else "a check FAILED"))
    return 0 if ok else 1


def _belongs_to(line: dict[str, Any], product: str) -> bool:
    """The product itself, its translations and its variations."""
    external_id = line["external_id"]
    return (
        external_id == product
        or external_id.startswith(f"{product}:")
        or line["payload"].get("parent_external_id") == product
    )
