"""Staging: mapped entities as gzipped NDJSON in object storage, through smart-open.

Extraction and push are separate Airflow tasks: the staged files are what a retried
push re-reads, so nothing is re-extracted and the same batch ids are re-sent. Only
small manifests (URIs, counts, checksums) travel through XCom.

Files are reproducible: the same entities give the same bytes (gzip mtime 0, no file
name in the header, fixed key order), so two snapshots of an unchanged database have
the same sha256. Each file is one gzip member; members concatenate byte-wise into a
valid gzip stream (spec 7), so per-kind snapshot parts can be joined for the upload.

Layout under the staging root (`CATALOG_SYNC_STAGING`):
    {run_key}/snapshot/{kind}.ndjson.gz     spec 7 lines
    {run_key}/delta/{kind}.batches.ndjson.gz one line = one exact `events` request body
    {run_key}/.../{kind}.failures.ndjson.gz  rows that could not become ops
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

from isal import isal_zlib

from catalog_sync import protocol
from catalog_sync.errors import ConfigurationError, TransientError
from catalog_sync.mapping import Deletion, Entity, MappingFailure

ENV_STAGING = "CATALOG_SYNC_STAGING"
ENV_S3_ENDPOINT = "CATALOG_SYNC_S3_ENDPOINT_URL"
#: ISA-L level (0-3): 1 compresses ~4x faster than zlib's level 1 and ~6% smaller
#: (bench/results.md); ISA-L writes standard gzip that every gzip reader accepts.
GZIP_LEVEL = 1
_FLUSH_AT = 1 << 20  # bytes of NDJSON handed to the compressor thread at a time
_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._=+-]+")


# --- locations ------------------------------------------------------------------------------


def staging_root() -> str:
    """`CATALOG_SYNC_STAGING`, else `file://$AIRFLOW_HOME/catalog-sync/staging`."""
    root = os.environ.get(ENV_STAGING)
    if root:
        if "://" not in root:
            raise ConfigurationError(
                f"{ENV_STAGING}={root!r} is not a URI; give e.g. file:///var/lib/catalog-sync "
                "or s3://bucket/prefix"
            )
        return root.rstrip("/")
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return (home / "catalog-sync" / "staging").resolve().as_uri()


def safe_segment(text: str) -> str:
    """A run id such as `scheduled__2024-01-01T00:00:00+00:00` as one path segment."""
    return _SAFE_SEGMENT.sub("_", text).strip("._") or "run"


def join(root: str, *segments: str) -> str:
    return "/".join([root.rstrip("/"), *segments])


def _transport_params(uri: str) -> dict[str, Any]:
    if urlsplit(uri).scheme not in {"s3", "s3a", "s3n"}:
        return {}
    import boto3

    # boto3 itself honours AWS_ENDPOINT_URL(_S3), credentials and region variables.
    endpoint = os.environ.get(ENV_S3_ENDPOINT) or None
    return {"client": boto3.client("s3", endpoint_url=endpoint)}


def open_uri(uri: str, mode: str) -> IO[bytes]:
    """Open a staging URI as raw bytes (smart-open must not add its own compression).

    A local `file://` URI is opened directly, with smart-open's own path rule (the text
    after `file://`, `~` expanded): importing smart-open and its cloud clients costs
    seconds of CPU, a large share of a small delta run.
    """
    try:
        if uri.startswith("file://"):
            path = Path(uri.removeprefix("file://")).expanduser()
            if "w" in mode:
                path.parent.mkdir(parents=True, exist_ok=True)
            return path.open(mode if "b" in mode else mode + "b")
        import smart_open

        return smart_open.open(
            uri, mode, compression="disable", transport_params=_transport_params(uri)
        )
    except Exception as exc:
        raise _storage_error(uri, exc) from exc


#: Storage errors a person must fix (a missing bucket, no credentials, a bad path).
_CONFIG_ERRORS = ("NoSuchBucket", "NoCredentials", "AccessDenied", "InvalidAccessKeyId")


def _storage_error(uri: str, exc: BaseException) -> Exception:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(
        exc, FileNotFoundError | PermissionError | NotADirectoryError | ValueError
    ) or any(marker in text for marker in _CONFIG_ERRORS):
        return ConfigurationError(f"cannot use staging location {uri}: {text}")
    return TransientError(f"staging storage failed for {uri}: {text}")


# --- gzip writer ---------------------------------------------------------------------------


class GzipNdjsonWriter:
    """One gzip member of NDJSON lines, compressed in a second thread.

    ISA-L (python-isal) and sha256 release the GIL, so compression overlaps with mapping
    and JSON encoding in the main thread. The queue is bounded: memory stays flat.
    """

    def __init__(self, uri: str, level: int = GZIP_LEVEL) -> None:
        self.uri = uri
        self.lines = 0
        self.size = 0
        self._sha = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._stream = open_uri(uri, "wb")
        # wbits 31: a gzip header with mtime 0 and no file name, so output is reproducible.
        self._zlib = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._compress, name="gzip-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def _compress(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                self._emit(self._zlib.compress(chunk))
            self._emit(self._zlib.flush())
        except BaseException as exc:  # re-raised in the main thread by close()
            self._error = exc
            while self._queue.get() is not None:  # unblock the producer
                pass

    def _emit(self, data: bytes) -> None:
        if data:
            self._stream.write(data)
            self._sha.update(data)
            self.size += len(data)

    def write_line(self, line: bytes) -> None:
        """Append one NDJSON record (`line` without its LF)."""
        self._buffer.append(line)
        self._buffer.append(b"\n")
        self._buffered += len(line) + 1
        self.lines += 1
        if self._buffered >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._queue.put(b"".join(self._buffer))
            self._buffer.clear()
            self._buffered = 0
        if self._error is not None:
            raise _storage_error(self.uri, self._error) from self._error

    def close(self) -> dict[str, Any]:
        """Finish the member and return {uri, lines, sha256, bytes}."""
        if not self._closed:
            self._closed = True
            try:
                self._flush()
            finally:
                self._queue.put(None)
                self._thread.join()
            try:
                if self._error is not None:
                    raise _storage_error(self.uri, self._error) from self._error
            finally:
                try:
                    self._stream.close()
                except OSError as exc:
                    raise _storage_error(self.uri, exc) from exc
        return {"uri": self.uri, "lines": self.lines, "sha256": self.sha256, "bytes": self.size}

    def abort(self) -> None:
        """Stop after an error elsewhere; an incomplete S3 multipart upload is discarded."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        terminate = getattr(self._stream, "terminate", None)
        if callable(terminate):
            terminate()
        else:
            self._stream.close()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def __enter__(self) -> GzipNdjsonWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def iter_lines(uri: str) -> Iterator[bytes]:
    """The NDJSON lines of a staged file (without LF), streamed."""
    import gzip

    with open_uri(uri, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as lines:
        for line in lines:
            yield line.rstrip(b"\n")


# --- failures ----------------------------------------------------------------------------


class FailureLog:
    """Items that cannot become ops: written lazily (no file when there are none)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.count = 0
        self._writer: GzipNdjsonWriter | None = None

    def add(self, record: dict[str, Any], op: bytes | None = None) -> None:
        if self._writer is None:
            self._writer = GzipNdjsonWriter(self.uri)
        line = protocol.dumps(record)
        if op is not None:  # splice the encoded op in without decoding it again
            line = line[:-1] + b',"op":' + op + b"}"
        self._writer.write_line(line)
        self.count += 1

    def add_mapping_failure(self, failure: MappingFailure) -> None:
        self.add(
            {
                "kind": failure.kind,
                "primary_key": failure.primary_key,
                "external_id": failure.external_id,
                "error": failure.error,
            }
        )

    def close(self) -> dict[str, Any] | None:
        return self._writer.close() if self._writer is not None else None

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


# --- snapshot parts ---------------------------------------------------------------------------


def write_snapshot_part(
    uri: str, kind: str, items: Iterable[bytes | MappingFailure], failures_uri: str
) -> dict[str, Any]:
    """Stream one kind's encoded lines to a spec-7 part; returns its manifest entry.

    A MappingFailure is logged to `failures_uri`, counted, and never silently dropped.
    """
    failures = FailureLog(failures_uri)
    writer = GzipNdjsonWriter(uri)
    try:
        for item in items:
            if isinstance(item, bytes):
                writer.write_line(item)
            else:
                failures.add_mapping_failure(item)
        part = writer.close()
        failure_part = failures.close()
    except BaseException:
        writer.abort()
        failures.abort()
        raise
    return {"kind": kind, **part, "failures": _failure_entry(failures, failure_part)}


def _failure_entry(failures: FailureLog, part: dict[str, Any] | None) -> dict[str, Any]:
    return {"count": failures.count, "uri": part["uri"] if part else None}


# --- delta batches ----------------------------------------------------------------------------


def _batch_id(run_key: str, window_key: str, kind: str, seq: int, ops: list[bytes]) -> str:
    """Deterministic id: same run, window, kind, position and ops -> same id.

    The ops' digest is part of it, so a re-extraction that found more rows (a late
    commit) cannot hide behind an id the receiver already stored and would replay.
    """
    digest = hashlib.sha256(f"{run_key}\n{window_key}\n{kind}\n{seq}\n".encode())
    for op in ops:
        digest.update(op)
        digest.update(b"\n")
    return f"{kind}-{seq:06d}-{digest.hexdigest()[:24]}"


def _stand_in_id(kind: str, seq: int) -> str:
    """A stand-in of the real id's exact length, to count body bytes before hashing."""
    return f"{kind}-{seq:06d}-{'0' * 24}"


