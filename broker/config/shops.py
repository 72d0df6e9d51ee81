"""The shops one broker serves (spec 2.1): one from the single-shop variables, or many from the
TOML file ``BROKER_SHOPS_FILE`` names. Every part of the broker that needs a shop's keys, issuer
keys, origins or platform settings looks the shop up in :class:`Shops`: by the slug of a path
(:meth:`Shops.get`), by an issuer key (:meth:`Shops.by_issuer_key`), by a Shopify domain
(:meth:`Shops.for_shopify`) or by a BigCommerce store hash (:meth:`Shops.shop_for_bigcommerce`).
The single-shop case is one entry.

The file::

    [shops.<slug>]
    signing_keys = ["kid:base64", ...]    # the first signs; each decoded at least 32 bytes
    issuer_keys = ["<32+ characters>"]    # a key belongs to exactly one shop
    cors_origins = ["https://shop.example"]
    shopify = { shop = "<name>.myshopify.com", secret = "<app secret>" }             # optional
    bigcommerce = { store_hash = "<hash>", client_id = "<id>", client_secret = "<secret>" }

:func:`parse_shops` reports every problem at once, one line each, naming the shop and the key
(``BROKER_SHOPS_FILE: [shops.<slug>] <key>: ...``) and never a value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.config import values as read
from broker.config.refusals import DEV_BIGCOMMERCE_SECRET, DEV_ISSUER_KEY, PLACEHOLDERS
from broker.config.values import ConfigError, Invalid, Secret, SigningKey

FILE_VARIABLE = "BROKER_SHOPS_FILE"
# The single-shop variables; none may be set together with BROKER_SHOPS_FILE. The BigCommerce
# ones are named here so that a deployment setting them beside a file is refused too.
SINGLE_SHOP_VARIABLES = (
    "BROKER_SHOP",
    "BROKER_SIGNING_KEYS",
    "BROKER_ISSUER_KEYS",
    "BROKER_CORS_ORIGINS",
    "BROKER_SHOPIFY_SECRET",
    "BROKER_SHOPIFY_SHOP",
    "BROKER_BIGCOMMERCE_CLIENT_ID",
    "BROKER_BIGCOMMERCE_CLIENT_SECRET",
    "BROKER_BIGCOMMERCE_STORE_HASH",
)
# What a problem of a single-shop configuration names instead of the file's keys.
_VARIABLE_OF = {
    "slug": "BROKER_SHOP",
    "signing_keys": "BROKER_SIGNING_KEYS",
    "issuer_keys": "BROKER_ISSUER_KEYS",
    "cors_origins": "BROKER_CORS_ORIGINS",
    "shopify.shop": "BROKER_SHOPIFY_SHOP",
    "shopify.secret": "BROKER_SHOPIFY_SECRET",
    "bigcommerce.store_hash": "BROKER_BIGCOMMERCE_STORE_HASH",
    "bigcommerce.client_id": "BROKER_BIGCOMMERCE_CLIENT_ID",
    "bigcommerce.client_secret": "BROKER_BIGCOMMERCE_CLIENT_SECRET",
}
SHOP_KEYS = frozenset({"signing_keys", "issuer_keys", "cors_origins", "shopify", "bigcommerce"})
SHOPIFY_KEYS = ("shop", "secret")
BIGCOMMERCE_KEYS = ("store_hash", "client_id", "client_secret")
STORE_HASH_RE = re.compile(r"^[a-z0-9]{1,64}$")
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MIN_PLATFORM_SECRET = 16


@dataclass(frozen=True, slots=True)
class ShopifyApp:
    """A shop's Shopify app proxy (``GET /shopify/token``)."""

    shop: str  # <name>.myshopify.com
    secret: Secret[str]


@dataclass(frozen=True, slots=True)
class BigCommerceApp:
    """A shop's BigCommerce app (``POST /bigcommerce/token``)."""

    store_hash: str
    client_id: str
    client_secret: Secret[str]


