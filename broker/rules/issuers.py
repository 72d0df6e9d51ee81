"""Issuer keys: the merchant server's credential on ``POST /tokens`` and ``POST /invalidations``.

Plain Python, no framework. A presented key is compared with every configured key in constant
time. A valid key is always admitted, whatever failures came before it from the same address
(spec 3.1 and 5: behind a proxy or NAT every caller shares one address, so throttling valid keys
would let anyone lock the merchant's server out). Only failures are counted, per client address,
and once an address is over the limit its further failures are answered 429 instead of 401.
"""

from __future__ import annotations

import hmac

from broker.config.settings import Settings
from broker.errors import InvalidIssuerKey
from broker.store.limits import Limits

POLICY = "issuer"


def matches(presented: str | None, settings: Settings) -> bool:
    """Whether ``presented`` is one of the configured issuer keys (constant time, every key)."""
    matched = False
    for key in settings.issuer_keys:
        # Compare against every key, always, so timing says nothing about which one is close.
        matched |= presented is not None and hmac.compare_digest(
            presented.encode(), key.reveal().encode()
        )
    return matched


async def admit(limits: Limits, settings: Settings, presented: str | None, client: str) -> None:
    """Let a valid issuer key through; count a wrong one and refuse it (401, or 429 when over)."""
    if matches(presented, settings):
        return
    await limits.hit(POLICY, client)  # raises 429 past the limit (and counts the refusal)
    raise InvalidIssuerKey()
