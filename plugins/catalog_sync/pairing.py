"""`catalog-sync pair` / `unpair`: credentials in and out of an Airflow Connection.

The shared secret goes straight from the backend's answer into the connection's
password field, which Airflow encrypts with its Fernet key; it is never printed,
logged, or put in `extra`. Exit codes follow the CLI: 0 ok, 1 transient, 2 fix it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from catalog_sync import protocol
from catalog_sync.connections import env_var_name, find_connection
from catalog_sync.errors import ConfigurationError, TransientError

if TYPE_CHECKING:
    from catalog_sync.hooks import Pairing

# Airflow (imported by catalog_sync.hooks) takes seconds to import: the checks that need
# no Airflow run first, so a mistyped URL is refused at once.

EXIT_OK = 0
EXIT_TRANSIENT = 1
EXIT_CONFIG = 2
#: Someone waits at the terminal: wait 0.5 s, then 1 s between the three tries.
INTERACTIVE_BACKOFF_BASE = 0.5

_FERNET_HINT = (
    "set one first, e.g. export AIRFLOW__CORE__FERNET_KEY=\"$(python -c 'from cryptography."
    "fernet import Fernet; print(Fernet.generate_key().decode())')\", and give every Airflow "
    "process the same key"
)


def require_fernet() -> None:
    """Refuse to store a secret Airflow would keep in clear (no or a broken Fernet key)."""
    from airflow.configuration import conf
    from airflow.models.crypto import get_fernet
    from airflow.sdk.exceptions import AirflowException

    if not conf.get("core", "fernet_key", fallback=""):
        raise ConfigurationError(
            "Airflow has no Fernet key (AIRFLOW__CORE__FERNET_KEY), so the shared secret "
            f"would be stored in clear; {_FERNET_HINT}"
        )
    try:
        fernet = get_fernet()
    except AirflowException as exc:
        raise ConfigurationError(
            f"Airflow's Fernet key is unusable ({exc}); {_FERNET_HINT}"
        ) from None
    if not fernet.is_encrypted:
        raise ConfigurationError(f"Airflow would not encrypt connection passwords; {_FERNET_HINT}")


def store_connection(conn_id: str, pairing: Pairing, site_url: str) -> None:
    """Write the paired credentials to the metadata DB; Airflow encrypts the password."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    from catalog_sync.hooks import VoiceBotHook

    conn = Connection(
        conn_id=conn_id,
        conn_type=VoiceBotHook.conn_type,
        description="VoiceBot ingest credentials written by `catalog-sync pair`",
        host=pairing.ingest_url,
        login=pairing.tenant_id,
        password=pairing.shared_secret_b64,
        extra=json.dumps({"site_url": site_url}),
    )
    if not conn.is_encrypted:
        raise ConfigurationError(f"Airflow did not encrypt the secret; {_FERNET_HINT}")
    try:
        with create_session() as session:
            session.add(conn)
    except Exception as exc:  # the DB error's text may quote row values: name the type only
        raise ConfigurationError(
            f"paired as tenant {pairing.tenant_id}, but storing Airflow connection {conn_id!r} "
            f"failed ({type(exc).__name__}); fix the Airflow metadata database, then ask the "
            "backend for a new pair code and pair again"
        ) from None


def delete_connection(conn_id: str) -> bool:
    """Delete `conn_id` from the metadata DB; False when the DB holds no such row."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        result = session.execute(delete(Connection).where(Connection.conn_id == conn_id))
        return bool(result.rowcount)


def _check_site_url(site_url: str) -> None:
    parts = urlsplit(site_url)
    if site_url and (parts.scheme not in {"http", "https"} or not parts.netloc):
        raise ConfigurationError(
            f"the site URL {site_url!r} is not an absolute http(s):// URL; "
            "give the shop's public address, e.g. https://shop.example.com"
        )


def pair_command(code: str, base_url: str, site_url: str, conn_id: str) -> int:
    """Pair and store the credentials; every refusal happens before the code is spent."""
    base = protocol.check_url(base_url, "base URL")
    _check_site_url(site_url)
    from catalog_sync.hooks import VoiceBotHook

    require_fernet()
    if find_connection(conn_id) is not None:
        where = (
            f"the environment variable {env_var_name(conn_id)}"
            if os.environ.get(env_var_name(conn_id))
            else "Airflow"
        )
        raise ConfigurationError(
            f"connection {conn_id!r} already exists (defined in {where}); run "
            f"`catalog-sync unpair --conn-id {conn_id}` first, or pair under another --conn-id"
        )
    pairing = VoiceBotHook.pair(base, code, site_url, backoff_base=INTERACTIVE_BACKOFF_BASE)
    store_connection(conn_id, pairing, site_url)
    print(f"Paired with {base} and stored Airflow connection {conn_id!r}.")
    print(f"tenant id:  {pairing.tenant_id}")
    print(f"ingest URL: {pairing.ingest_url}")
    return EXIT_OK


def unpair_command(conn_id: str) -> int:
    """Signed unpair, then delete the local connection whatever the backend said."""
    from catalog_sync.hooks import PAIR_ATTEMPTS, VoiceBotHook

    conn = find_connection(conn_id)
    if conn is None:
        print(f"error: nothing is paired under connection id {conn_id!r}", file=sys.stderr)
        return EXIT_CONFIG
    if conn.conn_type != VoiceBotHook.conn_type:
        print(
            f"error: connection {conn_id!r} is a {conn.conn_type!r} connection, not a VoiceBot "
            "pairing; left untouched (check --conn-id)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    failure: Exception | None = None
    try:
        VoiceBotHook(
            conn_id,
            connection=conn,
            max_attempts=PAIR_ATTEMPTS,
            backoff_base=INTERACTIVE_BACKOFF_BASE,
        ).unpair()
    except (ConfigurationError, TransientError) as exc:
        failure = exc
    if not delete_connection(conn_id):
        print(
            f"error: connection {conn_id!r} is not in the Airflow database (it comes from "
            f"{env_var_name(conn_id)} or a secrets backend); remove it there"
            + ("" if failure else "; the backend has disconnected it"),
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if failure is not None:
        print(
            f"error: the backend was not told to disconnect: {failure}\n"
            f"The local connection {conn_id!r} was deleted anyway; tenant {conn.login} may "
            "still be paired on the backend until its operator disconnects it.",
            file=sys.stderr,
        )
        return EXIT_TRANSIENT
    print(f"Unpaired tenant {conn.login}; deleted Airflow connection {conn_id!r}.")
    return EXIT_OK