@dataclass(frozen=True, slots=True)
class Shop:
    """One Bubblehouse shop: its slug, keys, issuer keys, origins and platform settings."""

    slug: str
    signing_keys: tuple[SigningKey, ...]
    issuer_keys: tuple[Secret[str], ...]
    cors_origins: tuple[str, ...] = ()
    shopify: ShopifyApp | None = None
    bigcommerce: BigCommerceApp | None = None

    @property
    def signing_key(self) -> SigningKey:
        """The key that signs; every key of the shop verifies."""
        return self.signing_keys[0]


def _fingerprint(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True, eq=False)
class Shops:
    """The configured shops in their order, with the look-ups requests need (each one dict hit).

    ``from_file``: read from ``BROKER_SHOPS_FILE`` (problems name the file's keys), rather than
    from the single-shop variables.
    """

    shops: tuple[Shop, ...]
    from_file: bool = False
    _by_slug: dict[str, Shop] = field(init=False, repr=False)
    _by_issuer: dict[bytes, Shop] = field(init=False, repr=False)
    _by_shopify: dict[str, Shop] = field(init=False, repr=False)
    _by_store_hash: dict[str, Shop] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "_by_slug", {shop.slug: shop for shop in self.shops})
        set_(
            self,
            "_by_issuer",
            {_fingerprint(k.reveal()): shop for shop in self.shops for k in shop.issuer_keys},
        )
        set_(self, "_by_shopify", {s.shopify.shop: s for s in self.shops if s.shopify})
        set_(
            self,
            "_by_store_hash",
            {s.bigcommerce.store_hash: s for s in self.shops if s.bigcommerce},
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shops) and other.shops == self.shops

    def __hash__(self) -> int:
        return hash(self.shops)

    def __iter__(self) -> Iterator[Shop]:
        return iter(self.shops)

    def __len__(self) -> int:
        return len(self.shops)

    def __contains__(self, slug: object) -> bool:
        return slug in self._by_slug

    @property
    def first(self) -> Shop:
        """The first shop (the only one without a file): the development tools' shop."""
        return self.shops[0]

    @property
    def slugs(self) -> frozenset[str]:
        return frozenset(self._by_slug)

    def get(self, slug: str) -> Shop | None:
        """The shop a path's ``<shop>`` names, or None when it is not configured."""
        return self._by_slug.get(slug)

    def by_issuer_key(self, presented: str | None) -> Shop | None:
        """The shop whose issuer key ``presented`` is, or None.

        Looked up by the key's SHA-256 (a lookup's timing says nothing about how close a wrong
        key came), then compared in constant time."""
        if presented is None:
            return None
        shop = self._by_issuer.get(_fingerprint(presented))
        if shop is None:
            return None
        matched = False
        for key in shop.issuer_keys:
            matched |= hmac.compare_digest(presented.encode(), key.reveal().encode())
        return shop if matched else None

    def for_shopify(self, domain: str | None) -> Shop | None:
        """The shop whose Shopify app proxy serves ``domain`` (``<name>.myshopify.com``)."""
        return None if domain is None else self._by_shopify.get(domain.lower())

    def shop_for_bigcommerce(self, store_hash: str | None) -> Shop | None:
        """The shop of a BigCommerce store, by the ``store_hash`` of its current-customer JWT
        (the hook ``POST /bigcommerce/token`` selects its shop with)."""
        return None if store_hash is None else self._by_store_hash.get(store_hash)

    def origins(self) -> tuple[str, ...]:
        """Every shop's CORS origins, once each (for answers that name no shop)."""
        return tuple(dict.fromkeys(o for shop in self.shops for o in shop.cors_origins))


def label(shops: Shops, shop: str, key: str) -> str:
    """What a problem of ``key`` of ``shop`` is prefixed with: the file's table and key, or the
    single-shop variable."""
    if shops.from_file:
        return f"{FILE_VARIABLE}: [shops.{shop}] {key}"
    return _VARIABLE_OF.get(key, key)


