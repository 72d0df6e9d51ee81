"""The ``Consistency-Token``: what a send hands back so that a read is never older than the send.

A token is ``v1.<generation>.<sent ms>.<mac>``: the customer's cache generation the send's
invalidation made (or ``x`` when Redis never heard of the send, so only Bubblehouse knows the
list is current), the send's time, and an HMAC-SHA256 of those and of the customer
(``<shop>/<customer id>``). The MAC key is derived from a signing secret with a fixed label, so
it needs no variable of its own and never equals the secret; the first signing key of the
customer's shop signs and every key of that shop verifies, so tokens survive a key rotation
like customer tokens do. A token lives :data:`LIFETIME` seconds. Anything else (another
customer's token, an expired or altered one, a value of the client's own) is ignored as if
absent, without an error: the read is then an ordinary read.

A genuine token still never buys extra calls to Bubblehouse. The read is counted against the
customer's read limit like any other (:mod:`broker.rules.referrals`), and a read that must go to
Bubblehouse (an ``x`` token, or Redis away) joins any load of the same list that started after
the send (:class:`FreshReads`), and is answered from the last such load while it is fresh: one
call per send, however many reads show the token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from broker.config.settings import Settings

LABEL = b"referral-broker consistency-token v1"
PREFIX = "v1"
BYPASS_GEN = "x"  # Redis never heard of the send: only Bubblehouse knows the current list
LIFETIME = 900  # seconds a token is honoured (a page session after a send)
MAX_TOKEN = 120  # characters: v1, 18 digits, 13 digits, 43 of MAC and dots, with room
GEN_DIGITS = 18  # a generation fits in 18 digits (Redis counts to 2**63)
TIME_DIGITS = 13  # milliseconds since 1970, until the year 2286
MAC_CHARS = 43  # unpadded base64url of 32 bytes


@dataclass(frozen=True, slots=True)
class Proof:
    """What a genuine token proves: the send's generation (None: unknown to Redis) and time."""

    gen: int | None
    sent_ms: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class ConsistencyTokens:
    """Issues and verifies tokens with keys derived from the configured signing secrets."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        # Each shop's tokens are keyed from that shop's own secrets (spec 2.1).
        self._keys = {
            shop.slug: [
                hmac.new(key.secret.reveal(), LABEL, hashlib.sha256).digest()
                for key in shop.signing_keys
            ]
            for shop in settings.shops
        }
        self._leeway_ms = settings.clock_leeway * 1000
        self._clock = clock

    def _mac(self, key: bytes, customer: str, gen: str, sent: str) -> str:
        message = f"{PREFIX}|{customer}|{gen}|{sent}".encode()
        return _b64(hmac.new(key, message, hashlib.sha256).digest())

    def issue(self, shop: str, customer: str, gen: str) -> str:
        """The token of a send whose invalidation made ``gen`` (digits, or ``x``)."""
        sent = str(int(self._clock() * 1000))
        mac = self._mac(self._keys[shop][0], f"{shop}/{customer}", gen, sent)
        return f"{PREFIX}.{gen}.{sent}.{mac}"

    def verify(self, value: str | None, shop: str, customer: str) -> Proof | None:
        """The proof of a token issued for this customer and not expired; None otherwise."""
        if value is None or not 0 < len(value) <= MAX_TOKEN or not value.isascii():
            return None
        parts = value.strip().split(".")
        if len(parts) != 4 or parts[0] != PREFIX or len(parts[3]) != MAC_CHARS:
            return None
        _, gen, sent, presented = parts
        # Bounded before conversion: ASCII digits of known length only.
        if gen != BYPASS_GEN and not (0 < len(gen) <= GEN_DIGITS and gen.isdigit()):
            return None
        if not (0 < len(sent) <= TIME_DIGITS and sent.isdigit()):
            return None
        subject = f"{shop}/{customer}"
        if not any(
            hmac.compare_digest(self._mac(key, subject, gen, sent), presented)
            for key in self._keys.get(shop, ())
        ):
            return None
        sent_ms, now_ms = int(sent), int(self._clock() * 1000)
        if sent_ms > now_ms + self._leeway_ms or now_ms - sent_ms > LIFETIME * 1000:
            return None
        return Proof(None if gen == BYPASS_GEN else int(gen), sent_ms)


@dataclass(frozen=True, slots=True)
class Landed:
    body: bytes
    started_ms: int  # wall clock, comparable with a token's send time
    until: float  # monotonic: served to later token reads until then


class FreshReads:
    """Loads of a list from Bubblehouse that tokens ask for, one per list at a time.

    A read whose token was issued at ``sent_ms`` takes a load that started at or after then: a
    running one (it waits for it) or one that landed less than ``keep`` seconds ago; otherwise
    it starts one. Landed bodies are bounded in bytes (least recently landed go first) and a
    send of this process forgets the customer's (:meth:`drop`).
    """

    def __init__(
        self,
        keep: float,
        max_bytes: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keep = keep
        self.max_bytes = max_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._flights: dict[tuple[str, str], tuple[int, asyncio.Future[bytes]]] = {}
        self._landed: OrderedDict[tuple[str, str], Landed] = OrderedDict()
        self._size = 0

    async def read(
        self, key: tuple[str, str], sent_ms: int, load: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, str]:
        """The list, loaded after ``sent_ms``, and how: ``miss``, ``collapsed`` or ``hit``."""
        landed = self._landed.get(key)
        if landed is not None and landed.started_ms >= sent_ms:
            if landed.until > self._monotonic():
                return landed.body, "hit"
            self._forget(key)
        flight = self._flights.get(key)
        if flight is not None and flight[0] >= sent_ms:
            try:
                return await asyncio.shield(flight[1]), "collapsed"
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not flight[1].cancelled() or (task is not None and task.cancelling()):
                    raise
                # The leader was cancelled (its client left), not this read: load on our own.
        started = int(self._clock() * 1000)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._flights[key] = (started, future)
        try:
            body = await load()
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: nobody waiting is no reason to log it
            else:
                future.cancel()
            raise
        finally:
            if self._flights.get(key, (0, None))[1] is future:
                del self._flights[key]
        future.set_result(body)
        self._keep(key, Landed(body, started, self._monotonic() + self.keep))
        return body, "miss"

    def _keep(self, key: tuple[str, str], landed: Landed) -> None:
        if self.keep <= 0 or len(landed.body) > self.max_bytes:
            return
        old = self._landed.get(key)
        if old is not None and old.started_ms > landed.started_ms:
            return  # a later load landed first
        self._forget(key)
        self._landed[key] = landed
        self._size += len(landed.body)
        while self._size > self.max_bytes:
            _, evicted = self._landed.popitem(last=False)
            self._size -= len(evicted.body)

    def _forget(self, key: tuple[str, str]) -> None:
        old = self._landed.pop(key, None)
        if old is not None:
            self._size -= len(old.body)

    def drop(self, scope: str, entries: tuple[str, ...]) -> None:
        """Forget what was loaded for one customer (``<shop>/<customer id>``): every entry
        (``<function>:<version>``)."""
        for entry in entries:
            self._forget((scope, entry))
