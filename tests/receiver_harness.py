"""pytest plugin: a real reference receiver (`catalog-sync receiver serve`) on loopback.

Loaded from conftest (`pytest_plugins`). The `receiver` fixture starts the real command
line in its own process group with `--test-control`, on a free port and a fresh SQLite
database, waits until it answers and kills the group afterwards. `make_receiver(db_url)`
does the same for any database URL (e.g. PostgreSQL) and extra `serve` flags.

Test control (see `catalog_sync.receiver.frontdoor`): `add_fault` arms a fault for the
next `times` requests matching method + path (path "/upload" matches every upload PUT,
whose real path is `/upload/<token>`); actions: `status` (answer `status`, optional
`Retry-After`, before processing: no nonce consumed), `status_after` (process, then answer
`status`), `hang` (sleep `seconds`, then process), `drop` (close the TCP connection, no
answer), `truncate` (let `after_bytes` body bytes through, then close the connection:
the receiver sees fewer bytes than announced). `short_upload_ttl(seconds, times)` makes
the next `times` inits hand out upload URLs that expire after `seconds`. `requests()`
lists every non-control request: method, path, status (None when dropped), tenant_id,
nonce, idempotency_key, content_length, body_bytes, fault, time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from catalog_sync import protocol
from catalog_sync.errors import CatalogSyncError
from catalog_sync.receiver.process import ReceiverProcess
from catalog_sync.receiver.store import ReceiverStore

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 30.0
TEST_PLUGIN_VERSION = "receiver-tests/1"


def _cli_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_receiver_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`catalog-sync receiver ARGS...` as a real process (no Airflow home needed)."""
    return subprocess.run(
        [str(BIN / "catalog-sync"), "receiver", *args],
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class Receiver(ReceiverProcess):
    """A running receiver process and the ways tests drive and inspect it."""

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def issue_code(self) -> str:
        done = run_receiver_cli("issue-code", "--db", self.db_url, "--ingest-url", self.base_url)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def dump(self, kind: str | None = None, tenant: str | None = None) -> list[dict]:
        args = ["dump", "--db", self.db_url]
        if kind is not None:
            args += ["--kind", kind]
        if tenant is not None:
            args += ["--tenant", tenant]
        done = run_receiver_cli(*args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    def add_fault(
        self,
        *,
        method: str,
        path: str,
        action: str,
        times: int = 1,
        status: int | None = None,
        retry_after: str | None = None,
        seconds: float | None = None,
        after_bytes: int | None = None,
    ) -> None:
        answer = requests.post(
            self.url("/_control/faults"),
            json={
                "method": method,
                "path": path,
                "action": action,
                "times": times,
                "status": status,
                "retry_after": retry_after,
                "seconds": seconds,
                "after_bytes": after_bytes,
            },
            timeout=10,
        )
        assert answer.status_code == 201, answer.text

    def short_upload_ttl(self, seconds: float, times: int = 1) -> None:
        answer = requests.post(
            self.url("/_control/upload_ttl"), json={"seconds": seconds, "times": times}, timeout=10
        )
        assert answer.status_code == 201, answer.text

    def requests(self) -> list[dict]:
        answer = requests.get(self.url("/_control/requests"), timeout=10)
        answer.raise_for_status()
        return answer.json()

    def clear(self) -> None:
        requests.post(self.url("/_control/clear"), timeout=10).raise_for_status()

    @functools.cached_property
    def store(self) -> ReceiverStore:
        """The receiver's database, opened in the test process (for direct checks)."""
        return ReceiverStore(self.db_url)

    def pair(self, site_url: str = "https://shop.example", provider_id: str = "tests") -> Tenant:
        """Redeem a fresh pair code over HTTP, like a producer would.

        The code is issued in-process (the same store call `issue-code` makes): a
        subprocess per tenant would make the suites slow.
        """
        answer = requests.post(
            self.url(protocol.PAIR_PATH),
            data=protocol.dumps(
                {
                    "pair_code": self.store.issue_pair_code(self.base_url),
                    "site_url": site_url,
                    "provider_id": provider_id,
                    "plugin_version": TEST_PLUGIN_VERSION,
                }
            ),
            headers=protocol.unsigned_headers(TEST_PLUGIN_VERSION),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return Tenant(self, body["tenant_id"], body["shared_secret_b64"], body["ingest_url"])

    def stop(self) -> None:
        if "store" in self.__dict__:
            self.store.dispose()
        super().stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclasses.dataclass
class Tenant:
    """A paired tenant that signs its calls with `protocol.signed_headers`."""

    receiver: Receiver
    tenant_id: str
    secret_b64: str
    ingest_url: str

    @property
    def key(self) -> bytes:
        return protocol.decode_secret(self.secret_b64)

    def airflow_connection(self) -> str:
        """This tenant as an `AIRFLOW_CONN_*` value (JSON), as `catalog-sync pair` stores it."""
        return json.dumps(
            {
                "conn_type": "voicebot",
                "host": self.ingest_url,
                "login": self.tenant_id,
                "password": self.secret_b64,
                "extra": {"site_url": ""},
            }
        )

    def headers(self, method: str, path: str, body: bytes = b"", **fixed: Any) -> dict[str, str]:
        """Signed headers; `timestamp=` / `nonce=` pin those values."""
        return protocol.signed_headers(
            key=self.key,
            tenant_id=self.tenant_id,
            method=method,
            path=path,
            body=body,
            plugin_version=TEST_PLUGIN_VERSION,
            **fixed,
        )

    def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout: float = 30,
    ) -> requests.Response:
        """Send a correctly signed request (or the given headers) to the ingest URL."""
        sent = dict(headers) if headers is not None else self.headers(method, path, body)
        if idempotency_key is not None:
            sent[protocol.HEADER_IDEMPOTENCY] = idempotency_key
        return requests.request(
            method, f"{self.ingest_url}{path}", data=body, headers=sent, timeout=timeout
        )

    def events(self, batch_id: str, ops: Sequence[dict[str, Any]]) -> requests.Response:
        body = protocol.events_body(batch_id, [protocol.dumps(op) for op in ops])
        return self.call("POST", protocol.EVENTS_PATH, body, idempotency_key=batch_id)

    def status(self) -> requests.Response:
        return self.call("GET", protocol.STATUS_PATH)

    def entities(self) -> list[dict[str, Any]]:
        """This tenant's live entities as dump lines, read from the database in-process."""
        store = self.receiver.store
        return [protocol.loads(line) for line in store.dump_lines(tenant_id=self.tenant_id)]


def start_receiver(db_url: str, workdir: Path, extra_args: Sequence[str] = ()) -> Receiver:
    """Start `catalog-sync receiver serve --test-control` and wait until it answers."""
    try:
        return Receiver.start(
            db_url, workdir, extra_args=["--test-control", *extra_args], timeout_s=START_TIMEOUT_S
        )
    except CatalogSyncError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def make_receiver(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Receiver]]:
    """Factory: `make_receiver(db_url, extra_args=())` starts one more real receiver."""
    started: list[Receiver] = []

    def make(db_url: str, extra_args: Sequence[str] = ()) -> Receiver:
        receiver = start_receiver(db_url, tmp_path_factory.mktemp("receiver"), extra_args)
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


@pytest.fixture
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """A real receiver on a free loopback port with a fresh SQLite database."""
    workdir = tmp_path_factory.mktemp("receiver")
    started = start_receiver(f"sqlite:///{workdir / 'receiver.sqlite'}", workdir)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def module_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    workdir = tmp_path_factory.mktemp("receiver")
    started = start_receiver(f"sqlite:///{workdir / 'receiver.sqlite'}", workdir)
    yield started
    started.stop()


@pytest.fixture
def shared_receiver(module_receiver: Receiver) -> Receiver:
    """One receiver per test module (faster); faults and the log are cleared per test.

    Tests that use it must pair their own tenant and look only at that tenant's data.
    """
    module_receiver.clear()
    return module_receiver
