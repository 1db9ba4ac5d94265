"""The entity map: loading and shape validation of the YAML that says what to sync.

Everything that can be checked without a database is checked here, before any task
runs, so that a typo fails in seconds with the file, the key path and the fix instead
of after an hour of extraction. Checks against the live schema (tables, columns) and
dotted-path imports happen in `mapping.compile_mappers`. The format is documented in
docs/configuration.md.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from catalog_sync import protocol
from catalog_sync.errors import ConfigurationError

ENV_CONFIG = "CATALOG_SYNC_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "include" / "entity_map.yaml"

DEFAULT_PRODUCER = "laravel"
DEFAULT_CURRENCY = "UAH"
DEFAULT_SYNC = {"page_size": 1000, "safety_lag_seconds": 5, "overlap_seconds": 300}

#: The closed vocabulary of host capabilities (payload conventions, "Host profile").
CAPABILITIES: tuple[str, ...] = (
    "catalog.search",
    "catalog.get_product",
    "catalog.compare",
    "catalog.facets",
    "catalog.sort",
    "nav.open",
    "nav.search_page",
    "cart.add",
    "cart.remove",
    "cart.update_qty",
    "cart.view",
    "checkout.assist",
    "variant.select",
    "form.submit",
)

#: Payload keys in a map start with this prefix (payload conventions, "Map semantics").
PAYLOAD_PREFIX = "payload."

#: Value specs: the keyword that names the spec -> the extra keys it accepts.
#: The keyword's own value is the column (or table, kind, template...) it works on.
SPEC_OPTIONS: dict[str, frozenset[str]] = {
    "column": frozenset({"path"}),
    "const": frozenset(),
    "var": frozenset(),
    "text": frozenset(),
    "integer": frozenset(),
    "boolean": frozenset(),
    "money": frozenset({"decimals"}),
    "decimal": frozenset({"decimals"}),
    "html_text": frozenset(),
    "stock_status": frozenset(),
    "template": frozenset(),
    "ref": frozenset({"column"}),
    "attributes": frozenset(),
    "string_list": frozenset(),
    "json": frozenset(),
    "timestamp": frozenset(),
    "variant_options": frozenset(),
    "slugs": frozenset(
        {
            "through",
            "local_key",
            "foreign_key",
            "slug_column",
            "related_key",
            "key",
            "deleted_column",
        }
    ),
    "call": frozenset(),
}
#: Specs whose value must be a string naming a column of the row.
COLUMN_SPECS = frozenset(
    {
        "column",
        "text",
        "integer",
        "boolean",
        "money",
        "decimal",
        "html_text",
        "stock_status",
        "attributes",
        "string_list",
        "json",
        "timestamp",
        "variant_options",
    }
)

_KIND_KEYS = frozenset(
    {
        "table",
        "select",
        "source",
        "primary_key",
        "watermark",
        "deleted_column",
        "deleted_when",
        "external_id",
        "options",
        "map",
        "translations",
        "variations",
    }
)
_HOST_KEYS = frozenset({"capabilities", "cart_endpoint", "metadata"})
_TOP_KEYS = frozenset({"producer", "currency", "vars", "sync", "kinds", "targets"})
_TARGET_KEYS = frozenset({"kinds", "filters", "paused"})
_FILTER_KEYS = frozenset({"where", "membership"})
_MEMBERSHIP_KEYS = frozenset(
    {"table", "local_key", "column", "value", "watermark", "deleted_column"}
)
#: Target names are Airflow connection ids (the paired connection of the target).
_TARGET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_TRANSLATION_KEYS = frozenset(
    {"locales", "base", "columns", "present", "fallback", "table", "foreign_key", "locale_column"}
)
_VARIATION_KEYS = frozenset(
    {
        "table",
        "foreign_key",
        "primary_key",
        "options_column",
        "external_id",
        "deleted_column",
        "map",
    }
)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PRODUCER_RE = re.compile(r"^[a-z0-9]+$")
_DOTTED_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
_LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class TranslationsConfig:
    """Locale fan-out: one entity per locale present (payload conventions, "Translations")."""

    locales: tuple[str, ...]
    base: str
    columns: Mapping[str, str]  # base column -> per-locale column template ("name_{locale}")
    present: Mapping[str, str] | None  # {"column": c} or {"call": dotted path}
    fallback: bool  # a NULL localized column falls back to the base column
    table: str | None  # a translations table instead of (or besides) columns
    foreign_key: str | None
    locale_column: str

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(locale for locale in self.locales if locale != self.base)


@dataclass(frozen=True)
class VariationsConfig:
    """Inline `payload.variations` / `payload.variant_axes`, loaded once per page."""

    table: str
    foreign_key: str
    primary_key: str
    options_column: str
    external_id: str | None  # None -> like the `variation` kind, else its primary key
    deleted_column: str | None
    map: Mapping[str, Any]  # extra fields of each variation: name -> value spec


@dataclass(frozen=True)
class MembershipConfig:
    """A row belongs to the target while a live membership row names it (docs/targets.md)."""

    table: str
    local_key: str  # the membership table's column holding the kind's primary key
    column: str  # the column naming the platform
    value: str | int  # this target's value in `column`
    watermark: str | None  # change time of membership rows (membership changes in deltas)
    deleted_column: str | None  # soft delete of membership rows


@dataclass(frozen=True)
class RouteFilter:
    """Which rows of a kind a target receives: a predicate and/or a membership (both: AND)."""

    where: str | None = None
    membership: MembershipConfig | None = None


@dataclass(frozen=True)
class TargetConfig:
    """One target: its paired connection (the name), the kinds it gets, their filters."""

    name: str
    kinds: tuple[str, ...]
    filters: Mapping[str, RouteFilter] = field(default_factory=dict)
    paused: str | None = None  # the reason, when paused in the map


@dataclass(frozen=True)
class KindConfig:
    kind: str
    table: str | None
    select: str | None
    source: str | None
    primary_key: str
    watermark: str | None
    deleted_column: str | None
    deleted_when: str | None
    options: Mapping[str, Any]
    external_id: str  # a column name, or a template such as "{sku}"
    map: Mapping[str, Any]  # "payload.a.b" -> value spec, in file order
    translations: TranslationsConfig | None = None
    variations: VariationsConfig | None = None
    capabilities: tuple[str, ...] = ()  # host_profile only
    cart_endpoint: str | None = None  # host_profile only
    metadata: Mapping[str, Any] | None = None  # host_profile only
    route: RouteFilter | None = None  # set by CatalogConfig.for_target: the target's filter

    @property
    def is_static(self) -> bool:
        """A kind made from the map alone (host_profile): no table, no watermark."""
        return self.table is None and self.select is None and self.source is None


@dataclass(frozen=True)
class SyncSettings:
    page_size: int = 1000
    safety_lag_seconds: int = 5
    overlap_seconds: int = 300


@dataclass(frozen=True)
class CatalogConfig:
    path: Path
    producer: str
    kinds: Mapping[str, KindConfig]
    currency: str = DEFAULT_CURRENCY
    vars: Mapping[str, Any] = field(default_factory=dict)
    sync: SyncSettings = field(default_factory=SyncSettings)
    #: The `targets:` section; None without one (one target, every kind: `target_list`).
    targets: Mapping[str, TargetConfig] | None = None

    def error(self, key_path: Sequence[Any], problem: str, fix: str) -> ConfigurationError:
        return config_error(self.path, key_path, problem, fix)

    def target_list(self, default: str) -> list[TargetConfig]:
        """The configured targets; without a `targets:` section, `default` with every kind."""
        if self.targets is None:
            return [TargetConfig(name=default, kinds=tuple(self.kinds))]
        return list(self.targets.values())

    def target_names(self, default: str) -> list[str]:
        return [target.name for target in self.target_list(default)]

    def target(self, name: str, default: str) -> TargetConfig:
        """The target called `name`, or a clear error naming the configured ones."""
        known = {target.name: target for target in self.target_list(default)}
        if name not in known:
            raise self.error(
                ["targets", name],
                f"no target {name!r}{did_you_mean(name, list(known))}",
                "use one of " + ", ".join(known),
            )
        return known[name]

    def for_target(self, target: TargetConfig) -> CatalogConfig:
        """This map as `target` sees it: each routed kind carries the target's filter.

        Every kind stays (a `ref` reads the referenced kind's external id); which kinds
        are sent is `target.kinds`.
        """
        kinds = {
            kind: replace(config, route=target.filters.get(kind))
            for kind, config in self.kinds.items()
        }
        return replace(self, kinds=kinds)


# --- errors -----------------------------------------------------------------------------


def format_key_path(key_path: Sequence[Any]) -> str:
    """`kinds.product.map."payload.price"`: segments holding dots or spaces are quoted."""
    parts = []
    for key in key_path:
        text = str(key)
        parts.append(f'"{text}"' if not _IDENT_RE.match(text) and not text.isdigit() else text)
    return ".".join(parts) or "(top level)"


def config_error(
    path: Path | str, key_path: Sequence[Any], problem: str, fix: str
) -> ConfigurationError:
    """The one message shape for map errors: file, key path, what is wrong, how to fix it."""
    return ConfigurationError(
        f"{Path(path).name}: {format_key_path(key_path)}: {problem}; fix: {fix} (file {path})"
    )


def did_you_mean(word: str, choices: Sequence[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- dotted paths -------------------------------------------------------------------------


def resolve_dotted(dotted: str, where: Path | str, key_path: Sequence[Any]) -> Any:
    """Import `package.module.attribute` (or `package.module:attribute`) or say why not."""
    module_name, sep, attr_path = dotted.partition(":")
    candidates: list[tuple[str, str]] = []
    if sep:
        candidates.append((module_name, attr_path))
    else:
        parts = dotted.split(".")
        candidates = [
            (".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)
        ]
    missing_attr: str | None = None
    for module_name, attr_path in candidates:
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and not module_name.startswith(exc.name) and exc.name != module_name:
                raise config_error(
                    where,
                    key_path,
                    f"importing {module_name!r} for {dotted!r} failed: {exc}",
                    "install the missing module or fix the import in that module",
                ) from None
            continue
        except Exception as exc:
            raise config_error(
                where,
                key_path,
                f"importing {module_name!r} for {dotted!r} failed: {type(exc).__name__}: {exc}",
                "fix the error in that module",
            ) from None
        try:
            for attr in attr_path.split("."):
                obj = getattr(obj, attr)
        except AttributeError:
            missing_attr = missing_attr or f"module {module_name!r} has no attribute {attr_path!r}"
            continue
        return obj
    problem = missing_attr or f"no importable module in the dotted path {dotted!r}"
    raise config_error(
        where,
        key_path,
        problem,
        "give an importable 'package.module.name' (the module must be on the Python path, "
        "e.g. in plugins/)",
    )


# --- loading ----------------------------------------------------------------------------


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that refuses duplicate keys: YAML silently keeps the last one otherwise."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key]}, again on line {line})",
                key_node.start_mark,
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)  # type: ignore[no-untyped-call]


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def default_config_path() -> Path:
    return Path(os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str] | None = None) -> CatalogConfig:
    """Read and validate the entity map (None: $CATALOG_SYNC_CONFIG, else the demo map)."""
    file = Path(path) if path is not None else default_config_path()
    return parse_config(read_yaml(file, "the entity map", ENV_CONFIG), file)


def read_yaml(file: Path, what: str, pointed_by: str) -> Any:
    """A YAML file (duplicate keys refused), or a clear error naming `what` and its setting."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {what} {file}: {exc.strerror or exc}; "
            f"fix: point {pointed_by} at a readable YAML file"
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigurationError(
            f"{file.name}: not valid YAML: {exc}; fix: correct the YAML syntax (file {file})"
        ) from None


def parse_config(document: Any, file: Path) -> CatalogConfig:
    """Validate an already parsed map (tests and tools build maps in Python)."""
    v = _Validator(file)
    top = v.mapping(document, [], "the file must be a mapping with a `kinds:` section")
    v.known_keys(top, [], _TOP_KEYS)
    producer = top.get("producer", DEFAULT_PRODUCER)
    if not isinstance(producer, str) or not _PRODUCER_RE.match(producer):
        raise v.error(
            ["producer"],
            f"{producer!r} is not a valid producer",
            "use lower-case letters and digits only, e.g. laravel",
        )
    currency = top.get("currency", DEFAULT_CURRENCY)
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise v.error(["currency"], f"{currency!r} is not a currency code", "use e.g. UAH")
    variables = dict(v.mapping(top.get("vars", {}), ["vars"], "give a mapping name: value"))
    for name in variables:
        if not isinstance(name, str) or not _IDENT_RE.match(name):
            raise v.error(["vars", name], "not a valid variable name", "use letters, digits, _")
    variables = {"producer": producer, "currency": currency, **variables}
    sync = v.sync(top.get("sync", {}))
    if "kinds" not in top:
        raise v.error(["kinds"], "missing", "add a `kinds:` mapping of kind name -> settings")
    kinds_raw = v.mapping(top["kinds"], ["kinds"], "give a mapping of kind name -> settings")
    if not kinds_raw:
        raise v.error(["kinds"], "no kinds configured", "configure at least one kind")
    kinds: dict[str, KindConfig] = {}
    for kind, raw in kinds_raw.items():
        if kind not in protocol.KINDS:
            raise v.error(
                ["kinds", kind],
                f"unknown kind {kind!r}{did_you_mean(str(kind), protocol.KINDS)}",
                "use one of " + ", ".join(protocol.KINDS),
            )
        kinds[kind] = v.kind(kind, raw, variables)
    targets = None if top.get("targets") is None else v.targets(top["targets"], kinds)
    return CatalogConfig(
        path=file,
        producer=producer,
        kinds=kinds,
        currency=currency,
        vars=variables,
        sync=sync,
        targets=targets,
    )


class _Validator:
    """Shape checks with uniform messages; every failure names file, key path and fix."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def error(self, key_path: Sequence[Any], problem: str, fix: str) -> ConfigurationError:
        return config_error(self.file, key_path, problem, fix)

    def mapping(self, value: Any, key_path: list[Any], fix: str) -> Mapping[Any, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(key_path, f"expected a mapping, got {type(value).__name__}", fix)
        return value

    def known_keys(self, value: Mapping[Any, Any], key_path: list[Any], allowed: frozenset[str]):
        for key in value:
            if key not in allowed:
                raise self.error(
                    [*key_path, key],
                    f"unknown key {key!r}{did_you_mean(str(key), allowed)}",
                    "use one of " + ", ".join(sorted(allowed)),
                )

    def ident(self, value: Any, key_path: list[Any], what: str = "a column name") -> str:
        if not isinstance(value, str) or not _IDENT_RE.match(value):
            raise self.error(
                key_path, f"{value!r} is not {what}", f"give {what} (letters, digits, _)"
            )
        return value

    def optional_ident(self, raw: Mapping[str, Any], key: str, key_path: list[Any]) -> str | None:
        value = raw.get(key)
        return None if value is None else self.ident(value, [*key_path, key])

    def positive_int(self, value: Any, key_path: list[Any], minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(
                key_path, f"{value!r} is not an integer >= {minimum}", "fix the number"
            )
        return value

    def sync(self, raw: Any) -> SyncSettings:
        section = self.mapping(raw, ["sync"], "give a mapping")
        self.known_keys(section, ["sync"], frozenset(DEFAULT_SYNC))
        values = {**DEFAULT_SYNC, **section}
        return SyncSettings(
            page_size=self.positive_int(values["page_size"], ["sync", "page_size"], 1),
            safety_lag_seconds=self.positive_int(
                values["safety_lag_seconds"], ["sync", "safety_lag_seconds"], 0
            ),
            overlap_seconds=self.positive_int(
                values["overlap_seconds"], ["sync", "overlap_seconds"], 0
            ),
        )

    def dotted(self, value: Any, key_path: list[Any]) -> str:
        if not isinstance(value, str) or not (_DOTTED_RE.match(value.replace(":", "."))):
            raise self.error(
                key_path,
                f"{value!r} is not a dotted path",
                "give 'package.module.name' of an importable object",
            )
        return value

    def template_fields(self, template: str, key_path: list[Any]) -> tuple[str, ...]:
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise self.error(
                key_path, f"broken template {template!r}: {exc}", "balance the braces"
            ) from None
        names = []
        for _text, name, _spec, _conv in parsed:
            if name is None:
                continue
            if not _IDENT_RE.match(name):
                raise self.error(
                    key_path,
                    f"template field {{{name}}} is not a plain column or variable name",
                    "use {column} fields only (no indexing or attributes)",
                )
            names.append(name)
        return tuple(names)

    # -- targets ------------------------------------------------------------------------

    def targets(self, raw: Any, kinds: Mapping[str, KindConfig]) -> dict[str, TargetConfig]:
        section = self.mapping(raw, ["targets"], "give a mapping of target name -> settings")
        if not section:
            raise self.error(
                ["targets"],
                "no targets listed",
                "list at least one target (e.g. `voicebot_default: {}`) or remove the section",
            )
        targets = {}
        for name, value in section.items():
            path: list[Any] = ["targets", name]
            if not isinstance(name, str) or not _TARGET_RE.match(name):
                raise self.error(
                    path,
                    f"{name!r} is not a usable target name",
                    "name the target's Airflow connection id (letters, digits, _ . -)",
                )
            targets[name] = self.target(name, value, path, kinds)
        return targets

    def target(
        self, name: str, raw_value: Any, path: list[Any], kinds: Mapping[str, KindConfig]
    ) -> TargetConfig:
        raw = self.mapping(raw_value, path, "give a mapping with kinds, filters, paused")
        self.known_keys(raw, path, _TARGET_KEYS)
        listed = raw.get("kinds")
        if listed is None:
            routed = tuple(kinds)
        else:
            if not isinstance(listed, list) or not listed:
                raise self.error(
                    [*path, "kinds"],
                    "expected a non-empty list of kinds",
                    "give e.g. [product, category], or leave kinds out for every kind",
                )
            for i, kind in enumerate(listed):
                if kind not in kinds:
                    raise self.error(
                        [*path, "kinds", i],
                        f"{kind!r} is not a kind of this map{did_you_mean(str(kind), list(kinds))}",
                        "use one of " + ", ".join(kinds),
                    )
            routed = tuple(kind for kind in kinds if kind in listed)  # map order
        filters_raw = self.mapping(raw.get("filters"), [*path, "filters"], "give kind: filter")
        filters = {}
        for kind, spec in filters_raw.items():
            at = [*path, "filters", kind]
            if kind not in routed:
                raise self.error(
                    at,
                    f"kind {kind!r} is not sent to this target"
                    + did_you_mean(str(kind), list(routed)),
                    f"add {kind} to targets.{name}.kinds or remove its filter",
                )
            config = kinds[kind]
            if config.table is None and config.select is None:
                raise self.error(
                    at,
                    f"kind {kind!r} has no table or select to filter "
                    f"({'a custom source' if config.source else 'it is made from the map'})",
                    "remove the filter (a custom source filters in its own code)",
                )
            filters[kind] = self.route(spec, at)
        paused = raw.get("paused")
        if paused is not None and (not isinstance(paused, str) or not paused.strip()):
            raise self.error(
                [*path, "paused"],
                f"{paused!r} is not a reason",
                "give the reason as text, e.g. paused: 'site migration until Monday'",
            )
        return TargetConfig(
            name=name, kinds=routed, filters=filters, paused=paused.strip() if paused else None
        )

    def route(self, raw_value: Any, path: list[Any]) -> RouteFilter:
        raw = self.mapping(raw_value, path, "give {where: ...} and/or {membership: ...}")
        self.known_keys(raw, path, _FILTER_KEYS)
        if not raw:
            raise self.error(path, "empty filter", "give where: and/or membership:, or remove it")
        where = raw.get("where")
        if where is not None and (not isinstance(where, str) or not where.strip()):
            raise self.error(
                [*path, "where"], f"{where!r} is not an SQL predicate", "give e.g. 'price >= 100'"
            )
        membership = None
        if raw.get("membership") is not None:
            at = [*path, "membership"]
            section = self.mapping(raw["membership"], at, "give table, local_key, column, value")
            self.known_keys(section, at, _MEMBERSHIP_KEYS)
            for key in ("table", "local_key", "column", "value"):
                if section.get(key) is None:
                    raise self.error(
                        [*at, key],
                        "missing",
                        "a membership needs table, local_key (pointing at the row), column "
                        "and value (this target's value in column)",
                    )
            value = section["value"]
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise self.error([*at, "value"], f"{value!r} is not text or a number", "fix it")
            membership = MembershipConfig(
                table=self.ident(section["table"], [*at, "table"], "a table name"),
                local_key=self.ident(section["local_key"], [*at, "local_key"]),
                column=self.ident(section["column"], [*at, "column"]),
                value=value,
                watermark=self.optional_ident(section, "watermark", at),
                deleted_column=self.optional_ident(section, "deleted_column", at),
            )
        return RouteFilter(where=where.strip() if where else None, membership=membership)

    # -- kinds --------------------------------------------------------------------------

    def kind(self, kind: str, raw_value: Any, variables: Mapping[str, Any]) -> KindConfig:
        path: list[Any] = ["kinds", kind]
        raw = self.mapping(raw_value, path, "give a mapping with table/select/source and a map")
        if kind == "host_profile":
            return self.host_profile(raw, path)
        self.known_keys(raw, path, _KIND_KEYS)
        sources = [key for key in ("table", "select", "source") if raw.get(key) is not None]
        if len(sources) != 1:
            raise self.error(
                path,
                "needs exactly one of table, select or source"
                + (f" (got {', '.join(sources)})" if sources else ""),
                "say where the rows come from: `table: products`, `select: SELECT ...` "
                "or `source: package.module.Class`",
            )
        table = raw.get("table")
        if table is not None:
            self.ident(table, [*path, "table"], "a table name")
        select = raw.get("select")
        if select is not None and (
            not isinstance(select, str)
            or not select.lstrip().lower().startswith(("select", "with"))
        ):
            raise self.error(
                [*path, "select"], "not a SELECT statement", "give `select: SELECT ...`"
            )
        source = raw.get("source")
        if source is not None:
            self.dotted(source, [*path, "source"])
        primary_key = self.ident(raw.get("primary_key", "id"), [*path, "primary_key"])
        deleted_when = raw.get("deleted_when")
        if deleted_when is not None and (not isinstance(deleted_when, str) or not deleted_when):
            raise self.error(
                [*path, "deleted_when"], "not an SQL predicate", "give e.g. `status = 'trash'`"
            )
        if raw.get("deleted_column") is not None and deleted_when is not None:
            raise self.error(
                path,
                "both deleted_column and deleted_when are set",
                "keep one (deleted_when can combine conditions)",
            )
        options = self.mapping(raw.get("options"), [*path, "options"], "give a mapping")
        external_id = raw.get("external_id", primary_key)
        if not isinstance(external_id, str) or not external_id:
            raise self.error(
                [*path, "external_id"],
                f"{external_id!r} is neither a column nor a template",
                "give a column (`external_id: uuid`) or a template (`external_id: '{sku}'`)",
            )
        if "{" in external_id:
            self.template_fields(external_id, [*path, "external_id"])
        else:
            self.ident(external_id, [*path, "external_id"])
        mapping = self.payload_map(raw.get("map"), [*path, "map"], variables, source is not None)
        if source is None:
            for key in protocol.REQUIRED_PAYLOAD_KEYS.get(kind, ()):
                if f"{PAYLOAD_PREFIX}{key}" not in mapping:
                    raise self.error(
                        [*path, "map"],
                        f"the required payload key payload.{key} of kind {kind!r} is not mapped",
                        f'add "payload.{key}": <column or value spec>',
                    )
        translations = self.translations(raw.get("translations"), [*path, "translations"])
        variations = self.variations(raw.get("variations"), [*path, "variations"], variables)
        return KindConfig(
            kind=kind,
            table=table,
            select=select,
            source=source,
            primary_key=primary_key,
            watermark=self.optional_ident(raw, "watermark", path),
            deleted_column=self.optional_ident(raw, "deleted_column", path),
            deleted_when=deleted_when,
            options=dict(options),
            external_id=external_id,
            map=mapping,
            translations=translations,
            variations=variations,
        )

    def host_profile(self, raw: Mapping[str, Any], path: list[Any]) -> KindConfig:
        self.known_keys(raw, path, _HOST_KEYS)
        capabilities = raw.get("capabilities", [])
        if not isinstance(capabilities, list):
            raise self.error(
                [*path, "capabilities"], "expected a list", "give e.g. [catalog.search, cart.add]"
            )
        for i, capability in enumerate(capabilities):
            if capability not in CAPABILITIES:
                raise self.error(
                    [*path, "capabilities", i],
                    f"unknown capability {capability!r}"
                    + did_you_mean(str(capability), CAPABILITIES),
                    "use only " + ", ".join(CAPABILITIES),
                )
        cart_endpoint = raw.get("cart_endpoint")
        if cart_endpoint is not None and not isinstance(cart_endpoint, str):
            raise self.error([*path, "cart_endpoint"], "expected a string", "give a URL")
        metadata = raw.get("metadata")
        if metadata is not None:
            metadata = dict(self.mapping(metadata, [*path, "metadata"], "give a mapping"))
        return KindConfig(
            kind="host_profile",
            table=None,
            select=None,
            source=None,
            primary_key="id",
            watermark=None,
            deleted_column=None,
            deleted_when=None,
            options={},
            external_id=protocol.HOST_PROFILE_EXTERNAL_ID,
            map={},
            capabilities=tuple(dict.fromkeys(capabilities)),
            cart_endpoint=cart_endpoint,
            metadata=metadata,
        )

    def payload_map(
        self, raw: Any, path: list[Any], variables: Mapping[str, Any], optional: bool
    ) -> dict[str, Any]:
        section = self.mapping(raw, path, 'give a mapping "payload.key": value spec')
        if not section and not optional:
            raise self.error(path, "the map is empty", 'add "payload.name": name and the like')
        result: dict[str, Any] = {}
        leaves: set[tuple[str, ...]] = set()
        for key, spec in section.items():
            key_path = [*path, key]
            if not isinstance(key, str) or not key.startswith(PAYLOAD_PREFIX):
                raise self.error(
                    key_path,
                    "map keys are payload dot paths starting with 'payload.'",
                    f"write 'payload.{key}'",
                )
            parts = tuple(key[len(PAYLOAD_PREFIX) :].split("."))
            if not all(parts):
                raise self.error(key_path, "empty segment in the dot path", "remove the extra dot")
            for other in leaves:
                shorter, longer = sorted((parts, other), key=len)
                if longer[: len(shorter)] == shorter:
                    raise self.error(
                        key_path,
                        f"clashes with payload.{'.'.join(other)} (one is inside the other)",
                        "keep only one of the two keys",
                    )
            leaves.add(parts)
            result[key] = self.spec(spec, key_path, variables)
        return result

    def spec(self, spec: Any, path: list[Any], variables: Mapping[str, Any]) -> Any:
        """A value spec: a column name (shorthand) or a one-keyword mapping."""
        if isinstance(spec, str):
            self.ident(spec, path, "a column name (or a mapping such as {const: ...})")
            return {"column": spec}
        if not isinstance(spec, Mapping):
            raise self.error(
                path,
                f"{spec!r} is not a value spec",
                "give a column name or a mapping like {const: 5}, {money: price}",
            )
        keywords = [key for key in spec if key in SPEC_OPTIONS]
        # `column` is also an option of `ref`: an option of another keyword is not a keyword.
        keywords = [
            key for key in keywords if not any(key in SPEC_OPTIONS[o] for o in keywords if o != key)
        ]
        if len(keywords) != 1:
            unknown = [key for key in spec if key not in SPEC_OPTIONS]
            hint = did_you_mean(str(unknown[0]), SPEC_OPTIONS) if unknown else ""
            raise self.error(
                path,
                f"a value spec needs exactly one of {', '.join(SPEC_OPTIONS)}; got "
                f"{', '.join(map(str, spec)) or 'nothing'}{hint}",
                "write e.g. {money: price} or {template: '/p/{slug}'}",
            )
        keyword = keywords[0]
        allowed = SPEC_OPTIONS[keyword] | {keyword}
        self.known_keys(spec, path, frozenset(allowed))
        value = spec[keyword]
        at = [*path, keyword]
        if keyword in COLUMN_SPECS:
            self.ident(value, at)
        elif keyword == "var":
            if value not in variables:
                raise self.error(
                    at,
                    f"unknown variable {value!r}",
                    "define it under `vars:` (producer and currency always exist)",
                )
        elif keyword == "template":
            if not isinstance(value, str):
                raise self.error(at, "expected a string", "give e.g. '/product/{slug}'")
            self.template_fields(value, at)
        elif keyword == "ref":
            if value not in protocol.KINDS:
                raise self.error(
                    at,
                    f"unknown kind {value!r}{did_you_mean(str(value), protocol.KINDS)}",
                    "name the referenced kind, e.g. {ref: category, column: parent_id}",
                )
            self.ident(spec.get("column"), [*path, "column"])
        elif keyword == "slugs":
            self.ident(value, at, "a table name")
            for option in ("through", "local_key", "foreign_key"):
                if option not in spec:
                    raise self.error(
                        [*path, option],
                        "missing",
                        "a slug list needs through (the pivot table), local_key and foreign_key",
                    )
            for option in SPEC_OPTIONS["slugs"]:
                if option in spec:
                    self.ident(spec[option], [*path, option])
        elif keyword == "call":
            self.dotted(value, at)
        if "decimals" in spec:
            self.positive_int(spec["decimals"], [*path, "decimals"], 0)
            if spec["decimals"] > 6:
                raise self.error([*path, "decimals"], "more than 6 decimals", "use 0 to 6")
        if "path" in spec and not isinstance(spec["path"], str | int):
            raise self.error([*path, "path"], "expected a dot path", "give e.g. dims.width")
        # The keyword first: the compiler reads the spec's kind from its first key.
        return {keyword: value, **{k: v for k, v in spec.items() if k != keyword}}

    def translations(self, raw: Any, path: list[Any]) -> TranslationsConfig | None:
        if raw is None:
            return None
        section = self.mapping(raw, path, "give locales and columns")
        self.known_keys(section, path, _TRANSLATION_KEYS)
        locales = section.get("locales")
        if not isinstance(locales, list) or not locales:
            raise self.error([*path, "locales"], "missing or empty", "give e.g. [en, uk]")
        for i, locale in enumerate(locales):
            if not isinstance(locale, str) or not _LOCALE_RE.match(locale):
                raise self.error([*path, "locales", i], f"{locale!r} is not a locale", "e.g. uk")
        if len(set(locales)) != len(locales):
            raise self.error([*path, "locales"], "a locale is listed twice", "list each once")
        base = section.get("base", locales[0])
        if base not in locales:
            raise self.error([*path, "base"], f"{base!r} is not in locales", "add it to locales")
        columns = dict(self.mapping(section.get("columns"), [*path, "columns"], "give a mapping"))
        for column, template in columns.items():
            self.ident(column, [*path, "columns", column])
            if not isinstance(template, str) or "{locale}" not in template:
                raise self.error(
                    [*path, "columns", column],
                    f"{template!r} does not contain {{locale}}",
                    f"give e.g. '{column}_{{locale}}'",
                )
        present = section.get("present")
        if present is not None:
            present = dict(self.mapping(present, [*path, "present"], "give {column: c}"))
            self.known_keys(present, [*path, "present"], frozenset({"column", "call"}))
            if len(present) != 1:
                raise self.error(
                    [*path, "present"], "needs exactly one of column, call", "keep one"
                )
            if "column" in present:
                self.ident(present["column"], [*path, "present", "column"])
            else:
                self.dotted(present["call"], [*path, "present", "call"])
        table = section.get("table")
        if table is not None:
            self.ident(table, [*path, "table"], "a table name")
            if section.get("foreign_key") is None:
                raise self.error(
                    [*path, "foreign_key"], "missing", "name the column pointing at the row"
                )
        if table is None and not columns:
            raise self.error(
                path,
                "neither columns nor a translations table",
                "give `columns: {name: 'name_{locale}'}` or `table:` with `foreign_key:`",
            )
        fallback = section.get("fallback", False)
        if not isinstance(fallback, bool):
            raise self.error([*path, "fallback"], "expected true or false", "fix the value")
        return TranslationsConfig(
            locales=tuple(locales),
            base=base,
            columns=columns,
            present=present,
            fallback=fallback,
            table=table,
            foreign_key=self.optional_ident(section, "foreign_key", path),
            locale_column=self.ident(
                section.get("locale_column", "locale"), [*path, "locale_column"]
            ),
        )

    def variations(
        self, raw: Any, path: list[Any], variables: Mapping[str, Any]
    ) -> VariationsConfig | None:
        if raw is None:
            return None
        section = self.mapping(raw, path, "give table, foreign_key and options_column")
        self.known_keys(section, path, _VARIATION_KEYS)
        for key in ("table", "foreign_key", "options_column"):
            if key not in section:
                raise self.error([*path, key], "missing", f"add `{key}:`")
        fields = self.mapping(section.get("map"), [*path, "map"], "give name: value spec")
        specs = {}
        for name, spec in fields.items():
            if not isinstance(name, str) or not name or "." in name:
                raise self.error([*path, "map", name], "not a field name", "use a plain name")
            if name in ("external_id", "attributes"):
                raise self.error(
                    [*path, "map", name], "set automatically", f"remove {name} from the map"
                )
            specs[name] = self.spec(spec, [*path, "map", name], variables)
            if "slugs" in specs[name]:
                raise self.error(
                    [*path, "map", name],
                    "slug lists are not supported inside variations",
                    "map the variation kind on its own for relations",
                )
        external_id = section.get("external_id")
        if external_id is not None:
            if not isinstance(external_id, str):
                raise self.error([*path, "external_id"], "expected a string", "give a column")
            if "{" in external_id:
                self.template_fields(external_id, [*path, "external_id"])
            else:
                self.ident(external_id, [*path, "external_id"])
        return VariationsConfig(
            table=self.ident(section["table"], [*path, "table"], "a table name"),
            foreign_key=self.ident(section["foreign_key"], [*path, "foreign_key"]),
            primary_key=self.ident(section.get("primary_key", "id"), [*path, "primary_key"]),
            options_column=self.ident(section["options_column"], [*path, "options_column"]),
            external_id=external_id,
            deleted_column=self.optional_ident(section, "deleted_column", path),
            map=specs,
        )
