"""Value conversions behind the built-in value specs of the entity map.

Pure functions with no SQL and no configuration: `mapping` compiles the map into
closures that call these, so the same rules (money rounding, slugs, HTML to text)
apply wherever a value is produced.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import re
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

import orjson

#: Largest integer a JSON consumer can hold exactly (2**53 - 1): money beyond it is absurd.
MAX_SAFE_INTEGER = 2**53 - 1


class DataError(ValueError):
    """A row's value cannot be converted: that row fails, the map is fine."""


class SpecMismatch(ValueError):
    """A value's type does not fit its spec (money on text): the map is probably wrong."""


# --- numbers ------------------------------------------------------------------------------


def to_decimal(value: Any) -> Decimal:
    """The exact decimal a database value stands for.

    PostgreSQL and MariaDB give `Decimal`; SQLite stores DECIMAL columns as REAL or
    TEXT, so a float is read through its shortest repr (`1.005` stays `1.005`): no
    float arithmetic ever touches the amount.
    """
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise SpecMismatch(f"a boolean ({value!r}) is not an amount")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str | bytes):
        text = value.decode() if isinstance(value, bytes) else value
        try:
            result = Decimal(text.strip())
        except InvalidOperation:
            raise SpecMismatch(f"{text[:40]!r} is not a number") from None
    else:
        raise SpecMismatch(f"a {type(value).__name__} is not a number")
    if not result.is_finite():
        raise DataError(f"{value!r} is not a finite amount")
    return result


#: Enough precision for any sane amount; half away from zero is ROUND_HALF_UP in `decimal`.
_MONEY = Context(prec=60, rounding=ROUND_HALF_UP)
_ONE = Decimal(1)


def _scaled(value: Any, decimals: int) -> int:
    amount = value if type(value) is Decimal and value.is_finite() else to_decimal(value)
    if amount.adjusted() > 30:
        raise DataError(f"amount {value!r} is absurdly large")
    scaled = amount.scaleb(decimals, _MONEY)
    if scaled.adjusted() < 16:
        # An amount with at most `decimals` places (the usual case) is already whole
        # here, and rounding it would change nothing: skip the costly quantize.
        minor = int(scaled)
        if minor == scaled:
            return minor
    return int(scaled.quantize(_ONE, context=_MONEY))


def money_minor(value: Any, decimals: int = 2) -> int | None:
    """Integer minor units, half away from zero (`199.99` -> 19999, `-2.5` -> -250)."""
    if value is None:
        return None
    minor = _scaled(value, decimals)
    if abs(minor) > MAX_SAFE_INTEGER:
        raise DataError(f"amount {value!r} is absurdly large ({minor} minor units)")
    return minor


