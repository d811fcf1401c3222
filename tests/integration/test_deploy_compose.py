"""docker-compose.yml, checked without a Docker engine: valid against the Compose
Specification's JSON schema (as vendored by check-jsonschema), every engine service runs
a real ``segengine`` subcommand, and the Prometheus and Grafana services get the files in
deploy/. The settings, secrets, volumes, ports and profiles, read with compose's variable
interpolation, are checked by tests/unit/test_deploy_files.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from segengine.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the `<<: *engine` merge keys


def engine_services() -> dict[str, dict[str, Any]]:
    """The services built from deploy/Dockerfile (entrypoint `segengine`)."""
    return {
        name: svc for name, svc in compose()["services"].items()
        if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile") == "deploy/Dockerfile"
    }  # fmt: skip


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("check-jsonschema")
    assert exe.exists(), "check-jsonschema is a test dependency: pip install -e '.[test]'"
    return subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True, text=True, timeout=120
    )


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    proc = validate(COMPOSE)
    assert proc.returncode == 0, f"docker-compose.yml is not a valid Compose file:\n{proc.stdout}\n{proc.stderr}"


def test_the_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    """The schema check above can fail: a misspelt service key is refused."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace('    command: ["run"]\n', '    comand: ["run"]\n', 1))
    assert broken.read_text() != COMPOSE.read_text()
    proc = validate(broken)
    assert proc.returncode != 0
    assert "comand" in proc.stdout + proc.stderr


def resolve(args: list[str]) -> Any:
    """The command that `segengine ARGS` runs (typer's click objects); raises LookupError for
    an unknown command, and the CLI's usage error for unknown options or missing arguments."""
    command: Any = typer.main.get_command(app)
    rest = list(args)
    while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):
        sub = command.get_command(command.make_context("segengine", [], resilient_parsing=True), rest[0])
        if sub is None:
            raise LookupError(f"`segengine {' '.join(args)}`: no command {rest[0]!r}")
        command, rest = sub, rest[1:]
    if hasattr(command, "get_command"):
        raise LookupError(f"`segengine {' '.join(args)}` names a group of commands, not a command")
    command.make_context("segengine", rest)
    return command


def test_every_engine_service_runs_a_real_segengine_subcommand() -> None:
    entrypoint = re.search(r"^ENTRYPOINT\s+(.*)$", DOCKERFILE.read_text(), re.M)
    assert entrypoint is not None and entrypoint.group(1).strip() == '["segengine"]'
    services = engine_services()
    commands = {name: svc["command"] for name, svc in services.items()}
    assert commands == {
        "topics": ["topics", "create"],
        "worker-1": ["run"],
        "worker-2": ["run"],
        "producer": ["demo-produce"],
    }
    for command in commands.values():
        resolve(command)
    for wrong in (["topics", "make"], ["topics"], ["run", "--no-such-flag"]):  # the check can fail
        with pytest.raises(Exception):  # noqa: B017 - whichever error the CLI's parser raises
            resolve(wrong)


def test_the_stack_has_what_production_needs() -> None:
    doc = compose()
    services = doc["services"]
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft, one node
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes" and redis[redis.index("--appendfsync") + 1] == "everysec"
    assert services["topics"]["restart"] == "no" and services["producer"]["restart"] == "no"
    workers = {n: s for n, s in engine_services().items() if s["command"] == ["run"]}
    assert len(workers) == 2
    assert len({s["environment"]["SEGENGINE_GROUP_ID"] for s in workers.values()}) == 1  # one consumer group
    for svc in workers.values():
        assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"

    # Prometheus scrapes exactly the workers, on the port their HTTP API listens on, and loads the rules.
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "segengine")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:{svc['environment']['SEGENGINE_HTTP_PORT']}" for name, svc in workers.items()}
    assert config["rule_files"] and all((ROOT / "deploy" / "prometheus" / f).exists() for f in config["rule_files"])

    # Grafana gets the provisioning folder and the dashboards its provider points at.
    grafana = services["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] if v.count(":") == 2 else v.split(":", 1) for v in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "segengine.yml").read_text()
    )
    assert mounts["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    datasource = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    for name, svc in services.items():  # every bind mount's source exists
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
