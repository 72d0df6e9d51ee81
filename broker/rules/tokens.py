"""Bubblehouse customer tokens: minting, and the strict verifier for browser calls.

The format is Bubblehouse's (HS256 JWT, ``kid`` header, ``aud`` ``BH``, ``sub`` ``shop/customer``).
The verifier fails closed and says why through :class:`broker.errors.InvalidToken`'s ``reason``.
Every token belongs to one shop (spec 2.1): it is signed with that shop's first key, verified
only with that shop's keys, and its ``sub`` must name that shop.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from broker.config.settings import Settings, Shop
from broker.errors import InvalidToken

AUDIENCE = "BH"
ALGORITHM = "HS256"
UPSTREAM_TTL = 60  # seconds an upstream token lives: one call, with room for slow answers
# Signed upstream tokens kept for reuse (one per customer and email), about 0.4 KB each.
_UPSTREAM_CACHE_SIZE = 10_000
# Verified tokens kept (about 0.5 KB each): more than the customers active within a token's
# lifetime on one worker, or a round of 10,000 customers verifies every token again.
_VERIFIED_CACHE_SIZE = 16384


@dataclass(frozen=True, slots=True)
class Customer:
    """A verified customer: who the token speaks for."""

    shop: str
    id: str
    email: str | None
    expires_at: int


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    expires_in: int
    expires_at: int

    @property
    def expires_at_rfc3339(self) -> str:
        return datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def answer(self) -> dict[str, str | int]:
        """The body of a token answer (``POST /tokens``, ``GET /shopify/token``)."""
        return {
            "token": self.token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "expires_at": self.expires_at_rfc3339,
        }


class TokenMinter:
    """Signs tokens with the first key of their shop.

    ``shop`` names the shop (its slug); left out, the first shop (the only one without a shops
    file), as the development tools and ``broker token`` use it. Browser tokens
    (:meth:`customer_token`) carry a ``jti``. Upstream tokens (:meth:`upstream_token`) carry
    exactly what Bubblehouse's official plugins send (header ``typ``, ``alg``, ``kid``; claims
    ``aud``, ``sub``, ``iat``, ``exp``, and ``ce`` when the email is known) and are reused per
    customer and email while more than half their life is left. ``clock`` (seconds since the
    epoch) is the seam tests replace.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._upstream: OrderedDict[tuple[str, str, str | None], tuple[str, int]] = OrderedDict()

    def _shop(self, slug: str | None) -> Shop:
        if slug is None:
            return self._settings.first_shop
        shop = self._settings.shops.get(slug)
        if shop is None:
            raise LookupError("no such shop")  # callers select configured shops only
        return shop

    def _sign(self, shop: Shop, claims: dict[str, Any]) -> str:
        key = shop.signing_key
        return jwt.encode(
            claims,
            key.secret.reveal(),
            algorithm=ALGORITHM,
            headers={"kid": key.kid, "typ": "JWT"},
        )

    def _claims(
        self, shop: Shop, customer_id: str, email: str | None, now: int, lifetime: int
    ) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "aud": AUDIENCE,
            "sub": f"{shop.slug}/{customer_id}",
            "iat": now,
            "exp": now + lifetime,
        }
        if email:
            claims["ce"] = email
        return claims

    def customer_token(
        self,
        customer_id: str,
        email: str | None = None,
        ttl: int | None = None,
        *,
        shop: str | None = None,
    ) -> MintedToken:
        """A customer token of ``shop`` for a browser; ``ttl`` is clamped to the maximum."""
        lifetime = self._settings.token_ttl if ttl is None else ttl
        lifetime = max(1, min(lifetime, self._settings.token_max_ttl))
        now = int(self._clock())
        selected = self._shop(shop)
        claims = self._claims(selected, customer_id, email, now, lifetime)
        claims["jti"] = uuid.uuid4().hex
        return MintedToken(self._sign(selected, claims), lifetime, now + lifetime)

    def upstream_token(self, customer: Customer) -> str:
        """A short-lived token for calling Bubblehouse on behalf of ``customer`` (signed with
        its shop's first key): the one signed before for the same shop, customer and email
        while more than half its life is left."""
        key = (customer.shop, customer.id, customer.email)
        now = self._clock()
        found = self._upstream.get(key)
        if found is not None and found[1] - now > UPSTREAM_TTL / 2:
            return found[0]
        issued = int(now)
        shop = self._shop(customer.shop)
        claims = self._claims(shop, customer.id, customer.email, issued, UPSTREAM_TTL)
        token = self._sign(shop, claims)
        self._upstream[key] = (token, issued + UPSTREAM_TTL)
        self._upstream.move_to_end(key)
        if len(self._upstream) > _UPSTREAM_CACHE_SIZE:
            self._upstream.popitem(last=False)
        return token

    def shop_token(self, ttl: int = UPSTREAM_TTL, *, shop: str | None = None) -> str:
        """A shop token (server side only: ``broker check`` uses it for Status2)."""
        now = int(self._clock())
        selected = self._shop(shop)
        claims = {"aud": AUDIENCE, "sub": selected.slug, "iat": now, "exp": now + ttl}
        return self._sign(selected, claims)


