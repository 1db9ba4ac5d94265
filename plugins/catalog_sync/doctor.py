"""`catalog-sync doctor`: is this deployment ready to sync? Checks only; pushes nothing.

One `Check` per line (payload conventions, "Doctor output"). Every check runs even when
an earlier one failed, so a person sees all that is wrong at once. Messages come from
our own errors, which never carry the shared secret; they are redacted once more anyway.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from catalog_sync import protocol
from catalog_sync.errors import CatalogSyncError

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
#: Characters of the mapped sample printed per kind.
SAMPLE_WIDTH = 240


@dataclass(frozen=True)
class Check:
    status: str
    label: str
    message: str

    def line(self) -> str:
        return f"{self.status} {self.label} {self.message}"


def _short(text: str, width: int = SAMPLE_WIDTH) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _pairing(conn_id: str) -> tuple[Check, Any]:
    from catalog_sync.connections import find_connection
    from catalog_sync.hooks import VoiceBotHook

    if find_connection(conn_id) is None:
        return Check(
            FAIL,
            "pairing",
            f"no Airflow connection {conn_id!r}; pair with `catalog-sync pair CODE "
            f"--base-url URL --conn-id {conn_id}`",
        ), None
    hook = VoiceBotHook(conn_id, max_attempts=1)
    try:
        settings = hook.settings
    except CatalogSyncError as exc:
        return Check(FAIL, "pairing", str(exc)), None
    return Check(
        PASS,
        "pairing",
        f"connection {conn_id!r}: tenant {settings.tenant_id}, ingest URL {settings.ingest_url}",
    ), hook


def _fernet() -> Check:
    from airflow.configuration import conf
    from cryptography.fernet import Fernet

    keys = [k.strip() for k in (conf.get("core", "fernet_key", fallback="") or "").split(",")]
    keys = [k for k in keys if k]
    if not keys:
        return Check(
            FAIL,
            "fernet",
            "Airflow has no Fernet key: connection passwords (the shared secret) would be "
            "stored in clear; set AIRFLOW__CORE__FERNET_KEY (see Airflow's 'Fernet' docs)",
        )
    try:
        for key in keys:
            Fernet(key.encode())
    except (ValueError, TypeError):
        return Check(FAIL, "fernet", "the Airflow Fernet key is not a valid Fernet key")
    return Check(PASS, "fernet", f"Airflow has {len(keys)} Fernet key(s)")


def _backend(hook: Any) -> Check:
    if hook is None:
        return Check(FAIL, "backend", "not checked: pairing failed")
    try:
        answer = hook.status()
    except CatalogSyncError as exc:
        return Check(FAIL, "backend", str(exc))
    return Check(
        PASS, "backend", f"signed status call answered: {answer.get('provider_status', 'unknown')}"
    )


def _money_keys(config: Any) -> list[str]:
    """Payload keys meant to hold integer minor units (`money:` specs, `*_amount`)."""
    keys = []
    for key, spec in config.map.items():
        name = key.removeprefix("payload.")
        if (isinstance(spec, dict) and "money" in spec) or name.endswith("_amount"):
            keys.append(name)
    return keys


def _dig(payload: dict[str, Any], dotted: str) -> Any:
    value: Any = payload
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _entity_checks(catalog: Any, engine: sa.Engine) -> Iterator[Check]:
    from catalog_sync.mapping import Entity, compile_mappers, live_rows_query
    from catalog_sync.sources import load_source

    for kind, config in catalog.kinds.items():
        label = "host_profile" if config.is_static else f"entity:{kind}"
        try:
            one = dataclasses.replace(catalog, kinds={kind: config})
            if config.is_static:
                one = catalog  # its capabilities look at the other kinds
            mapper = compile_mappers(one, engine)[kind]
            with engine.connect() as conn:
                if config.is_static:
                    samples: list[Any] = mapper.static_entities()
                    count = None
                elif config.source is not None:
                    source = load_source(config, catalog, mapper)
                    samples = [next(iter(source.snapshot(conn)), None)]
                    samples = [s for s in samples if s is not None]
                    count = None
                else:
                    live = live_rows_query(conn, config)
                    count = conn.execute(
                        sa.text(f"SELECT COUNT(*) FROM ({live}) AS counted")
                    ).scalar_one()
                    row = conn.execute(sa.text(live + " LIMIT 1")).mappings().first()
                    samples = list(mapper.map_page(conn, [row])) if row is not None else []
        except CatalogSyncError as exc:
            yield Check(FAIL, label, str(exc))
            continue
        except sa.exc.DBAPIError as exc:
            yield Check(FAIL, label, f"the source query fails: {_short(str(exc.orig), 300)}")
            continue
        if not config.map and not config.is_static and config.source is None:
            yield Check(FAIL, label, "the map is empty: nothing would be sent")
            continue
        rows = "custom source" if count is None else f"{count} live row(s)"
        if not samples:
            yield Check(WARN, label, f"{rows}; nothing to sample")
            continue
        sample = samples[0]
        if not isinstance(sample, Entity):
            yield Check(FAIL, label, f"{rows}; the sampled row does not map: {sample.error}")
            continue
        problem = protocol.external_id_problem(
            kind, sample.external_id
        ) or protocol.payload_problem(kind, sample.payload)
        if problem:
            yield Check(FAIL, label, f"{rows}; the sampled row maps badly: {problem}")
            continue
        odd = [
            key
            for key in _money_keys(config)
            if _dig(sample.payload, key) is not None
            and (
                isinstance(_dig(sample.payload, key), bool)
                or not isinstance(_dig(sample.payload, key), int)
            )
        ]
        status = WARN if odd else PASS
        note = f"; money field(s) {', '.join(odd)} hold a non-integer" if odd else ""
        yield Check(
            status,
            label,
            f"{rows}; sample maps cleanly{note}: {sample.external_id} "
            + _short(protocol.dumps(sample.payload).decode("utf-8")),
        )


def _targets(catalog: Any, conn_id: str | None, default: str) -> list[tuple[str, str | None]]:
    """(connection id, paused reason) of each target to check: `conn_id` alone when
    given, else every target of the map's `targets:` section, else `default`."""
    if conn_id is not None:
        return [(conn_id, None)]
    if catalog is None:
        return [(default, None)]
    return [(target.name, target.paused) for target in catalog.target_list(default)]