def read_file(path: str) -> str:
    """The text of the shops file, or :class:`ConfigError` saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{FILE_VARIABLE}: the file does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = type(exc).__name__
        raise ConfigError([f"{FILE_VARIABLE}: the file cannot be read ({reason})"]) from None


def parse_shops(text: str) -> Shops:
    """Every shop of a shops file's text, or :class:`ConfigError` with one line per problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages say what and where ("Unclosed array (at line 3, column 9)"),
        # never the text itself.
        raise ConfigError([f"{FILE_VARIABLE}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    for name in document:
        if name != "shops":
            problems.append(f"{FILE_VARIABLE}: [{name}]: unknown table (only [shops.<slug>])")
    tables = document.get("shops", {})
    if not isinstance(tables, dict) or not tables:
        problems.append(f"{FILE_VARIABLE}: no shop: add at least one [shops.<slug>] table")
        raise ConfigError(problems)
    shops: list[Shop] = []
    claims: list[Shop] = []  # what each shop claims, even one with problems of its own
    for slug, table in tables.items():
        shop = _shop(str(slug), table, problems, claims)
        if shop is not None:
            shops.append(shop)
    problems.extend(_shared_problems(claims))
    if problems:
        raise ConfigError(problems)
    return Shops(tuple(shops), from_file=True)


def _shop(slug: str, table: object, problems: list[str], claims: list[Shop]) -> Shop | None:
    where = f"{FILE_VARIABLE}: [shops.{slug}]"
    before = len(problems)
    if not read.SHOP_RE.fullmatch(slug):
        problems.append(f"{where}: the slug must be letters, digits, '.', '_' and '-'")
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table")
        return None
    problems.extend(f"{where} {key}: unknown key" for key in table if key not in SHOP_KEYS)

    def field_(key: str, reader: Callable[[str], Any], required: bool = True) -> Any:
        items = table.get(key)
        if items is None:
            if required:
                problems.append(f"{where} {key}: required")
            return None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            problems.append(f"{where} {key}: must be a list of strings")
            return None
        if any("," in item for item in items):
            problems.append(f"{where} {key}: an entry holds a comma; write one per string")
            return None
        try:
            return reader(",".join(items))
        except Invalid as exc:
            problems.extend(f"{where} {key}: {message}" for message in exc.messages)
            return None

    signing = field_("signing_keys", read.signing_keys)
    issuer = field_("issuer_keys", read.issuer_keys)
    origins = field_("cors_origins", read.cors_origins, required=False) or ()
    shopify = _platform(
        where, "shopify", table.get("shopify"), SHOPIFY_KEYS, _shopify_app, problems
    )
    bigcommerce = _platform(
        where, "bigcommerce", table.get("bigcommerce"), BIGCOMMERCE_KEYS, _bigcommerce_app, problems
    )
    claims.append(Shop(slug, signing or (), issuer or (), origins, shopify, bigcommerce))
    if len(problems) > before or signing is None or issuer is None:
        return None
    return claims[-1]


def _platform(
    where: str,
    name: str,
    given: object,
    keys: tuple[str, ...],
    make: Callable[[Mapping[str, str]], Any],
    problems: list[str],
) -> Any:
    if given is None:
        return None
    if not isinstance(given, dict):
        problems.append(f"{where} {name}: must be a table {{{', '.join(keys)}}}")
        return None
    found = len(problems)
    problems.extend(f"{where} {name}.{key}: unknown key" for key in given if key not in keys)
    for key in keys:
        if not isinstance(given.get(key), str) or not given[key].strip():
            problems.append(f"{where} {name}.{key}: required (a string)")
    if len(problems) > found:
        return None
    try:
        return make({key: given[key].strip() for key in keys})
    except Invalid as exc:
        problems.extend(f"{where} {name}.{message}" for message in exc.messages)
        return None


def _shopify_app(given: Mapping[str, str]) -> ShopifyApp:
    messages: list[str] = []
    shop = secret = None
    try:
        shop = read.shopify_shop(given["shop"])
    except Invalid as exc:
        messages += [f"shop: {m}" for m in exc.messages]
    try:
        secret = read.shopify_secret(given["secret"])
    except Invalid as exc:
        messages += [f"secret: {m}" for m in exc.messages]
    if shop is None or secret is None:
        raise Invalid(*messages)
    return ShopifyApp(shop, secret)


def _bigcommerce_app(given: Mapping[str, str]) -> BigCommerceApp:
    messages: list[str] = []
    if not STORE_HASH_RE.fullmatch(given["store_hash"]):
        messages.append("store_hash: must be the store hash (lower-case letters and digits)")
    if not CLIENT_ID_RE.fullmatch(given["client_id"]):
        messages.append("client_id: must be the app's client id")
    if len(given["client_secret"]) < MIN_PLATFORM_SECRET:
        messages.append(f"client_secret: must be the app's secret ({MIN_PLATFORM_SECRET}+ chars)")
    if messages:
        raise Invalid(*messages)
    return BigCommerceApp(given["store_hash"], given["client_id"], Secret(given["client_secret"]))


def _shared_problems(shops: Iterable[Shop]) -> list[str]:
    """What joins two shops: an issuer key, a Shopify domain or a store hash in both."""
    problems: list[str] = []
    owners: dict[bytes, str] = {}
    domains: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for shop in shops:
        where = f"{FILE_VARIABLE}: [shops.{shop.slug}]"
        for position, key in enumerate(shop.issuer_keys, start=1):
            owner = owners.setdefault(_fingerprint(key.reveal()), shop.slug)
            if owner != shop.slug:
                problems.append(
                    f"{where} issuer_keys: key #{position} is also an issuer key of shop "
                    f"'{owner}'; a key belongs to exactly one shop"
                )
        if shop.shopify is not None:
            owner = domains.setdefault(shop.shopify.shop, shop.slug)
            if owner != shop.slug:
                problems.append(f"{where} shopify.shop: also the Shopify store of shop '{owner}'")
        if shop.bigcommerce is not None:
            owner = hashes.setdefault(shop.bigcommerce.store_hash, shop.slug)
            if owner != shop.slug:
                problems.append(f"{where} bigcommerce.store_hash: also the store of shop '{owner}'")
    return problems


def deployment_problems(shops: Shops) -> list[str]:
    """What ``broker serve`` refuses in a well-formed shop (``broker dev`` may use it): a
    placeholder of the example files, the published development issuer key."""
    problems: list[str] = []
    for shop in shops:
        given: dict[str, list[str]] = {
            "slug": [shop.slug],
            "issuer_keys": [key.reveal() for key in shop.issuer_keys],
            "cors_origins": list(shop.cors_origins),
        }
        if shop.shopify is not None:
            given["shopify.shop"] = [shop.shopify.shop]
            given["shopify.secret"] = [shop.shopify.secret.reveal()]
        if shop.bigcommerce is not None:
            given["bigcommerce.client_id"] = [shop.bigcommerce.client_id]
            given["bigcommerce.client_secret"] = [shop.bigcommerce.client_secret.reveal()]
        for key, found in given.items():
            if any(marker in value.lower() for value in found for marker in PLACEHOLDERS):
                problems.append(
                    f"{label(shops, shop.slug, key)}: still holds the placeholder of the "
                    "example file; set the real value"
                )
        if any(key.reveal() == DEV_ISSUER_KEY for key in shop.issuer_keys):
            problems.append(
                f"{label(shops, shop.slug, 'issuer_keys')}: holds the published development key "
                "of `broker dev`; make a real one (see .env.example)"
            )
        app = shop.bigcommerce
        if app is not None and app.client_secret.reveal() == DEV_BIGCOMMERCE_SECRET:
            problems.append(
                f"{label(shops, shop.slug, 'bigcommerce.client_secret')}: holds the published "
                "secret of the sandbox's look-alike store; use the app's own client secret"
            )
    return problems
