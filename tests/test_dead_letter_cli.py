"""`catalog-sync dead-letter`: a real state DB and the real receiver.

Most tests call the command's `main` in this process (an Airflow import per subprocess
costs seconds); the replay that delivers runs the real executable end to end.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from catalog_sync import protocol
from catalog_sync.cli import main
from dlq_support import TARGET, cli_env, held_names, items, make_shop, state_store
from receiver_harness import Receiver, Tenant


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    return shared_receiver


class World:
    """A shop of 3 items (item 2 without a name), a state DB and a paired tenant."""

    def __init__(self, tmp_path: Path, receiver: Receiver) -> None:
        self.url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
        self.engine = make_shop(self.url, 3, empty_names=[2])
        self.state = state_store(self.url)
        self.tenant: Tenant = receiver.pair()
        self.env = cli_env(tmp_path, self.url, self.url, self.tenant)

    def record(self, number: int, **kwargs: object) -> int:
        return self.state.dead_letter_record(
            TARGET,
            "product",
            f"laravel:product:{number}",
            "upsert",
            {"name": ""},
            "invalid_payload: payload.name is required",
            **kwargs,
        )

    def fix(self, number: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(items.update().where(items.c.id == number).values(name="Fixed"))


@pytest.fixture
def world(tmp_path: Path, receiver: Receiver) -> World:
    return World(tmp_path, receiver)


@pytest.fixture
def cli(world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`catalog-sync ARGS...` in this process, in the world's environment."""
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse refusing the arguments
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


def test_list_prints_one_row_per_live_entry(world: World, cli) -> None:
    entry_id = world.record(2)

    done = cli("dead-letter", "list")

    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split() == [
        "id",
        "target",
        "kind",
        "external",
        "id",
        "op",
        "attempts",
        "status",
        "error",
    ]
    assert row.split()[:7] == [
        str(entry_id),
        TARGET,
        "product",
        "laravel:product:2",
        "upsert",
        "1",
        "pending",
    ]
    assert row.endswith("invalid_payload: payload.name is required")


def test_purge_needs_a_reason(world: World, cli) -> None:
    world.record(2)

    done = cli("dead-letter", "purge")

    assert done.returncode == 2
    assert "--reason" in done.stderr
    assert len(world.state.dead_letter_list(TARGET)) == 1


def test_purge_closes_the_entry_and_keeps_the_reason(world: World, cli) -> None:
    entry_id = world.record(2)

    done = cli("dead-letter", "purge", "--id", str(entry_id), "--reason", "row removed")
    listed = cli("dead-letter", "list", "--all")

    assert done.returncode == 0, done.stderr
    assert "purged 1 dead-letter entry" in done.stdout
    [entry] = world.state.dead_letter_list(TARGET, include_resolved=True)
    assert (entry.status, entry.purged_reason) == ("purged", "row removed")
    assert " purged " in listed.stdout


def test_replay_delivers_the_fixed_row_and_exits_0(world: World, run_cli) -> None:
    world.record(2, max_attempts=1)  # exhausted: replay re-arms it
    world.fix(2)

    done = run_cli("dead-letter", "replay", env=world.env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 accepted, 0 rejected again" in done.stdout
    assert held_names(world.tenant) == {"laravel:product:2": "Fixed"}
    assert world.state.dead_letter_list(TARGET) == []
    assert world.tenant.secret_b64 not in done.stdout + done.stderr


def test_replay_of_a_row_still_broken_exits_1(world: World, cli) -> None:
    world.record(2, max_attempts=1)

    done = cli("dead-letter", "replay")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 still unmappable" in done.stdout
    [entry] = world.state.dead_letter_list(TARGET)
    assert entry.attempts == 1 and "payload.name" in entry.error


def test_replay_of_one_entry_leaves_the_others(world: World, cli) -> None:
    world.record(1)
    second = world.record(3)

    done = cli("dead-letter", "replay", "--id", str(second))

    assert done.returncode == 0, done.stdout + done.stderr
    assert set(held_names(world.tenant)) == {"laravel:product:3"}
    [left] = world.state.dead_letter_list(TARGET)
    assert left.external_id == "laravel:product:1"


def test_replay_of_an_unknown_entry_is_a_configuration_error(world: World, cli) -> None:
    done = cli("dead-letter", "replay", "--id", "999")

    assert done.returncode == 2
    assert "no live dead-letter entry 999" in done.stderr


def test_replay_refused_by_the_backend_exits_2_and_keeps_the_entry(
    world: World, receiver: Receiver, cli
) -> None:
    world.record(2)
    world.fix(2)
    receiver.add_fault(method="POST", path=protocol.EVENTS_PATH, action="status", status=400)

    done = cli("dead-letter", "replay")

    assert done.returncode == 2
    assert "HTTP 400" in done.stderr
    assert len(world.state.dead_letter_list(TARGET)) == 1
