"""The Redis client: one pooled client (or cluster client) per process, with short timeouts."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.config.settings import ConfigError
from broker.store.keys import HEARTBEAT
from broker.store.scripts import Client

CLUSTER_SCHEMES = {"redis+cluster": "redis", "redis-cluster": "redis", "rediss+cluster": "rediss"}


async def drop_connections(client: Client) -> None:
    if isinstance(client, RedisCluster):
        for node in client.get_nodes():
            await node.disconnect_free_connections()
    else:
        await client.connection_pool.disconnect()


def make_client(
    url: str,
    *,
    timeout: float = 0.25,
    max_connections: int = 64,
    health_check_interval: int = 30,
) -> Client:
    """A Redis (or Redis Cluster) client with short timeouts and one immediate retry.

    The retry covers only a broken connection (a pooled socket that Redis closed when it
    restarted), which costs nothing when Redis is down; a time-out is never retried, since it
    would double the wait on a hung Redis. The Store's breaker handles the rest.
    """
    parts = urlsplit(url)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": health_check_interval,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    }
    if parts.scheme in CLUSTER_SCHEMES:
        plain = urlunsplit(parts._replace(scheme=CLUSTER_SCHEMES[parts.scheme]))
        return RedisCluster.from_url(
            plain, max_connections=max_connections, require_full_coverage=True, **common
        )
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(["REDIS_URL: only redis://, rediss://, unix:// and cluster URLs work"])
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=2.0, **common
    )
    return Redis.from_pool(pool)


async def probe(client: Client, *, write: bool) -> None:
    """Ping Redis (every primary of a cluster: with one away, a share of customers' keys is
    too) and, with ``write``, ``PUBLISH`` a heartbeat: a write, which a paused Redis holds."""
    if isinstance(client, RedisCluster):
        nodes = RedisCluster.PRIMARIES
        await client.ping(target_nodes=nodes)
        if write:
            await client.execute_command("PUBLISH", HEARTBEAT, "1", target_nodes=nodes)
    elif write:
        await client.publish(HEARTBEAT, "1")
    else:
        await client.ping()
