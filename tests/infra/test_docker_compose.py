"""docker-compose.yml: valid for the compose client where one is installed, and consistent with
the local infrastructure (same host ports) and the project (build file, sub-commands)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


def compose_client() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) and subprocess.run([*argv, "version"], capture_output=True).returncode == 0:
            return argv
    return None


@pytest.mark.skipif(compose_client() is None, reason="no docker compose client on this machine")
def test_compose_config_accepts_the_file(tmp_path: Path) -> None:
    result = subprocess.run([*compose_client(), "-f", str(COMPOSE), "--profile", "pipeline", "config", "-q"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_compose_services_match_local_infra_and_project() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"kafka", "clickhouse", "topics", "worker", "executor", "audit-sink"} <= set(services)
    assert "127.0.0.1:9092:9092" in services["kafka"]["ports"]
    assert {"127.0.0.1:9000:9000", "127.0.0.1:8123:8123"} <= set(services["clickhouse"]["ports"])
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["kafka"]["image"].endswith(":3.9.1")  # the version infra/kafka/pom.xml pins
    assert "<kafka.version>3.9.1</kafka.version>" in (REPO / "infra" / "kafka" / "pom.xml").read_text()
    for role in ("topics", "worker", "executor", "audit-sink"):
        build = services[role]["build"]
        assert (REPO / build["context"] / build["dockerfile"]).is_file()
    # the one-shot topic service runs a sub-command the CLI really has
    parser = build_parser()
    args = parser.parse_args(services["topics"]["command"])
    assert callable(args.func)
