"""Loading the entity map: every bad map fails with the file, the key path and the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from catalog_sync import config as cfg
from catalog_sync.errors import ConfigurationError

TAG = """\
  tag:
    table: tags
    map:
      payload.name: name
"""


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        cfg.load_config(write_map(tmp_path, text))
    return str(info.value)


def test_the_demo_map_loads_with_every_demo_kind():
    catalog = cfg.load_config(cfg.DEFAULT_CONFIG)
    assert list(catalog.kinds) == [
        "product",
        "variation",
        "category",
        "tag",
        "attribute",
        "page",
        "post",
        "menu",
        "menu_item",
        "site",
        "shipping_method",
        "payment_method",
        "host_profile",
    ]


def test_without_an_argument_the_map_comes_from_the_environment(tmp_path, monkeypatch):
    path = write_map(tmp_path, "producer: shop2\nkinds:\n" + TAG)
    monkeypatch.setenv(cfg.ENV_CONFIG, str(path))
    assert cfg.load_config().producer == "shop2"


def test_without_the_environment_variable_the_demo_map_is_the_default(monkeypatch):
    monkeypatch.delenv(cfg.ENV_CONFIG, raising=False)
    assert cfg.load_config().path == cfg.DEFAULT_CONFIG


def test_defaults_for_producer_currency_and_sync_settings(tmp_path):
    catalog = cfg.load_config(write_map(tmp_path, "kinds:\n" + TAG))
    assert (catalog.producer, catalog.currency, catalog.sync) == (
        "laravel",
        "UAH",
        cfg.SyncSettings(page_size=1000, safety_lag_seconds=5, overlap_seconds=300),
    )


def test_kind_defaults_primary_key_id_and_external_id_from_it(tmp_path):
    kind = cfg.load_config(write_map(tmp_path, "kinds:\n" + TAG)).kinds["tag"]
    assert (kind.primary_key, kind.external_id, kind.watermark) == ("id", "id", None)


def test_a_missing_file_names_the_environment_variable(tmp_path):
    with pytest.raises(ConfigurationError, match="CATALOG_SYNC_CONFIG"):
        cfg.load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_file(tmp_path):
    message = load_error(tmp_path, "kinds: [\n")
    assert "map.yaml" in message and "not valid YAML" in message


def test_unknown_kind_names_the_key_and_lists_the_kinds(tmp_path):
    message = load_error(tmp_path, "kinds:\n  prodcut:\n    table: products\n")
    assert "kinds.prodcut: unknown kind 'prodcut' (did you mean 'product'?)" in message
    assert "fix: use one of product, variation" in message


def test_a_kind_listed_twice_is_refused(tmp_path):
    message = load_error(tmp_path, "kinds:\n" + TAG + TAG)
    assert "duplicate key 'tag'" in message


def test_a_typo_in_a_kind_key_suggests_the_right_one(tmp_path):
    message = load_error(tmp_path, "kinds:\n" + TAG + "    watermak: updated_at\n")
    assert "kinds.tag.watermak: unknown key 'watermak' (did you mean 'watermark'?)" in message


def test_a_typo_in_a_top_level_key_is_refused(tmp_path):
    message = load_error(tmp_path, "prodcuer: x\nkinds:\n" + TAG)
    assert "prodcuer: unknown key" in message and "did you mean 'producer'?" in message


def test_a_kind_needs_exactly_one_row_source(tmp_path):
    message = load_error(
        tmp_path, "kinds:\n  tag:\n    table: tags\n    select: SELECT 1\n    map: {}\n"
    )
    assert "kinds.tag: needs exactly one of table, select or source (got table, select)" in message


def test_map_keys_must_be_payload_dot_paths(tmp_path):
    message = load_error(tmp_path, "kinds:\n  tag:\n    table: tags\n    map:\n      name: name\n")
    assert "kinds.tag.map.name: map keys are payload dot paths" in message
    assert "fix: write 'payload.name'" in message


def test_an_unknown_value_spec_is_refused_with_a_suggestion(tmp_path):
    message = load_error(
        tmp_path,
        "kinds:\n  tag:\n    table: tags\n    map:\n      payload.name: {colum: name}\n",
    )
    assert 'kinds.tag.map."payload.name": a value spec needs exactly one of' in message
    assert "did you mean 'column'?" in message


def test_an_unknown_option_of_a_value_spec_is_refused(tmp_path):
    message = load_error(
        tmp_path,
        "kinds:\n  tag:\n    table: tags\n    map:\n"
        "      payload.name: name\n      payload.p: {money: price, decimal: 2}\n",
    )
    assert 'kinds.tag.map."payload.p"' in message


def test_a_required_payload_key_that_is_not_mapped_is_refused(tmp_path):
    message = load_error(
        tmp_path, "kinds:\n  tag:\n    table: tags\n    map:\n      payload.s: s\n"
    )
    assert "kinds.tag.map: the required payload key payload.name of kind 'tag' is not mapped" in (
        message
    )
    assert 'fix: add "payload.name"' in message


def test_dot_paths_that_contain_each_other_clash(tmp_path):
    message = load_error(
        tmp_path,
        "kinds:\n  tag:\n    table: tags\n    map:\n"
        "      payload.name: name\n      payload.seo: seo\n      payload.seo.title: t\n",
    )
    assert 'kinds.tag.map."payload.seo.title": clashes with payload.seo' in message


def test_an_unknown_variable_is_refused(tmp_path):
    message = load_error(
        tmp_path,
        "kinds:\n  tag:\n    table: tags\n    map:\n"
        "      payload.name: name\n      payload.u: {var: site_url}\n",
    )
    assert "unknown variable 'site_url'" in message and "vars:" in message


def test_a_reference_to_an_unknown_kind_is_refused(tmp_path):
    message = load_error(
        tmp_path,
        "kinds:\n  tag:\n    table: tags\n    map:\n"
        "      payload.name: name\n      payload.p: {ref: categroy, column: parent_id}\n",
    )
    assert "unknown kind 'categroy' (did you mean 'category'?)" in message


def test_a_broken_template_is_refused(tmp_path):
    message = load_error(
        tmp_path,
        "kinds:\n  tag:\n    table: tags\n    map:\n"
        "      payload.name: name\n      payload.u: {template: '/t/{slug'}\n",
    )
    assert 'payload.u".template: broken template' in message


def test_an_unknown_capability_is_a_configuration_error(tmp_path):
    message = load_error(
        tmp_path, "kinds:\n  host_profile:\n    capabilities: [catalog.search, cart.ad]\n"
    )
    assert "kinds.host_profile.capabilities.1: unknown capability 'cart.ad'" in message
    assert "did you mean 'cart.add'?" in message


def test_an_invalid_producer_is_refused(tmp_path):
    message = load_error(tmp_path, "producer: My Shop\nkinds:\n" + TAG)
    assert "producer: 'My Shop' is not a valid producer" in message


def test_sync_settings_must_be_positive_integers(tmp_path):
    message = load_error(tmp_path, "sync:\n  page_size: 0\nkinds:\n" + TAG)
    assert "sync.page_size: 0 is not an integer >= 1" in message


def test_translations_need_a_locale_placeholder(tmp_path):
    message = load_error(
        tmp_path,
        "kinds:\n" + TAG + "    translations:\n      locales: [en, uk]\n"
        "      columns: {name: name_uk}\n",
    )
    assert "kinds.tag.translations.columns.name: 'name_uk' does not contain {locale}" in message


def test_the_base_locale_must_be_listed(tmp_path):
    message = load_error(
        tmp_path,
        "kinds:\n" + TAG + "    translations:\n      locales: [en, uk]\n      base: de\n"
        "      columns: {name: 'name_{locale}'}\n",
    )
    assert "kinds.tag.translations.base: 'de' is not in locales" in message


def test_a_malformed_dotted_path_is_refused(tmp_path):
    message = load_error(tmp_path, "kinds:\n  cpt:\n    source: not_dotted\n")
    assert "kinds.cpt.source: 'not_dotted' is not a dotted path" in message


def test_map_order_is_kept(tmp_path):
    catalog = cfg.load_config(
        write_map(
            tmp_path,
            "kinds:\n  tag:\n    table: tags\n    map:\n"
            "      payload.z: z\n      payload.name: name\n      payload.a: a\n",
        )
    )
    assert list(catalog.kinds["tag"].map) == ["payload.z", "payload.name", "payload.a"]
