"""Staging: gzipped NDJSON parts and `events` batches, on file:// and on S3 (moto)."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog_sync import protocol, staging
from catalog_sync.errors import ConfigurationError
from catalog_sync.mapping import Deletion, Entity, MappingFailure
from catalog_sync.receiver.process import free_port


def _entities(n: int, text_size: int = 10) -> Iterator[Entity]:
    for i in range(n):
        yield Entity("product", f"laravel:product:{i}", {"name": f"P{i}", "text": "x" * text_size})


def _lines(n: int) -> Iterator[bytes]:
    """Snapshot lines as the extract encodes them."""
    return (protocol.dumps(entity.snapshot_line()) for entity in _entities(n))


def _batches(tmp_path: Path, items, **limits) -> tuple[dict, list[tuple[str, bytes]]]:
    manifest = staging.write_delta_batches(
        (tmp_path / "d.ndjson.gz").as_uri(),
        "product",
        items,
        run_key="run-1",
        window_key="w",
        failures_uri=(tmp_path / "f.ndjson.gz").as_uri(),
        **limits,
    )
    return manifest, list(staging.iter_batches(manifest["uri"]))


def test_batches_hold_at_most_max_batch_events_ops(tmp_path: Path) -> None:
    manifest, batches = _batches(tmp_path, _entities(1201))
    assert [len(protocol.loads(body)["events"]) for _, body in batches] == [500, 500, 201]
    assert manifest["upserts"] == 1201 and manifest["batches"] == 3


def test_batches_respect_the_byte_limit_on_the_real_body(tmp_path: Path) -> None:
    """~40 KB ops against the real 5 MiB limit: the cut is decided on the exact body."""
    all_ops = [protocol.dumps(e.upsert_op()) for e in _entities(400, text_size=40_000)]
    _, batches = _batches(tmp_path, _entities(400, text_size=40_000))
    assert len(batches) > 1
    sent = 0
    for n, (batch_id, body) in enumerate(batches):
        ops = [protocol.dumps(op) for op in protocol.loads(body)["events"]]
        assert protocol.events_body(batch_id, ops) == body  # the staged line IS the body
        assert len(body) <= protocol.MAX_BATCH_BYTES
        sent += len(ops)
        if n < len(batches) - 1:  # full: one more op would pass the limit
            assert len(body) + 1 + len(all_ops[sent]) > protocol.MAX_BATCH_BYTES
    assert sent == 400


def test_small_limits_are_exact_to_the_byte(tmp_path: Path) -> None:
    ops = [protocol.dumps(e.upsert_op()) for e in _entities(3)]
    fits_two = protocol.events_body_size("product-000000-" + "0" * 24, [len(o) for o in ops[:2]])
    _, batches = _batches(tmp_path, _entities(3), max_bytes=fits_two)
    assert [len(protocol.loads(body)["events"]) for _, body in batches] == [2, 1]
    assert len(batches[0][1]) == fits_two


def test_an_op_larger_than_the_limit_becomes_a_failure_record(tmp_path: Path) -> None:
    huge = Entity("product", "laravel:product:huge", {"name": "H", "text": "x" * (6 << 20)})
    items = [*_entities(2), huge, Deletion("product", "laravel:product:9")]
    manifest, batches = _batches(tmp_path, items)
    assert (manifest["upserts"], manifest["deletes"]) == (2, 1)
    assert manifest["failures"]["count"] == 1
    (record,) = [protocol.loads(line) for line in staging.iter_lines(manifest["failures"]["uri"])]
    assert record["external_id"] == "laravel:product:huge"
    assert "MAX_BATCH_BYTES" in record["error"]
    assert record["op"]["payload"]["name"] == "H"  # kept whole for the dead letter
    sent = [op["external_id"] for _, body in batches for op in protocol.loads(body)["events"]]
    assert "laravel:product:huge" not in sent


def test_mapping_failures_are_recorded_not_dropped(tmp_path: Path) -> None:
    failure = MappingFailure("product", 42, "laravel:product:42", "payload.name: required")
    manifest, _ = _batches(tmp_path, [*_entities(1), failure])
    (record,) = [protocol.loads(line) for line in staging.iter_lines(manifest["failures"]["uri"])]
    assert record == {
        "kind": "product",
        "primary_key": 42,
        "external_id": "laravel:product:42",
        "error": "payload.name: required",
    }


def test_batch_ids_are_the_same_when_the_same_ops_are_staged_again(tmp_path: Path) -> None:
    _, first = _batches(tmp_path / "a", _entities(700))
    _, again = _batches(tmp_path / "b", _entities(700))
    assert [bid for bid, _ in first] == [bid for bid, _ in again]
    assert len({bid for bid, _ in first}) == 2


def test_batch_ids_change_when_the_ops_change(tmp_path: Path) -> None:
    _, first = _batches(tmp_path / "a", _entities(3))
    _, more = _batches(tmp_path / "b", _entities(4))
    assert first[0][0] != more[0][0]


def test_same_entities_give_byte_identical_gzip(tmp_path: Path) -> None:
    parts = []
    for name in ("a", "b"):
        parts.append(
            staging.write_snapshot_part(
                (tmp_path / name / "p.ndjson.gz").as_uri(),
                "product",
                _lines(5000),
                (tmp_path / name / "f.ndjson.gz").as_uri(),
            )
        )
    data = (tmp_path / "a" / "p.ndjson.gz").read_bytes()
    assert data == (tmp_path / "b" / "p.ndjson.gz").read_bytes()
    assert parts[0]["sha256"] == hashlib.sha256(data).hexdigest() == parts[1]["sha256"]
    assert parts[0]["bytes"] == len(data)
    assert data[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert data[3] & 0x08 == 0  # no file name in the header
    lines = gzip.decompress(data).split(b"\n")
    assert lines[-1] == b"" and len(lines) == 5001  # LF after every line, the last too
    assert protocol.loads(lines[0]) == {
        "kind": "product",
        "external_id": "laravel:product:0",
        "payload": {"name": "P0", "text": "xxxxxxxxxx"},
    }


def test_default_root_is_under_airflow_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(staging.ENV_STAGING, raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert staging.staging_root() == (tmp_path / "catalog-sync" / "staging").as_uri()


def test_staging_setting_must_be_a_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(staging.ENV_STAGING, "relative/dir")
    with pytest.raises(ConfigurationError, match="file://"):
        staging.staging_root()


# --- S3 --------------------------------------------------------------------------------------


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3-compatible HTTP server (moto) on loopback, with one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        staging.ENV_S3_ENDPOINT: endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="catalog")
    yield "catalog"
    server.stop()


def test_s3_staging_round_trips_through_a_local_server(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv(staging.ENV_STAGING, f"s3://{s3_bucket}/staging")
    uri = staging.join(staging.staging_root(), "run", "snapshot", "product.ndjson.gz")
    part = staging.write_snapshot_part(uri, "product", _lines(3000), uri + ".failures")
    client = boto3.client("s3", endpoint_url=staging.os.environ[staging.ENV_S3_ENDPOINT])
    stored = client.get_object(Bucket=s3_bucket, Key="staging/run/snapshot/product.ndjson.gz")
    data = stored["Body"].read()
    assert hashlib.sha256(data).hexdigest() == part["sha256"]
    assert part["lines"] == 3000
    assert sum(1 for _ in staging.iter_lines(uri)) == 3000


def test_s3_missing_bucket_is_a_configuration_error(
    s3_bucket: str,
) -> None:
    with pytest.raises(ConfigurationError, match="NoSuchBucket"):
        staging.write_snapshot_part(
            "s3://no-such-bucket/p.gz", "product", _lines(1), "s3://no-such-bucket/f.gz"
        )
