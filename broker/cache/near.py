"""The near cache: referral lists in process memory, in front of Redis, kept honest by Redis.

A cached read that finds its list here makes no network call at all. Three rules keep that from
ever serving a list older than the customer's last send:

- **Generations.** Every entry carries the customer's cache generation it was stored under
  (Redis's ``:g`` key, bumped by every invalidation). An entry is put only if no invalidation
  with a newer generation has been heard of, and a read that carries a ``Consistency-Token``
  (the generation a send produced) never takes an entry older than it.
- **Invalidations travel by Redis pub/sub.** The invalidation script publishes
  ``<customer key prefix>|<generation>`` (``rb:{<digest>}|42``, :func:`message`) on
  :data:`CHANNEL`; every process subscribes
  (:class:`Invalidations`) and drops that customer's entries, within a millisecond on a healthy
  network. The sending process drops its own entries before it answers.
- **No news is no trust.** The tier is *live* only while this process is subscribed and the
  Store says Redis is up (its heartbeat, a write, answered within the Redis timeout: a Redis
  that holds writes back during a failover turns it down before a send it held back gives
  up). Whenever either stops being true every entry is dropped, and on
  becoming live again the tier starts empty (invalidations sent meanwhile were not heard). So
  the tier never outlives what the process can know: with Redis down or the subscription
  broken, reads go to the Store (and its own fallback) as before.

On a Redis Cluster, classic pub/sub is cluster-wide (a message published on any node reaches
subscribers on every node), so one subscription to any node hears every invalidation; if that
node fails the subscriber moves to another and the tier is empty meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from broker.store import keys
from broker.store.connect import CLUSTER_SCHEMES
from broker.store.keys import CHANNEL
from broker.store.store import REDIS_FAILURES, Store

log = structlog.get_logger("broker.nearcache")

ENTRY_OVERHEAD = 200  # bytes a stored entry costs beyond its body (key, tuple, dict slot)


@dataclass(slots=True)
class NearEntry:
    body: bytes
    fresh_until: float  # on the cache's monotonic clock
    gen: int


class NearCache:
    """A bounded, least-recently-used map of Redis entry keys to referral lists.

    ``entries`` lists the (function, API version) pairs of cached answers, so that a customer's
    entries can be named from the customer's key prefix alone (what an invalidation carries).
    """

    def __init__(
        self,
        entries: Sequence[tuple[str, str]],
        *,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        max_seen: int = 100_000,
    ) -> None:
        self.entries = tuple(entries)  # (function, version) of every cached answer
        self.max_bytes = max_bytes
        self.clock = clock
        self.max_seen = max_seen
        self.size = 0
        self._entries: OrderedDict[str, NearEntry] = OrderedDict()
        # Customer prefix -> the newest generation an invalidation announced for it.
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.subscribed = False
        self.store_up = False
        self.live = False
        self.is_live = asyncio.Event()  # set while live, for whoever waits for it
        # Bumped each time the tier goes live: a reply read before that may predate
        # invalidations this process never heard, so its put is refused.
        self.epoch = 1

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, min_gen: int) -> NearEntry | None:
        """The fresh entry for ``key`` of generation ``min_gen`` or newer, if any."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.gen < min_gen or entry.fresh_until <= self.clock():
            return None
        self._entries.move_to_end(key)
        return entry

    def put(
        self, prefix: str, key: str, body: bytes, gen: int, fresh_ms: int, epoch: int = 0
    ) -> None:
        """Keep ``body`` for ``fresh_ms``, unless a newer generation was announced meanwhile or
        the tier went off and on since ``epoch`` (when given) was read."""
        if not self.live or fresh_ms <= 0 or self._seen.get(prefix, -1) > gen:
            return
        if epoch and epoch != self.epoch:
            return
        cost = len(body) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old.body) + ENTRY_OVERHEAD
        self._entries[key] = NearEntry(body, self.clock() + fresh_ms / 1000, gen)
        self.size += cost
        while self.size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.size -= len(evicted.body) + ENTRY_OVERHEAD

    def drop(self, prefix: str, gen: int | None = None) -> None:
        """Forget one customer's entries; remember ``gen`` so no older entry comes back."""
        for function, version in self.entries:
            old = self._entries.pop(keys.entry(prefix, function, version), None)
            if old is not None:
                self.size -= len(old.body) + ENTRY_OVERHEAD
        if gen is not None and gen > self._seen.get(prefix, -1):
            self._seen[prefix] = gen
            self._seen.move_to_end(prefix)
            while len(self._seen) > self.max_seen:
                self._seen.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self._seen.clear()
        self.size = 0

    def set_subscribed(self, subscribed: bool) -> None:
        self.subscribed = subscribed
        self._update()

    def set_store_up(self, up: bool) -> None:
        self.store_up = up
        self._update()

    def _update(self) -> None:
        live = self.subscribed and self.store_up
        if live != self.live:
            # Either way the entries are suspect: invalidations may have gone unheard.
            self.clear()
            self.live = live
            if live:
                self.epoch += 1
                self.is_live.set()
            else:
                self.is_live.clear()
            log.info("nearcache.live" if live else "nearcache.off")


