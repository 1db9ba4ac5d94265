"""Delivery of staged `events` batches, with per-op rejections sent to the dead letter.

A batch either reaches the receiver or it does not. When it does, each op the receiver
rejected one by one (the answer's `errors`) becomes a dead-letter entry, and every op it
accepted closes the live entries of its identity: the current state of that entity has
arrived, whatever failed before. When it does not (TransientError, ConfigurationError),
the exception goes up unchanged and nothing is recorded for that batch: the task fails,
the watermark stays, and a retry re-sends the same batches under the same ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from catalog_sync import protocol, staging
from catalog_sync.errors import ProtocolError
from catalog_sync.state import DEFAULT_MAX_ATTEMPTS, StateStore

log = logging.getLogger(__name__)

#: Stand-in external id of a failure whose row gave no external id (a NULL id column):
#: `primary-key:<json of the primary key>`; redrive re-reads the row by that key.
PRIMARY_KEY_MARKER = "primary-key:"


@dataclass
class DeliveryTally:
    """What one kind's push did; `ops == accepted + dead_lettered` for a full delivery."""

    batches: int = 0
    ops: int = 0
    accepted: int = 0
    replayed_batches: int = 0
    dead_lettered: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _live_entries(state: StateStore, target: str, kind: str) -> dict[str, set[int]]:
    """external id -> ids of its live entries (exhausted included: an accept closes them too)."""
    live: dict[str, set[int]] = {}
    for entry in state.dead_letter_pending(target, kind, include_exhausted=True):
        live.setdefault(entry.external_id, set()).add(entry.id)
    return live


def _rejected_op(events: list[Any], error: Any, batch_id: str) -> dict[str, Any]:
    """The op an `errors` item points at; a pointer that leads nowhere is a protocol break."""
    index = error.get("index") if isinstance(error, dict) else None
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(events):
        op = events[index]
        if isinstance(op, dict):
            return op
    raise ProtocolError(
        f"the answer to events batch {batch_id!r} names a rejected op by index {index!r}, "
        f"but the batch holds {len(events)} ops; the backend breaks protocol v2 (errors[].index)"
    )


def _error_text(error: dict[str, Any]) -> str:
    code = str(error.get("code") or "rejected")
    message = str(error.get("message") or "")
    return f"{code}: {message}" if message else code


def deliver_batches(
    hook: Any,
    state: StateStore,
    *,
    target: str,
    kind: str,
    batches: Iterable[tuple[str, bytes]],
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> DeliveryTally:
    """Post each staged (batch_id, body) with `hook.post_events`; see the module docstring.

    An idempotent replay (a retried push) answers with the stored result: its rejections
    are recorded only when no live entry exists yet, so a retry does not count attempts
    twice, yet a crash between the first answer and the record loses nothing.
    """
    tally = DeliveryTally()
    live = _live_entries(state, target, kind)
    for batch_id, body in batches:
        answer = hook.post_events(batch_id, body)
        events = protocol.loads(body)["events"]
        errors = answer.get("errors") or []
        replay = bool(answer.get("idempotent_replay"))
        tally.batches += 1
        tally.ops += len(events)
        tally.replayed_batches += int(replay)
        rejected: set[int] = set()
        for error in errors:
            op = _rejected_op(events, error, batch_id)
            rejected.add(error["index"])
            external_id = op["external_id"]
            tally.dead_lettered += 1
            if replay and external_id in live:
                continue
            entry_id = state.dead_letter_record(
                target,
                kind,
                external_id,
                op["type"],
                op.get("payload") if op["type"] == "upsert" else None,
                _error_text(error),
                max_attempts=max_attempts,
            )
            live.setdefault(external_id, set()).add(entry_id)
            log.warning(
                "%s %s %s rejected by the backend (%s); dead-lettered as entry %d",
                kind,
                op["type"],
                external_id,
                error.get("code"),
                entry_id,
            )
        tally.accepted += len(events) - len(rejected)
        resolved: list[int] = []
        for index, op in enumerate(events):
            if index not in rejected and op.get("external_id") in live:
                resolved.extend(live.pop(op["external_id"]))
        if resolved:
            state.dead_letter_resolve(resolved)
            log.info("%s: %d dead-letter entr(y/ies) resolved by accepted ops", kind, len(resolved))
    return tally


def record_failures(
    state: StateStore,
    *,
    target: str,
    kind: str,
    failures_uri: str | None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int:
    """Dead-letter the staged items that never became a sendable op; returns how many.

    Records are `staging.FailureLog` lines: mapping failures (no op; recorded as an
    upsert, the op the row was meant to produce) and ops too large for any batch (with
    their op). A failure without an external id (its id column is NULL) is keyed by
    its primary key (`PRIMARY_KEY_MARKER`), so it is still visible and redriven.
    """
    if not failures_uri:
        return 0
    count = 0
    for line in staging.iter_lines(failures_uri):
        record = protocol.loads(line)
        op = record.get("op")
        op_type = op["type"] if isinstance(op, dict) else "upsert"
        payload = op.get("payload") if isinstance(op, dict) and op_type == "upsert" else None
        external_id = record.get("external_id") or (
            PRIMARY_KEY_MARKER + protocol.dumps(record.get("primary_key")).decode("utf-8")
        )
        state.dead_letter_record(
            target,
            kind,
            external_id,
            op_type,
            payload,
            f"unsendable: {record.get('error')}",
            max_attempts=max_attempts,
        )
        count += 1
    if count:
        log.warning("%s: %d item(s) could not be sent and were dead-lettered", kind, count)
    return count
