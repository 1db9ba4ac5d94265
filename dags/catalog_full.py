"""Nightly: send the whole catalog as one snapshot; the receiver deletes what is gone.

The airflow dag is built by `catalog_sync.dag_factory` (these words also let Airflow's
safe-mode file scan pick this file up).
"""

from __future__ import annotations

from catalog_sync.dag_factory import build_full_dag

dag = build_full_dag()
