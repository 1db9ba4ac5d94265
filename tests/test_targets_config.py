"""The `targets:` section of the entity map, and the pause state of targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from catalog_sync.config import load_config
from catalog_sync.errors import ConfigurationError
from catalog_sync.state import StateStore
from targets_support import entity_map, membership


def _load(tmp_path: Path, targets: Any) -> Any:
    return load_config(entity_map(tmp_path / "map.yaml", targets))


def test_without_a_targets_section_there_is_one_target_with_every_kind(tmp_path: Path) -> None:
    catalog = load_config(Path(__file__).parents[1] / "include" / "entity_map.yaml")
    [target] = catalog.target_list("voicebot_default")
    assert (target.name, target.kinds, target.filters) == (
        "voicebot_default",
        tuple(catalog.kinds),
        {},
    )
    assert catalog.targets is None


def test_a_target_gets_its_kinds_filters_and_pause_reason(tmp_path: Path) -> None:
    catalog = _load(
        tmp_path,
        {
            "regional": {
                "kinds": ["product"],
                "filters": {"product": {"membership": membership("r"), "where": "price > 1"}},
                "paused": "migration",
            }
        },
    )
    target = catalog.target("regional", "voicebot_default")
    assert target.kinds == ("product",)
    assert target.paused == "migration"
    route = catalog.for_target(target).kinds["product"].route
    assert route.where == "price > 1"
    assert (route.membership.table, route.membership.value) == ("product_platforms", "r")


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({}, r"targets: no targets listed; fix: list at least one"),
        ({"a b": {}}, r'targets\."a b": .* is not a usable target name'),
        ({"shop": {"kind": ["product"]}}, r"unknown key 'kind' \(did you mean 'kinds'\?\)"),
        ({"shop": {"kinds": ["prodcut"]}}, r"kinds\.0: 'prodcut' is not a kind.*did you mean"),
        (
            {"shop": {"filters": {"category": {"where": "x"}}}},
            r"filters\.category: kind 'category' is not sent to this target",
        ),
        (
            {"shop": {"filters": {"product": {"membership": {"table": "t"}}}}},
            r"membership\.local_key: missing",
        ),
        ({"shop": {"filters": {"product": {}}}}, r"filters\.product: empty filter"),
        ({"shop": {"paused": True}}, r"paused: True is not a reason"),
    ],
)
def test_a_bad_targets_section_names_the_file_key_and_fix(
    tmp_path: Path, targets: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        _load(tmp_path, targets)
    assert "map.yaml" in str(raised.value) and "fix:" in str(raised.value)


def test_asking_for_an_unknown_target_suggests_the_close_one(tmp_path: Path) -> None:
    catalog = _load(tmp_path, {"shop_a": {}, "shop_b": {}})
    with pytest.raises(ConfigurationError, match=r"no target 'shopa' \(did you mean 'shop_a'"):
        catalog.target("shopa", "voicebot_default")


def test_a_pause_needs_a_reason_and_resume_lifts_it(store: StateStore) -> None:
    with pytest.raises(ConfigurationError, match="needs a reason"):
        store.pause_target("shop_b", "  ")
    store.pause_target("shop_b", "site migration")
    assert store.paused()["shop_b"][0] == "site migration"
    assert store.resume_target("shop_b") is True
    assert store.resume_target("shop_b") is False
    assert store.paused() == {}
