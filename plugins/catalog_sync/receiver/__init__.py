"""The reference receiver: a real signed-ingest protocol v2 service that lands the catalog.

`store` holds the schema and every database operation, `service` the HTTP API,
`frontdoor` the access log and the test-only fault injection, `validate` the entity
rules. Nothing here imports Airflow, so `catalog-sync receiver` starts fast.
"""

from __future__ import annotations
