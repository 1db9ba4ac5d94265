"""Run params: what Airflow validates at trigger time, and what `check_conf` adds."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import pytest
from airflow.exceptions import ParamValidationError

from catalog_sync import dag_factory, params
from catalog_sync.errors import ConfigurationError

KINDS = ["product", "category", "page"]  # check_conf tests; the DAGs use the demo map
TARGETS = ["shop_a", "shop_b"]
#: `check_conf` with the names of the map above.
TARGETS_ORDER = ("shop_a", "shop_b")
check = functools.partial(params.check_conf, kinds=KINDS, targets=TARGETS)
NOW = dt.datetime(2025, 6, 1, 12, 0, 0)


@functools.cache
def scheduler_dag(mode: str) -> Any:
    """The DAG as the scheduler and API server see it (serialized and back)."""
    from airflow.serialization.serialized_objects import DagSerialization

    build = dag_factory.build_delta_dag if mode == params.DELTA else dag_factory.build_full_dag
    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(build()))


def validate(mode: str, conf: dict) -> dict:
    """What `create_dagrun` does with a run's conf (Airflow 3.3, serialization/.../dag.py)."""
    return scheduler_dag(mode).params.deep_merge(conf).validate()


def test_airflow_refuses_a_since_that_is_not_a_date_time() -> None:
    with pytest.raises(ParamValidationError, match="since"):
        validate(params.DELTA, {"since": "yesterday"})


def test_airflow_accepts_a_null_or_rfc3339_since() -> None:
    assert validate(params.DELTA, {"since": None})["since"] is None
    assert validate(params.DELTA, {"since": "2025-01-01T00:00:00Z"})["since"]


def test_airflow_refuses_an_unknown_kind() -> None:
    with pytest.raises(ParamValidationError, match="kinds"):
        validate(params.DELTA, {"kinds": ["product", "nope"]})


def test_airflow_refuses_a_non_boolean_dry_run() -> None:
    with pytest.raises(ParamValidationError, match="dry_run"):
        validate(params.FULL, {"dry_run": "yes"})


def test_airflow_cannot_refuse_an_unknown_key() -> None:
    """The reason `check_conf` exists: the merge adds unknown keys as schema-less Params."""
    assert validate(params.DELTA, {"sincee": "x"})["sincee"] == "x"


def test_check_conf_refuses_an_unknown_key_and_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown param\(s\) sincee.*since, dry_run"):
        check({"sincee": "x"}, mode=params.DELTA, now=NOW)


def test_check_conf_refuses_since_on_the_full_dag_and_says_why() -> None:
    with pytest.raises(ConfigurationError, match="full run always sends the whole catalog"):
        check({"since": "2025-01-01T00:00:00Z"}, mode=params.FULL)


def test_check_conf_refuses_a_since_in_the_future() -> None:
    with pytest.raises(ConfigurationError, match="in the future"):
        check(
            {"since": "2025-06-01T12:00:01Z"},
            mode=params.DELTA,
            kinds=KINDS,
            targets=TARGETS,
            now=NOW,
        )


def test_check_conf_refuses_a_since_without_offset() -> None:
    with pytest.raises(ConfigurationError, match="no UTC offset"):
        check({"since": "2025-01-01T00:00:00"}, mode=params.DELTA)


def test_check_conf_refuses_an_unknown_kind_and_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown kind.*nope.*product, category, page"):
        check({"kinds": ["nope"]}, mode=params.FULL)


def test_check_conf_converts_since_to_naive_utc() -> None:
    run = check(
        {"since": "2025-01-01T02:00:00+02:00"},
        mode=params.DELTA,
        kinds=KINDS,
        targets=TARGETS,
        now=NOW,
    )
    assert run.since == dt.datetime(2025, 1, 1, 0, 0, 0)


def test_check_conf_keeps_the_map_order_of_selected_kinds_and_defaults_to_all() -> None:
    assert check({"kinds": ["page", "product"]}, mode=params.DELTA).kinds == (
        "product",
        "page",
    )
    assert check({}, mode=params.DELTA).kinds == tuple(KINDS)


def test_airflow_refuses_an_unknown_target() -> None:
    with pytest.raises(ParamValidationError, match="targets"):
        validate(params.FULL, {"targets": ["nowhere"]})


def test_check_conf_refuses_an_unknown_target_and_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown target\(s\) shop_c; .* shop_a, shop_b"):
        check({"targets": ["shop_c"]}, mode=params.DELTA)


def test_check_conf_keeps_the_named_targets_in_map_order() -> None:
    assert check({"targets": ["shop_b", "shop_a"]}, mode=params.FULL).targets == TARGETS_ORDER
    assert check({}, mode=params.FULL).targets == ()
