"""The compiled functions (catalog_sync/_speedups.c) against their definitions in Python.

`values._html_to_text_py` defines the text; the compiled function must give the same text
or None (then Python runs). These tests compare the two on chosen and generated text,
in all three string widths, and check that None is kept for what needs the regular
expressions' Unicode case rules. `pushdown._join_line_py` defines a snapshot line; the
compiled `join_line` must give the same bytes, and `slug_list` the same list as
`pushdown._slug_list_py`. `json_path_text` must give the JSON of what the slot's Python
(`orjson.loads`, `values.json_path`) finds, or None.
"""

from __future__ import annotations

import html
import os
import random
import re
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from catalog_sync import pushdown, values

REQUIRE = os.environ.get("CATALOG_SYNC_REQUIRE_SPEEDUPS") == "1"

Compiled = Callable[[str, Callable[[str], str]], "str | None"]


def _built(function: Any, python: str) -> Any:
    """`function` where the compiled module gives it; else the test fails (where
    CATALOG_SYNC_REQUIRE_SPEEDUPS=1, as in CI) or is skipped, saying what runs instead."""
    if function is None:
        message = (
            "catalog_sync._speedups is not built (no C compiler when the package was "
            f"installed): {python}"
        )
        if REQUIRE:
            pytest.fail(f"{message} (CATALOG_SYNC_REQUIRE_SPEEDUPS=1 makes it mandatory)")
        pytest.skip(message)
    return function


@pytest.fixture(scope="module")
def compiled() -> Compiled:
    function = values._compiled_html_to_text
    return _built(function, "values.html_to_text runs in Python")  # type: ignore[no-any-return]


def _both(compiled: Compiled, text: str) -> tuple[str | None, str]:
    return compiled(text, html.unescape), values._html_to_text_py(text)


CASES = [
    "",
    "   ",
    "plain text, no markup",
    "<h2>Quiet Mug 5</h2>\n<p>A warm <b>mug</b> for every day &amp; home.</p><ul><li>a</li></ul>",
    "<p>Тепла <b>чашка</b> &amp; дім</p>",  # two bytes a character
    "<p>Mug \U0001f375 &amp; tea</p><br>",  # four bytes a character
    "a &nbsp; b &#8239; c &lt;p&gt; &amp;amp; &unknown; &",  # entities: Python's unescape
    "Tom &amp;amp; Jerry &amp; co",
    "R&D &amp; more",
    "&amp",
    "<p>a</p><script>alert('<p>x</p>')</script><style>p{}</style><!-- <p> -->b",
    "<Style>p{}</STYLE>c<template>t</template>d<SCRIPT type=x>y</script >e",
    "<script>never closed <p>a</p>",
    "<script>a</scripts></script>b",
    "<script>a</script\n\t>b",
    "<script>a</ script>b</script>c",
    "<scripts>a</scripts>b",
    "<script_x>a</script_x>b",
    "<script",
    "<!-- never closed <p>a</p>",
    "<!---->a<!-->b-->c<!--->d-->e",
    "<!x>a<?php echo 1 ?>b<!DOCTYPE html>c",
    "<table><tr><td>a</td><td>b</td></tr></table>",
    "<TH>x</TH><thead>y</thead><Pre>z</pre><prex>w",
    "<h1>a</h1><h7>b</h7><hr/>c<header>d</header>",
    "a<span>b</span><dd>c</dd><ddd>d",
    "<p\nclass='x'>a</p\n><BR/>b<br\t/>c",
    "<blockquote>a</blockquote><figcaption>b</figcaption><FIGURE>c</Figure>",
    "</p>a<//p>b</ p>c< p>d<>e</>f",
    "a < b > c <= d >= e",
    "<<p>>a<<b>>",
    "<a href='x>y'>link</a>",
    "<p>é</p><pé>x</pé><p_>y</p_><p1>z",
    "<1p>a</1p><_p>b",
    "x\u2028y\u00a0z\x1cw\x85v\u3000u",
    "\t\n <p> \u00a0 </p> \n",
    "<" * 50 + "p" + ">" * 3,
    "<p" * 400,  # no `>` at all, and longer than the stack buffer
    "<p>" + "word " * 500 + "</p>" + "&amp;" * 100,
    "<li>I\u015f\u0131k</li><p>\u0130stanbul \u017f \u212a</p>",  # special letters, not in a name
]


@pytest.mark.parametrize("text", CASES)
def test_the_compiled_text_is_the_python_text(compiled: Compiled, text: str) -> None:
    fast, slow = _both(compiled, text)
    assert fast is not None
    assert fast == slow


