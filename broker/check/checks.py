"""``broker check``: is this configuration going to work? (spec 7)

Validates the configuration, pings Redis, and calls Bubblehouse's ``Status2`` with a shop token
for every configured API version and every signing key, so that a key Bubblehouse does not know
(for instance the next key of a rotation) shows up before it signs anything. Each finding is one
:class:`CheckResult` in plain words that never contain a secret, a token or a Redis password.

This is an operator's diagnostic, so unlike the request path it reads Bubblehouse's raw status and
error id itself: the point is to tell a rejected key from a rejected version.

Bubblehouse is called through the broker's own transport (``production_transport``: the same
connect and read bounds, no proxy variables, no redirects), so what check sees is what ``broker
serve`` will see. With ``--customer ID`` it also reads that customer's referrals once, through
the broker's own upstream client and upstream token (:mod:`broker.check.customer`), and says
what a shopper would meet. The independent checks (Redis, Status2, the customer read) run
concurrently, and each finding is reported the moment it is known.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from redis.exceptions import RedisClusterException, RedisError

from broker.check.customer import check_customer
from broker.config.settings import ConfigError, Settings, Shop, Shops, SigningKey
from broker.errors import SLUG
from broker.rules.tokens import TokenMinter
from broker.store.connect import make_client
from broker.upstream.transport import (
    ConnectFailed,
    ReadTimeout,
    Transport,
    TransportError,
    production_transport,
)

REDIS_TIMEOUT = 2.0
USER_AGENT = "referral-broker-check/1.0"
CONCURRENT_CALLS = 8  # Status2 calls in flight at once (a shops file may hold many shops)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


Report = Callable[[CheckResult], None]


def _ignore(result: CheckResult) -> None:
    """The default reporter: the caller reads the returned list instead."""


def _where(url: str) -> str:
    """``scheme://host:port`` of a URL: never its user, password, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


async def check_redis(settings: Settings) -> CheckResult:
    """PING the configured Redis (or Redis Cluster) with a short timeout."""
    if settings.redis_url is None:
        return CheckResult("redis", True, "not configured: in-process store, one process only")
    url = settings.redis_url.reveal()
    where = _where(url)
    try:
        client = make_client(url, timeout=REDIS_TIMEOUT, max_connections=2)
    except ConfigError as exc:
        return CheckResult("redis", False, "; ".join(exc.problems))
    except (ValueError, RedisError) as exc:
        return CheckResult("redis", False, f"REDIS_URL is not usable ({type(exc).__name__})")
    try:
        async with asyncio.timeout(REDIS_TIMEOUT * 3):
            pong = await client.ping()
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
        return CheckResult(
            "redis",
            False,
            f"no answer from Redis at {where} ({_redis_reason(exc)}) — check REDIS_URL "
            "and that Redis is running",
        )
    finally:
        await client.aclose()
    if not pong:
        return CheckResult(
            "redis", False, f"Redis at {where} did not answer PING — check REDIS_URL"
        )
    return CheckResult("redis", True, f"PING answered by {where}")


def _redis_reason(exc: BaseException) -> str:
    # Messages of redis-py may quote the URL (and so a password): name the kind of failure only.
    name = type(exc).__name__
    if name == "AuthenticationError" or "auth" in name.lower():
        return "authentication failed"
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return "timed out"
    if "Connection" in name or isinstance(exc, OSError):
        return "connection refused or reset"
    return name


