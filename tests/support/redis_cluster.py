"""A real local Redis Cluster (3 primaries, 3 replicas) and a Sentinel group, on free loopback ports."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from tests.support.redis_proc import RedisServer, free_port

__all__ = ["LocalCluster", "LocalSentinels", "wait_until_sync"]


def wait_until_sync(condition: Callable[[], bool], *, timeout: float = 30, every: float = 0.2) -> None:
    """Re-check `condition` until it holds; TimeoutError after `timeout` seconds (set-up code, outside event loops)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition {condition.__name__} did not hold within {timeout}s")
        time.sleep(every)  # polling a server's own state; the deadline is the contract


def _link_up(client: Redis) -> bool:
    """A primary is fine as it is; a replica must have finished its first sync."""
    info = client.info("replication")
    return info["role"] == "master" or info.get("master_link_status") == "up"


class LocalCluster:
    def __init__(self, directory: Path, *, primaries: int = 3, node_timeout_ms: int = 2000) -> None:
        def args() -> list[str]:
            return [
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms), "--appendonly", "yes",
                # The bus port is otherwise port + 10000, which may not exist or be free.
                "--cluster-port", str(free_port()),
                # Replicas in sync at once, not after Redis's 5 s diskless-sync delay.
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip

        self.nodes = [RedisServer(directory / f"node{i}", args=args()) for i in range(primaries * 2)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30) -> None:
        def all_ok() -> bool:
            for node in self.nodes:
                if node.proc is None:
                    continue
                with Redis(host="127.0.0.1", port=node.port) as client:
                    if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                        return False
                    # Every node must also see every replica attached, or clients meet MOVED storms.
                    nodes = client.execute_command("CLUSTER", "NODES")
                    text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
                    live = [n for n in self.nodes if n.proc is not None]
                    if text.count("slave") < len(live) - len(live) // 2 or "fail" in text:
                        return False
                    if not _link_up(client):
                        return False
            return True

        wait_until_sync(all_ok, timeout=timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class LocalSentinels:
    """One primary, one replica and three sentinels watching them as `mymaster`."""

    def __init__(self, directory: Path, *, down_after_ms: int = 1000) -> None:
        quick_sync = ["--appendonly", "yes", "--repl-diskless-sync-delay", "0"]
        self.primary = RedisServer(directory / "primary", args=list(quick_sync))
        self.replica = RedisServer(directory / "replica", args=list(quick_sync))
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.sentinel_ports = [free_port() for _ in range(3)]

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def start(self) -> None:
        self.primary.start()
        self.replica.args += ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        for port in self.sentinel_ports:
            config = self.directory / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor mymaster 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds mymaster {self.down_after_ms}\n"
                "sentinel failover-timeout mymaster 5000\nsentinel parallel-syncs mymaster 1\n"
            )
            self.sentinels.append(
                subprocess.Popen(["redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL)
            )

        def replica_in_sync() -> bool:
            with Redis(host="127.0.0.1", port=self.replica.port) as client:
                return _link_up(client)

        wait_until_sync(replica_in_sync, timeout=30)

        def sentinels_see_replica() -> bool:
            for port in self.sentinel_ports:
                try:
                    with Redis(host="127.0.0.1", port=port) as client:
                        if not client.execute_command("SENTINEL", "REPLICAS", "mymaster"):
                            return False
                except RedisError:  # a sentinel still starting refuses the connection
                    return False
            return True

        wait_until_sync(sentinels_see_replica, timeout=30)

    def master_port(self) -> int:
        with Redis(host="127.0.0.1", port=self.sentinel_ports[0]) as client:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
            return int(port)

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.terminate()
            proc.wait(10)
        self.primary.stop()
        self.replica.stop()