@pytest.mark.parametrize(
    "text",
    [
        "a<\u017fcript>x</script>b",  # long s: IGNORECASE reads it as `s`
        "<\u017fection>a</section>",
        "<l\u0131>a</l\u0131>",  # dotless i
        "<L\u0130>a</L\u0130>",  # dotted capital I
        "<blockquote>a</bloc\u212aquote>",  # Kelvin sign
        "<script>a</scr\u0130pt>b",
        "<p>a</p><t\u0131>b",
    ],
)
def test_a_special_letter_in_a_tag_name_is_left_to_python(compiled: Compiled, text: str) -> None:
    assert compiled(text, html.unescape) is None
    assert values.html_to_text(text) == values._html_to_text_py(text)


def test_every_letter_the_regex_folds_to_ascii_is_left_to_python(compiled: Compiled) -> None:
    # Found from Python's own regex engine, so a new Unicode version cannot slip past.
    every = "".join(chr(c) for c in range(0x80, sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    folding = set(re.findall(r"(?i)[a-z]", every))
    assert folding  # U+0130, U+0131, U+017F and U+212A on Python 3.11
    for letter in sorted(folding):
        assert compiled(f"<p{letter}>x", html.unescape) is None, hex(ord(letter))
        assert compiled(f"<{letter}>x", html.unescape) is None, hex(ord(letter))


def _generated(rng: random.Random, alphabet: list[str]) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))


def test_generated_markup_gives_the_python_text(compiled: Compiled) -> None:
    tokens = [
        "<", ">", "/", "!", "-", "--", "?", "=", '"', "'", " ", "\t", "\n", "\u00a0",
        "p", "P", "b", "br", "li", "ul", "h1", "h7", "td", "th", "pre", "div", "span",
        "script", "SCRIPT", "style", "template", "<!--", "-->", "</", "<p>", "</p>",
        "&", "&amp;", "&nbsp;", "&lt;", "amp;", "x", "_", "1", "é", "ж", "\U0001f375",
    ]  # fmt: skip
    rng = random.Random(8)
    compared = 0
    for _ in range(20000):
        text = _generated(rng, tokens)
        fast, slow = _both(compiled, text)
        assert fast == slow, text
        compared += 1
    assert compared == 20000  # none left to Python: no special letter in the tokens


def test_generated_markup_with_special_letters_is_right_or_left_to_python(
    compiled: Compiled,
) -> None:
    tokens = ["<", ">", "/", "p", "l", "s", "cript", "\u0131", "\u0130", "\u017f", "\u212a", " "]
    rng = random.Random(9)
    compiled_count = 0
    for _ in range(5000):
        text = _generated(rng, tokens)
        fast, slow = _both(compiled, text)
        if fast is not None:
            assert fast == slow, text
            compiled_count += 1
    assert compiled_count > 0


# --- join_line ----------------------------------------------------------------------------

Join = Callable[..., bytes]


@pytest.fixture(scope="module")
def compiled_join() -> Join:
    join = None if pushdown.join_line is pushdown._join_line_py else pushdown.join_line
    return _built(join, "pushdown.join_line runs in Python")  # type: ignore[no-any-return]


C, RAW, ESC, SLOT = pushdown.CONST, pushdown.RAW, pushdown.ESCAPED, pushdown.SLOT


def _join_both(join: Join, row: tuple, ops: tuple, slots: tuple) -> tuple[bytes, bytes]:
    """Each way with its own texts list, both starting empty."""
    ctx = object()
    fast = join(row, ops, [None] * len(slots), slots, ctx)
    return fast, pushdown._join_line_py(row, ops, [None] * len(slots), slots, ctx)


def test_every_character_is_written_as_orjson_writes_it(compiled_join: Join) -> None:
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    for start in range(0, len(every), 4096):
        text = every[start : start + 4096]
        fast, slow = _join_both(compiled_join, (text,), (ESC, 0), ())
        assert fast == slow == orjson.dumps(text)


def test_a_line_of_every_op_is_the_python_line(compiled_join: Join) -> None:
    row = ('"quoted"\n', None, "[1,2]", "Тепла чашка \U0001f375", "")
    ops = (C, '{"a":', ESC, 0, C, ',"b":', ESC, 1, C, ',"c":', RAW, 2, C, ',"d":')
    ops += (SLOT, 0, C, ',"e":', ESC, 3, C, ',"f":', ESC, 4, C, ',"g":', SLOT, 0, C, "}")
    calls: list[tuple] = []

    def slot(row: tuple, ctx: object) -> str:
        calls.append(row)
        return '"slot é"'

    fast, slow = _join_both(compiled_join, row, ops, (slot,))
    assert fast == slow
    assert orjson.loads(fast)["a"] == '"quoted"\n' and orjson.loads(fast)["b"] is None
    assert len(calls) == 2  # once a way: the second use of the slot reads `texts`