def message(prefix: str, gen: int) -> str:
    """The pub/sub payload announcing generation ``gen`` of the customer ``prefix``."""
    return f"{prefix}|{gen}"


class Invalidations:
    """Subscribes to :data:`CHANNEL` and applies every instance's invalidations to ``near``.

    Runs until cancelled: connect, subscribe, then read messages; a ping every
    ``ping_interval`` seconds must be answered within ``ping_timeout``, or the subscription
    counts as broken (the tier goes off) and is made again.
    """

    def __init__(
        self,
        store: Store,
        near: NearCache,
        url: str,
        *,
        ping_interval: float = 1.0,
        ping_timeout: float = 1.0,
        retry_delay: float = 0.5,
    ) -> None:
        self.store = store
        self.near = near
        self.url = url
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.retry_delay = retry_delay
        self.received = 0
        self._node = 0

    def _client(self) -> Redis:
        """A plain connection for the subscription (to one cluster node, on a cluster)."""
        parts = urlsplit(self.url)
        if parts.scheme not in CLUSTER_SCHEMES:
            return Redis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=None)
        scheme = CLUSTER_SCHEMES[parts.scheme]
        netloc = parts.netloc
        cluster = self.store.redis
        if isinstance(cluster, RedisCluster):
            nodes = cluster.get_nodes()
            if nodes:
                node = nodes[self._node % len(nodes)]
                self._node += 1
                auth = netloc.rpartition("@")[0]
                netloc = f"{auth}@{node.host}:{node.port}" if auth else f"{node.host}:{node.port}"
        plain = urlunsplit(parts._replace(scheme=scheme, netloc=netloc))
        return Redis.from_url(plain, socket_connect_timeout=1.0, socket_timeout=None)

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                self.near.set_subscribed(False)
                raise
            except REDIS_FAILURES as exc:
                if self.near.subscribed:
                    log.warning("nearcache.subscription_lost", error=type(exc).__name__)
            except Exception as exc:  # the subscriber must outlive any surprise
                log.error("nearcache.subscriber_failed", error=type(exc).__name__)
            self.near.set_subscribed(False)
            await asyncio.sleep(self.retry_delay)

    async def _listen(self) -> None:
        client = self._client()
        pubsub = client.pubsub()
        try:
            async with asyncio.timeout(self.ping_timeout + 1.0):
                await pubsub.subscribe(CHANNEL)
                confirmed = await pubsub.get_message(timeout=self.ping_timeout)
            if not confirmed or confirmed.get("type") != "subscribe":
                raise TimeoutError("no subscription confirmation")
            self.near.set_subscribed(True)
            loop = asyncio.get_running_loop()
            last_pong = loop.time()
            next_ping = last_pong + self.ping_interval
            while True:
                now = loop.time()
                if now >= next_ping:
                    await pubsub.ping()
                    next_ping = now + self.ping_interval
                if now - last_pong > self.ping_interval + self.ping_timeout:
                    raise TimeoutError("the subscription stopped answering pings")
                item = await pubsub.get_message(timeout=max(0.01, next_ping - now))
                if item is None:
                    continue
                kind = item.get("type")
                if kind == "message":
                    self._apply(item.get("data"))
                    last_pong = loop.time()  # any traffic proves the connection alive
                elif kind == "pong":
                    last_pong = loop.time()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            with contextlib.suppress(Exception):
                await client.aclose()

    def _apply(self, data: Any) -> None:
        if isinstance(data, bytes):
            data = data.decode("ascii", "replace")
        if not isinstance(data, str):
            return
        prefix, _, gen = data.rpartition("|")
        if not prefix or not gen.isdigit():
            return
        self.received += 1
        self.near.drop(prefix, int(gen))
