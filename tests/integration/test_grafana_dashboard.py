"""deploy/grafana/dashboards/segengine.json: every PromQL expression parses (promtool), and
every metric it reads is one a live worker's /metrics serves."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from segengine.devstack import DevStack
from tests.integration.promql import exported_names, metric_names
from tests.integration.support import RunningWorker, produce, settings_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "segengine.json"
FROM_PROMETHEUS = {"up"}  # written by Prometheus itself for every target
# What an SRE must find on the dashboard (the list), by words in panel titles.
REQUIRED_PANELS = [
    "throughput", "consumer lag", "event -> change latency", "population", "transitions",
    "actions", "dlq by reason", "timer backlog", "redis latency",
]  # fmt: skip
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "segengine", "$dimension": "value_tier"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in items:
        out.append(p)
        out += panels(p.get("panels", []))
    return out


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    exprs = [(p["title"], t["expr"]) for p in panels(dashboard()["panels"]) for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = q.removeprefix("label_values(").rsplit(",", 1)[0]  # label_values(<selector>, label)
            exprs.append((f"variable {var['name']}", inner))
    return exprs


def test_dashboard_has_the_panels_sres_need() -> None:
    d = dashboard()
    assert d["uid"] == "segengine" and d["title"] == "segengine"
    titles = [p["title"].lower() for p in panels(d["panels"]) if p["type"] != "row"]
    for wanted in REQUIRED_PANELS:
        assert any(wanted in t for t in titles), f"no panel about {wanted!r} in {titles}"
    ids = [p["id"] for p in panels(d["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels(d["panels"]):
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    # The population panel repeats per dimension; the populations are the same on every worker, hence max.
    population = next(p for p in panels(d["panels"]) if "population" in p["title"].lower())
    assert population["repeat"] == "dimension" and population["targets"][0]["expr"].startswith("max by (segment)")


def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each expression (Grafana's variables substituted) as a recording rule."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: `make test` installs it (Debian package prometheus)", pytrace=False)
    rules = []
    for i, (where, expr) in enumerate(expressions()):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{where}: unknown variable in {expr}"
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"promtool check rules:\n{proc.stdout}\n{proc.stderr}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_every_metric_on_the_dashboard_is_exported_by_a_live_worker(stack: DevStack) -> None:
    now = int(time.time() * 1000)
    await produce(stack, "events.purchase", [
        ("dash-1", {"event_id": "d1", "customer_id": "dash-1", "type": "purchase", "ts": now - 1000, "order_id": "o1", "amount": 12.5}),
        ("dash-2", b"{not json"),
    ])  # fmt: skip
    port = free_port()
    async with RunningWorker(settings_for(stack, http_port=port, http_host="127.0.0.1")) as w:
        await w.wait_for(2)
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    exported = exported_names(text)
    assert "segengine_events_total" in exported and "segengine_event_to_change_seconds_bucket" in exported
    used: dict[str, list[str]] = {}
    for where, expr in expressions():
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr}"
        for name in names:
            used.setdefault(name, []).append(where)
    missing = {name: where for name, where in used.items() if name not in exported and name not in FROM_PROMETHEUS}
    assert not missing, f"the dashboard reads metrics a worker does not export: {missing}"
    # Histograms are read through their series, counters through _total.
    for name in used:
        kind = exported.get(name)
        if kind == "histogram":
            assert name.endswith(("_bucket", "_sum", "_count")), name
        if kind == "counter":
            assert name.endswith("_total"), name
