"""/metrics of a real worker on the embedded stack: the format the scraper asks for, no
``*_created`` series, rejected records counted by their type, and ``segengine_build_info``
following the rules through a hot reload (and staying put when a reload is refused)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

import segengine
from segengine.devstack import DevStack
from tests.integration.support import RunningWorker, produce, settings_for

DAY = 86_400_000
NOW = int(time.time() * 1000)
RULES_V1 = "name: tiers\ndimensions:\n  tier:\n    segments:\n      - {name: big, when: spend_365d >= 100}\n    default: small\n"
RULES_V2 = RULES_V1.replace(">= 100", ">= 20")
BROKEN = RULES_V1.replace("spend_365d", "spend_in_a_year")
# What Prometheus 2.x sends by default.
OPENMETRICS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
Sample = tuple[str, tuple[tuple[str, str], ...]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def purchase(n: int, customer: str, amount: float) -> dict[str, object]:
    return {"event_id": f"m{n}", "customer_id": customer, "type": "purchase", "ts": NOW - DAY,
            "order_id": f"o{n}", "amount": amount}  # fmt: skip


async def scrape(http: aiohttp.ClientSession, url: str, accept: str | None) -> tuple[str, str]:
    async with http.get(url, headers={"Accept": accept} if accept else {}) as response:
        assert response.status == 200
        return response.headers["Content-Type"], await response.text()


def samples(text: str) -> dict[Sample, float]:
    """Every sample of an OpenMetrics page (parsed strictly: the page must be valid OpenMetrics)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in openmetrics_families(text) for s in f.samples}


def build_infos(page: dict[Sample, float]) -> dict[str, float]:
    """rules_version -> value of every segengine_build_info series, checking its version label."""
    out = {}
    for (name, labels), v in page.items():
        if name == "segengine_build_info":
            assert dict(labels)["version"] == segengine.__version__
            out[dict(labels)["rules_version"]] = v
    return out


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.2)


async def test_metrics_of_a_running_worker(stack: DevStack, tmp_path: Path) -> None:
    rules_file = tmp_path / "tiers.yaml"
    rules_file.write_text(RULES_V1)
    await produce(
        stack,
        "events.purchase",
        [
            ("ann", purchase(1, "ann", 50.0)),
            ("ann", purchase(2, "ann", -5.0)),  # bad_value: a purchase
            ("bo", b"{not json"),  # its type unreadable
            ("bo", {**purchase(3, "bo", 5.0), "type": "gift-card"}),  # not a type of the contract
        ],
    )
    await produce(stack, "events.browse", [("bo", purchase(4, "bo", 5.0))])  # a purchase on the browse topic
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    settings = settings_for(stack, rules_file=rules_file, rules_reload_s=0.1, http_port=port, http_host="127.0.0.1")
    async with RunningWorker(settings) as w, aiohttp.ClientSession() as http:
        await w.wait_for(5, timeout=90)
        v1 = w.worker.rules.version

        content_type, classic = await scrape(http, url, None)
        assert content_type == "text/plain; version=1.0.0; charset=utf-8"
        assert "_created" not in classic
        assert {f.name for f in text_string_to_metric_families(classic)} >= {"segengine_events", "segengine_build_info"}

        content_type, text = await scrape(http, url, OPENMETRICS_ACCEPT)
        assert content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8"
        assert text.endswith("# EOF\n") and "_created" not in text
        page = samples(text)
        rejected = {
            (labels["topic"], labels["type"]): v
            for (name, pairs), v in page.items()
            if name == "segengine_events_total" and (labels := dict(pairs))["outcome"] == "rejected"
        }
        assert rejected == {
            ("events.purchase", "purchase"): 1,
            ("events.purchase", "unknown"): 2,
            ("events.browse", "purchase"): 1,
        }
        assert build_infos(page) == {v1: 1}
        assert page[("segengine_rules_reloads_total", (("outcome", "refused"),))] == 0

        rules_file.write_text(RULES_V2)

        async def switched() -> bool:
            return set(build_infos(samples((await scrape(http, url, OPENMETRICS_ACCEPT))[1]))) != {v1}

        await wait_until(switched, "build_info after the switch")
        v2 = w.worker.rules.version
        assert v2 != v1
        assert build_infos(samples((await scrape(http, url, OPENMETRICS_ACCEPT))[1])) == {v2: 1}  # v1 is gone

        rules_file.write_text(BROKEN)

        async def refused() -> bool:
            page = samples((await scrape(http, url, OPENMETRICS_ACCEPT))[1])
            return page[("segengine_rules_reloads_total", (("outcome", "refused"),))] == 1

        await wait_until(refused, "the refused reload counted")
        assert build_infos(samples((await scrape(http, url, OPENMETRICS_ACCEPT))[1])) == {v2: 1}
        assert w.worker.rules.version == v2
