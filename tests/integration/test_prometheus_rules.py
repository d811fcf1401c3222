"""deploy/prometheus: promtool checks the config and the rule files, and runs every alert's
unit tests (deploy/prometheus/tests/*.yml). promtool comes from Debian's package
``prometheus``, which ``make test`` installs when it is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from segengine.metrics import Metrics
from tests.integration.promql import exported_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RUNBOOK = ROOT / "docs" / "runbook.md"
SCRAPED_BY_PROMETHEUS = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: `make test` installs it (Debian package prometheus)", pytrace=False)
    proc = subprocess.run([exe, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=300)
    output = f"{proc.stdout}\n{proc.stderr}"
    if proc.returncode != 0:
        pytest.fail(f"promtool {' '.join(args)} exited {proc.returncode}:\n{output}", pytrace=False)
    return output


def rule_groups() -> list[dict]:  # type: ignore[type-arg]
    return [g for f in sorted((PROMETHEUS / "rules").glob("*.yml")) for g in yaml.safe_load(f.read_text())["groups"]]


def alerts() -> list[dict]:  # type: ignore[type-arg]
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def test_promtool_check_config_passes() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out


def test_alert_unit_tests_pass() -> None:
    tests = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "tests").glob("*.yml"))
    assert tests, "no promtool tests in deploy/prometheus/tests"
    out = promtool("test", "rules", *tests)
    assert out.count("SUCCESS") == len(tests), out


def test_every_alert_is_tested_firing_and_not_firing_and_has_a_runbook_section() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    runbook = RUNBOOK.read_text()
    names = [a["alert"] for a in alerts()]
    assert len(names) >= 7
    for name in names:
        assert name in firing, f"no promtool test shows {name} firing"
        assert name in quiet, f"no promtool test shows {name} staying quiet"
    slugs = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("## ")
    }
    for alert in alerts():
        anchor = alert["annotations"]["runbook"].partition("#")[2]
        assert anchor in slugs, f"{alert['alert']}: docs/runbook.md has no section #{anchor}"
        assert alert["alert"] in runbook, f"docs/runbook.md does not name {alert['alert']}"


def test_rules_read_only_metrics_the_engine_exports_or_rules_define() -> None:
    """A misspelt metric in an alert is an alert that can never fire."""
    exported = exported_names(generate_latest(Metrics().registry).decode())
    recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    for group in rule_groups():
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]):
                assert name in exported or name in recorded or name in SCRAPED_BY_PROMETHEUS, (
                    f"{rule.get('alert') or rule.get('record')} reads {name}, which neither the engine exports nor a rule records"
                )
