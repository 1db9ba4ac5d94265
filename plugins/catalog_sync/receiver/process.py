"""Run the reference receiver as a child process (the demo and the tests do).

The child gets its own process group, so `stop` also ends anything it started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import requests

from catalog_sync import protocol
from catalog_sync.errors import ConfigurationError, TransientError


def free_port() -> int:
    """A loopback port that was free a moment ago (the child binds it right away)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(process: subprocess.Popen[bytes], *, grace_s: float) -> None:
    """SIGTERM the process group of `process` (started with start_new_session), then
    SIGKILL whatever outlives the grace period: a server's workers must not linger."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@dataclasses.dataclass
class ReceiverProcess:
    """A `catalog-sync receiver serve` child on loopback."""

    base_url: str
    db_url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls, db_url: str, workdir: Path, *, extra_args: Sequence[str] = (), timeout_s: float = 30.0
    ) -> Self:
        """Start the receiver on a free port and wait until it answers HTTP."""
        workdir.mkdir(parents=True, exist_ok=True)
        data_dir = workdir / "data"
        log_path = workdir / "receiver.log"
        port = free_port()
        command = [
            *(sys.executable, "-m", "catalog_sync.cli", "receiver", "serve"),
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--db", db_url, "--data-dir", str(data_dir), *extra_args),
        ]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = cls(f"http://127.0.0.1:{port}", db_url, data_dir, log_path, process)
        started.wait_until_ready(timeout_s)
        return started

    def wait_until_ready(self, timeout_s: float) -> None:
        """Any HTTP answer (an unsigned status call gets 401) means the service is up."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise ConfigurationError(
                    f"the receiver exited with code {self.process.returncode}; "
                    f"its log says:\n{self.log_text()[-2000:]}"
                )
            try:
                requests.get(f"{self.base_url}{protocol.STATUS_PATH}", timeout=1)
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TransientError(
                        f"the receiver did not answer within {timeout_s:.0f} s; "
                        f"its log says:\n{self.log_text()[-2000:]}"
                    ) from None
                time.sleep(0.05)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        stop_process_group(self.process, grace_s=10)
