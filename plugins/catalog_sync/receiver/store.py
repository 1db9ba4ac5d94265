"""The receiver's database: schema and every read and write, in SQLAlchemy Core.

Every step that must happen at most once (a pair code, a nonce, an idempotency key,
an upload URL, a finalize) is claimed with a unique key or a conditional UPDATE inside
the database, so concurrent requests and several server processes stay correct.
Times are Unix epoch seconds (floats). Works on SQLite (WAL, so a `dump` process can
read while the server writes), PostgreSQL and MySQL/MariaDB.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import secrets
import string
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from catalog_sync import protocol
from catalog_sync.db import byte_text, configure_sqlite
from catalog_sync.errors import ConfigurationError, TransientError
from catalog_sync.receiver import landing as landing_mod
from catalog_sync.receiver import validate

PAIR_CODE_TTL_S = 15 * 60
DEFAULT_UPLOAD_TTL_S = 3600.0
PAIR_CODE_ALPHABET = string.ascii_uppercase + string.digits
NONCE_PURGE_EVERY_S = 60.0
#: Rows per executemany: bounds memory; the statement is compiled once and cached.
UPSERT_BATCH = 2000
#: A single snapshot line larger than this is refused instead of being buffered.
MAX_SNAPSHOT_LINE = protocol.MAX_BATCH_BYTES


metadata = sa.MetaData()

pair_codes = sa.Table(
    "receiver_pair_codes",
    metadata,
    sa.Column("code", byte_text(16), primary_key=True),
    sa.Column("ingest_url", sa.String(2048), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("used_at", sa.Double),
    sa.Column("tenant_id", byte_text(64)),
)

tenants = sa.Table(
    "receiver_tenants",
    metadata,
    sa.Column("tenant_id", byte_text(64), primary_key=True),
    sa.Column("secret", sa.LargeBinary(64), nullable=False),
    sa.Column("ingest_url", sa.String(2048), nullable=False),
    sa.Column("site_url", sa.Text, nullable=False),
    sa.Column("provider_id", sa.Text, nullable=False),
    sa.Column("plugin_version", sa.Text, nullable=False),
    sa.Column("metadata_json", sa.Text, nullable=False),
    sa.Column("paired", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("unpaired_at", sa.Double),
)

nonces = sa.Table(
    "receiver_nonces",
    metadata,
    sa.Column("tenant_id", byte_text(64), primary_key=True),
    sa.Column("nonce", byte_text(32), primary_key=True),
    sa.Column("seen_at", sa.Double, nullable=False, index=True),
)

syncs = sa.Table(
    "receiver_syncs",
    metadata,
    sa.Column("sync_id", byte_text(32), primary_key=True),
    sa.Column("tenant_id", byte_text(64), nullable=False),
    sa.Column("expected_counts", sa.Text, nullable=False),
    sa.Column("site_url", sa.Text),
    # sha256 of the upload token: the database never holds a usable upload URL.
    sa.Column("token_sha256", byte_text(64), nullable=False, unique=True),
    sa.Column("upload_expires_at", sa.Double, nullable=False),
    # pending -> receiving -> uploaded; a failed upload goes back to pending.
    sa.Column("upload_state", sa.String(16), nullable=False),
    sa.Column("upload_bytes", sa.BigInteger),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("finalized_at", sa.Double),
)

idempotency = sa.Table(
    "receiver_idempotency",
    metadata,
    sa.Column("tenant_id", byte_text(64), primary_key=True),
    sa.Column("endpoint", sa.String(16), primary_key=True),
    sa.Column("idempotency_key", byte_text(255), primary_key=True),
    sa.Column("response", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
)

entities = sa.Table(
    "receiver_entities",
    metadata,
    sa.Column("tenant_id", byte_text(64), primary_key=True),
    sa.Column("kind", byte_text(32), primary_key=True),
    sa.Column("external_id", byte_text(validate.MAX_EXTERNAL_ID), primary_key=True),
    sa.Column("payload", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")),
    sa.Column("lang", sa.String(validate.MAX_LANG)),
    sa.Column("translation_of", sa.String(validate.MAX_EXTERNAL_ID)),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    # The snapshot that last wrote the row: the tombstone pass deletes the others.
    sa.Column("sync_id", sa.String(32)),
)


class ReceiverError(Exception):
    """A refusal the service answers as `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _new_pair_code() -> str:
    chars = "".join(secrets.choice(PAIR_CODE_ALPHABET) for _ in range(8))
    return f"VB-{chars[:4]}-{chars[4:]}"


def _token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _json_text(value: Any) -> str:
    return protocol.dumps(value).decode("utf-8")


def _dropped_by(tenant_id: str, kinds: list[str], sync_id: str) -> list[Any]:
    """Live entities of `kinds` that snapshot `sync_id` did not write: its tombstones."""
    return [
        entities.c.tenant_id == tenant_id,
        entities.c.kind.in_(kinds),
        entities.c.deleted.is_(False),
        sa.or_(entities.c.sync_id.is_(None), entities.c.sync_id != sync_id),
    ]


class ReceiverStore:
    """All database work of the receiver; safe to share between threads."""

    def __init__(self, db_url: str, landing: str | Path | None = None) -> None:
        try:
            url = sa.make_url(db_url)
            kwargs: dict[str, Any] = {}
            if url.get_backend_name() == "sqlite":
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            else:
                kwargs["pool_pre_ping"] = True
            self.engine = sa.create_engine(url, **kwargs)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise ConfigurationError(
                f"the receiver database URL is not usable ({exc}); give a SQLAlchemy URL "
                "like sqlite:///receiver.sqlite or postgresql+psycopg://user@host/db"
            ) from None
        if url.get_backend_name() == "sqlite":
            configure_sqlite(self.engine)
        try:
            metadata.create_all(self.engine)
        except sa.exc.OperationalError as exc:
            raise TransientError(
                f"cannot reach the receiver database {self.safe_url}: {exc.orig}"
            ) from None
        self._upsert = self._upsert_statement()
        #: Landing handlers (docs/landing.md): kinds also written into the target's tables.
        self.landing = None if landing is None else landing_mod.load(landing, self.engine)
        self._purge_lock = threading.Lock()
        self._last_purge = 0.0

    @property
    def safe_url(self) -> str:
        """The database URL without its password, for log lines."""
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(catalog_sync_read=True)
            with conn.begin():
                yield conn

    # --- pairing ---------------------------------------------------------------------

    def issue_pair_code(self, ingest_url: str, ttl: float = PAIR_CODE_TTL_S) -> str:
        """A fresh single-use pair code that hands out `ingest_url` when redeemed."""
        ingest_url = protocol.check_url(ingest_url, "ingest URL")
        now = time.time()
        while True:
            code = _new_pair_code()
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        pair_codes.insert().values(
                            code=code, ingest_url=ingest_url, created_at=now, expires_at=now + ttl
                        )
                    )
                return code
            except sa.exc.IntegrityError:  # 36^8 codes: a clash is rare, just draw again
                continue

    def pair(
        self,
        code: str,
        *,
        site_url: str,
        provider_id: str,
        plugin_version: str,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """Redeem `code` (once) for a new tenant with a fresh 32-byte secret."""
        now = time.time()
        tenant_id = f"t_{secrets.token_hex(12)}"
        secret = secrets.token_bytes(32)
        with self.engine.begin() as conn:
            claimed = conn.execute(
                pair_codes.update()
                .where(
                    pair_codes.c.code == code,
                    pair_codes.c.used_at.is_(None),
                    pair_codes.c.expires_at > now,
                )
                .values(used_at=now, tenant_id=tenant_id)
            ).rowcount
            if claimed != 1:
                row = conn.execute(
                    sa.select(pair_codes.c.used_at).where(pair_codes.c.code == code)
                ).first()
                if row is None:
                    raise ReceiverError(
                        404, "pair_code_unknown", "this pair code is unknown; issue a new one"
                    )
                if row.used_at is not None:
                    raise ReceiverError(
                        409, "pair_code_used", "this pair code was already used; issue a new one"
                    )
                raise ReceiverError(
                    410, "pair_code_expired", "this pair code has expired; issue a new one"
                )
            ingest_url = conn.execute(
                sa.select(pair_codes.c.ingest_url).where(pair_codes.c.code == code)
            ).scalar_one()
            conn.execute(
                tenants.insert().values(
                    tenant_id=tenant_id,
                    secret=secret,
                    ingest_url=ingest_url,
                    site_url=site_url,
                    provider_id=provider_id,
                    plugin_version=plugin_version,
                    metadata_json=_json_text(extra),
                    paired=True,
                    created_at=now,
                )
            )
        return {
            "tenant_id": tenant_id,
            "shared_secret_b64": base64.b64encode(secret).decode("ascii"),
            "ingest_url": ingest_url,
            "protocol_version": int(protocol.PROTOCOL_VERSION),
        }

    def tenant_key(self, tenant_id: str) -> bytes | None:
        """The HMAC key of a paired tenant; None when unknown or unpaired."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(tenants.c.secret).where(
                    tenants.c.tenant_id == tenant_id, tenants.c.paired.is_(True)
                )
            ).first()
        return bytes(row.secret) if row else None

    def tenant_ingest_url(self, tenant_id: str) -> str:
        with self._read() as conn:
            return conn.execute(
                sa.select(tenants.c.ingest_url).where(tenants.c.tenant_id == tenant_id)
            ).scalar_one()

    def unpair(self, tenant_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                tenants.update()
                .where(tenants.c.tenant_id == tenant_id)
                .values(paired=False, unpaired_at=time.time())
            )

    # --- nonces ------------------------------------------------------------------------

    def claim_nonce(self, tenant_id: str, nonce: str) -> bool:
        """Record the nonce; False when this tenant already used it (a replay).

        The primary key makes the claim atomic across threads and processes. Entries
        past the nonce window can never match again (their timestamps are stale), so
        they are purged now and then.
        """
        now = time.time()
        purge = False
        with self._purge_lock:
            if now - self._last_purge >= NONCE_PURGE_EVERY_S:
                self._last_purge = now
                purge = True
        try:
            with self.engine.begin() as conn:
                if purge:
                    conn.execute(
                        nonces.delete().where(nonces.c.seen_at < now - protocol.NONCE_WINDOW_S)
                    )
                conn.execute(nonces.insert().values(tenant_id=tenant_id, nonce=nonce, seen_at=now))
        except sa.exc.IntegrityError:
            return False
        return True

    # --- entities ---------------------------------------------------------------------

    def _upsert_statement(self) -> Any:
        """INSERT ... ON CONFLICT/DUPLICATE KEY UPDATE for the entity table's dialect."""
        name = self.engine.dialect.name
        columns = ("payload", "lang", "translation_of", "deleted", "updated_at", "sync_id")
        if name in ("mysql", "mariadb"):
            stmt = mysql.insert(entities)
            return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in columns})
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise ReceiverError(500, "unsupported_database", f"database {name!r} is not supported")
        stmt = insert(entities)
        return stmt.on_conflict_do_update(
            index_elements=[entities.c.tenant_id, entities.c.kind, entities.c.external_id],
            set_={c: stmt.excluded[c] for c in columns},
        )

    def _upsert_rows(
        self,
        conn: Connection,
        tenant_id: str,
        items: Iterable[validate.Entity],
        sync_id: str | None,
    ) -> None:
        """Upsert with executemany in batches; a key repeated in a batch keeps its last write.

        Deduplicating matters where SQLAlchemy folds a batch into one multi-row INSERT
        (PostgreSQL refuses to update one row twice in a statement).
        """
        now = time.time()
        batch: dict[tuple[str, str], dict[str, Any]] = {}

        def flush() -> None:
            if batch:
                conn.execute(self._upsert, list(batch.values()))
                batch.clear()

        for item in items:
            key = (item.kind, item.external_id)
            batch.pop(key, None)  # keep the row at its latest position
            batch[key] = {
                "tenant_id": tenant_id,
                "kind": item.kind,
                "external_id": item.external_id,
                "payload": _json_text(item.payload),
                "lang": item.lang,
                "translation_of": item.translation_of,
                "deleted": False,
                "updated_at": now,
                "sync_id": sync_id,
            }
            if len(batch) >= UPSERT_BATCH:
                flush()
        flush()

    def entity_counts(self, tenant_id: str) -> dict[str, int]:
        """Live (not deleted) entities of a tenant per kind."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(entities.c.kind, sa.func.count())
                .where(entities.c.tenant_id == tenant_id, entities.c.deleted.is_(False))
                .group_by(entities.c.kind)
                .order_by(entities.c.kind)
            ).all()
        return {kind: int(count) for kind, count in rows}

    def dump_lines(self, kind: str | None = None, tenant_id: str | None = None) -> Iterator[bytes]:
        """Live entities as spec-7 NDJSON lines (no newline), by kind then external id.

        Streamed from a server-side cursor: memory does not grow with the table.
        """
        query = (
            sa.select(
                entities.c.kind,
                entities.c.external_id,
                entities.c.payload,
                entities.c.lang,
                entities.c.translation_of,
            )
            .where(entities.c.deleted.is_(False))
            .order_by(entities.c.kind, entities.c.external_id, entities.c.tenant_id)
        )
        if kind is not None:
            query = query.where(entities.c.kind == kind)
        if tenant_id is not None:
            query = query.where(entities.c.tenant_id == tenant_id)
        with self._read() as conn:
            result = conn.execution_options(yield_per=1000).execute(query)
            for row in result:
                yield protocol.dumps(
                    protocol.snapshot_line(
                        row.kind,
                        row.external_id,
                        protocol.loads(row.payload),
                        row.lang,
                        row.translation_of,
                    )
                )

    # --- events -----------------------------------------------------------------------

    def _stored_response(self, tenant_id: str, endpoint: str, key: str) -> dict[str, Any] | None:
        with self._read() as conn:
            text = conn.execute(
                sa.select(idempotency.c.response).where(
                    idempotency.c.tenant_id == tenant_id,
                    idempotency.c.endpoint == endpoint,
                    idempotency.c.idempotency_key == key,
                )
            ).scalar_one_or_none()
        if text is None:
            return None
        response = protocol.loads(text)
        response["idempotent_replay"] = True
        return response

    def _claim_key(self, conn: Connection, tenant_id: str, endpoint: str, key: str) -> None:
        """Insert the idempotency row first: a concurrent twin blocks, then fails."""
        conn.execute(
            idempotency.insert().values(
                tenant_id=tenant_id, endpoint=endpoint, idempotency_key=key, created_at=time.time()
            )
        )

    def _store_response(
        self, conn: Connection, tenant_id: str, endpoint: str, key: str, response: dict[str, Any]
    ) -> None:
        conn.execute(
            idempotency.update()
            .where(
                idempotency.c.tenant_id == tenant_id,
                idempotency.c.endpoint == endpoint,
                idempotency.c.idempotency_key == key,
            )
            .values(response=_json_text(response))
        )

    def apply_events(self, tenant_id: str, key: str, ops: list[Any]) -> dict[str, Any]:
        """Apply the valid ops of a batch and store the response, in one transaction.

        A known key returns the stored response (`idempotent_replay: true`) and applies
        nothing. Invalid ops are reported one by one; the valid ones still apply.
        """
        stored = self._stored_response(tenant_id, "events", key)
        if stored is not None:
            return stored
        errors: list[dict[str, Any]] = []
        valid: list[tuple[int, validate.Entity]] = []
        for index, op in enumerate(ops):
            checked = validate.event_entity(op)
            if isinstance(checked, validate.Problem):
                external_id = op.get("external_id") if isinstance(op, dict) else None
                errors.append(
                    {
                        "index": index,
                        "external_id": external_id if isinstance(external_id, str) else None,
                        "code": checked.code,
                        "message": checked.message,
                    }
                )
            else:
                valid.append((index, checked))
        # The last op on an entity decides its state, so collapse before writing.
        final: dict[tuple[str, str], tuple[int, validate.Entity]] = {}
        for index, item in valid:
            final.pop((item.kind, item.external_id), None)
            final[(item.kind, item.external_id)] = (index, item)
        response = {"processed": len(valid), "idempotent_replay": False, "errors": errors}
        try:
            with self.engine.begin() as conn:
                self._claim_key(conn, tenant_id, "events", key)
                if self.landing is not None:
                    self._land_events(conn, final, response)
                upserts = [item for _i, item in final.values() if item.payload is not None]
                deletes = [item for _i, item in final.values() if item.payload is None]
                self._upsert_rows(conn, tenant_id, upserts, sync_id=None)
                if deletes:
                    conn.execute(
                        entities.update()
                        .where(
                            entities.c.tenant_id == tenant_id,
                            entities.c.kind == sa.bindparam("b_kind"),
                            entities.c.external_id == sa.bindparam("b_external_id"),
                        )
                        .values(deleted=True, updated_at=time.time()),
                        [{"b_kind": d.kind, "b_external_id": d.external_id} for d in deletes],
                    )
                self._store_response(conn, tenant_id, "events", key, response)
        except sa.exc.IntegrityError:
            stored = self._stored_response(tenant_id, "events", key)
            if stored is None:
                raise
            return stored
        return response

    def _land_events(
        self,
        conn: Connection,
        final: dict[tuple[str, str], tuple[int, validate.Entity]],
        response: dict[str, Any],
    ) -> None:
        """Land the batch's final ops; refused ones leave `final` and join `errors`."""
        assert self.landing is not None
        report = self.landing.land_events(conn, list(final.values()))
        for rejected in report.rejected:
            del final[rejected]
        response["processed"] -= len(report.rejected)
        response["errors"] = sorted([*response["errors"], *report.errors], key=lambda e: e["index"])
        if report.skipped:  # receiver policy: ops kept out of the target, not errors
            response["skipped"] = report.skipped

    # --- full snapshot ------------------------------------------------------------------

    def create_sync(
        self,
        tenant_id: str,
        expected_counts: dict[str, int],
        site_url: str | None,
        upload_ttl: float,
    ) -> tuple[str, str]:
        """A new full sync; returns its id and the (secret) upload token."""
        sync_id = uuid.uuid4().hex
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                syncs.insert().values(
                    sync_id=sync_id,
                    tenant_id=tenant_id,
                    expected_counts=_json_text(expected_counts),
                    site_url=site_url,
                    token_sha256=_token_sha256(token),
                    upload_expires_at=now + upload_ttl,
                    upload_state="pending",
                    created_at=now,
                )
            )
        return sync_id, token

    def begin_upload(self, token: str) -> str:
        """Claim the upload URL for one PUT; returns the sync id."""
        digest = _token_sha256(token)
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(syncs.c.sync_id, syncs.c.upload_expires_at, syncs.c.upload_state).where(
                    syncs.c.token_sha256 == digest
                )
            ).first()
            if row is None:
                raise ReceiverError(404, "upload_unknown", "this upload URL is unknown")
            if row.upload_state != "pending":
                raise ReceiverError(
                    409, "upload_used", "this upload URL was already used; start a new sync"
                )
            if now >= row.upload_expires_at:
                raise ReceiverError(
                    410, "upload_expired", "this upload URL has expired; start a new sync"
                )
            claimed = conn.execute(
                syncs.update()
                .where(syncs.c.sync_id == row.sync_id, syncs.c.upload_state == "pending")
                .values(upload_state="receiving")
            ).rowcount
        if claimed != 1:
            raise ReceiverError(
                409, "upload_used", "this upload URL was already used; start a new sync"
            )
        return row.sync_id

    def end_upload(self, sync_id: str, size: int | None) -> None:
        """Record a complete upload (`size` bytes), or release a failed one (None)."""
        values: dict[str, Any] = (
            {"upload_state": "uploaded", "upload_bytes": size}
            if size is not None
            else {"upload_state": "pending", "upload_bytes": None}
        )
        with self.engine.begin() as conn:
            conn.execute(syncs.update().where(syncs.c.sync_id == sync_id).values(**values))

    def finalize(self, tenant_id: str, sync_id: str, key: str, upload_path: Path) -> dict[str, Any]:
        """Check the uploaded snapshot, then apply it and the tombstone pass atomically.

        The file is read twice, streamed: once to validate and count (nothing is
        written when that fails), once inside the write transaction.
        """
        stored = self._stored_response(tenant_id, "finalize", key)
        if stored is not None:
            return stored
        with self._read() as conn:
            row = conn.execute(
                sa.select(syncs).where(syncs.c.sync_id == sync_id, syncs.c.tenant_id == tenant_id)
            ).first()
        if row is None:
            raise ReceiverError(404, "unknown_sync", f"no sync {sync_id!r} for this tenant")
        if row.finalized_at is not None:
            raise ReceiverError(
                409, "sync_already_finalized", "this sync was already finalized; start a new one"
            )
        if row.upload_state != "uploaded" or not upload_path.is_file():
            raise ReceiverError(
                409, "upload_missing", "the snapshot was not uploaded yet; PUT it to upload_url"
            )
        expected: dict[str, int] = protocol.loads(row.expected_counts)
        counts = self._check_snapshot(upload_path)
        if any(counts.get(k, 0) != expected.get(k, 0) for k in {*expected, *counts}):
            raise ReceiverError(
                422,
                "count_mismatch",
                f"uploaded lines per kind {counts} differ from expected_counts {expected}; "
                "nothing was applied",
            )
        response: dict[str, Any] = {"sync_id": sync_id, "applied": sum(counts.values())}
        try:
            with self.engine.begin() as conn:
                self._claim_key(conn, tenant_id, "finalize", key)
                won = conn.execute(
                    syncs.update()
                    .where(syncs.c.sync_id == sync_id, syncs.c.finalized_at.is_(None))
                    .values(finalized_at=time.time())
                ).rowcount
                if won != 1:
                    raise ReceiverError(
                        409, "sync_already_finalized", "this sync was already finalized"
                    )
                lines = self._snapshot_entities(upload_path)
                landed: dict[str, Any] = {}
                if self.landing is not None:
                    lines = self.landing.land_snapshot(conn, lines, landed)
                self._upsert_rows(conn, tenant_id, lines, sync_id)
                if self.landing is not None:
                    self._land_tombstones(conn, tenant_id, sync_id, list(expected), landed)
                    response["landing"] = landed
                deleted = conn.execute(
                    entities.update()
                    .where(*_dropped_by(tenant_id, list(expected), sync_id))
                    .values(deleted=True, updated_at=time.time())
                ).rowcount
                response.update(deleted=deleted, counts=counts, idempotent_replay=False)
                self._store_response(conn, tenant_id, "finalize", key, response)
        except landing_mod.Rejected as exc:
            status = 409 if exc.code == "landing_conflict" else 422
            raise ReceiverError(status, exc.code, f"{exc.message}; nothing was applied") from None
        except sa.exc.IntegrityError:
            stored = self._stored_response(tenant_id, "finalize", key)
            if stored is None:
                raise
            return stored
        return response

    def _land_tombstones(
        self,
        conn: Connection,
        tenant_id: str,
        sync_id: str,
        kinds: list[str],
        summary: dict[str, Any],
    ) -> None:
        """Hand the records this snapshot drops to their handlers (before they are marked)."""
        assert self.landing is not None
        landed_kinds = [kind for kind in kinds if kind in self.landing.targets]
        if not landed_kinds:
            return
        query = sa.select(entities.c.kind, entities.c.external_id).where(
            *_dropped_by(tenant_id, landed_kinds, sync_id), entities.c.translation_of.is_(None)
        )
        gone = landing_mod.tombstone_pages(conn, query, entities.c.kind, entities.c.external_id)
        self.landing.land_tombstones(conn, gone, summary)

    @staticmethod
    def _snapshot_records(path: Path) -> Iterator[tuple[int, Any]]:
        """(line number, decoded JSON) of every line, streamed; refuses a bad file."""
        number = 0
        try:
            with gzip.open(path, "rb") as stream:
                while True:
                    raw = stream.readline(MAX_SNAPSHOT_LINE + 1)
                    if not raw:
                        return
                    number += 1
                    if not raw.endswith(b"\n"):
                        if len(raw) > MAX_SNAPSHOT_LINE:
                            raise ReceiverError(
                                422,
                                "invalid_line",
                                f"line {number} is longer than {MAX_SNAPSHOT_LINE} bytes",
                            )
                        raise ReceiverError(
                            422,
                            "invalid_line",
                            f"line {number} does not end with a newline (spec 7: LF after "
                            "every line, including the last)",
                        )
                    try:
                        yield number, protocol.loads(raw)
                    except ValueError:
                        raise ReceiverError(
                            422, "invalid_line", f"line {number} is not valid JSON"
                        ) from None
        except (OSError, EOFError, zlib.error) as exc:
            raise ReceiverError(
                422,
                "invalid_snapshot",
                f"the upload is not a valid gzip stream near line {number + 1} "
                f"({type(exc).__name__}); upload a gzip of NDJSON",
            ) from None

    def _check_snapshot(self, path: Path) -> dict[str, int]:
        counts: dict[str, int] = {}
        for number, record in self._snapshot_records(path):
            checked = validate.snapshot_entity(record)
            if isinstance(checked, validate.Problem):
                raise ReceiverError(
                    422, checked.code, f"line {number}: {checked.message}; nothing was applied"
                )
            counts[checked.kind] = counts.get(checked.kind, 0) + 1
        return counts

    def _snapshot_entities(self, path: Path) -> Iterator[validate.Entity]:
        """The lines as entities; the first pass validated them, so no checks here."""
        for _number, record in self._snapshot_records(path):
            yield validate.Entity(
                record["kind"],
                record["external_id"],
                record["payload"],
                record.get("lang"),
                record.get("translation_of"),
            )
