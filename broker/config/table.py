"""Every variable of the configuration, declared once.

:data:`TABLE` lists the variables the broker reads, in the order ``.env.example`` documents them:
each names its :class:`~broker.config.settings.Settings` attribute, its default (written as it would
be set, and read by the same reader as a set value), its reader, whether it is a secret, and its
words for people. It drives :func:`broker.config.settings.parse`, the unknown-variable check, and
(:mod:`broker_dev.settings_docs`) ``.env.example`` and the variable tables of the README and the
runbook (the few variables that other programs read are documented there, never parsed).

The Shopify and BigCommerce rows are declared in :mod:`broker.config.storefronts` and spliced
in. A new setting is one more :class:`Variable` here, one more attribute of ``Settings``, and
``python -m broker_dev.settings_docs`` to rewrite the documents.
"""

from __future__ import annotations

from typing import Any

from broker.config import values as read
from broker.config.storefronts import BIGCOMMERCE_TABLE, SHOPIFY_TABLE
from broker.config.values import Variable

__all__ = ["TABLE", "VARIABLES", "Variable"]

REQUIRED = "Required"
UPSTREAM = "Upstream (Bubblehouse)"
REDIS = "Redis"
BROWSER = "Browser"
TOKENS = "Tokens"
CACHE = "Cache"
LIMITS = "Limits and timeouts"
OBSERVABILITY = "Observability"
SERVER_AND_LOGS = "Server and logs"


