"""The compiled `html_to_text` (catalog_sync/_speedups.c) against its definition in Python.

`values._html_to_text_py` defines the text; the compiled function must give the same text
or None (then Python runs). These tests compare the two on chosen and generated text,
in all three string widths, and check that None is kept for what needs the regular
expressions' Unicode case rules.
"""

from __future__ import annotations

import html
import os
import random
import re
import sys
from collections.abc import Callable

import pytest

from catalog_sync import values

REQUIRE = os.environ.get("CATALOG_SYNC_REQUIRE_SPEEDUPS") == "1"

Compiled = Callable[[str, Callable[[str], str]], "str | None"]


@pytest.fixture(scope="module")
def compiled() -> Compiled:
    function = values._compiled_html_to_text
    if function is None:
        message = (
            "catalog_sync._speedups is not built (no C compiler when the package was "
            "installed): values.html_to_text runs in Python"
        )
        if REQUIRE:
            pytest.fail(f"{message} (CATALOG_SYNC_REQUIRE_SPEEDUPS=1 makes it mandatory)")
        pytest.skip(message)
    return function


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
