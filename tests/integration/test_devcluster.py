"""The development Redis Cluster: three primaries that share the 16384 slots, keys that
land on every node and come back through a cluster client, a port taken while starting,
and no server left running after stop() or after a process that forgot to stop it."""

from __future__ import annotations

import asyncio
import socket
import string
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MovedError

import segengine.devcluster
from segengine.devcluster import SLOTS, DevCluster
from tests.integration.support import REPO_ROOT
from tests.integration.test_devstack import alive


@pytest.fixture
async def cluster() -> AsyncIterator[DevCluster]:
    c = DevCluster(primaries=3)
    started = time.monotonic()
    try:
        await c.start()
    except Exception as exc:  # a cluster that cannot start is a failure, never a skip
        pytest.fail(f"the development Redis Cluster did not start: {exc}", pytrace=False)
    print(f"Redis Cluster of 3 started in {time.monotonic() - started:.2f} s")
    try:
        yield c
    finally:
        await c.stop()


async def test_three_primaries_share_the_slots_and_keys_land_on_every_node(cluster: DevCluster) -> None:
    assert len(cluster.ports) == 3 and cluster.addresses == [f"127.0.0.1:{p}" for p in cluster.ports]
    assert cluster.url == f"redis://{cluster.addresses[0]}/0"
    client = RedisCluster.from_url(cluster.url)
    try:
        assert (await client.cluster_info())["cluster_state"] == "ok"
        owned: dict[str, int] = {}
        for (first, last), holders in (await client.cluster_slots()).items():
            host, port = holders["primary"]
            owned[f"{host}:{port}"] = owned.get(f"{host}:{port}", 0) + last - first + 1
        assert sorted(owned) == sorted(cluster.addresses)
        assert all(n > 0 for n in owned.values()) and sum(owned.values()) == SLOTS

        keys: dict[str, str] = {}  # node address -> a key whose slot it owns
        for tag in string.ascii_lowercase:
            key = f"{{{tag}}}:customer"
            node = client.get_node_from_key(key)
            assert node is not None
            keys.setdefault(f"{node.host}:{node.port}", key)
        assert sorted(keys) == sorted(cluster.addresses)
        for address, key in keys.items():
            await client.set(key, f"on {address}")
        for address, key in keys.items():
            assert await client.get(key) == f"on {address}".encode()
    finally:
        await client.aclose()

    for address, key in keys.items():  # each key is stored on its node; the others redirect
        for other in cluster.addresses:
            plain = Redis.from_url(f"redis://{other}/0")
            try:
                if other == address:
                    assert await plain.get(key) == f"on {address}".encode()
                else:
                    with pytest.raises(MovedError):
                        await plain.get(key)
            finally:
                await plain.aclose()

    pids = cluster.pids
    assert len(pids) == 3 and all(alive(p) for p in pids)
    await cluster.stop()
    assert not any(alive(p) for p in pids)
    assert cluster.pids == []
    await cluster.stop()  # a second stop is harmless


async def test_a_port_taken_while_starting_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    squatters = [socket.socket() for _ in range(20)]  # a listener that never answers, on a port a node may use
    try:
        for squatter in squatters:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
        taken = next(s.getsockname()[1] for s in squatters if s.getsockname()[1] <= 55535)
        ports = iter([taken])
        real = segengine.devcluster.free_port
        monkeypatch.setattr(segengine.devcluster, "free_port", lambda: next(ports, None) or real())
        async with DevCluster(primaries=3) as three:
            assert taken not in three.ports and len(three.ports) == 3
            client = RedisCluster.from_url(three.url)
            try:
                await client.set("k", "v")
                assert await client.get("k") == b"v"
            finally:
                await client.aclose()
    finally:
        for squatter in squatters:
            squatter.close()


async def test_nodes_do_not_outlive_a_process_that_forgot_to_stop_them() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from segengine.devcluster import DevCluster

        async def main():
            cluster = DevCluster(primaries=3)
            await cluster.start()
            print(*cluster.pids, flush=True)  # and exit without stop(): the atexit hook must stop them

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()
    pids = [int(p) for p in out.split()]
    assert len(pids) == 3
    assert not any(alive(p) for p in pids)
