"""The value conversions behind the built-in value specs (pure functions, no database)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import MappingProxyType

import pytest

from catalog_sync import values


@pytest.mark.parametrize(
    ("amount", "minor"),
    [
        (Decimal("0.005"), 1),
        (Decimal("1.005"), 101),
        (Decimal("199.99"), 19999),
        (Decimal("-2.5"), -250),
        (Decimal("-0.005"), -1),
        ("1.005", 101),  # SQLite may hand back text
        (1.005, 101),  # ... or a REAL: read through its repr, never float arithmetic
        (0.005, 1),
        (7, 700),
    ],
)
def test_money_rounds_half_away_from_zero_from_the_exact_decimal(amount: object, minor: int):
    assert values.money_minor(amount) == minor


@pytest.mark.parametrize(
    ("amount", "decimals", "minor"),
    [
        # Already whole once scaled (the usual column): no rounding step at all.
        (Decimal("12.3"), 2, 1230),
        (Decimal("12.300"), 2, 1230),
        (Decimal("1E+3"), 2, 100000),
        (Decimal("0E-100"), 2, 0),
        (Decimal("-0.00"), 2, 0),
        (Decimal("-12.345"), 3, -12345),
        (Decimal("90071992547409.91"), 2, 2**53 - 1),
        (Decimal("9007199254740.991"), 3, 2**53 - 1),
        (b"-3.25", 2, -325),
        (19.99, 2, 1999),
        # Not whole: rounded half away from zero, from the exact amount.
        (Decimal("-2.5"), 0, -3),
        (Decimal("2.5"), 0, 3),
        ("1.5E-3", 3, 2),
        (Decimal("0." + "4" * 70 + "5"), 2, 44),
        (Decimal("1." + "0" * 80 + "5"), 2, 100),
    ],
)
def test_money_whole_and_rounded_amounts(amount: object, decimals: int, minor: int):
    assert values.money_minor(amount, decimals) == minor


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (
            Decimal("90071992547409.92"),
            "amount Decimal('90071992547409.92') is absurdly large (9007199254740992 minor units)",
        ),
        (
            Decimal("-90071992547409.92"),
            "amount Decimal('-90071992547409.92') is absurdly large"
            " (-9007199254740992 minor units)",
        ),
        (Decimal("0E+100"), "amount Decimal('0E+100') is absurdly large"),
        (Decimal("NaN"), "Decimal('NaN') is not a finite amount"),
    ],
)
def test_money_names_the_absurd_amount(amount: object, message: str):
    with pytest.raises(values.DataError) as caught:
        values.money_minor(amount)
    assert str(caught.value) == message


def test_money_keeps_null():
    assert values.money_minor(None) is None


@pytest.mark.parametrize("amount", [Decimal("NaN"), Decimal("Infinity"), float("inf"), "1e40"])
def test_money_refuses_non_finite_and_absurd_amounts(amount: object):
    with pytest.raises(values.DataError):
        values.money_minor(amount)


@pytest.mark.parametrize("amount", ["abc", True, b"x", [1]])
def test_money_on_a_non_numeric_value_is_a_spec_mismatch(amount: object):
    with pytest.raises(values.SpecMismatch):
        values.money_minor(amount)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("199.99"), "199.99"),
        (100.0, "100.00"),
        ("1.005", "1.01"),
        (Decimal("-0.5"), "-0.50"),
    ],
)
def test_decimal_string_is_fixed_point_with_half_away_from_zero(amount: object, text: str):
    assert values.decimal_string(amount) == text


def test_html_to_text_strips_tags_unescapes_entities_and_collapses_whitespace():
    html = "<h2>Kettle</h2>\n<p>Fast &amp; quiet&nbsp;kettle.</p><ul><li>1.7&#8239;l</li></ul>"
    # Unicode spaces (&nbsp;, narrow no-break) collapse like any whitespace.
    assert values.html_to_text(html) == "Kettle Fast & quiet kettle. 1.7 l"


def test_html_to_text_joins_inline_tags_without_spaces():
    assert values.html_to_text("  <b>Str</b>ong <i>tea</i>  ") == "Strong tea"


def test_html_to_text_drops_scripts_styles_and_comments():
    html = "<p>a</p><script>alert('x')</script><style>p{}</style><!-- note -->b"
    assert values.html_to_text(html) == "a b"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        # The drop step runs only when its hint is there: every case of it still counts.
        ("<Style>p{}</STYLE>c<template>t</template>d", "c d"),
        ("<p>a</p><b>b</b><!-- c", "a b"),
        ("a<\u017fcript>x</script>b", "a"),  # the long s that IGNORECASE matches as `s`
        ("<table><tr><td>a</td><td>b</td></tr></table>", "a b"),
        # Block tags (spaces) and look-alikes that are not block tags (joined).
        ("<TH>x</TH><thead>y</thead><Pre>z</pre><prex>w", "x y z w"),
        ("<h1>a</h1><h7>b</h7><hr/>c<header>d</header>", "a b c d"),
        ("a<span>b</span><dd>c</dd><ddd>d", "ab c d"),
    ],
)
def test_html_to_text_block_tags_and_dropped_parts(html: str, text: str):
    assert values.html_to_text(html) == text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("Tom &amp;amp; Jerry &amp; co", "Tom &amp; Jerry & co"),  # only `&amp;`: one pass
        ("&amp; &lt;b&gt;", "& <b>"),
        ("R&D &amp; more", "R&D & more"),
    ],
)
def test_html_to_text_unescapes_each_entity_once(html: str, text: str):
    assert values.html_to_text(html) == text


@pytest.mark.parametrize(
    ("label", "slug"),
    [("Nike Air", "nike-air"), ("Колір", "колір"), (" --Size/EU-- ", "size-eu"), ("Розмір 2", "2")],
)
def test_slug_rule_with_the_cyrillic_fallback(label: str, slug: str):
    assert values.slugify(label) == slug
    assert values.slugify(label) == slug  # the second time from the cache


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (b"Nike", "cannot use a string pattern on a bytes-like object"),
        (["a"], "expected string or bytes-like object, got 'list'"),  # unhashable: no cache
    ],
)
def test_slug_of_a_non_text_label_fails_as_the_regex_does(label: object, message: str):
    with pytest.raises(TypeError) as caught:
        values.slugify(label)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_attributes_are_trimmed_deduplicated_and_empty_ones_dropped():
    raw = (
        '[{"name": " Колір ", "values": [" Red ", "Red", "", null, "Blue"]},'
        ' {"name": "Size", "values": []}]'
    )
    assert values.attributes(raw) == [{"name": "Колір", "slug": "колір", "values": ["Red", "Blue"]}]


def test_attributes_accept_an_object_of_name_to_values():
    assert values.attributes({"Nike Air": "Max", "Size": ["M", 42]}) == [
        {"name": "Nike Air", "slug": "nike-air", "values": ["Max"]},
        {"name": "Size", "slug": "size", "values": ["M", "42"]},
    ]


def test_an_attribute_without_a_name_is_a_row_error():
    with pytest.raises(values.DataError, match="no name"):
        values.attributes([{"values": ["Red"]}])


@pytest.mark.parametrize(
    ("value", "status"),
    [(True, "instock"), (False, "outofstock"), (1, "instock"), (0, "outofstock"), (None, None)],
)
def test_stock_status_from_a_boolean(value: object, status: str | None):
    assert values.stock_status(value) == status


def test_stock_status_from_a_quantity():
    assert [values.stock_status(q) for q in (5, 0, -1, Decimal("0.5"))] == [
        "instock",
        "outofstock",
        "outofstock",
        "instock",
    ]


def test_booleans_as_the_three_databases_return_them():
    assert [values.to_bool(v) for v in (True, 1, 0, "t", "0", None)] == [
        True,
        True,
        False,
        True,
        False,
        None,
    ]


def test_timestamp_is_utc_iso_8601_whatever_the_driver_returns():
    naive = dt.datetime(2024, 1, 2, 3, 4, 5, 600)
    aware = dt.datetime(2024, 1, 2, 5, 4, 5, 600, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert {
        values.timestamp(naive),
        values.timestamp(aware),
        values.timestamp("2024-01-02 03:04:05.000600"),
    } == {"2024-01-02T03:04:05.000600Z"}


def test_json_path_walks_objects_and_arrays_and_gives_null_when_missing():
    doc = '{"seo": {"title": "T"}, "images": [{"url": "/a.jpg"}]}'
    assert values.json_path(doc, ("seo", "title")) == "T"
    assert values.json_path(doc, ("images", "0", "url")) == "/a.jpg"
    assert values.json_path(doc, ("seo", "missing", "x")) is None


def test_json_path_and_attributes_take_any_mapping_not_only_dicts():
    assert values.json_path({"seo": MappingProxyType({"title": "T"})}, ("seo", "title")) == "T"
    assert values.attributes([MappingProxyType({"name": "Size", "options": ["M"]})]) == [
        {"name": "Size", "slug": "size", "values": ["M"]}
    ]


def test_invalid_json_is_a_row_error():
    with pytest.raises(values.DataError, match="not valid JSON"):
        values.json_value("{broken")


def test_variant_options_skip_null_and_empty_axes():
    assert values.variant_options('{"Color": " Red ", "Size": "", "Fit": null}') == {"Color": "Red"}


def test_string_list_cleans_a_json_array():
    assert values.string_list('[" Red", "Red", "Blue", ""]') == ["Red", "Blue"]
