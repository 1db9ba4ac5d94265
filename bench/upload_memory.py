"""Resident memory of `VoiceBotHook.upload` while it streams a large snapshot.

The upload must stream: memory may not grow with the file size. This uploads a gzip
file (150 MiB of random bytes by default, so it does not shrink) to a reference
receiver and prints one JSON line with the process's RSS before the upload, its peak
during the upload (sampled every 5 ms) and the growth.

    python bench/upload_memory.py                      # starts its own receiver
    python bench/upload_memory.py --base-url URL --code VB-XXXX-XXXX   # use a running one
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

MIB = 1024 * 1024


def write_gzip(path: Path, size_mib: int) -> None:
    """Incompressible content (os.urandom) at gzip level 1: fast, and the file stays large."""
    with gzip.open(path, "wb", compresslevel=1) as out:
        for _ in range(size_mib):
            out.write(os.urandom(MIB))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def own_receiver(workdir: Path) -> Iterator[tuple[str, str]]:
    """Start `catalog-sync receiver serve` on loopback; yields (base URL, pair code)."""
    cli = str(Path(sys.executable).parent / "catalog-sync")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    db = f"sqlite:///{workdir / 'receiver.sqlite'}"
    with (workdir / "receiver.log").open("wb") as log:
        process = subprocess.Popen(
            [cli, "receiver", "serve", "--port", str(port), "--db", db,
             "--data-dir", str(workdir / "data")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the receiver did not start; see {workdir / 'receiver.log'}")
            time.sleep(0.05)
        code = subprocess.run(
            [cli, "receiver", "issue-code", "--db", db, "--ingest-url", base_url],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        yield base_url, code
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


class PeakRss:
    """Samples this process's RSS in a thread; `peak` is the highest value seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def measure(base_url: str, code: str, snapshot: Path) -> dict[str, float]:
    from airflow.sdk import Connection

    from catalog_sync.hooks import VoiceBotHook

    pairing = VoiceBotHook.pair(base_url, code)
    connection = Connection(
        conn_id="bench",
        conn_type="voicebot",
        host=pairing.ingest_url,
        login=pairing.tenant_id,
        password=pairing.shared_secret_b64,
    )
    hook = VoiceBotHook("bench", connection=connection)
    upload_url = hook.init({"product": 1})["upload_url"]
    size = snapshot.stat().st_size
    before = psutil.Process().memory_info().rss
    began = time.monotonic()
    with PeakRss() as rss:
        hook.upload(upload_url, str(snapshot), size)
    seconds = time.monotonic() - began
    return {
        "bytes": size,
        "seconds": round(seconds, 2),
        "mib_per_s": round(size / MIB / seconds, 1),
        "rss_before_mb": round(before / 1e6, 1),
        "rss_peak_mb": round(rss.peak / 1e6, 1),
        "rss_growth_mb": round((rss.peak - before) / 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=150, help="uncompressed MiB of data")
    parser.add_argument("--base-url", help="a running receiver (else one is started)")
    parser.add_argument("--code", help="a pair code of that receiver")
    args = parser.parse_args()
    if bool(args.base_url) != bool(args.code):
        parser.error("--base-url and --code go together")
    with tempfile.TemporaryDirectory(prefix="upload-memory-") as tmp:
        workdir = Path(tmp)
        # Airflow writes a config into its home on import: keep it out of ~/airflow.
        os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow"))
        snapshot = workdir / "snapshot.ndjson.gz"
        write_gzip(snapshot, args.size_mib)
        if args.base_url:
            result = measure(args.base_url, args.code, snapshot)
        else:
            with own_receiver(workdir) as (base_url, code):
                result = measure(base_url, code, snapshot)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