def _routes(catalog: Any, engine: sa.Engine, default: str) -> Check:
    from catalog_sync import extract

    targets = catalog.target_list(default)
    try:
        extract.check_routes(engine, catalog, targets)
    except CatalogSyncError as exc:
        return Check(FAIL, "targets", str(exc))
    return Check(
        PASS,
        "targets",
        f"{len(targets)} target(s), their filters run on the source: "
        + ", ".join(target.name for target in targets),
    )


def run_checks(conn_id: str | None = None) -> list[Check]:
    """Every check, in order; see the module docstring. Without `conn_id`, every target
    of the map (`pairing` and `backend` once each), or the default one."""
    from catalog_sync.config import load_config
    from catalog_sync.settings import load_settings
    from catalog_sync.source import create_source_engine

    default = load_settings().target
    try:
        catalog, problem = load_config(), None
    except CatalogSyncError as exc:
        catalog, problem = None, exc
    targets = _targets(catalog, conn_id, default)
    several = len(targets) > 1
    checks: list[Check] = []
    hooks = []
    for name, paused in targets:
        pairing, hook = _pairing(name)
        hooks.append(hook)
        if paused and pairing.status == PASS:
            pairing = Check(WARN, "pairing", f"{pairing.message}; paused in the map: {paused}")
        checks.append(pairing)
    checks.append(_fernet())
    for (name, _paused), hook in zip(targets, hooks, strict=True):
        backend = _backend(hook)
        if several and hook is None:
            backend = dataclasses.replace(backend, message=f"{name!r}: {backend.message}")
        checks.append(backend)
    if catalog is None:
        assert problem is not None
        return _redacted([*checks, Check(FAIL, "entities", str(problem))], hooks)
    enabled = [k for k in catalog.kinds if not catalog.kinds[k].is_static]
    checks.append(
        Check(
            PASS, "entities", f"{catalog.path.name}: {len(enabled)} kind(s): {', '.join(enabled)}"
        )
    )
    try:
        engine = create_source_engine()
    except CatalogSyncError as exc:
        return _redacted([*checks, Check(FAIL, "entities", f"the source database: {exc}")], hooks)
    try:
        checks.extend(_entity_checks(catalog, engine))
        if catalog.targets is not None:
            checks.append(_routes(catalog, engine, default))
    finally:
        engine.dispose()
    if not any(c.label == "host_profile" for c in checks):
        checks.append(
            Check(WARN, "host_profile", "no host_profile kind: the backend gets no capabilities")
        )
    return _redacted(checks, hooks)


def _redacted(checks: list[Check], hooks: list[Any]) -> list[Check]:
    """Every paired connection's secret masked once more (our messages never hold one)."""
    for hook in hooks:
        secret = getattr(getattr(hook, "settings", None), "secret_b64", "") if hook else ""
        if secret:
            checks = [
                dataclasses.replace(c, message=c.message.replace(secret, "***")) for c in checks
            ]
    return checks
