"""`catalog-sync demo` (what `make demo` runs), as a real process, run once per module."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from catalog_sync.receiver.store import tenants


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    workdir = tmp_path_factory.mktemp("demo") / "run"
    done = subprocess.run(
        [sys.executable, "-m", "catalog_sync.cli", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    return workdir, done


def test_the_demo_ends_with_the_receiver_holding_exactly_the_mapped_shop(demo) -> None:
    _, done = demo
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checks = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(checks) == 3, done.stdout
    assert all(line.startswith("[ok]") for line in checks), checks
    assert "every run and check passed" in done.stdout


def test_the_demo_prints_and_logs_no_shared_secret(demo) -> None:
    workdir, done = demo
    engine = sa.create_engine(f"sqlite:///{workdir / 'receiver.sqlite'}")
    with engine.connect() as conn:
        keys = conn.execute(sa.select(tenants.c.secret)).scalars().all()
    engine.dispose()
    assert keys, "the demo paired no tenant"
    receiver_log = (workdir / "receiver" / "receiver.log").read_text()
    for key in keys:
        secret = base64.b64encode(bytes(key)).decode()
        assert secret not in done.stdout + done.stderr
        assert secret not in receiver_log


def test_the_demo_pairs_with_any_backend_given_its_url_and_a_code(receiver, tmp_path: Path) -> None:
    workdir = tmp_path / "remote"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "catalog_sync.cli", "demo", "--workdir", str(workdir)),
            *("--base-url", receiver.base_url, "--pair-code", receiver.issue_code()),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (workdir / "receiver").exists()  # no local receiver was started
    assert "checks need the local receiver; skipped" in done.stdout
    products = [line for line in receiver.dump() if line["kind"] == "product"]
    assert any(line["payload"]["name"] == "Renamed by the demo" for line in products)
