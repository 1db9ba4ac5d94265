"""Run the delta or full DAG once, in this process, as `catalog-sync sync` and the demo do.

The run is the DAG itself (`dag.test`), its params validated like a triggered run's, with
Airflow's retries turned off by default: a caller at a terminal retries later instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from catalog_sync.errors import ConfigurationError


@dataclass
class RunOutcome:
    """How one run went: its ledger rows and the exceptions its tasks raised."""

    dag_id: str
    run_id: str
    succeeded: bool
    ledger: list[Any] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)

    @property
    def configuration_errors(self) -> list[BaseException]:
        return [exc for exc in self.failures if isinstance(exc, ConfigurationError)]

    @property
    def dead_lettered(self) -> int:
        return sum(line.dead_lettered for line in self.ledger)


def run_once(*, full: bool, conf: dict[str, Any], retries: int = 0) -> RunOutcome:
    """Run the full (or delta) DAG once with `conf`; invalid params raise ConfigurationError."""
    from airflow.exceptions import ParamValidationError

    from catalog_sync import dag_factory, params
    from catalog_sync.config import load_config
    from catalog_sync.settings import load_settings

    # Fail before Airflow starts: the same checks the plan task makes.
    params.check_for_map(
        conf,
        mode=params.FULL if full else params.DELTA,
        catalog=load_config(),
        default_target=load_settings().target,
    )
    build = dag_factory.build_full_dag if full else dag_factory.build_delta_dag
    dag = build(retries=retries)
    dag_factory.register(dag)
    dag_factory.FAILURES.clear()
    try:
        run = dag.test(run_conf=conf)
    except ParamValidationError as exc:
        raise ConfigurationError(str(exc)) from None
    return RunOutcome(
        dag_id=dag.dag_id,
        run_id=run.run_id,
        succeeded=run.state == "success",
        ledger=_ledger(run.run_id),
        failures=list(dag_factory.FAILURES),
    )


def _ledger(run_id: str) -> list[Any]:
    """The run's ledger lines, every target's."""
    from catalog_sync.state import StateStore

    state = StateStore.from_airflow()
    try:
        return [e for e in state.ledger(limit=5000) if e.run_id == run_id]
    finally:
        state.dispose()
