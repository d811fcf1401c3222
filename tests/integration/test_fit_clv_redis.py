"""`segengine fit clv --redis-url` on the live population: an eighth of CDNOW (about 2,950
customers) replayed through a worker in event-clock mode, then the command, run as a user runs
it, fits on the states in Redis the parameters a fit of the same purchases from the file gives,
with T counted to the same day."""

from __future__ import annotations

import asyncio
import sys
from datetime import date
from pathlib import Path

import pytest

from segengine import replay
from segengine.clv import artefact
from segengine.clv.calibrate import fit_purchases
from segengine.clv.history import read_purchases
from segengine.clv.summary import day_number
from segengine.devstack import DevStack
from tests.integration.support import FAST_GROUP, REPO_ROOT, RunningWorker, rule_packs, settings_for
from tests.integration.test_cli_tools import env_for
from tests.integration.test_replay_history import subset_file

pytest.importorskip("scipy")

AT = "1998-06-30"  # CDNOW's last day: the file's fit is calibrated to it too


async def test_fit_on_redis_gives_the_files_parameters(stack: DevStack, tmp_path: Path) -> None:
    history = subset_file(tmp_path)
    records = replay.load(history, "cdnow")
    rules = tmp_path / "rules"
    rules.mkdir()
    settings = settings_for(
        stack, **FAST_GROUP, group_id="fit-clv", clock="event", rules_file=rule_packs(rules, "lifecycle.yaml")
    )
    async with RunningWorker(settings) as worker:
        await replay.produce(stack.kafka_bootstrap, records)
        await worker.wait_for(len(records), timeout=90)

    output = tmp_path / "clv.yaml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "segengine", "fit", "clv", "--redis-url", stack.redis_url, "--at", AT,
        "--time-unit", "day", "-o", str(output), cwd=REPO_ROOT, env=env_for(stack),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()

    purchases = read_purchases(history, replay.Format.cdnow)
    want = fit_purchases(
        purchases, source=history.name, time_unit="day", calibration_end_day=day_number(date.fromisoformat(AT))
    ).artefact
    got = artefact.load(output)
    customers = len(set(purchases.customer))
    assert got.data.customers == customers == want.data.customers
    assert got.data.source == f"redis: {customers:,} customers at {AT}"
    assert (got.data.first_purchase, got.data.last_purchase) == (want.data.first_purchase, want.data.last_purchase)
    assert got.models.gamma_gamma is not None and want.models.gamma_gamma is not None
    for model, theirs in ((got.models.bgnbd, want.models.bgnbd), (got.models.gamma_gamma, want.models.gamma_gamma)):
        for name, value in vars(model).items():
            assert abs(value - vars(theirs)[name]) <= 1e-6 * abs(vars(theirs)[name]), (name, value, theirs)
    printed = out.decode()
    assert f"{customers:,} customers (" in printed and "BG/NBD" in printed and "Gamma-Gamma" in printed
    assert f"model {got.version} written to {output}" in printed
