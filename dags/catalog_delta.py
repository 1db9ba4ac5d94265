"""Every 15 minutes: send what changed in the shop since the last window (see catalog_sync).

The airflow dag is built by `catalog_sync.dag_factory` (these words also let Airflow's
safe-mode file scan pick this file up).
"""

from __future__ import annotations

from catalog_sync.dag_factory import build_delta_dag

dag = build_delta_dag()