async def _status2(
    transport: Transport, settings: Settings, shop: Shop, version: str, key: SigningKey
) -> tuple[CheckResult, bool]:
    """One Status2 call for ``shop``, signed with ``key``, judged; the flag says whether
    Bubblehouse answered at all."""
    name = f"bubblehouse shop {shop.slug} {version} key {key.kid}"
    alone = dataclasses.replace(shop, signing_keys=(key,))
    minter = TokenMinter(dataclasses.replace(settings, shops=Shops((alone,))))
    where = _where(settings.upstream_url)
    try:
        async with asyncio.timeout(settings.upstream_timeout + 1):
            answer = await transport.post(
                f"/api/{version}/{shop.slug}/Status2",
                b"{}",
                headers={
                    "Authorization": f"Bearer {minter.shop_token()}",
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    "X-Request-ID": f"broker-check-{secrets.token_hex(8)}",
                },
            )
    except ConnectFailed:
        detail = f"cannot connect to Bubblehouse at {where} — check BROKER_UPSTREAM_URL"
        return CheckResult(name, False, detail), False
    except (TimeoutError, ReadTimeout):
        detail = (
            f"Bubblehouse at {where} did not answer within {settings.upstream_timeout:g}s — "
            "check BROKER_UPSTREAM_URL and BROKER_UPSTREAM_TIMEOUT"
        )
        return CheckResult(name, False, detail), False
    except TransportError as exc:
        detail = (
            f"talking to Bubblehouse at {where} failed ({type(exc).__name__}) — "
            "check BROKER_UPSTREAM_URL"
        )
        return CheckResult(name, False, detail), False
    skew = clock_skew(answer.headers.get("Date"), time.time())
    judged = _judge(name, version, key, answer.status, _error_id(answer.body))
    refused = not judged.ok and answer.status == 401
    if refused and skew is not None and abs(skew) > settings.clock_leeway:
        return _skewed(name, skew, settings.clock_leeway), True
    return judged, True


def clock_skew(date: str | None, now: float) -> int | None:
    """Seconds Bubblehouse's clock (its ``Date`` header) is ahead of ours (negative: behind),
    or None without a readable ``Date``. ``Date`` has one-second resolution and is written
    when the answer is, so a round trip adds a second or so; the leeway is far above that."""
    if not date:
        return None
    try:
        when = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return round(when.timestamp() - now)


def _skewed(name: str, skew: int, leeway: int) -> CheckResult:
    """A refused token while the clocks differ by more than the leeway: the clock, not the key."""
    which = "behind" if skew > 0 else "ahead of"
    return CheckResult(
        name,
        False,
        f"Bubblehouse rejected the broker's token with a clock skew of {abs(skew)} s: this "
        f"host's clock is {abs(skew)} s {which} Bubblehouse's (its Date header), more than "
        f"BROKER_CLOCK_LEEWAY ({leeway} s) — synchronise the clock (NTP, chrony), then check "
        "again; the signing key may be fine",
    )


def _judge(
    name: str, version: str, key: SigningKey, status: int, error_id: str | None
) -> CheckResult:
    """Bubblehouse's answer to Status2, in plain words."""
    if status == 200:
        return CheckResult(name, True, f"Status2 accepted a shop token signed with key {key.kid}")
    if status == 401 and error_id in (None, "invalid_token"):
        return CheckResult(
            name,
            False,
            f"Bubblehouse rejected the broker's signing key {key.kid} — check "
            "BROKER_SIGNING_KEYS and that the shared secret is active in Bubblehouse",
        )
    if status == 400 and error_id is not None and error_id.endswith("_global_api_version"):
        return CheckResult(
            name,
            False,
            f"Bubblehouse refused API version {version} ({error_id}) — check BROKER_API_VERSIONS",
        )
    said = f" ({error_id})" if error_id else ""
    return CheckResult(
        name,
        False,
        f"Bubblehouse answered Status2 with HTTP {status}{said} — check BROKER_UPSTREAM_URL "
        "and BROKER_SHOP",
    )


