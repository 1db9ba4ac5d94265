"""`make bench`: snapshot and delta speed against what PostgreSQL itself can export.

One run, one scratch PostgreSQL database. For each size (default 100,000 and 1,000,000
products) it creates the demo shop (`catalog-sync demo-shop create --replace`), then:

- floor: `psql -c "COPY (SELECT row_to_json(p) FROM products p) TO STDOUT" | gzip -1`;
- snapshot: the full DAG's plan, extract and assemble steps (`tasks.plan_full`,
  `tasks.extract_full` per kind, `tasks.assemble`) as a dry run of every kind of the
  demo map, in a child process whose peak RSS is its own, timed from when the DAG file
  is loaded;

and after the largest size a delta of 1,000 changed products through the real delta DAG
(`runner.run_once`) to the reference receiver on loopback, timed from the run's start
to its end (every batch acknowledged and committed).

It prints one table with the ratios and writes it to bench/results.md (between the
`bench:begin`/`bench:end` markers, so notes around them stay).

    .venv/bin/python bench/run.py [--sizes 100000,1000000] [--out bench/results.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import resource
import runpy
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent

SIZES = (100_000, 1_000_000)
DELTA_CHANGES = 1000
SEED = 1
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
LIBRARIES = ("apache-airflow", "SQLAlchemy", "psycopg", "orjson", "isal", "smart-open")
TARGETS = {
    "ours / floor products/s": ">= 0.60",
    "peak RSS largest / smallest": "<= 1.20",
    "peak RSS largest": "< 300 MB",
    "delta acked": "< 30 s",
}


# --- children (fresh processes: their peak RSS and imports are their own) -----------------


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux's `VmHWM` is the current address space's own; the
    `ru_maxrss` of getrusage survives fork and exec, so a child started by a big parent
    would report the parent's size."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:  # noqa: PTH123 - Linux
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _extract_task(item: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """One mapped `extract_full` task in a worker process, as an Airflow worker runs it."""
    from catalog_sync import tasks

    return tasks.extract_full(item), _peak_rss_mb()


def _child_snapshot(workers: int) -> dict[str, Any]:
    """The full DAG's plan, extract and assemble steps, dry run, every kind (env from parent).

    The mapped `extract_full` tasks run `workers` at a time in worker processes, as a
    LocalExecutor with that parallelism runs them; peak RSS is the largest process's.
    The clock starts once the DAG file is loaded, as a worker loads it before it runs a
    task (Airflow's and the DAG's imports are ~2.5 s; they are not the snapshot's).
    """
    runpy.run_path(str(BENCH.parent / "dags" / "catalog_full.py"))
    from catalog_sync import connections, tasks
    from catalog_sync.source import SOURCE_CONN_ID

    # Outside a task a connection is looked up through Airflow's ORM, whose first use
    # imports and configures every model (~1 s); a task asks the Task SDK instead, so
    # that cost is not the snapshot's either.
    connections.get_connection(SOURCE_CONN_ID, missing_hint="")
    started = time.perf_counter()
    plan = tasks.plan_full({"dry_run": True}, dag_id="bench_full", run_id="bench")
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        done = list(pool.map(_extract_task, plan))
    snapshot = tasks.assemble(plan, [part for part, _rss in done])
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "lines": snapshot["upload"]["lines"],
        "bytes": snapshot["upload"]["bytes"],
        "sha256": snapshot["upload"]["sha256"],
        "failures": sum(f["count"] for f in snapshot["failures"].values()),
        "peak_rss_mb": max([_peak_rss_mb(), *(rss for _part, rss in done)]),
        "plan_assemble_rss_mb": _peak_rss_mb(),
        "extract_rss_mb": {_part_name(part): rss for part, rss in done},
        "parts": {item["kind"]: item["parts"] for item in plan},
        "workers": workers,
    }


def _part_name(result: dict[str, Any]) -> str:
    return f"{result['kind']}[{result['part_index']}]"


def _child_delta(base_url: str, code: str) -> dict[str, Any]:
    """Pair (as `catalog-sync pair` does), then time one run of the delta DAG."""
    from catalog_sync import pairing
    from catalog_sync.runner import run_once

    pairing.pair_command(code=code, base_url=base_url, site_url="", conn_id="voicebot_default")
    started = time.perf_counter()
    outcome = run_once(full=False, conf={})
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "succeeded": outcome.succeeded,
        "accepted": sum(line.accepted for line in outcome.ledger),
        "extracted": sum(line.extracted for line in outcome.ledger),
    }


def _database(admin_url: str, name: str, *, drop: bool = False) -> str:
    """A fresh scratch database `name` (or none: `drop`); returns its URL."""
    import psycopg
    import sqlalchemy as sa

    admin = sa.make_url(admin_url)
    params = {"host": admin.host, "port": admin.port or 5432, "user": admin.username}
    with psycopg.connect(**params, dbname=admin.database or "postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            conn.execute(f'CREATE DATABASE "{name}"')
    return admin.set(drivername="postgresql", database=name).render_as_string(hide_password=False)


def _run_child(
    name: str, env: dict[str, str], *args: str, options: tuple[str, ...] = ()
) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, *options, "--child", name, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {name} child failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- steps of the parent -----------------------------------------------------------------


def _create_shop(url: str, size: int) -> float:
    """The demo shop, then VACUUM ANALYZE: a live shop's tables are as autovacuum leaves
    them, while a bulk load leaves hint bits to set and no statistics, which the first
    reader pays for (the floor reads one table, the snapshot all of them)."""
    cli = str(Path(sys.executable).parent / "catalog-sync")
    started = time.perf_counter()
    shop = ("--url", url, "--products", str(size), "--seed", str(SEED), "--replace")
    subprocess.run(
        [cli, "demo-shop", "create", *shop],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["psql", "-X", "-q", *_psql_args(url), "-c", "VACUUM (ANALYZE)"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def _plain(url: str) -> str:
    """`postgresql://...` as Airflow connection URIs and psql take it (no `+driver`)."""
    import sqlalchemy as sa

    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _psql_args(url: str) -> list[str]:
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    return [
        *("-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432)),
        *("-U", parsed.username or "postgres", "-d", parsed.database or "postgres"),
    ]


def _floor(url: str) -> dict[str, Any]:
    """The database's own export, gzip -1, as the issue defines the floor."""
    query = "COPY (SELECT row_to_json(p) FROM products p) TO STDOUT"
    started = time.perf_counter()
    psql = subprocess.Popen(
        ["psql", "-X", "-q", *_psql_args(url), "-c", query], stdout=subprocess.PIPE
    )
    gzip = subprocess.Popen(["gzip", "-1"], stdin=psql.stdout, stdout=subprocess.PIPE)
    assert psql.stdout is not None and gzip.stdout is not None
    psql.stdout.close()
    size = 0  # counted, not kept: this process's memory would follow into its children
    while chunk := gzip.stdout.read(1 << 20):
        size += len(chunk)
    if gzip.wait() != 0 or psql.wait() != 0:
        raise SystemExit("the floor's psql or gzip failed")
    return {"seconds": time.perf_counter() - started, "bytes": size}


def _scalar(url: str, sql: str) -> Any:
    import sqlalchemy as sa

    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            return conn.exec_driver_sql(sql).scalar()
    finally:
        engine.dispose()


def _prepare_delta(url: str, state_url: str) -> None:
    """Watermarks a minute ago for every kind, then 1,000 products changed since.

    The changes are stamped 30 s in the past, so they are older than the map's safety
    lag and the run need not wait; nothing else of the demo shop is that recent.
    """
    from catalog_sync.config import load_config
    from catalog_sync.settings import DEFAULT_TARGET
    from catalog_sync.state import StateStore

    point = _scalar(url, "SELECT now() AT TIME ZONE 'UTC' - interval '60 seconds'")
    store = StateStore(state_url)
    try:
        store.ensure_schema()
        for kind in load_config().kinds:
            store.set_snapshot(DEFAULT_TARGET, kind, point.replace(tzinfo=dt.UTC), 0)
    finally:
        store.dispose()
    changed = _scalar(
        url,
        "WITH picked AS (SELECT id FROM products WHERE deleted_at IS NULL ORDER BY id "
        f"LIMIT {DELTA_CHANGES}) UPDATE products p SET name = p.name || ' (bench)', "
        "updated_at = now() AT TIME ZONE 'UTC' - interval '30 seconds' FROM picked "
        "WHERE p.id = picked.id RETURNING 1",
    )
    assert changed is not None


def _machine() -> dict[str, str]:
    import psutil

    model = platform.processor() or platform.machine()
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:  # noqa: PTH123 - Linux only
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
    }


