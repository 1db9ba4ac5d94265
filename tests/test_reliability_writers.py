"""Concurrent writers: nothing is lost while delta runs execute back to back.

Each scenario (`writers_support.plan_scenario(seed)`) starts from known products, a fresh
receiver tenant and a fresh state database; several writer threads insert, update (some
holding their transaction open for seconds after stamping `updated_at`), stamp bursts of
rows with one identical timestamp, soft-delete, restore and hard-delete rows, while delta
runs execute back to back against the real receiver. Then the writers stop, one more delta
runs and the receiver must hold exactly the mapped source but for what only a full
reconciles (docs/configuration.md): the hard-deleted rows (a delta cannot see a row that
is gone) and a locale that stopped being present (an update set `name_uk` to NULL); then
one full run, after which it must hold exactly the mapped source
(`catalog_sync.demo.mapped_shop`, the demo's exact-content check).

The map is the demo's `product` kind with a 1 s safety lag, an overlap longer than the
longest write transaction, and 3-row keyset pages (so bursts of one timestamp span pages).
The runs go through the DAG's task bodies (`task_runs`), which is what makes hundreds of
scenarios affordable. A failure names its seed; `CATALOG_SYNC_SEED=<seed>` reruns only it.
The default run plays a few fixed seeds per database; `make test-long` plays 100 fresh
seeds per database (200 per CI run).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog_sync import protocol
from catalog_sync.config import default_config_path, load_config
from catalog_sync.demo import mapped_shop, sorted_lines
from catalog_sync.demo_shop import belongs_to_product
from dag_support import SAFETY_LAG_S, SyncEnv, conn_json, make_sync_env
from task_runs import delta_run, full_run
from writers_support import (
    OPS,
    OVERLAP_S,
    PAGE_SIZE,
    Scenario,
    Writers,
    plan_scenario,
    reset_products,
)

SEED_ENV = "CATALOG_SYNC_SEED"
#: Seeds of `make test`: between them every kind of write, and transactions held open.
DEFAULT_SEEDS = (14, 16)
LONG_SCENARIOS_PER_DATABASE = 100
#: The long run's scenarios in this many tests per database, so `make test-long`'s
#: workers play them side by side (a scenario mostly waits on its writers).
LONG_CHUNKS = 4
#: The map's translated locales besides the base one.
LOCALES = ("uk",)
TARGET_CONN = "AIRFLOW_CONN_VOICEBOT_DEFAULT"
STATE_CONN = "AIRFLOW_CONN_CATALOG_SYNC_STATE"


def _seeds(default: list[int]) -> list[int]:
    chosen = os.environ.get(SEED_ENV, "").strip()
    return [int(chosen)] if chosen else default


def _product_map(path: Path) -> Path:
    """The demo map's `product` kind only, with the window settings of this test."""
    data = yaml.safe_load(default_config_path().read_text())
    data["kinds"] = {"product": data["kinds"]["product"]}
    data["sync"] = {
        "page_size": PAGE_SIZE,
        "safety_lag_seconds": SAFETY_LAG_S,
        "overlap_seconds": OVERLAP_S,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclasses.dataclass
class WritersWorld:
    env: SyncEnv
    monkeypatch: pytest.MonkeyPatch

    def play(self, seed: int) -> None:
        """One scenario from its seed; fails with a message that names the seed."""
        scenario = plan_scenario(seed)
        receiver = self.env.receiver
        tenant = receiver.pair(site_url="")
        self.monkeypatch.setenv(TARGET_CONN, tenant.airflow_connection())
        state_url = f"sqlite:///{self.env.tmp / f'state-{seed}.sqlite'}"
        self.monkeypatch.setenv(STATE_CONN, conn_json(state_url))
        engine = self.env.engine
        reset_products(engine, scenario)
        delta_run()
        writers = Writers(engine, scenario)
        writers.start()
        deltas = 0
        try:
            while writers.running():
                delta_run()
                deltas += 1
        finally:
            writers.join()
        assert not writers.errors, f"seed {seed}: a writer failed: {writers.errors[0]!r}"
        self.env.wait_safety_lag()
        delta_run()
        gone = {f"laravel:product:{i}" for i in scenario.hard_deleted()}
        when = f"after the last delta ({deltas} ran during the writes)"
        self._check(scenario, tenant, gone, when, full=False)
        full_run()
        self._check(scenario, tenant, set(), "after the full run", full=True)

    def _check(
        self, scenario: Scenario, tenant: Any, gone: set[str], when: str, *, full: bool
    ) -> None:
        """Receiver == mapped source; before a full, but for what only a full reconciles."""
        expected = mapped_shop(self.env.engine, load_config(), (self.env.tmp / "check").as_uri())
        if not full:
            # A locale that stopped being present lingers until the full: `{base}:{locale}`
            # entities whose base is still published but which the source no longer has.
            published = {line["external_id"] for line in expected}
            gone |= {
                f"{base}:{locale}"
                for base in published
                for locale in LOCALES
                if f"{base}:{locale}" not in published
            }
        held = [
            line
            for line in sorted_lines(
                protocol.loads(raw)
                for raw in tenant.receiver.store.dump_lines(tenant_id=tenant.tenant_id)
            )
            if line["external_id"] not in gone
            and not any(belongs_to_product(line, product) for product in gone)
        ]
        if held == expected:
            return
        want = {line["external_id"]: line for line in expected}
        have = {line["external_id"]: line for line in held}
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        differing = sorted(k for k in set(want) & set(have) if want[k] != have[k])
        pytest.fail(
            f"seed {scenario.seed} ({scenario.describe()}): {when} the receiver differs from "
            f"the mapped source: missing {missing[:10]}, extra {extra[:10]}, differing "
            f"{differing[:10]}. Rerun this scenario alone with {SEED_ENV}={scenario.seed}"
        )


@pytest.fixture(params=["postgres", "mariadb"])
def world(
    request: pytest.FixtureRequest,
    receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    airflow_env,
) -> Iterator[WritersWorld]:
    """One source database (PostgreSQL or MariaDB) and one receiver for many scenarios."""
    source_url = request.getfixturevalue(f"{request.param}_url")
    env = make_sync_env(receiver, source_url, tmp_path, monkeypatch)
    monkeypatch.setenv("CATALOG_SYNC_CONFIG", str(_product_map(tmp_path / "products.yaml")))
    yield WritersWorld(env, monkeypatch)
    env.engine.dispose()


def test_the_default_seeds_exercise_every_kind_of_write() -> None:
    scenarios = [plan_scenario(seed) for seed in DEFAULT_SEEDS]
    ops = [op for scenario in scenarios for writer in scenario.writers for op in writer]
    assert {op.kind for op in ops} == set(OPS) - {"held_update"}  # held: an update, held open
    assert any(op.hold_s for op in ops)
    assert any(op.whole_second for op in ops)


def test_a_seed_plans_the_same_scenario_every_time() -> None:
    assert plan_scenario(14) == plan_scenario(14) != plan_scenario(15)


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(world: WritersWorld) -> None:
    for seed in _seeds(list(DEFAULT_SEEDS)):
        world.play(seed)


@pytest.mark.long
@pytest.mark.parametrize("chunk", range(LONG_CHUNKS))
def test_concurrent_writers_lose_nothing_in_many_random_scenarios(
    world: WritersWorld, chunk: int
) -> None:
    if os.environ.get(SEED_ENV, "").strip() and chunk:
        pytest.skip(f"{SEED_ENV} plays its one seed in chunk 0")
    base = random.SystemRandom().randrange(1, 10**9)
    count = LONG_SCENARIOS_PER_DATABASE // LONG_CHUNKS
    for seed in _seeds(list(range(base, base + count))):
        world.play(seed)