class TokenVerifier:
    """Verifies customer tokens from browsers against the signing keys of the shop the request
    names (``shop``; left out, the first shop)."""

    def __init__(self, settings: Settings) -> None:
        self._first = settings.first_shop.slug
        self._keys = {
            shop.slug: {key.kid: key.secret.reveal() for key in shop.signing_keys}
            for shop in settings.shops
        }
        self._leeway = settings.clock_leeway
        self._max_ttl = settings.token_max_ttl
        # A verified token string maps to its customer; the time checks run again on every use.
        self._verified: OrderedDict[str, tuple[Customer, int | None]] = OrderedDict()

    def verify(self, token: str, now: float | None = None, *, shop: str | None = None) -> Customer:
        current = time.time() if now is None else now
        slug = self._first if shop is None else shop
        cached = self._verified.get(token)
        if cached is None or cached[0].shop != slug:
            # Not verified yet, or verified for another shop: this shop's keys decide.
            cached = self._verify_signed(token, slug)
            self._verified[token] = cached
            if len(self._verified) > _VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        customer, iat = cached
        self._check_times(customer.expires_at, iat, current)
        return customer

    def _verify_signed(self, token: str, shop: str) -> tuple[Customer, int | None]:
        if not token or len(token) > 8192 or token.count(".") != 2:
            raise InvalidToken("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed") from exc
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("signature", "The customer token must be signed with HS256.")
        keys = self._keys.get(shop, {})
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in keys:
            raise InvalidToken("unknown_key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                keys[kid],
                algorithms=[ALGORITHM],
                options={
                    "require": [],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("signature") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed") from exc
        return self._check_claims(claims, shop)

    def _check_claims(self, claims: dict[str, Any], wanted: str) -> tuple[Customer, int | None]:
        for name in ("aud", "sub", "exp"):
            if name not in claims:
                raise InvalidToken("missing_claim", f"The customer token has no '{name}' claim.")
        aud = claims["aud"]
        if aud != AUDIENCE and not (isinstance(aud, list) and aud == [AUDIENCE]):
            raise InvalidToken("audience")
        exp, iat = claims["exp"], claims.get("iat")
        if not _is_time(exp) or (iat is not None and not _is_time(iat)):
            raise InvalidToken("malformed", "The customer token's time claims are not numbers.")
        nbf = claims.get("nbf")
        if nbf is not None and not _is_time(nbf):
            raise InvalidToken("malformed", "The customer token's time claims are not numbers.")
        if iat is not None and exp - iat > self._max_ttl:
            raise InvalidToken("lifetime")
        sub = claims["sub"]
        if not isinstance(sub, str):
            raise InvalidToken("subject")
        shop, sep, customer_id = sub.partition("/")
        if shop != wanted or not sep or not customer_id or "/" in customer_id:
            raise InvalidToken("subject")
        if len(customer_id) > 128 or not customer_id.isprintable():
            raise InvalidToken("subject")
        email = claims.get("ce")
        if email is not None and (not isinstance(email, str) or len(email) > 254):
            raise InvalidToken("malformed", "The customer token's 'ce' claim is not an email.")
        start = max(int(iat or 0), int(nbf or 0)) or None
        return Customer(shop, customer_id, email or None, int(exp)), start

    def _check_times(self, exp: int, not_before: int | None, now: float) -> None:
        if exp <= now - self._leeway:
            raise InvalidToken("expired")
        if exp - now > self._max_ttl + self._leeway:
            raise InvalidToken("lifetime")
        if not_before is not None and not_before > now + self._leeway:
            raise InvalidToken("not_yet_valid")


def _is_time(value: object) -> bool:
    # NaN, infinities and absurd values are malformed, not a reason to crash.
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e11