def write_delta_batches(
    uri: str,
    kind: str,
    items: Iterable[Entity | Deletion | MappingFailure],
    *,
    run_key: str,
    window_key: str,
    failures_uri: str,
    max_events: int = protocol.MAX_BATCH_EVENTS,
    max_bytes: int = protocol.MAX_BATCH_BYTES,
) -> dict[str, Any]:
    """Cut a kind's ops into `events` bodies within both limits; one body per line.

    Sizes are those of the real request body (`protocol.events_body_size`). An op that
    alone exceeds `max_bytes` is logged as a failure (to be dead-lettered), not sent.
    """
    failures = FailureLog(failures_uri)
    writer = GzipNdjsonWriter(uri)
    counts = {"upserts": 0, "deletes": 0, "batches": 0}
    batch: list[bytes] = []
    joined = 0  # len(b",".join(batch)): the existing ops count as one blob below

    def flush() -> None:
        nonlocal joined
        seq = counts["batches"]
        body = protocol.events_body(_batch_id(run_key, window_key, kind, seq, batch), batch)
        if len(body) > max_bytes or len(batch) > max_events:  # the real body, re-checked
            raise AssertionError(f"batch {seq} of {kind} breaks the limits: {len(body)} bytes")
        writer.write_line(body)
        counts["batches"] += 1
        batch.clear()
        joined = 0

    try:
        for item in items:
            if isinstance(item, MappingFailure):
                failures.add_mapping_failure(item)
                continue
            is_upsert = isinstance(item, Entity)
            op = protocol.dumps(item.upsert_op() if is_upsert else item.delete_op())
            stand_in = _stand_in_id(kind, counts["batches"])
            if protocol.events_body_size(stand_in, [len(op)]) > max_bytes:
                failures.add(
                    {
                        "kind": kind,
                        "primary_key": None,
                        "external_id": item.external_id,
                        "error": f"the op alone is {len(op)} bytes; an events body may hold "
                        f"at most {max_bytes} bytes (MAX_BATCH_BYTES)",
                    },
                    op,
                )
                continue
            if batch and (
                len(batch) >= max_events
                or protocol.events_body_size(stand_in, [joined, len(op)]) > max_bytes
            ):
                flush()
            joined += len(op) + (1 if batch else 0)
            batch.append(op)
            counts["upserts" if is_upsert else "deletes"] += 1
        if batch:
            flush()
        part = writer.close()
        failure_part = failures.close()
    except BaseException:
        writer.abort()
        failures.abort()
        raise
    return {
        "kind": kind,
        "uri": part["uri"],
        "sha256": part["sha256"],
        "bytes": part["bytes"],
        **counts,
        "failures": _failure_entry(failures, failure_part),
    }


def iter_batches(uri: str) -> Iterator[tuple[str, bytes]]:
    """(batch_id, exact request body) of a staged delta file, in order."""
    for body in iter_lines(uri):
        yield protocol.loads(body)["batch_id"], body


# --- snapshot assembly -------------------------------------------------------------------------

#: Bytes copied per step when parts are joined: memory stays flat whatever their size.
_COPY_CHUNK = 1 << 20


def assemble_snapshot(parts: Iterable[Mapping[str, Any]], uri: str) -> dict[str, Any]:
    """Join snapshot parts byte-wise into one upload (gzip members concatenate, spec 7).

    Returns {uri, lines, bytes, sha256} of the joined file; parts with no line are left out.
    """
    digest = hashlib.sha256()
    size = lines = 0
    try:
        with open_uri(uri, "wb") as out:
            for part in parts:
                if not part["lines"]:
                    continue
                with open_uri(part["uri"], "rb") as source:
                    while chunk := source.read(_COPY_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                lines += part["lines"]
    except OSError as exc:
        raise _storage_error(uri, exc) from exc
    return {"uri": uri, "lines": lines, "bytes": size, "sha256": digest.hexdigest()}
