"""Provider metadata: tells Airflow about the `voicebot` connection type and its form."""

from __future__ import annotations

from typing import Any

from catalog_sync import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-catalog-sync",
        "name": "Catalog sync (VoiceBot ingest)",
        "description": "Signed catalog sync to a VoiceBot ingest backend.",
        "versions": [__version__],
        "connection-types": [
            {
                "hook-class-name": "catalog_sync.hooks.VoiceBotHook",
                "hook-name": "VoiceBot ingest",
                "connection-type": "voicebot",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "Ingest URL",
                        "login": "Tenant id",
                        "password": "Shared secret (base64)",
                    },
                    "placeholders": {
                        "host": "https://ingest.example.com",
                        "login": "tenant id from pairing",
                    },
                },
                "conn-fields": {
                    "site_url": {
                        "label": "Site URL",
                        "description": "The shop's public URL, sent as X-VoiceBot-Site-Url.",
                        "schema": {"type": ["string", "null"]},
                    },
                },
            }
        ],
    }
