"""Run params of the two DAGs, and the checks Airflow's own validation cannot make.

Airflow 3.3 validates a run's conf when the run is created (`create_dagrun` merges the
conf into the DAG's `ParamsDict` and validates each Param's JSON schema), so `airflow
dags trigger`, the REST API and `dag.test(run_conf=...)` refuse a bad `since`, `dry_run`,
`kinds`, `targets` or `force` before any task runs. It cannot refuse a key the DAG does not declare
(the merge turns it into a new, schema-less Param), nor a `since` in the future (a
comparison with "now" is no JSON schema). `check_conf` makes those checks; the `plan`
task runs it first and fails fast (AirflowFailException, no retry).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from catalog_sync.errors import ConfigurationError

DELTA = "delta"
FULL = "full"
#: The params each DAG declares.
KEYS: dict[str, tuple[str, ...]] = {
    DELTA: ("since", "dry_run", "kinds", "targets"),
    FULL: ("dry_run", "kinds", "targets", "force"),
}


@dataclass(frozen=True)
class RunParams:
    """A run's validated params: `kinds` is never empty (empty conf = every kind);
    `targets` empty means every target that is not paused."""

    kinds: tuple[str, ...]
    targets: tuple[str, ...] = ()
    dry_run: bool = False
    since: dt.datetime | None = None  # naive UTC
    force: bool = False


def declare(mode: str, kinds: Sequence[str], targets: Sequence[str]) -> dict[str, Any]:
    """The DAG's `params=`: JSON schemas Airflow checks when a run is triggered."""
    from airflow.sdk import Param

    params: dict[str, Any] = {
        "dry_run": Param(
            False,
            type="boolean",
            description="Build and stage everything and log samples; push and commit nothing.",
        ),
        "kinds": Param(
            [],
            type="array",
            items={"type": "string", "enum": list(kinds)},
            uniqueItems=True,
            description="Only these kinds (empty: every kind of the entity map).",
        ),
        "targets": Param(
            [],
            type="array",
            items={"type": "string", "enum": list(targets)},
            uniqueItems=True,
            description="Only these targets (empty: every target that is not paused).",
        ),
    }
    if mode == DELTA:
        params["since"] = Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Re-send every change from this RFC 3339 instant (e.g. "
            "2024-05-01T00:00:00Z) instead of from the watermark.",
        )
    else:
        params["force"] = Param(
            False,
            type="boolean",
            description="Send the snapshot even if a kind shrank past the guard or rows "
            "failed to map (they are then deleted at the receiver).",
        )
    return params


def _parse_since(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ConfigurationError(
            f"since must be an RFC 3339 date-time string such as 2024-05-01T00:00:00Z, "
            f"not {value!r}"
        )
    try:
        parsed = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ConfigurationError(
            f"since={value!r} is not an RFC 3339 date-time; write e.g. 2024-05-01T00:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise ConfigurationError(
            f"since={value!r} has no UTC offset; write e.g. {value}Z or {value}+02:00"
        )
    return parsed.astimezone(dt.UTC).replace(tzinfo=None)


def check_conf(
    conf: Mapping[str, Any] | None,
    *,
    mode: str,
    kinds: Sequence[str],
    targets: Sequence[str],
    now: dt.datetime | None = None,
) -> RunParams:
    """Validate a run's conf (what the user passed) into RunParams; ConfigurationError if bad.

    `kinds` and `targets` are the names the entity map knows; `now` is naive UTC (default:
    the worker's clock).
    """
    conf = dict(conf or {})
    allowed = KEYS[mode]
    unknown = sorted(set(conf) - set(allowed))
    if "since" in unknown and mode == FULL:
        raise ConfigurationError(
            "since is not a param of the full DAG: a full run always sends the whole catalog; "
            "trigger catalog_delta with since to re-send changes from an instant"
        )
    if unknown:
        raise ConfigurationError(
            f"unknown param(s) {', '.join(unknown)} for the {mode} DAG; it takes only "
            f"{', '.join(allowed)}"
        )
    selected = _names(conf, "kinds", "kind", kinds)
    chosen = _names(conf, "targets", "target", targets)
    flags = {}
    for name in ("dry_run", "force"):
        value = conf.get(name, False)
        if not isinstance(value, bool):
            raise ConfigurationError(f"{name} must be true or false, not {value!r}")
        flags[name] = value
    since = None
    if conf.get("since") is not None:
        since = _parse_since(conf["since"])
        now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        if since > now:
            raise ConfigurationError(
                f"since={conf['since']} is in the future (now is {now.isoformat()}Z); "
                "nothing changed after it yet"
            )
    ordered = tuple(k for k in kinds if k in selected) if selected else tuple(kinds)
    return RunParams(
        kinds=ordered, targets=tuple(t for t in targets if t in chosen), since=since, **flags
    )


def check_for_map(
    conf: Mapping[str, Any] | None, *, mode: str, catalog: Any, default_target: str
) -> RunParams:
    """`check_conf` against the kinds and targets of this entity map (a CatalogConfig)."""
    return check_conf(
        conf,
        mode=mode,
        kinds=list(catalog.kinds),
        targets=catalog.target_names(default_target),
    )


def _names(conf: Mapping[str, Any], key: str, noun: str, known: Sequence[str]) -> list[str]:
    """`conf[key]`: a list of names the entity map knows (empty when not given)."""
    selected = conf.get(key) or []
    if not isinstance(selected, list | tuple) or not all(isinstance(k, str) for k in selected):
        raise ConfigurationError(f"{key} must be a list of {noun} names, not {selected!r}")
    strangers = [k for k in selected if k not in known]
    if strangers:
        raise ConfigurationError(
            f"unknown {noun}(s) {', '.join(strangers)}; the entity map has {', '.join(known)}"
        )
    return list(selected)
