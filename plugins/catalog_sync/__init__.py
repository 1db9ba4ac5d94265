"""Airflow catalog sync: keep an AI sales assistant's backend in step with a shop."""

from __future__ import annotations

__version__ = "0.1.0"

#: Sent as `X-VoiceBot-Plugin-Version` so the backend knows which producer spoke.
PLUGIN_VERSION = f"airflow-catalog-sync/{__version__}"
