"""`catalog-sync doctor` against the real receiver and a real source database.

The command's `main` runs in this process (an Airflow import per subprocess costs
seconds); the environment is that of a deployment (`dlq_support.cli_env`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog_sync import protocol
from catalog_sync.cli import main
from dlq_support import ENTITY_MAP, TARGET, cli_env, items, make_shop, write_map
from receiver_harness import Receiver, Tenant


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    return shared_receiver


class Doctor:
    def __init__(
        self,
        tmp_path: Path,
        receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        self.tmp = tmp_path
        self.url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
        self.tenant: Tenant = receiver.pair()
        self.monkeypatch = monkeypatch
        self.capsys = capsys
        for name, value in cli_env(tmp_path, self.url, self.url, self.tenant).items():
            monkeypatch.setenv(name, value)

    def shop(self, n: int, **kwargs: object) -> None:
        make_shop(self.url, n, **kwargs)

    def run(self, *args: str) -> tuple[int, dict[str, str], str]:
        """Exit code, label -> 'STATUS message', and the whole output."""
        self.capsys.readouterr()
        code = main(["doctor", *args])
        out, err = self.capsys.readouterr()
        lines = {}
        for line in out.splitlines():
            status, label, message = line.split(" ", 2)
            lines[label] = f"{status} {message}"
        return code, lines, out + err


@pytest.fixture
def doctor(
    tmp_path: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Doctor:
    return Doctor(tmp_path, receiver, monkeypatch, capsys)


def test_a_ready_deployment_passes_every_check(doctor: Doctor) -> None:
    doctor.shop(3)

    code, lines, _out = doctor.run()

    assert code == 0
    for label in ("pairing", "fernet", "backend", "entities", "entity:product"):
        assert lines[label].startswith("PASS"), lines
    assert "3 live row(s); sample maps cleanly: laravel:product:1" in lines["entity:product"]
    assert '"name":"Product 1"' in lines["entity:product"]
    assert lines["host_profile"].startswith("WARN")


def test_the_secret_never_appears_in_the_output(doctor: Doctor) -> None:
    doctor.shop(1)

    _code, _lines, out = doctor.run()

    assert doctor.tenant.secret_b64 not in out


def test_doctor_pushes_nothing(doctor: Doctor, receiver: Receiver) -> None:
    doctor.shop(2)
    receiver.clear()

    doctor.run()

    assert {(r["method"], r["path"]) for r in receiver.requests()} == {
        ("GET", protocol.STATUS_PATH)
    }


def test_an_unpaired_connection_fails_pairing_and_backend(doctor: Doctor) -> None:
    doctor.shop(1)

    code, lines, _out = doctor.run("--conn-id", "nobody_paired")

    assert code == 2
    assert lines["pairing"].startswith("FAIL") and "catalog-sync pair" in lines["pairing"]
    assert lines["backend"] == "FAIL not checked: pairing failed"


def test_a_kind_without_rows_is_a_warning(doctor: Doctor) -> None:
    doctor.shop(0)

    code, lines, _out = doctor.run()

    assert code == 0
    assert lines["entity:product"] == "WARN 0 live row(s); nothing to sample"


def test_a_sampled_row_without_a_required_key_fails(doctor: Doctor) -> None:
    doctor.shop(2, empty_names=[1])

    code, lines, _out = doctor.run()

    assert code == 2
    assert lines["entity:product"].startswith("FAIL")
    assert "payload.name" in lines["entity:product"]


def test_a_money_field_holding_a_non_integer_is_a_warning(doctor: Doctor) -> None:
    doctor.shop(1)
    text = ENTITY_MAP.replace("payload.price_amount: {money: price}", "payload.price_amount: name")
    doctor.monkeypatch.setenv("CATALOG_SYNC_CONFIG", str(write_map(doctor.tmp, text)))

    code, lines, _out = doctor.run()

    assert code == 0
    assert lines["entity:product"].startswith("WARN")
    assert "price_amount hold a non-integer" in lines["entity:product"]


def test_a_missing_table_fails_its_kind(doctor: Doctor) -> None:
    doctor.shop(1)
    with __import__("sqlalchemy").create_engine(doctor.url).begin() as conn:
        items.drop(conn)

    code, lines, _out = doctor.run()

    assert code == 2
    assert "unknown table 'items'" in lines["entity:product"]


# --- a map with a targets: section: every target is checked ---------------------------------


def _with_targets(doctor: Doctor, targets: str) -> None:
    text = ENTITY_MAP + "targets:\n" + targets
    doctor.monkeypatch.setenv("CATALOG_SYNC_CONFIG", str(write_map(doctor.tmp, text)))


def _lines(out: str, label: str) -> list[str]:
    return [
        line.split(" ", 2)[0] + " " + line.split(" ", 2)[2]
        for line in out.splitlines()
        if line.split(" ", 2)[1] == label
    ]


def test_every_target_of_the_map_is_paired_and_checked(doctor: Doctor, receiver: Receiver) -> None:
    doctor.shop(2)
    other = receiver.pair()
    doctor.monkeypatch.setenv("AIRFLOW_CONN_SHOP_B", other.airflow_connection())
    _with_targets(
        doctor,
        f"  {TARGET}: {{kinds: [product]}}\n"
        "  shop_b: {kinds: [product], filters: {product: {where: 'price > 0'}}}\n",
    )

    code, _lines_by_label, out = doctor.run()

    assert code == 0, out
    pairing = _lines(out, "pairing")
    assert [line.split(":")[0] for line in pairing] == [
        f"PASS connection {TARGET!r}",
        "PASS connection 'shop_b'",
    ]
    assert _lines(out, "backend") == ["PASS signed status call answered: connected"] * 2
    assert _lines(out, "targets") == [
        f"PASS 2 target(s), their filters run on the source: {TARGET}, shop_b"
    ]
    assert other.secret_b64 not in out and doctor.tenant.secret_b64 not in out


def test_an_unpaired_or_paused_target_is_named(doctor: Doctor) -> None:
    doctor.shop(1)
    _with_targets(
        doctor,
        f"  {TARGET}: {{kinds: [product], paused: 'backend migration'}}\n"
        "  shop_c: {kinds: [product]}\n",
    )

    code, _lines_by_label, out = doctor.run()

    assert code == 2
    paused, unpaired = _lines(out, "pairing")
    assert paused.startswith(f"WARN connection {TARGET!r}")
    assert paused.endswith("; paused in the map: backend migration")
    assert unpaired.startswith("FAIL no Airflow connection 'shop_c'")
    assert _lines(out, "backend")[1] == "FAIL 'shop_c': not checked: pairing failed"


def test_a_target_filter_the_source_refuses_fails_targets(doctor: Doctor) -> None:
    doctor.shop(1)
    _with_targets(
        doctor,
        f"  {TARGET}: {{kinds: [product], filters: {{product: {{where: 'no_such = 1'}}}}}}\n",
    )

    code, lines, _out = doctor.run()

    assert code == 2
    assert lines["targets"].startswith("FAIL")
    assert f"targets.{TARGET}.filters.product" in lines["targets"]
