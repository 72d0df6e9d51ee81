"""Secrets every instance on one Redis shares, made once by whichever instance comes first."""

from __future__ import annotations

import secrets

from broker.store.store import REDIS_FAILURES, Store


async def shared_secret(store: Store, key: str) -> bytes | None:
    """The secret kept at ``key`` (made now if no instance made it before: 32 random bytes, no
    expiry), or None without a Redis that answers."""
    redis = store.redis
    if redis is None or store.state != "up":
        return None
    try:
        await redis.set(key, secrets.token_hex(32), nx=True)
        value = await redis.get(key)
    except REDIS_FAILURES:
        return None
    if not isinstance(value, bytes) or len(value) < 32:
        return None  # not ours (a tampered value): hash with the fallback
    return value