def decimal_string(value: Any, decimals: int = 2) -> str | None:
    """A fixed-point string (`"199.99"`), the same on every database."""
    if value is None:
        return None
    minor = money_minor(value, decimals)
    assert minor is not None
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(decimals + 1, "0")
    if not decimals:
        return sign + digits
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def to_int(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    amount = to_decimal(value)
    if amount != amount.to_integral_value():
        raise DataError(f"{value!r} is not a whole number")
    return int(amount)


def to_bool(value: Any) -> bool | None:
    """Booleans as the three databases return them (True, 1, '1', 't')."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[value.strip().lower()]
    raise SpecMismatch(f"{value!r} is not a boolean")


_BOOL_TEXT = {"1": True, "0": False, "true": True, "false": False, "t": True, "f": False}


def stock_status(value: Any) -> str | None:
    """`instock` / `outofstock` from a boolean or a quantity (> 0 is in stock)."""
    if value is None:
        return None
    if isinstance(value, str) and value in ("instock", "outofstock"):
        return value
    if isinstance(value, bool | int):
        return "instock" if value > 0 else "outofstock"
    if isinstance(value, float | Decimal | str):
        return "instock" if to_decimal(value) > 0 else "outofstock"
    raise SpecMismatch(f"{value!r} is neither a boolean nor a quantity")


def to_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def timestamp(value: Any) -> str | None:
    """ISO 8601 in UTC with `Z`, the same on every database (SQLite returns text).

    Naive values are taken as UTC (Laravel's default).
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise SpecMismatch(f"{value[:40]!r} is not a timestamp") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    if not isinstance(value, dt.datetime):
        raise SpecMismatch(f"a {type(value).__name__} is not a timestamp")
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


# --- JSON --------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """A JSON column's value: drivers return it decoded (PostgreSQL) or as text."""
    if isinstance(value, str | bytes | bytearray):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc}") from None
    return value


def json_path(value: Any, path: tuple[str, ...]) -> Any:
    """Walk `a.b.0` into decoded JSON; a missing step gives None (JSON null)."""
    current = json_value(value)
    for step in path:
        if type(current) is dict or isinstance(current, Mapping):  # the ABC check is slow
            current = current.get(step)
        elif isinstance(current, list) and step.lstrip("-").isdigit():
            index = int(step)
            current = current[index] if -len(current) <= index < len(current) else None
        else:
            return None
    return current


# --- text --------------------------------------------------------------------------------

_DROP_RE = re.compile(
    r"<!--.*?(?:-->|\Z)|<(script|style|template)\b[^>]*>.*?(?:</\1\s*>|\Z)",
    re.IGNORECASE | re.DOTALL,
)
#: What every match of `_DROP_RE` starts with (a superset: `[Ss]` stands for `script` and
#: `style`, with the long s that IGNORECASE also matches): most text has none, and this
#: search costs a third of the substitution it lets us skip.
_DROP_HINT_RE = re.compile(r"<(?:!--|[SsTt\u017f])")
#: address article aside blockquote br dd div dl dt figcaption figure footer h1-h6 header
#: hr li main nav ol p pre section table tbody td tfoot th thead tr ul, factored by their
#: first letters: the same matches as the plain list, a third faster (this regex is the
#: costliest step of html_to_text).
_BLOCK_TAG_RE = re.compile(
    r"</?(?:a(?:ddress|rticle|side)|b(?:lockquote|r)|d(?:[dlt]|iv)|f(?:ig(?:caption|ure)|ooter)|"
    r"h(?:[1-6r]|eader)|li|main|nav|ol|p(?:re)?|section|t(?:able|body|[dr]|foot|h(?:ead)?)|ul)"
    r"\b[^>]*>",
    re.IGNORECASE,
)
_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>|<![^>]*>|<\?[^>]*>")


def html_to_text(value: Any) -> str | None:
    """Plain text: tags stripped (block tags become spaces), entities unescaped,
    whitespace collapsed, trimmed (`_html_to_text_py` defines it).

    It runs for several columns of every row, the costliest step of a snapshot in
    Python: the compiled `_speedups.html_to_text` gives the same text about ten times
    faster, where it is built; it returns None for the rare text it leaves to Python.
    """
    if value is None:
        return None
    text = to_text(value)
    assert text is not None
    if _compiled_html_to_text is not None:
        done = _compiled_html_to_text(text, html.unescape)
        if done is not None:
            return done  # type: ignore[no-any-return]
    return _html_to_text_py(text)


def _html_to_text_py(text: str) -> str:
    """Regular expressions rather than an HTML parser because this runs for several
    columns of every row (about 10x faster), and shop descriptions are fragments, not
    documents."""
    if "<" in text:
        if _DROP_HINT_RE.search(text):
            text = _DROP_RE.sub(" ", text)
        text = _BLOCK_TAG_RE.sub(" ", text)
        text = _TAG_RE.sub("", text)
    if "&" in text:
        if text.count("&") == text.count("&amp;"):
            # Only `&amp;` (the usual entity): unescape would turn each into `&`, slower.
            text = text.replace("&amp;", "&")
        else:
            text = html.unescape(text)
    return " ".join(text.split())


try:  # built by `pip install` where a C compiler is present (setup.py)
    from catalog_sync._speedups import html_to_text as _compiled_html_to_text
except ImportError:  # pragma: no cover - the same function, in Python
    _compiled_html_to_text = None


_SLUG_RE = re.compile(r"[^A-Za-z0-9]+")


def slugify(label: str) -> str:
    """Runs outside [A-Za-z0-9] -> `-`, trimmed, lower-cased; when that leaves nothing,
    the lower-cased trimmed label (`Nike Air` -> `nike-air`, `Колір` -> `колір`).

    Cached for text: the same attribute names and option labels come back on every
    product. Anything else goes uncached, so it fails exactly as before.
    """
    return _cached_slug(label) if type(label) is str else _slug(label)


def _slug(label: str) -> str:
    slug = _SLUG_RE.sub("-", label).strip("-").lower()
    return slug or label.strip().lower()


_cached_slug = functools.lru_cache(maxsize=4096)(_slug)


def clean_strings(values: Iterable[Any]) -> list[str]:
    """Trimmed, de-duplicated (first seen wins), empty and null dropped."""
    seen: dict[str, None] = {}
    for value in values:
        if value is None or isinstance(value, dict | list):
            if value is not None:
                raise DataError(f"{value!r} is not a plain value")
            continue
        text = to_text(value).strip()  # type: ignore[union-attr]
        if text:
            seen.setdefault(text, None)
    return list(seen)


def string_list(value: Any) -> list[str] | None:
    """A JSON array (or a single value) as cleaned strings."""
    if value is None:
        return None
    decoded = json_value(value)
    if decoded is None:
        return None
    return clean_strings(decoded if isinstance(decoded, list) else [decoded])


def variant_options(value: Any) -> dict[str, str]:
    """A variation's `{axis: value}`: labels trimmed, null or empty values skipped."""
    decoded = json_value(value)
    if decoded is None:
        return {}
    if not isinstance(decoded, Mapping):
        raise DataError('variation options must be a JSON object like {"Color": "Red"}')
    result: dict[str, str] = {}
    for axis, raw in decoded.items():
        if raw is None or isinstance(raw, dict | list):
            if raw is not None:
                raise DataError(f"option {axis!r} holds {raw!r}, not a plain value")
            continue
        label = to_text(raw).strip()  # type: ignore[union-attr]
        name = str(axis).strip()
        if label and name:
            result[name] = label
    return result


def attributes(value: Any) -> list[dict[str, Any]]:
    """Product attributes as `[{name, slug, values}]` (payload conventions).

    Accepts `[{"name": ..., "values": [...]}]` (also `value` or `options` for values)
    or `{"Name": [...]}` / `{"Name": "value"}`. Attributes without values are dropped,
    as the convention says; an attribute without a name is a row error.
    """
    decoded = json_value(value)
    if decoded is None:
        return []
    if isinstance(decoded, Mapping):
        items: Iterable[tuple[Any, Any]] = decoded.items()
    elif isinstance(decoded, list):
        items = []
        for entry in decoded:
            if type(entry) is not dict and not isinstance(entry, Mapping):
                raise DataError(f"attribute {entry!r} is not an object with name and values")
            raw = entry.get("values", entry.get("options", entry.get("value")))
            items.append((entry.get("name"), raw))
    else:
        raise DataError("attributes must be a JSON array or object")
    result: list[dict[str, Any]] = []
    for name, raw in items:
        label = to_text(name).strip() if name is not None else ""
        if not label:
            raise DataError(f"an attribute has no name (values {raw!r})")
        values = clean_strings(raw if isinstance(raw, list) else [raw])
        if values:
            result.append({"name": label, "slug": slugify(label), "values": values})
    return result