def test_constants_and_slot_texts_may_be_utf8_bytes(compiled_join: Join) -> None:
    """A slot hands over orjson's bytes as they are (no str to decode and encode again)."""
    row = ("x",)
    as_str = compiled_join(row, (C, '{"é":', SLOT, 0, C, "}"), ['"ж"'], (None,), object())
    as_bytes = compiled_join(
        row, (C, '{"é":'.encode(), SLOT, 0, C, b"}"), ['"ж"'.encode()], (None,), object()
    )
    python = pushdown._join_line_py(
        row, (C, '{"é":'.encode(), SLOT, 0, C, b"}"), ['"ж"'.encode()], (None,), object()
    )
    assert as_str == as_bytes == python == '{"é":"ж"}'.encode()


def test_a_slot_computed_for_one_line_is_reused_by_the_next(compiled_join: Join) -> None:
    texts: list[str | None] = [None, "kept"]
    line = compiled_join(("x",), (SLOT, 1, C, "-", ESC, 0), texts, (None, None), object())
    assert line == b'kept-"x"'


def test_a_slot_that_raises_lets_the_exception_through(compiled_join: Join) -> None:
    class Fallback(Exception):
        pass

    def failing(row: tuple, ctx: object) -> str:
        raise Fallback

    with pytest.raises(Fallback):
        compiled_join(("x",), (C, "a", SLOT, 0), [None], (failing,), object())


def test_generated_lines_are_the_python_lines(compiled_join: Join) -> None:
    alphabet = ["a", "é", "ж", "\U0001f375", '"', "\\", "\n", "\x01", "\x1f", "\x7f", " "]
    rng = random.Random(10)
    for _ in range(3000):
        row = tuple(_generated(rng, alphabet) if rng.random() > 0.2 else None for _ in range(4))
        ops: tuple = ()
        for _ in range(rng.randint(0, 12)):
            column = rng.randrange(4)
            op = rng.choice([C, ESC, ESC, RAW])
            if op == RAW and row[column] is None:
                op = ESC  # a RAW column is never NULL (the SQL says COALESCE)
            ops += (op, _generated(rng, alphabet) if op == C else column)
        fast, slow = _join_both(compiled_join, row, ops, ())
        assert fast == slow, (row, ops)


# --- json_path_text -----------------------------------------------------------------------

Scan = Callable[[object, tuple[str, ...]], "str | None"]


@pytest.fixture(scope="module")
def compiled_scan() -> Scan:
    return _built(pushdown.json_path_text, "Python walks every JSON path")  # type: ignore[no-any-return]


def _walked(text: str, steps: tuple[str, ...]) -> str | None:
    """The definition: the slot decodes the column and walks the path; None where that
    fails (the row then goes the Python way)."""
    try:
        return pushdown._encode(values.json_path(orjson.loads(text), steps))
    except (orjson.JSONDecodeError, ValueError):
        return None


SCANNED = [
    ('{"brand":"Nordwind","seo":{"title":"Sturdy Bicycle Bell 1"}}', ("seo", "title")),
    ('{"brand":"Nordwind","seo":{"title":"Sturdy Bicycle Bell 1"}}', ("brand",)),
    (' {\n "brand" :\t"Тепла \U0001f375 / <&>" , "x": [1, -0.5, {}] }\r\n', ("brand",)),
    ('{"brand": "a", "brand": "b"}', ("brand",)),  # orjson keeps the last
    ('{"seo": {"title": "x"}, "seo": {"other": 1}}', ("seo", "title")),  # null: the last seo
    ('{"seo": {"title": "x"}, "seo": 5}', ("seo", "title")),
    ('{"brand": true, "seo": {"title": null}}', ("brand",)),
    ('{"brand": false}', ("brand",)),
    ('{"brand": true, "seo": {"title": null}}', ("seo", "title")),
    ('{"seo": "a string"}', ("seo", "title")),
    ('{"seo": ["title"]}', ("seo", "title")),
    ("[1, 2]", ("brand",)),
    ("{}", ("brand",)),
    ('{"brand": "\x7f\u2028"}', ("brand",)),  # raw: orjson writes them as they are
    ('{"br": "x", "brand2": "y", "bran": "z"}', ("brand",)),
]

