"""`deliver_batches` and `record_failures` against the real receiver and a real state DB.

Our mapper refuses a product without a name itself (a MappingFailure, tested below), so
an op the receiver rejects one by one is built by hand here: exactly what a backend
with stricter rules than our mapper would answer with `errors`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog_sync import protocol
from catalog_sync.delivery import PRIMARY_KEY_MARKER, deliver_batches, record_failures
from catalog_sync.errors import ConfigurationError, TransientError
from catalog_sync.mapping import Entity, MappingFailure
from dlq_support import TARGET, batches, held_names, paired_hook, stage, state_store
from receiver_harness import Receiver


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    return shared_receiver


def products(n: int, empty: int | None = None) -> list[Entity]:
    return [
        Entity("product", f"laravel:product:{i}", {"name": "" if i == empty else f"P{i}"})
        for i in range(1, n + 1)
    ]


def test_one_rejected_op_among_1000_is_dead_lettered_and_999_applied(
    receiver: Receiver, database_url: str, tmp_path: Path
) -> None:
    hook, tenant = paired_hook(receiver)
    state = state_store(database_url)
    manifest = stage(tmp_path, products(1000, empty=500), "run-1")

    tally = deliver_batches(hook, state, target=TARGET, kind="product", batches=batches(manifest))

    assert tally.to_dict() == {
        "batches": 2,
        "ops": 1000,
        "accepted": 999,
        "replayed_batches": 0,
        "dead_lettered": 1,
    }
    held = held_names(tenant)
    assert len(held) == 999 and "laravel:product:500" not in held
    [entry] = state.dead_letter_list(TARGET)
    assert (entry.kind, entry.external_id, entry.op_type) == (
        "product",
        "laravel:product:500",
        "upsert",
    )
    assert entry.error.startswith("invalid_payload: payload.name is required")
    assert entry.payload == {"name": ""}
    assert (entry.attempts, entry.status) == (1, "pending")


def test_an_accepted_op_resolves_its_pending_entry(receiver: Receiver, tmp_path: Path) -> None:
    hook, _tenant = paired_hook(receiver)
    state = state_store(f"sqlite:///{tmp_path / 'state.sqlite'}")
    entry_id = state.dead_letter_record(
        TARGET, "product", "laravel:product:2", "upsert", {"name": ""}, "invalid_payload: x"
    )

    deliver_batches(
        hook,
        state,
        target=TARGET,
        kind="product",
        batches=batches(stage(tmp_path, products(3), "r")),
    )

    [entry] = state.dead_letter_list(TARGET, include_resolved=True)
    assert entry.id == entry_id and entry.status == "resolved"


def test_an_accepted_upsert_also_resolves_a_failed_delete_of_the_same_entity(
    receiver: Receiver, tmp_path: Path
) -> None:
    hook, _tenant = paired_hook(receiver)
    state = state_store(f"sqlite:///{tmp_path / 'state.sqlite'}")
    state.dead_letter_record(TARGET, "product", "laravel:product:1", "delete", None, "x: y")

    deliver_batches(
        hook,
        state,
        target=TARGET,
        kind="product",
        batches=batches(stage(tmp_path, products(1), "r")),
    )

    assert state.dead_letter_list(TARGET) == []


def test_a_replayed_batch_does_not_count_an_attempt_twice(
    receiver: Receiver, tmp_path: Path
) -> None:
    hook, _tenant = paired_hook(receiver)
    state = state_store(f"sqlite:///{tmp_path / 'state.sqlite'}")
    staged = batches(stage(tmp_path, products(3, empty=2), "r"))

    deliver_batches(hook, state, target=TARGET, kind="product", batches=staged)
    again = deliver_batches(hook, state, target=TARGET, kind="product", batches=staged)

    assert again.replayed_batches == 1
    [entry] = state.dead_letter_list(TARGET)
    assert entry.attempts == 1


def test_repeated_rejection_exhausts_the_entry_after_max_attempts(
    receiver: Receiver, tmp_path: Path
) -> None:
    hook, _tenant = paired_hook(receiver)
    state = state_store(f"sqlite:///{tmp_path / 'state.sqlite'}")
    for run in range(3):  # a new run each time: new batch ids, a real new attempt
        staged = batches(stage(tmp_path, products(2, empty=1), f"run-{run}"))
        deliver_batches(hook, state, target=TARGET, kind="product", batches=staged, max_attempts=3)

    [entry] = state.dead_letter_list(TARGET)
    assert (entry.attempts, entry.status) == (3, "exhausted")
    assert state.dead_letter_pending(TARGET, "product") == []


def test_a_refused_batch_raises_configuration_error_and_records_nothing(
    receiver: Receiver, tmp_path: Path
) -> None:
    hook, _tenant = paired_hook(receiver)
    state = state_store(f"sqlite:///{tmp_path / 'state.sqlite'}")
    receiver.add_fault(method="POST", path=protocol.EVENTS_PATH, action="status", status=400)

    with pytest.raises(ConfigurationError, match="HTTP 400"):
        deliver_batches(
            hook,
            state,
            target=TARGET,
            kind="product",
            batches=batches(stage(tmp_path, products(2, empty=1), "r")),
        )

    assert state.dead_letter_list(TARGET, include_resolved=True) == []


def test_a_transient_failure_propagates_and_records_nothing(
    receiver: Receiver, tmp_path: Path
) -> None:
    hook, _tenant = paired_hook(receiver, max_attempts=2)
    state = state_store(f"sqlite:///{tmp_path / 'state.sqlite'}")
    receiver.add_fault(
        method="POST", path=protocol.EVENTS_PATH, action="status", status=503, times=2
    )

    with pytest.raises(TransientError):
        deliver_batches(
            hook,
            state,
            target=TARGET,
            kind="product",
            batches=batches(stage(tmp_path, products(2, empty=1), "r")),
        )

    assert state.dead_letter_list(TARGET, include_resolved=True) == []


def test_record_failures_dead_letters_unmappable_rows_and_oversized_ops(tmp_path: Path) -> None:
    state = state_store(f"sqlite:///{tmp_path / 'state.sqlite'}")
    big = Entity("product", "laravel:product:9", {"name": "x" * (protocol.MAX_BATCH_BYTES + 10)})
    manifest = stage(
        tmp_path,
        [
            MappingFailure("product", 7, "laravel:product:7", "payload.name: required"),
            MappingFailure("product", 8, None, "external id column 'id' is empty"),
            big,
        ],
        "r",
    )

    count = record_failures(
        state, target=TARGET, kind="product", failures_uri=manifest["failures"]["uri"]
    )

    assert count == 3
    entries = {e.external_id: e for e in state.dead_letter_list(TARGET)}
    assert set(entries) == {"laravel:product:7", f"{PRIMARY_KEY_MARKER}8", "laravel:product:9"}
    assert entries["laravel:product:7"].error == "unsendable: payload.name: required"
    assert "MAX_BATCH_BYTES" in entries["laravel:product:9"].error
    assert entries["laravel:product:9"].payload == big.payload


def test_record_failures_without_a_failure_file_records_nothing(tmp_path: Path) -> None:
    state = state_store(f"sqlite:///{tmp_path / 'state.sqlite'}")

    assert record_failures(state, target=TARGET, kind="product", failures_uri=None) == 0
    assert state.dead_letter_list(TARGET) == []
