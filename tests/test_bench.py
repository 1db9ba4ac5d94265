"""`make bench`'s harness, run at a tiny size: it must write a well-formed results table.

The figures themselves are not checked (speed targets belong to the benchmark, not to
unit tests); the delta run is skipped to keep this test fast (`--skip-delta`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


@pytest.mark.postgres
@pytest.mark.slow
def test_bench_writes_a_well_formed_results_table(postgres_url: str, tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    out.write_text("# Notes kept\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nafter\n")
    tiny = ("--sizes", "20,40", "--skip-delta", "--workers", "1", "--out", str(out))
    done = subprocess.run(
        [sys.executable, str(BENCH), "--url", postgres_url, *tiny],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Notes kept\n\n<!-- bench:begin -->\n")
    assert text.endswith("<!-- bench:end -->\n\nafter\n")
    assert "\nold\n" not in text
    rows = {size: re.search(rf"^\| {size} \|(.*)\|$", text, re.M) for size in (20, 40)}
    for size, row in rows.items():
        assert row is not None, f"no table row for {size} products:\n{text}"
        cells = [cell.strip() for cell in row.group(1).split("|")]
        assert len(cells) == 7 and all(re.fullmatch(NUMBER, c) for c in cells), row.group(0)
    for ratio in ("ours / floor products/s", "peak RSS largest / smallest", "peak RSS largest"):
        assert re.search(rf"^\| {re.escape(ratio)} \| {NUMBER}( MB)? \| ", text, re.M), ratio
    split = (
        r"^Kinds split into parts: 20: none; 40: none\. Extract tasks run 1 at a time\. "
        r"Lines built by PostgreSQL \(CATALOG_SYNC_SNAPSHOT_SQL\): on\.$"
    )
    assert re.search(split, text, re.M)
    assert re.search(r"^Machine: cores \d+, cpu .+, ram [0-9.]+ GiB", text, re.M)
    assert re.search(r"^Versions: python 3\.\d+\.\d+, postgresql \d+", text, re.M)
