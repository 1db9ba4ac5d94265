"""`catalog-sync sync`: the DAG run in-process by the real executable, and its exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog_sync import protocol
from dag_support import SyncEnv, blank_a_product_name, make_sync_env


@pytest.fixture
def env(
    receiver, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env
) -> SyncEnv:
    return make_sync_env(receiver, sqlite_url, tmp_path, monkeypatch)


def test_sync_exits_0_when_the_delta_went_through(env: SyncEnv, run_cli) -> None:
    done = run_cli("sync", "--kinds", "product", env=env.vars)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "committed" in done.stdout
    held = [line for line in env.held() if line["kind"] == "product"]
    assert held == [line for line in env.expected() if line["kind"] == "product"]


def test_sync_exits_1_on_a_transient_failure(env: SyncEnv, run_cli) -> None:
    env.receiver.add_fault(
        method="POST",
        path=protocol.EVENTS_PATH,
        action="status",
        status=503,
        retry_after="0",
        times=5,
    )
    done = run_cli("sync", "--kinds", "product", env=env.vars)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "try again later" in done.stderr


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--kinds", "no_such_kind", "unknown kind(s) no_such_kind"),
        ("--targets", "nowhere", "unknown target(s) nowhere; the entity map has voicebot_default"),
    ],
)
def test_sync_exits_2_on_invalid_params(
    env: SyncEnv, run_cli, option: str, value: str, problem: str
) -> None:
    done = run_cli("sync", option, value, env=env.vars)
    assert done.returncode == 2
    assert problem in done.stderr


def test_sync_exits_2_on_a_configuration_error_in_a_task(env: SyncEnv, run_cli) -> None:
    env.receiver.add_fault(method="POST", path=protocol.EVENTS_PATH, action="status", status=400)
    done = run_cli("sync", "--kinds", "product", env=env.vars)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "400" in done.stderr


def test_sync_exits_1_when_ops_were_dead_lettered(env: SyncEnv, run_cli) -> None:
    broken = blank_a_product_name(env.engine)
    done = run_cli("sync", "--kinds", "product", env=env.vars)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "dead-lettered" in done.stderr
    assert "committed" in done.stdout  # the window still moved: the op waits in the dead letter
    listed = run_cli("dead-letter", "list", env=env.vars)
    assert broken in listed.stdout
