"""Every Redis key and channel the broker writes, in one place.

A customer's keys share one hash-tagged prefix, so that a Redis Cluster keeps them in one slot
and one script may touch them together::

    rb:{<digest of "shop/customer">}           the prefix of one customer (its scope)
      :rl:<policy>                            a rate-limit window (read, write)
      :c:<function>:<version>                 a cached answer of a cached function
      :l:<function>:<version>                 the lease of that answer's fetch (collapsing)
      :g                                      the customer's cache generation
      :bo                                     the customer's upstream back-off
      :idem:<digest of the Idempotency-Key>   an idempotency record
    rb:{<digest of the client address>}:rl:issuer   failed issuer-key attempts of one client
    rb:invalidations                          the pub/sub channel of near-tier invalidations
    rb:log-key                                the key of customer hashes in logs (no expiry)
    rb:heartbeat                              the channel of the Stores' write probes (no reader)

Raw identifiers never appear in a key: customer ids, addresses and idempotency keys are
digested (:func:`digest`).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

CHANNEL = "rb:invalidations"
LOG_KEY = "rb:log-key"
HEARTBEAT = "rb:heartbeat"


def digest(value: str) -> str:
    """The first 16 bytes of SHA-256, in hex: how raw identifiers appear in keys."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def customer_scope(shop: str, customer: str) -> str:
    """The scope string of one customer (customer ids never contain '/')."""
    return f"{shop}/{customer}"


@functools.lru_cache(maxsize=16_384)
def scope_prefix(scope: str) -> str:
    """``rb:{<hash>}``: the hash-tagged prefix of every key of one scope."""
    return f"rb:{{{digest(scope)}}}"


def rate(prefix: str, policy: str) -> str:
    """The window of ``policy`` for the scope of ``prefix``."""
    return f"{prefix}:rl:{policy}"


def idempotency(prefix: str, key: str) -> str:
    """The record of one Idempotency-Key of the scope of ``prefix``."""
    return f"{prefix}:idem:{digest(key)}"


def entry(prefix: str, function: str, version: str) -> str:
    """The cached answer of ``function`` at ``version`` for the customer of ``prefix``."""
    return f"{prefix}:c:{function}:{version}"


@dataclass(frozen=True, slots=True)
class EntryKeys:
    """The keys one cached read touches (one function, API version and customer)."""

    prefix: str
    rate: str
    entry: str
    lease: str
    gen: str
    backoff: str

    @property
    def all(self) -> list[str]:
        """What a repair may delete: every key of the read but the generation, which the
        scripts replace by a higher one themselves (deleting it would rewind it)."""
        return [self.rate, self.entry, self.backoff, self.lease]


@functools.lru_cache(maxsize=8_192)
def entry_keys(function: str, version: str, shop: str, customer: str, policy: str) -> EntryKeys:
    """The keys of one cached read; ``policy`` names the limit its script counts."""
    prefix = scope_prefix(customer_scope(shop, customer))
    return EntryKeys(
        prefix=prefix,
        rate=rate(prefix, policy),
        entry=entry(prefix, function, version),
        lease=f"{prefix}:l:{function}:{version}",
        gen=f"{prefix}:g",
        backoff=f"{prefix}:bo",
    )
