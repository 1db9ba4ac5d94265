"""`catalog-sync ... | head`: a reader that stops early ends the command quietly.

The real command runs as its own process with its stdout in a pipe; the test reads one
line and closes the pipe, as `head -1` does. The dump is far larger than a pipe's buffer,
so the command is still writing when the reader goes away.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from catalog_sync import protocol
from catalog_sync.cli import EXIT_BROKEN_PIPE
from catalog_sync.receiver.store import ReceiverStore
from receiver_harness import BIN, TEST_PLUGIN_VERSION

PRODUCTS = 400
#: ~1 KB per line: the dump is ~400 KB, several times a pipe's 64 KB buffer.
DESCRIPTION = "x" * 1000


@pytest.fixture
def receiver_db(tmp_path: Path) -> str:
    """A receiver database holding one tenant's PRODUCTS products."""
    url = f"sqlite:///{tmp_path / 'receiver.sqlite'}"
    store = ReceiverStore(url)
    try:
        code = store.issue_pair_code("http://127.0.0.1:1")
        tenant = store.pair(
            code,
            site_url="https://shop.example",
            provider_id="tests",
            plugin_version=TEST_PLUGIN_VERSION,
            extra={},
        )
        ops = [
            protocol.upsert_op(
                "product", f"shop:product:{n}", {"name": f"P{n}", "description": DESCRIPTION}
            )
            for n in range(PRODUCTS)
        ]
        answer = store.apply_events(tenant["tenant_id"], "b1", ops)
        assert answer["errors"] == []
    finally:
        store.dispose()
    return url


def test_dump_into_a_reader_that_closes_early_exits_quietly(receiver_db: str) -> None:
    dump = subprocess.Popen(
        [str(BIN / "catalog-sync"), "receiver", "dump", "--db", receiver_db],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert dump.stdout is not None and dump.stderr is not None
    first = dump.stdout.readline()
    dump.stdout.close()  # the reader goes away, like `head -1`
    stderr = dump.stderr.read().decode()
    dump.wait(timeout=60)
    assert protocol.loads(first)["kind"] == "product"
    assert (dump.returncode, stderr) == (EXIT_BROKEN_PIPE, "")