TABLE: tuple[Variable[Any], ...] = (
    Variable(
        "BROKER_SHOP",
        "shop",
        read.shop,
        REQUIRED,
        "the Bubblehouse shop slug",
        "The Bubblehouse shop slug: the <shop> part of every /api/<version>/<shop>/... path and "
        "of the token subject \"<shop>/<customer id>\". Letters, digits, '.', '_' and '-'.",
        required="required (the Bubblehouse shop slug)",
        example="your-shop-slug",
    ),
    Variable(
        "BROKER_SIGNING_KEYS",
        "signing_keys",
        read.signing_keys,
        REQUIRED,
        "`kid:base64secret[,kid:base64secret...]`: Bubblehouse shared secrets, at least 32 bytes "
        "decoded; the first signs, all verify",
        "Signing keys, written kid:base64secret[,kid:base64secret...]. Each secret is a "
        "Bubblehouse shared secret (created in Bubblehouse's API console), base64-encoded; "
        "decoded it must be at least 32 bytes. The FIRST key signs, every listed key verifies "
        "(rotation: deploy/README.md).",
        required=read.SIGNING_KEYS_FORM,
        example="key-2025-01:PASTE_THE_BASE64_SECRET_FROM_BUBBLEHOUSE_HERE",
        secret=True,
    ),
    Variable(
        "BROKER_ISSUER_KEYS",
        "issuer_keys",
        read.issuer_keys,
        REQUIRED,
        "comma-separated keys accepted on `POST /tokens`, 32+ characters each; all are accepted",
        "Issuer keys accepted on POST /tokens from the merchant's server, comma-separated, each "
        "at least 32 characters; every listed key is accepted (rotation). Make one with:\n"
        '  python -c "import secrets; print(secrets.token_urlsafe(32))"\n'
        "The development key that `broker dev` prints is published, so `broker serve` refuses "
        "it.",
        required="required (comma-separated keys for POST /tokens)",
        example="change-me",
        secret=True,
    ),
    Variable(
        "BROKER_SHOPS_FILE",
        "shops_file",
        read.path,
        REQUIRED,
        "several shops from one TOML file (`[shops.<slug>]` tables), instead of the single-shop "
        'variables (`deploy/README.md`, "Several shops: the shops file")',
        "Several Bubblehouse shops from one deployment: a TOML file with one [shops.<slug>] "
        "table per shop (signing_keys, issuer_keys, cors_origins, optional shopify and "
        "bigcommerce; see config/shops.example.toml). When set, BROKER_SHOP, "
        "BROKER_SIGNING_KEYS, BROKER_ISSUER_KEYS, BROKER_CORS_ORIGINS and the Shopify and "
        "BigCommerce variables must be unset. Read at start and again on SIGHUP.",
        example="config/shops.toml",
    ),
    Variable(
        "BROKER_UPSTREAM_URL",
        "upstream_url",
        read.base_url,
        UPSTREAM,
        "Bubblehouse base URL; plain `http` only to a loopback host",
        "Bubblehouse base URL (http or https, no path needed); point it at `broker sandbox` "
        "(for example http://127.0.0.1:8001) for development. Plain http is refused unless "
        "the host is loopback (127.0.0.1, ::1, localhost).",
        default="https://app.bubblehouse.com",
    ),
    Variable(
        "BROKER_API_VERSIONS",
        "api_versions",
        read.api_versions,
        UPSTREAM,
        "comma-separated API versions accepted in paths",
        "Global API versions accepted in paths, comma-separated.",
        default="v2023061",
    ),
    Variable(
        "REDIS_URL",
        "redis_url",
        read.redis_url,
        REDIS,
        "`redis://`, `rediss://`, `redis+cluster://` (Redis Cluster) or `unix://`; unset: an "
        "in-process store, for one process only (development)",
        "Shared store for the cache, rate limits and idempotency keys: redis://, rediss:// "
        "(TLS), redis+cluster:// (Redis Cluster) or unix://. Unset: an in-process store, right "
        "for one process only (development). May carry a password, so treat it as a secret.",
        example="redis://127.0.0.1:6379/0",
        secret=True,
    ),
    Variable(
        "BROKER_CORS_ORIGINS",
        "cors_origins",
        read.cors_origins,
        BROWSER,
        "comma-separated storefront origins allowed by CORS (`https://*.shop.example` allowed)",
        "Storefront origins allowed to call the broker from a browser (CORS), comma-separated, "
        'scheme://host[:port], a leading "*." matches subdomains. Empty: no CORS headers. A '
        "wildcard on a public suffix (https://*.com, https://*.co.uk) is refused. Not needed "
        "when the broker is mounted under the storefront's own origin (deploy/nginx.conf).",
        default="",
        example="https://shop.example,https://*.shop.example",
    ),
    Variable(
        "BROKER_TOKEN_TTL",
        "token_ttl",
        read.whole(1, 86400),
        TOKENS,
        "seconds a minted token lives when the caller asks for no `ttl`",
        "Lifetime in seconds of tokens minted by POST /tokens when the caller asks for none. "
        "Must not exceed BROKER_TOKEN_MAX_TTL.",
        default="900",
    ),
    Variable(
        "BROKER_TOKEN_MAX_TTL",
        "token_max_ttl",
        read.whole(1, 86400),
        TOKENS,
        "longest token lifetime minted or accepted, seconds",
        "Longest token lifetime accepted or minted, in seconds (also how long to wait during a "
        "signing key rotation), at most 86400.",
        default="3600",
    ),
    Variable(
        "BROKER_CLOCK_LEEWAY",
        "clock_leeway",
        read.whole(0, 600),
        TOKENS,
        "clock skew tolerated on `exp`/`iat`, seconds",
        "Clock skew tolerated when checking exp and iat, in seconds (0 to 600).",
        default="30",
    ),
    Variable(
        "BROKER_CACHE_TTL",
        "cache_ttl",
        read.whole(0, 86400),
        CACHE,
        "seconds a referral list is fresh; `0` disables caching",
        "Seconds a customer's referral list is served from the cache without asking "
        "Bubblehouse; 0 disables caching.",
        default="60",
    ),
    Variable(
        "BROKER_CACHE_STALE_TTL",
        "cache_stale_ttl",
        read.whole(0, 7 * 86400),
        CACHE,
        "seconds a list may be served stale while Bubblehouse fails",
        "Seconds a cached list is kept to be served, marked stale, while Bubblehouse fails.",
        default="600",
    ),
    Variable(
        "BROKER_RATE_LIMIT_READ",
        "rate_limit_read",
        read.parse_rate_limit,
        LIMITS,
        "CustomerReferrals2 calls per customer (`N/Ss`, `N/Sm`, `N/Sh`; `0` disables)",
        "Reads (CustomerReferrals2) per customer, written N/Ss (also N/Sm, N/Sh); 0 disables.",
        default="60/10s",
    ),
    Variable(
        "BROKER_RATE_LIMIT_WRITE",
        "rate_limit_write",
        read.parse_rate_limit,
        LIMITS,
        "Refer2 calls per customer (`N/Ss`; `0` disables)",
        "Writes (Refer2) per customer, written N/Ss; 0 disables.",
        default="20/60s",
    ),
    Variable(
        "BROKER_RATE_LIMIT_ISSUER",
        "rate_limit_issuer",
        read.parse_rate_limit,
        LIMITS,
        "failed credential attempts per client address: issuer keys on `POST /tokens` and "
        "`/invalidations`, BigCommerce tokens on `POST /bigcommerce/token` (`N/Ss`; `0` disables)",
        "Failed credential attempts per client address, written N/Ss; 0 disables: wrong issuer "
        "keys on POST /tokens and /invalidations, refused BigCommerce tokens on "
        "POST /bigcommerce/token (one window for all). A valid credential is never refused.",
        default="10/60s",
    ),
    Variable(
        "BROKER_RATE_LIMIT_SYNC",
        "rate_limit_sync",
        read.sync_interval,
        LIMITS,
        "seconds between pushes of each process's local limit counts to Redis (0.01 to 10); a "
        "customer may overshoot a limit by about processes x interval x request rate; `0` "
        "counts every request in Redis (strict)",
        "How the read and write limits are shared between processes and instances. Seconds "
        "between pushes of each process's local counts to Redis (0.01 to 10): decisions cost no "
        "round trip, and a customer can get at most (processes x interval x their request rate) "
        "requests over the limit. 0 = strict: every request is counted in Redis (one round trip "
        "each, exact).",
        default="0.1",
    ),
    Variable(
        "BROKER_NEAR_CACHE_MB",
        "near_cache_mb",
        read.whole(0, 4096),
        LIMITS,
        "MB per worker process of referral lists kept in process memory in front of Redis "
        "(only with `REDIS_URL`; invalidated through Redis pub/sub); `0` turns it off",
        "Megabytes of referral lists each process keeps in memory in front of Redis (the near "
        "cache; only with REDIS_URL). Invalidated through Redis pub/sub; off whenever Redis or "
        "the subscription is down. 0 turns it off. With the default a worker stays under 100 MB "
        "with 10,000 customers cached.",
        default="8",
    ),
    Variable(
        "BROKER_UPSTREAM_TIMEOUT",
        "upstream_timeout",
        read.number(0.05, 120, "must be seconds between 0.05 and 120"),
        LIMITS,
        "seconds to wait for Bubblehouse (0.05 to 120)",
        "Seconds to wait for Bubblehouse before answering 504 upstream_timeout (0.05 to 120).",
        default="5",
    ),
    Variable(
        "BROKER_CIRCUIT_FAILURE_RATE",
        "circuit_failure_rate",
        read.number(0.01, 1.0),
        LIMITS,
        "share of Bubblehouse calls failing transiently (5xx, timeouts, connection failures) "
        "over the window that opens the circuit (0.01 to 1)",
        "Circuit breaker: the share of Bubblehouse calls failing transiently (5xx, timeouts, "
        "connection failures) over the window that opens the circuit (0.01 to 1).",
        default="0.5",
    ),
    Variable(
        "BROKER_CIRCUIT_MIN_CALLS",
        "circuit_min_calls",
        read.whole(1, 100_000),
        LIMITS,
        "calls the window must hold before the rate can open the circuit",
        "Calls the window must hold before the failure rate can open the circuit.",
        default="20",
    ),
    Variable(
        "BROKER_CIRCUIT_WINDOW",
        "circuit_window",
        read.number(1.0, 3600.0),
        LIMITS,
        "seconds of the sliding window the rate is judged over (1 to 3600)",
        "Seconds of the sliding window the failure rate is judged over (1 to 3600).",
        default="30",
    ),
    Variable(
        "BROKER_CIRCUIT_COOLDOWN",
        "circuit_cooldown",
        read.number(0.1, 3600.0),
        LIMITS,
        "seconds the circuit stays open before one trial call",
        "Seconds the circuit stays open (503 upstream_unavailable at once) before one trial call.",
        default="10",
    ),
    Variable(
        "BROKER_UPSTREAM_BACKOFF",
        "upstream_backoff",
        read.number(0.0, 600.0),
        LIMITS,
        "seconds one customer's calls are refused without calling after Bubblehouse gave that "
        "customer an unusable answer (too large, not JSON, a 4xx on a read); `0` disables",
        "Seconds one customer's calls are refused without calling Bubblehouse after it gave "
        "that customer an unusable answer (too large, not JSON, a 4xx on a read); 0 disables.",
        default="5",
    ),
    Variable(
        "BROKER_METRICS_TOKEN",
        "metrics_token",
        read.secret,
        OBSERVABILITY,
        "bearer token required on `GET /metrics`, 16+ characters; unset: `/metrics` is open",
        "Bearer token required on GET /metrics, at least 16 characters. Unset: /metrics is "
        "open (keep it private).",
        example="change-me-metrics-token",
        secret=True,
    ),
    *SHOPIFY_TABLE,
    *BIGCOMMERCE_TABLE,
    Variable(
        "PORT",
        "port",
        read.whole(1, 65535),
        SERVER_AND_LOGS,
        "listen port of `broker serve`",
        "Port `broker serve` listens on (at HOST).",
        default="8000",
    ),
    Variable(
        "HOST",
        "host",
        read.host,
        SERVER_AND_LOGS,
        "listen address of `broker serve` (`broker serve --host` wins); `0.0.0.0`: every "
        "IPv4 interface",
        "Address `broker serve` listens on: 0.0.0.0 for every IPv4 interface, :: for every "
        "interface, 127.0.0.1 for loopback only. `broker serve --host` wins over it.",
        default="0.0.0.0",
    ),
    Variable(
        "BROKER_MAX_CONNECTIONS",
        "max_connections",
        read.whole(1, 100_000),
        SERVER_AND_LOGS,
        "open connections per worker; beyond it requests are answered 503 at once (`/healthz` "
        "keeps answering)",
        "Open connections each worker process holds. Beyond it a request is answered 503 at "
        "once instead of waiting; /healthz still answers. Idle connections are closed after 5 s, "
        'slow ones after 10 s (deploy/README.md, "Connections").',
        default="1000",
    ),
    Variable(
        "WEB_CONCURRENCY",
        "web_concurrency",
        read.whole(1, 64),
        SERVER_AND_LOGS,
        "worker processes of `broker serve` (about 60 MB each, plus about 70 MB for the "
        "supervisor); more than one needs `REDIS_URL`",
        "Worker processes of `broker serve`; about 60 MB of memory each, plus about 70 MB for the "
        "supervising process and its resource tracker. More than one needs "
        "REDIS_URL (limits, idempotency and the cache are shared through it): refused "
        "otherwise. Behind a reverse proxy, also set uvicorn's FORWARDED_ALLOW_IPS to the "
        "proxy's address or range, in the process environment (uvicorn does not read this "
        "file), never to a star, which lets any client choose its own address.",
        default="1",
    ),
    Variable(
        "LOG_LEVEL",
        "log_level",
        read.choice(read.LOG_LEVELS, f"must be one of {', '.join(read.LOG_LEVELS)}"),
        SERVER_AND_LOGS,
        "`debug`, `info`, `warning`, `error` or `critical`",
        "Log level: debug, info, warning, error or critical.",
        default="info",
    ),
    Variable(
        "LOG_FORMAT",
        "log_format",
        read.choice(read.LOG_FORMATS, "must be json or console"),
        SERVER_AND_LOGS,
        "`json` (one object per line, for production) or `console` (for people)",
        "Log format: json (one object per line, for production) or console (for people).",
        default="json",
    ),
)

VARIABLES: tuple[str, ...] = tuple(variable.name for variable in TABLE)
