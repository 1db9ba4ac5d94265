"""Memory benchmark: a full snapshot's peak RSS must not grow with the catalog.

Creates the demo shop at 100,000 and 1,000,000 products on PostgreSQL, then runs the
snapshot extraction + staging of every kind of the demo map in a fresh subprocess per
size, and prints peak resident memory, throughput and the RSS ratio (target: RSS at
1M within 20% of RSS at 100k).

    .venv/bin/python bench/snapshot_memory.py [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (100_000, 1_000_000)


def _child(url: str, staging_dir: str) -> None:
    """Runs in its own process so ru_maxrss is this snapshot's peak alone."""
    from catalog_sync import extract, source
    from catalog_sync.config import load_config

    engine = source.create_source_engine(url)
    catalog = load_config()
    started = time.perf_counter()
    manifest = extract.extract_snapshot(
        engine, catalog, run_key="bench", root=Path(staging_dir).as_uri()
    )
    seconds = time.perf_counter() - started
    rows = sum(manifest["counts"].values())
    print(
        json.dumps(
            {
                "lines": rows,
                "seconds": seconds,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "gzip_mib": sum(p["bytes"] for p in manifest["parts"]) / 2**20,
                "failures": sum(p["failures"]["count"] for p in manifest["parts"]),
                "counts": manifest["counts"],
            }
        )
    )


def _database(admin_url: str, name: str, *, drop: bool = False) -> str:
    import psycopg
    import sqlalchemy as sa

    admin = sa.make_url(admin_url)
    params = {"host": admin.host, "port": admin.port or 5432, "user": admin.username}
    with psycopg.connect(**params, dbname=admin.database or "postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            conn.execute(f'CREATE DATABASE "{name}"')
    return admin.set(drivername="postgresql", database=name).render_as_string(hide_password=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    parser.add_argument("--child", nargs=2, metavar=("URL", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return 0

    from catalog_sync import demo_shop, source

    results = {}
    for size in args.sizes:
        name = f"cs_bench_snapshot_{size}"
        url = _database(args.admin_url, name)
        engine = source.create_source_engine(url)
        started = time.perf_counter()
        demo_shop.create_demo_shop(engine, size, seed=1, progress=lambda s: print("  " + s))
        engine.dispose()
        created = time.perf_counter() - started
        print(f"demo shop with {size:,} products created in {created:.1f} s")
        with tempfile.TemporaryDirectory(prefix="cs-bench-") as staging_dir:
            done = subprocess.run(
                [sys.executable, __file__, "--child", url, staging_dir],
                capture_output=True,
                text=True,
                check=False,
            )
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results[size] = result
        print(
            f"snapshot of {size:,} products: {result['lines']:,} lines in "
            f"{result['seconds']:.1f} s = {result['lines'] / result['seconds']:,.0f} lines/s, "
            f"peak RSS {result['peak_rss_mib']:.1f} MiB, gzip {result['gzip_mib']:.1f} MiB, "
            f"failures {result['failures']}"
        )
        if not args.keep:
            _database(args.admin_url, name, drop=True)
    if len(results) >= 2:
        small, large = min(results), max(results)
        ratio = results[large]["peak_rss_mib"] / results[small]["peak_rss_mib"]
        verdict = "PASS" if ratio <= 1.2 else "FAIL"
        print(f"{verdict} peak RSS {large:,} / {small:,} = {ratio:.3f} (target <= 1.20)")
        return 0 if verdict == "PASS" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
