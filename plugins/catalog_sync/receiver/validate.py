"""Checks of one snapshot line or one events op, shared by `finalize` and `events`.

Both carry the same entity fields (spec 6 and 7), so one set of rules, built on the
protocol module's own checks, decides what the receiver accepts from either path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from catalog_sync import protocol

#: Column widths of the entity store; longer values are refused with a clear message
#: instead of being truncated by the database.
MAX_EXTERNAL_ID = 512
MAX_LANG = 64

SNAPSHOT_KEYS = ("kind", "external_id", "payload", "lang", "translation_of")
UPSERT_KEYS = ("type", "entity_kind", "external_id", "payload", "lang", "translation_of")
DELETE_KEYS = ("type", "entity_kind", "external_id")


class Problem(NamedTuple):
    code: str
    message: str


class Entity(NamedTuple):
    """One validated entity write: an upsert (payload set) or a delete (payload None)."""

    kind: str
    external_id: str
    payload: Any
    lang: str | None
    translation_of: str | None


def _unexpected_keys(record: dict[str, Any], allowed: tuple[str, ...]) -> Problem | None:
    extra = [key for key in record if key not in allowed]
    if extra:
        return Problem(
            "invalid_op",
            f"unexpected key(s) {', '.join(map(repr, extra))}; allowed: {', '.join(allowed)}",
        )
    return None


def _entity_problem(record: dict[str, Any], kind_key: str, *, upsert: bool) -> Problem | None:
    kind = record.get(kind_key)
    if kind not in protocol.KINDS:
        return Problem(
            "unknown_kind", f"{kind_key} {kind!r} is not one of: {', '.join(protocol.KINDS)}"
        )
    external_id = record.get("external_id")
    problem = protocol.external_id_problem(kind, external_id)
    if problem:
        return Problem("invalid_external_id", problem)
    if len(external_id) > MAX_EXTERNAL_ID or "\x00" in external_id:
        return Problem(
            "invalid_external_id",
            f"external_id must be at most {MAX_EXTERNAL_ID} characters, without NUL",
        )
    if not upsert:
        return None
    if "payload" not in record:
        return Problem("invalid_payload", "payload is missing")
    problem = protocol.payload_problem(kind, record["payload"])
    if problem:
        return Problem("invalid_payload", problem)
    lang = record.get("lang")
    if "lang" in record and (
        not isinstance(lang, str) or not lang or len(lang) > MAX_LANG or "\x00" in lang
    ):
        return Problem(
            "invalid_lang",
            f"lang must be a non-empty string of at most {MAX_LANG} characters, without NUL",
        )
    if "translation_of" in record:
        translation_of = record["translation_of"]
        problem = protocol.external_id_problem(kind, translation_of)
        if problem:
            return Problem("invalid_translation_of", f"translation_of: {problem}")
        if len(translation_of) > MAX_EXTERNAL_ID or "\x00" in translation_of:
            return Problem(
                "invalid_translation_of",
                f"translation_of must be at most {MAX_EXTERNAL_ID} characters, without NUL",
            )
    return None


def snapshot_entity(record: Any) -> Entity | Problem:
    """A snapshot line (spec 7) as an entity upsert, or why it is refused."""
    if not isinstance(record, dict):
        return Problem("invalid_line", "a snapshot line must be a JSON object")
    problem = _unexpected_keys(record, SNAPSHOT_KEYS) or _entity_problem(
        record, "kind", upsert=True
    )
    if problem:
        return problem
    return Entity(
        record["kind"],
        record["external_id"],
        record["payload"],
        record.get("lang"),
        record.get("translation_of"),
    )


def event_entity(op: Any) -> Entity | Problem:
    """An events op (spec 6) as an entity write, or why it is refused."""
    if not isinstance(op, dict):
        return Problem("invalid_op", "an op must be a JSON object")
    op_type = op.get("type")
    if op_type not in ("upsert", "delete"):
        return Problem("unknown_type", f"type {op_type!r} is not 'upsert' or 'delete'")
    upsert = op_type == "upsert"
    problem = _unexpected_keys(op, UPSERT_KEYS if upsert else DELETE_KEYS) or _entity_problem(
        op, "entity_kind", upsert=upsert
    )
    if problem:
        return problem
    return Entity(
        op["entity_kind"],
        op["external_id"],
        op["payload"] if upsert else None,
        op.get("lang"),
        op.get("translation_of"),
    )
