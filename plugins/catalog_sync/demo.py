"""`catalog-sync demo`: the whole sync, end to end, on embedded defaults.

It builds the demo shop in SQLite, starts the reference receiver on loopback, pairs with
it through the real `pair` command path, sends a full snapshot, changes rows (insert,
update, soft delete, hard delete), sends the delta, then a second full snapshot that
reconciles the hard delete, and checks after each step that the receiver holds exactly
the mapped shop. Everything lives under one work folder, Airflow home included, so the
demo never touches a real Airflow installation.

Each sync is a real run of the `catalog_full` or `catalog_delta` DAG, in this process
(`runner.run_once`, as `catalog-sync sync` does). With `--base-url` and `--pair-code` the
demo pairs with any backend that speaks the protocol instead of the local receiver; the
exact-content checks then need the local receiver's dump and are skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
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


def sorted_lines(lines: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(lines, key=lambda line: (line["kind"], line["external_id"]))


def _expected(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """The mapped shop, as the snapshot staged it (what the receiver should hold)."""
    from catalog_sync import protocol, staging

    return sorted_lines(
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


@contextlib.contextmanager
def _output_to(log_path: Path) -> Iterator[None]:
    """Send everything written to stdout/stderr (Airflow's task logs) to `log_path`.

    At the file-descriptor level, so loggers that hold their own handle to the terminal
    are redirected too.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_path.open("ab") as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _run(full: bool, log_path: Path) -> Any:
    """One run of the full or delta DAG; its ledger says what happened per kind."""
    from catalog_sync.runner import run_once

    with _output_to(log_path):
        outcome = run_once(full=full, conf={})
    _say(f"\n{outcome.dag_id}: {'success' if outcome.succeeded else 'FAILED'}")
    _say(f"  {'kind':<18}{'status':>10}{'extracted':>11}{'accepted':>10}{'dead-lettered':>15}")
    for line in outcome.ledger:
        _say(
            f"  {line.kind:<18}{line.status:>10}{line.extracted:>11}{line.accepted:>10}"
            f"{line.dead_lettered:>15}"
        )
    for exc in outcome.failures[:3]:
        _say(f"  error: {exc}")
    return outcome


def mapped_shop(engine: Any, catalog: Any, root: str) -> list[dict[str, Any]]:
    """What a receiver should hold: a snapshot of the shop, staged for comparison only."""
    from catalog_sync import extract

    run_key = f"check-{time.monotonic_ns()}"
    return _expected(extract.extract_snapshot(engine, catalog, run_key=run_key, root=root))


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


def run_demo(
    workdir: str,
    products: int = DEMO_PRODUCTS,
    seed: int = DEMO_SEED,
    base_url: str | None = None,
    pair_code: str | None = None,
) -> int:
    """Run the demo in `workdir` (wiped first); 0 when every run and check passed, else 1."""
    if (base_url is None) != (pair_code is None):
        from catalog_sync.errors import ConfigurationError

        raise ConfigurationError("give both --base-url and --pair-code, or neither")
    work = Path(workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    _say(f"demo: working in {work}")
    _isolated_airflow_home(work / "airflow")
    shop_url = f"sqlite:///{work / 'shop.sqlite'}"
    os.environ["AIRFLOW_CONN_CATALOG_SOURCE"] = shop_url
    os.environ["CATALOG_SYNC_STAGING"] = (work / "staging").as_uri()
    os.environ["CATALOG_SYNC_TARGET"] = CONN_ID

    from catalog_sync import demo_shop, pairing
    from catalog_sync.config import load_config
    from catalog_sync.receiver.process import ReceiverProcess
    from catalog_sync.receiver.store import ReceiverStore
    from catalog_sync.source import create_source_engine

    engine = create_source_engine(shop_url)
    counts = demo_shop.create_demo_shop(engine, products, seed=seed)
    _say(f"demo shop: {sum(counts.values()):,} rows in {len(counts)} tables (SQLite)")
    catalog = load_config()
    check_root = (work / "check").as_uri()
    airflow_log = work / "airflow-runs.log"
    _say(f"the DAG runs' own logs go to {airflow_log}")

    receiver_db = f"sqlite:///{work / 'receiver.sqlite'}"
    receiver = None
    try:
        if base_url is None:
            receiver = ReceiverProcess.start(receiver_db, work / "receiver")
            base_url = receiver.base_url
            pair_code = ReceiverStore(receiver_db).issue_pair_code(base_url)
            _say(f"receiver: listening on {base_url}")
        pairing.pair_command(code=pair_code, base_url=base_url, site_url="", conn_id=CONN_ID)
        local = receiver is not None

        def verify(step: str, hidden: str | None = None) -> bool:
            """Receiver == mapped shop (but for `hidden`'s entities); only with the local one."""
            if not local:
                return True
            expected = mapped_shop(engine, catalog, check_root)
            held = [
                line
                for line in _held(receiver_db)
                if not demo_shop.belongs_to_product(line, hidden)
            ]
            return _check(step, expected, held)

        ok = _run(full=True, log_path=airflow_log).succeeded and verify("the full snapshot")

        changed = demo_shop.change_some_products(engine)
        _say(f"\nchanged products: {changed}")
        lag = catalog.sync.safety_lag_seconds
        _say(f"waiting {lag + 1} s: rows younger than the safety lag wait for the next window")
        time.sleep(lag + 1)
        # A delta cannot see a hard delete (the row is gone); the next full reconciles it.
        hard = f"laravel:product:{changed['hard_deleted']}"
        ok &= _run(full=False, log_path=airflow_log).succeeded and verify(
            "the delta (but the hard delete)", hard
        )
        ok &= _run(full=True, log_path=airflow_log).succeeded and verify("the second full snapshot")
        if not local:
            _say("\n(a remote backend: the exact-content checks need the local receiver; skipped)")
    finally:
        if receiver is not None:
            receiver.stop()
        engine.dispose()
    _say("\ndemo: " + ("every run and check passed" if ok else "something FAILED (see above)"))
    return 0 if ok else 1
