"""Airflow discovers the `voicebot` connection type through the provider entry point.

Each check runs in a fresh interpreter, so what is seen is what an Airflow process
discovers from the installed package metadata, not state left by another test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_DISCOVER = """
import json, warnings
warnings.simplefilter("ignore")
from importlib.metadata import entry_points
from airflow.providers_manager import ProvidersManager
from airflow.sdk import Connection
from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

core = ProvidersManager()
runtime_hook = ProvidersManagerTaskRuntime().hooks.get("voicebot")
hook = Connection(conn_id="vb_probe", conn_type="voicebot").get_hook()
print(json.dumps({
    "entry_points": sorted(
        ep.value for ep in entry_points(group="apache_airflow_provider")
        if ep.value.startswith("catalog_sync")
    ),
    "provider": core.providers["airflow-catalog-sync"].version
    if "airflow-catalog-sync" in core.providers else None,
    "runtime_hook": runtime_hook.hook_class_name if runtime_hook else None,
    "hook_type": f"{type(hook).__module__}.{type(hook).__name__}",
    "hook_conn_id": hook.voicebot_conn_id,
    "behaviour": core.field_behaviours.get("voicebot"),
    "widgets": sorted(k for k in core.connection_form_widgets if "voicebot" in k),
}))
"""


@pytest.fixture(scope="module")
def discovered(airflow_env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _DISCOVER],
        env=airflow_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_package_declares_the_provider_entry_point(discovered: dict) -> None:
    assert discovered["entry_points"] == ["catalog_sync.provider:get_provider_info"]


def test_providers_manager_accepts_the_provider_info(discovered: dict) -> None:
    from catalog_sync import __version__

    assert discovered["provider"] == __version__


def test_the_voicebot_connection_type_maps_to_the_hook(discovered: dict) -> None:
    assert discovered["runtime_hook"] == "catalog_sync.hooks.VoiceBotHook"


def test_a_voicebot_connection_builds_a_voicebot_hook(discovered: dict) -> None:
    assert discovered["hook_type"] == "catalog_sync.hooks.VoiceBotHook"
    assert discovered["hook_conn_id"] == "vb_probe"


def test_the_connection_form_relabels_the_fields(discovered: dict) -> None:
    assert discovered["behaviour"]["relabeling"] == {
        "host": "Ingest URL",
        "login": "Tenant id",
        "password": "Shared secret (base64)",
    }
    assert set(discovered["behaviour"]["hidden_fields"]) == {"schema", "port"}


def test_the_connection_form_has_a_site_url_field(discovered: dict) -> None:
    assert discovered["widgets"] == ["extra__voicebot__site_url"]
