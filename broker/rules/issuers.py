"""Issuer keys: the merchant server's credential on ``POST /tokens`` and ``POST /invalidations``.

Plain Python, no framework. The key selects its shop (a key belongs to exactly one shop, spec
2.1): it is looked up by its digest and compared in constant time
(:meth:`broker.config.shops.Shops.by_issuer_key`). A valid key is always admitted, whatever
failures came before it from the same address (spec 3.1 and 5: behind a proxy or NAT every
caller shares one address, so throttling valid keys would let anyone lock the merchant's server
out). Only failures are counted, per client address, and once an address is over the limit its
further failures are answered 429 instead of 401.
"""

from __future__ import annotations

from broker.config.settings import Settings, Shop
from broker.errors import InvalidIssuerKey
from broker.store.limits import Limits

POLICY = "issuer"


async def admit(limits: Limits, settings: Settings, presented: str | None, client: str) -> Shop:
    """The shop of a valid issuer key; a wrong key is counted and refused (401, or 429 when
    over)."""
    shop = settings.shops.by_issuer_key(presented)
    if shop is None:
        await refuse(limits, client)
    assert shop is not None  # refuse() always raises
    return shop


async def confirm(limits: Limits, shop: Shop, named: str | None, client: str) -> None:
    """The body's optional ``shop`` must name the key's shop: otherwise the key is refused as
    a wrong one (it is not that shop's key), and counted as a failure."""
    if named is not None and named != shop.slug:
        await refuse(limits, client)


async def refuse(limits: Limits, client: str) -> None:
    """Count a failed attempt of ``client`` and refuse it (429 past the limit, else 401)."""
    await limits.hit(POLICY, client)  # raises 429 past the limit (and counts the refusal)
    raise InvalidIssuerKey()
