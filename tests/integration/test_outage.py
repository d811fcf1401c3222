"""A worker that loses Redis or the broker, with no traffic at all, does not wait forever:
/readyz answers 503 from the first failed probe, each backoff step is one log line naming
the dependency, and past SEGENGINE_DEPENDENCY_TIMEOUT_S the process exits 1 with one line,
so that an orchestrator restarts it. The server that goes away is a private one, started for
the test (the shared stack keeps serving the others)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from segengine.devstack import DevStack, free_port
from tests.integration.support import FAST_GROUP

TIMEOUT_S = 8  # the dependency timeout the workers run with


def worker_env(bootstrap: str, redis_url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "SEGENGINE_KAFKA_BOOTSTRAP": bootstrap,
        "SEGENGINE_REDIS_URL": redis_url,
        "SEGENGINE_HTTP_PORT": str(port),
        "SEGENGINE_HTTP_HOST": "127.0.0.1",
        "SEGENGINE_GROUP_ID": f"outage-{port}",
        "SEGENGINE_DEPENDENCY_TIMEOUT_S": str(TIMEOUT_S),
        **{f"SEGENGINE_{k.upper()}": str(v) for k, v in FAST_GROUP.items()},
    }


async def ready(port: int) -> int | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_status(port: int, status: int, proc: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await ready(port)) != status:
        assert proc.returncode is None, f"the worker exited with {proc.returncode} before /readyz said {status}"
        assert asyncio.get_running_loop().time() < deadline, f"/readyz still {got}, not {status}, after {timeout} s"
        await asyncio.sleep(0.5)


async def outage(tmp_path: Path, bootstrap: str, redis_url: str, kill: int) -> tuple[int | None, list[str]]:
    """Run a worker until ready, SIGKILL process ``kill``, and return its exit code and stderr lines."""
    port = free_port()
    log = tmp_path / "worker.log"
    with open(log, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "segengine", "run",
            env=worker_env(bootstrap, redis_url, port), stdout=asyncio.subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        try:
            await wait_status(port, 200, proc, timeout=180)  # start and join the group: slow on a busy machine
            os.kill(kill, signal.SIGKILL)
            await wait_status(port, 503, proc, timeout=30)
            code: int | None = await asyncio.wait_for(proc.wait(), TIMEOUT_S + 120)
        except TimeoutError:
            code = None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return code, log.read_text(errors="replace").splitlines()


@pytest.mark.parametrize("lost", ["redis", "kafka"])
async def test_a_worker_that_loses_a_dependency_exits_1_after_the_timeout(
    stack: DevStack, tmp_path: Path, lost: str
) -> None:
    private = DevStack(kafka=lost == "kafka", redis=lost == "redis")
    async with private:
        bootstrap = private.kafka_bootstrap if lost == "kafka" else stack.kafka_bootstrap
        redis_url = private.redis_url if lost == "redis" else stack.redis_url
        code, lines = await outage(tmp_path, bootstrap, redis_url, private.pids[0])
    tail = "\n".join(lines[-20:])
    name = (
        f"Redis at {redis_url.removeprefix('redis://').split('/')[0]}" if lost == "redis" else f"broker at {bootstrap}"
    )
    assert code == 1, f"exit code {code}; the log ends:\n{tail}"
    assert "Traceback" not in tail
    steps = [line for line in lines if name in line and "out of reach for" in line]
    assert len(steps) >= 2, f"no backoff lines naming {name}:\n{tail}"
    assert len(steps) <= 12, f"{len(steps)} lines for one outage of {TIMEOUT_S} s: not backing off"
    assert lines[-1].startswith("error:") and name in lines[-1] and "SEGENGINE_DEPENDENCY_TIMEOUT_S" in lines[-1], tail


async def test_a_worker_whose_broker_stops_answering_during_a_group_join_still_sees_it_is_stopping(
    stack: DevStack,
) -> None:
    """The broker stops answering (SIGSTOP) while the worker rejoins its group (a second member
    came), in its revoke callback: aiokafka's getmany() then waits for the reassignment to end,
    without a bound (as on a first join, when a worker's broker goes away before it ends). The batch loop must still come back and see
    that the worker is stopping, which is how an outage past SEGENGINE_DEPENDENCY_TIMEOUT_S ends
    the process."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    from segengine.events import INPUT_TOPICS
    from segengine.settings import Settings
    from segengine.worker import Worker

    private = DevStack(kafka=True, redis=False)
    async with private:
        broker = private.pids[0]
        rejoining = asyncio.Event()

        class StopBrokerOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: object) -> None:
                if revoked:  # not the first join: the rebalance the second member caused
                    os.kill(broker, signal.SIGSTOP)
                    rejoining.set()

            async def on_partitions_assigned(self, assigned: object) -> None:
                return None

        settings = Settings(kafka_bootstrap=private.kafka_bootstrap, redis_url=stack.redis_url, group_id="join-outage",
                            **FAST_GROUP)  # fmt: skip
        worker = Worker(settings)
        worker.consumer.subscribe(list(INPUT_TOPICS), listener=StopBrokerOnRevoke())
        await worker.consumer.start()
        other = AIOKafkaConsumer(*INPUT_TOPICS, bootstrap_servers=private.kafka_bootstrap, group_id="join-outage",
                                 partition_assignment_strategy=(RangePartitionAssignor,))  # fmt: skip
        joining = asyncio.create_task(other.start())
        try:
            await asyncio.wait_for(rejoining.wait(), 120)  # a reassignment is under way, and cannot finish
            worker.stopping.set()
            assert await asyncio.wait_for(worker._next_batch(), 60) == []
        finally:
            os.kill(broker, signal.SIGCONT)
            joining.cancel()
            await asyncio.gather(joining, return_exceptions=True)
            await asyncio.wait_for(other.stop(), 60)
            await asyncio.wait_for(worker._close(), 60)