LEFT_TO_PYTHON = [
    ('{"brand": "say \\"hi\\""}', ("brand",)),  # an escape: orjson may write it otherwise
    ('{"brand": "\\u00e9"}', ("brand",)),
    ('{"other": "\\ud800", "brand": "x"}', ("brand",)),  # orjson refuses a lone surrogate
    ('{"other": 1e999, "brand": "x"}', ("brand",)),  # orjson refuses infinity
    ('{"other": 1' + "0" * 400 + ', "brand": "x"}', ("brand",)),
    ('{"brand": 5}', ("brand",)),  # a number: orjson writes it its own way
    ('{"brand": {"a": 1}}', ("brand",)),
    ('{"brand": []}', ("brand",)),
    ('"{\\"brand\\": \\"x\\"}"', ("brand",)),  # a string: json_value decodes it again
    ("null", ("brand",)),
    ('{"brand": "x"', ("brand",)),  # not JSON
    ('{"brand": "x"} {}', ("brand",)),
    ('{"brand": "x",}', ("brand",)),
    ('{"brand": tru}', ("brand",)),
    ('{"brand": "tab\there"}', ("brand",)),  # a raw control character is not JSON
    ("[" * 200 + "]" * 200, ("brand",)),  # deeper than the scanner goes
    (None, ("brand",)),
    ('{"brand": "\ud800"}', ("brand",)),  # a lone surrogate in the str itself
]


@pytest.mark.parametrize(("text", "steps"), SCANNED)
def test_a_scanned_json_path_is_the_python_value(
    compiled_scan: Scan, text: str, steps: tuple[str, ...]
) -> None:
    assert compiled_scan(text, steps) == _walked(text, steps) is not None


@pytest.mark.parametrize(("text", "steps"), LEFT_TO_PYTHON)
def test_what_the_scanner_cannot_vouch_for_is_left_to_python(
    compiled_scan: Scan, text: str, steps: tuple[str, ...]
) -> None:
    assert compiled_scan(text, steps) is None


def _document(rng: random.Random, depth: int = 0) -> str:
    """JSON text with duplicate keys, odd space and every kind of value, an object at the
    top; now and then an escape or an exponent (which the scanner leaves to Python)."""
    space = rng.choice(["", " ", "\n\t", "\r\n  "])
    pick = rng.random()
    if depth == 0 or (depth < 3 and pick < 0.4):
        members = [
            f'{space}"{rng.choice(KEYS)}"{space}:{_document(rng, depth + 1)}'
            for _ in range(rng.randint(0, 5))
        ]
        return space + "{" + ",".join(members) + space + "}"
    if depth < 3 and pick < 0.5:
        items = [_document(rng, depth + 1) for _ in range(rng.randint(0, 3))]
        return space + "[" + ",".join(items) + "]" + space
    if pick < 0.85:
        rare = ["\\n", '\\"'] if rng.random() < 0.1 else []
        return '"' + _generated(rng, ["x", "é", "\U0001f375", " ", "/", *rare]) + '"'
    return rng.choice(["true", "false", "null", "0", "-12", "3.25", "1e5", "-0.0"])


KEYS = ["a", "b", "é", "a b"]


def test_generated_documents_give_the_python_value_or_none(compiled_scan: Scan) -> None:
    rng = random.Random(11)
    vouched: dict[str, int] = {}
    for _ in range(20000):
        text = _document(rng)
        steps = tuple(rng.choice(KEYS) for _ in range(rng.randint(1, 3)))
        found = compiled_scan(text, steps)
        if found is not None:
            assert found == _walked(text, steps), (text, steps)
            kind = "string" if found.startswith('"') else found
            vouched[kind] = vouched.get(kind, 0) + 1
    # Not only missing keys: strings and literals found at every depth are scanned too.
    assert vouched["string"] > 300 and vouched["true"] + vouched["false"] > 40
    assert vouched["null"] > 1000


# --- slug_list ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled_slugs() -> Callable[[str, dict[int, str]], str]:
    slugs = None if pushdown.slug_list is pushdown._slug_list_py else pushdown.slug_list
    return _built(slugs, "pushdown.slug_list runs in Python")  # type: ignore[no-any-return]


def test_generated_slug_lists_are_the_python_lists(
    compiled_slugs: Callable[[str, dict[int, str]], str],
) -> None:
    rng = random.Random(12)
    slugs = {key: orjson.dumps(f"s-{key}-é").decode() for key in range(-5, 60, 2)}
    slugs |= {-(2**63): '"min"', 2**63 - 1: '"max"'}
    for _ in range(5000):
        keys = [rng.choice([*range(-6, 61), -(2**63), 2**63 - 1]) for _ in range(rng.randint(1, 9))]
        text = ",".join(map(str, keys))
        assert compiled_slugs(text, slugs) == pushdown._slug_list_py(text, slugs), text


@pytest.mark.parametrize("text", ["", "1,", ",1", "a", "1.5", "--1"])
def test_a_slug_list_of_what_is_not_integer_keys_is_refused(
    compiled_slugs: Callable[[str, dict[int, str]], str], text: str
) -> None:
    with pytest.raises(ValueError, match="integer keys"):
        compiled_slugs(text, {1: '"a"'})
    with pytest.raises(ValueError):
        pushdown._slug_list_py(text, {1: '"a"'})