def _versions(url: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    versions["postgresql"] = str(_scalar(url, "SHOW server_version"))
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --- report --------------------------------------------------------------------------------


def _table(results: dict[int, dict[str, Any]], delta: dict[str, Any] | None) -> list[str]:
    rows = [
        "| products | floor rows/s | snapshot s | products/s | lines/s | ours / floor "
        "| peak RSS MB | gzip MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, r in sorted(results.items()):
        floor_rate = size / r["floor"]["seconds"]
        snap = r["snapshot"]
        rate = size / snap["seconds"]
        rows.append(
            f"| {size:,} | {floor_rate:,.0f} | {snap['seconds']:.1f} | {rate:,.0f} "
            f"| {snap['lines'] / snap['seconds']:,.0f} | {rate / floor_rate:.2f} "
            f"| {snap['peak_rss_mb']:.1f} | {snap['bytes'] / 1e6:.1f} |"
        )
    largest, smallest = max(results), min(results)
    big = results[largest]
    ratio = big["snapshot"]["seconds"] and (largest / big["snapshot"]["seconds"]) / (
        largest / big["floor"]["seconds"]
    )
    rss_ratio = big["snapshot"]["peak_rss_mb"] / results[smallest]["snapshot"]["peak_rss_mb"]
    rows += [
        "",
        "| ratio | value | target |",
        "|---|---:|---|",
        f"| ours / floor products/s | {ratio:.2f} | {TARGETS['ours / floor products/s']} |",
        f"| peak RSS largest / smallest | {rss_ratio:.2f} "
        f"| {TARGETS['peak RSS largest / smallest']} |",
        f"| peak RSS largest | {big['snapshot']['peak_rss_mb']:.1f} MB "
        f"| {TARGETS['peak RSS largest']} |",
    ]
    if delta is not None:
        rows.append(
            f"| delta acked | {delta['seconds']:.1f} s ({DELTA_CHANGES:,} products, "
            f"{delta['accepted']:,} ops) | {TARGETS['delta acked']} |"
        )
    return rows


def _split(results: dict[int, dict[str, Any]]) -> str:
    """Which kinds the full DAG's plan split into parts (CATALOG_SYNC_SNAPSHOT_PARTS)."""
    per_size = []
    for size, r in sorted(results.items()):
        split = {kind: n for kind, n in r["snapshot"]["parts"].items() if n > 1}
        text = ", ".join(f"{kind} {n}" for kind, n in split.items()) or "none"
        per_size.append(f"{size:,}: {text}")
    workers = next(iter(results.values()))["snapshot"]["workers"]
    from catalog_sync.settings import load_settings

    in_sql = load_settings().snapshot_sql
    return (
        f"Kinds split into parts: {'; '.join(per_size)}. Extract tasks run {workers} at a "
        f"time. Lines built by PostgreSQL (CATALOG_SYNC_SNAPSHOT_SQL): {'on' if in_sql else 'off'}."
    )


def _report(
    results: dict[int, dict[str, Any]],
    delta: dict[str, Any] | None,
    machine: dict[str, str],
    versions: dict[str, str],
) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        f"Last `make bench` run: {stamp}.",
        "",
        *_table(results, delta),
        "",
        _split(results),
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        END,
    ]
    return "\n".join(lines) + "\n"


def _write(out: Path, section: str) -> None:
    """Replace the marked section of `out` (or create it), keeping notes around it."""
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = "# Benchmark results\n\n" + section + ("\n" + text if text else "")
    out.write_text(text, encoding="utf-8")


# --- main ------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 10000,100000") from None
    if not sizes or min(sizes) < 10:
        raise argparse.ArgumentTypeError("give sizes of at least 10 products, like 10000,100000")
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--url", help="use this existing (scratch!) database instead of creating one"
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=os.environ.get("BENCH_SIZES") or ",".join(map(str, SIZES)),
        help="product counts, comma-separated (default: $BENCH_SIZES or 100000,1000000)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results.md")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="extract tasks run at once (default: the machine's cores)",
    )
    parser.add_argument(
        "--skip-delta", action="store_true", help="no delta run (a quick smoke test)"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, *rest = args.child
        result = _child_snapshot(args.workers) if name == "snapshot" else _child_delta(*rest)
        print(json.dumps(result))
        return 0
    sizes = args.sizes if isinstance(args.sizes, list) else _sizes(args.sizes)

    from catalog_sync.demo import _isolated_airflow_home
    from catalog_sync.receiver.process import ReceiverProcess
    from catalog_sync.receiver.store import ReceiverStore

    work = Path(tempfile.mkdtemp(prefix="cs-bench-"))
    name = f"cs_bench_{secrets.token_hex(4)}"
    url = _plain(args.url) if args.url else _database(args.admin_url, name)
    receiver = None
    try:
        # Airflow writes into its home on import: keep the children out of ~/airflow.
        os.environ["AIRFLOW_HOME"] = str(work / "airflow-snapshot")
        state_url = f"sqlite:///{work / 'state.sqlite'}"
        env = {
            **os.environ,
            "AIRFLOW_CONN_CATALOG_SOURCE": url,
            "AIRFLOW_CONN_CATALOG_SYNC_STATE": state_url,
            "CATALOG_SYNC_STAGING": (work / "staging").as_uri(),
        }
        env.pop("CATALOG_SYNC_CONFIG", None)  # the demo map
        results: dict[int, dict[str, Any]] = {}
        for size in sizes:
            created = _create_shop(url, size)
            floor = _floor(url)
            snapshot = _run_child("snapshot", env, options=(f"--workers={args.workers}",))
            shutil.rmtree(work / "staging", ignore_errors=True)
            results[size] = {"created": created, "floor": floor, "snapshot": snapshot}
            print(
                f"{size:,} products: shop {created:.1f} s, floor {floor['seconds']:.2f} s, "
                f"snapshot {snapshot['seconds']:.2f} s ({snapshot['lines']:,} lines, "
                f"peak RSS {snapshot['peak_rss_mb']:.1f} MB; plan+assemble "
                f"{snapshot['plan_assemble_rss_mb']:.1f} MB, extract tasks "
                f"{max(snapshot['extract_rss_mb'].values()):.1f} MB)",
                flush=True,
            )
        delta = None
        if not args.skip_delta:
            _isolated_airflow_home(work / "airflow")  # migrated: the DAG run needs it
            # Its home, Fernet key and settings (no example DAGs), as the demo sets them.
            airflow = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__")}
            env.update({**airflow, "AIRFLOW_HOME": os.environ["AIRFLOW_HOME"]})
            receiver_db = f"sqlite:///{work / 'receiver.sqlite'}"
            receiver = ReceiverProcess.start(receiver_db, work / "receiver")
            code = ReceiverStore(receiver_db).issue_pair_code(receiver.base_url)
            _prepare_delta(url, state_url)
            delta = _run_child("delta", env, receiver.base_url, code)
            if not delta["succeeded"]:
                raise SystemExit(f"the delta run failed: {delta}")
            print(f"delta of {DELTA_CHANGES:,} products: {delta['seconds']:.2f} s", flush=True)
        section = _report(results, delta, _machine(), _versions(url))
    finally:
        if receiver is not None:
            receiver.stop()
        if not args.url:
            _database(args.admin_url, name, drop=True)
        shutil.rmtree(work, ignore_errors=True)
    print(section.replace(BEGIN + "\n", "").replace(END + "\n", ""))
    _write(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