def _error_id(content: bytes) -> str | None:
    """Bubblehouse's error ``id``, only when it is a slug (never echo raw upstream text)."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and SLUG.fullmatch(value) else None


async def check_bubblehouse(
    settings: Settings,
    transport: Transport | None = None,
    report: Report = _ignore,
) -> list[CheckResult]:
    """Status2 for every shop: every API version with its signing key, and with every other
    key of the shop. Each line names the shop. ``transport`` defaults to the broker's own (and
    is closed when it is); a given one is the caller's."""
    pairs: list[tuple[Shop, str, SigningKey]] = []
    for shop in settings.shops:
        pairs += [(shop, version, shop.signing_key) for version in settings.api_versions]
        pairs += [(shop, settings.api_versions[0], key) for key in shop.signing_keys[1:]]
    gate = asyncio.Semaphore(CONCURRENT_CALLS)
    client = transport or production_transport(
        settings.upstream_url, settings.upstream_timeout, max_connections=CONCURRENT_CALLS
    )
    try:
        first, answered = await _status2(client, settings, *pairs[0])
        if not answered:
            # Nothing answers: one line says so; repeating it per key and version would not help.
            only = dataclasses.replace(first, name="bubblehouse")
            report(only)
            return [only]
        report(first)

        async def one(pair: tuple[Shop, str, SigningKey]) -> CheckResult:
            async with gate:
                result, _ = await _status2(client, settings, *pair)
            report(result)
            return result

        rest = await asyncio.gather(*(one(pair) for pair in pairs[1:]))
    finally:
        if transport is None:
            await client.aclose()
    return [first, *rest]


def _describe(settings: Settings) -> str:
    if len(settings.shops) > 1:
        shops = f"{len(settings.shops)} shops from BROKER_SHOPS_FILE"
    else:
        shop = settings.first_shop
        kids = ", ".join(key.kid for key in shop.signing_keys)
        shops = f"shop {shop.slug}; signing key {shop.signing_key.kid} (verifying: {kids})"
    return (
        f"{shops}; "
        f"API versions {', '.join(settings.api_versions)}; "
        f"Bubblehouse at {_where(settings.upstream_url)}"
    )


async def run_check(
    environ: Mapping[str, str] | None = None,
    *,
    transport: Transport | None = None,
    customer: str | None = None,
    shop: str | None = None,
    report: Report = _ignore,
) -> list[CheckResult]:
    """Every finding, in a stable order; stops after the configuration when it is invalid.

    ``report`` is called with each finding as soon as it is known (so in the order they
    finish). With ``environ=None`` the process environment is read, over a ``.env`` file when
    present; an explicit mapping is taken as the whole environment.
    """
    try:
        settings = Settings.from_env(environ, env_file=".env" if environ is None else None)
    except ConfigError as exc:
        problems = [CheckResult("configuration", False, problem) for problem in exc.problems]
        for problem in problems:
            report(problem)
        return problems
    results = [CheckResult("configuration", True, _describe(settings))]
    report(results[0])

    async def redis() -> list[CheckResult]:
        result = await check_redis(settings)
        report(result)
        return [result]

    async def customer_read(customer_id: str) -> list[CheckResult]:
        found = await check_customer(settings, customer_id, shop)
        result = CheckResult("customer read", *found)
        report(result)
        return [result]

    checks: list[Awaitable[list[CheckResult]]] = [
        redis(),
        check_bubblehouse(settings, transport, report),
    ]
    if customer is not None:
        checks.append(customer_read(customer))
    for found in await asyncio.gather(*checks):
        results.extend(found)
    return results


def format_result(result: CheckResult) -> str:
    return f"{'ok' if result.ok else 'FAIL':<4} {result.name}: {result.detail}"


def main_check(
    environ: Mapping[str, str] | None = None,
    *,
    customer: str | None = None,
    shop: str | None = None,
) -> int:
    """Run the checks, print one line per finding as it is known; 0 only when all are ok."""

    def show(result: CheckResult) -> None:
        print(format_result(result), file=sys.stdout, flush=True)

    results = asyncio.run(run_check(environ, customer=customer, shop=shop, report=show))
    return 0 if all(result.ok for result in results) else 1
