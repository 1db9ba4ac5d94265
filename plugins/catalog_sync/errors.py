"""The two kinds of failure the project distinguishes.

Everything that can go wrong ends in one of these, so callers (the DAG tasks, the
command line) decide "retry" or "stop and tell a human" from the type alone. They carry
no Airflow dependency: the receiver uses them too, and the DAG layer maps
`ConfigurationError` to Airflow's fail-fast exception.
"""

from __future__ import annotations


class CatalogSyncError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(CatalogSyncError):
    """Something a person must fix (a URL, a map, pairing, a 4xx answer); never retried."""


class TransientError(CatalogSyncError):
    """A failure worth retrying later (5xx, 429, timeouts, dropped connections)."""


class ProtocolError(ConfigurationError):
    """A request or response that breaks the wire contract of the ingest protocol."""
