"""The ``broker`` command: serve, dev, sandbox, token, check, invalidate."""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import os
import secrets
import sys
from collections.abc import Sequence

from broker.config.settings import DEV_ISSUER_KEY, ConfigError, Settings, parse

__all__ = ["DEV_ISSUER_KEY", "build_parser", "dev_environment", "main"]

DEV_SHOP = "demo-shop"
DEV_KID = "dev"


def _report(command: str, exc: ConfigError) -> int:
    """Say each configuration problem on its own line; the exit status for it."""
    print(f"{command}: the configuration has problems:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def _settings_or_exit() -> Settings:
    """A deployment's settings; an unknown BROKER_* name is the caller's to warn about."""
    try:
        return Settings.from_env(strict=False)
    except ConfigError as exc:
        raise SystemExit(_report("broker", exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from broker.web.server import serve

    serve(_settings_or_exit(), host=args.host)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from broker.rules.inputs import token_request

    settings = _settings_or_exit()
    from broker.errors import BrokerError
    from broker.rules.tokens import TokenMinter

    body: dict[str, object] = {"customer_id": args.customer}
    if args.email is not None:
        body["email"] = args.email
    if args.ttl is not None:
        body["ttl"] = args.ttl
    try:
        wanted = token_request(body)
    except BrokerError as exc:
        print(f"broker token: {exc.message}", file=sys.stderr)
        return 2
    shop = _shop_or_exit(settings, args.shop, "token")
    minter = TokenMinter(settings)
    print(minter.customer_token(wanted.customer_id, wanted.email, wanted.ttl, shop=shop).token)
    return 0


def _shop_or_exit(settings: Settings, given: str | None, command: str) -> str:
    """The shop a command names (``--shop``), the only one when it names none; exit 2 when
    it names no configured shop, or names none among several."""
    shop = settings.named_shop(given)
    if shop is None:
        print(f"broker {command}: name a configured shop with --shop", file=sys.stderr)
        raise SystemExit(2)
    return shop.slug


def cmd_check(args: argparse.Namespace) -> int:
    from broker.check.checks import main_check

    return main_check(customer=args.customer, shop=args.shop)


async def invalidate_in_redis(settings: Settings, customer_id: str, shop: str) -> bool:
    """Drop the customer's cached history in the configured Redis; False if Redis failed."""
    from broker.services import cache_for
    from broker.store.store import open_store

    store = await open_store(settings, probe_interval=3600)
    try:
        if store.state != "up":
            return False
        await cache_for(settings, store).invalidate(shop, customer_id)
        # A Redis failure during the call falls back to this process's memory: not good enough.
        return store.state == "up"
    finally:
        await store.aclose()


def cmd_invalidate(args: argparse.Namespace) -> int:
    from broker.errors import BrokerError
    from broker.rules.inputs import customer_id
    from broker.telemetry.logs import configure_logging

    settings = _settings_or_exit()
    # The command speaks for itself below; the store's state events would only repeat it.
    configure_logging("error", "console")
    try:
        wanted = customer_id(args.customer_id, "CUSTOMER_ID")
    except BrokerError as exc:
        print(f"broker invalidate: {exc.message}", file=sys.stderr)
        return 2
    if settings.redis_url is None:
        print(
            "broker invalidate: REDIS_URL is not set, so cached histories live in the memory of "
            "each running broker process, which this command cannot reach. Call POST "
            "/invalidations on the running broker instead (see the runbook).",
            file=sys.stderr,
        )
        return 2
    shop = _shop_or_exit(settings, args.shop, "invalidate")
    if not asyncio.run(invalidate_in_redis(settings, wanted, shop)):
        print(
            "broker invalidate: Redis at REDIS_URL did not answer; nothing was dropped. "
            "Check REDIS_URL with `broker check`.",
            file=sys.stderr,
        )
        return 1
    print(f"dropped the cached referral history of customer {wanted}")
    return 0


def _port(flag: int | None, *names: str, default: int) -> int:
    if flag is not None:
        return flag
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return default


def cmd_sandbox(args: argparse.Namespace) -> int:
    from broker.telemetry.logs import configure_logging
    from broker.web.server import serve_together
    from broker_dev.sandbox import create_sandbox_app, sandbox_config_from_env

    try:
        config = sandbox_config_from_env(os.environ)
    except ConfigError as exc:
        return _report("broker sandbox", exc)
    configure_logging(os.environ.get("LOG_LEVEL", "info").lower(), "console")
    port = _port(args.port, "SANDBOX_PORT", "PORT", default=8001)
    print(f"Bubblehouse sandbox on http://{args.host}:{port} (shop {config.shop})", flush=True)
    asyncio.run(serve_together([(create_sandbox_app(config), args.host, port)]))
    return 0


def dev_environment(
    base: dict[str, str],
    broker_port: int,
    sandbox_port: int,
    demo_port: int,
    host: str,
    cors_origins: Sequence[str] = (),
) -> dict[str, str]:
    """The zero-configuration environment of ``broker dev``: a fresh key, the local sandbox (and
    its BigCommerce look-alike store, whose published secret ``broker serve`` refuses).

    The storefront origins are the demo page's, then those of ``BROKER_CORS_ORIGINS`` in
    ``base``, then ``cors_origins`` (``--cors-origin``), each once: a developer's own page is
    served next to the demo."""
    from broker_dev.sandbox.bigcommerce import BigCommerceStore

    store = BigCommerceStore()
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    origins = [f"http://{host}:{demo_port}", f"http://localhost:{demo_port}"]
    for origin in [*base.get("BROKER_CORS_ORIGINS", "").split(","), *cors_origins]:
        if origin.strip() and origin.strip() not in origins:
            origins.append(origin.strip())
    env = {
        "BROKER_SHOP": DEV_SHOP,
        "BROKER_SIGNING_KEYS": f"{DEV_KID}:{secret}",
        "BROKER_ISSUER_KEYS": DEV_ISSUER_KEY,
        "BROKER_UPSTREAM_URL": f"http://{host}:{sandbox_port}",
        "BROKER_CORS_ORIGINS": ",".join(origins),
        "PORT": str(broker_port),
        "LOG_FORMAT": "console",
        "BROKER_BIGCOMMERCE_CLIENT_ID": store.client_id,
        "BROKER_BIGCOMMERCE_CLIENT_SECRET": store.client_secret,
        "BROKER_BIGCOMMERCE_STORE_HASH": store.store_hash,
    }
    for name in (
        "REDIS_URL",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "BROKER_CACHE_TTL",
        "BROKER_RATE_LIMIT_READ",
        "BROKER_RATE_LIMIT_WRITE",
    ):
        if base.get(name):
            env[name] = base[name]
    return env


def cmd_dev(args: argparse.Namespace) -> int:
    from broker.telemetry.logs import configure_logging
    from broker.web.app import create_app
    from broker.web.server import serve_together
    from broker_dev.demo import create_demo_app
    from broker_dev.sandbox import SandboxConfig, create_sandbox_app

    host = args.host
    broker_port = _port(args.port, "PORT", default=8000)
    sandbox_port = args.sandbox_port or broker_port + 1
    demo_port = args.demo_port or broker_port + 2
    env = dev_environment(
        dict(os.environ), broker_port, sandbox_port, demo_port, host, args.cors_origin or ()
    )
    try:
        settings = parse(env)
    except ConfigError as exc:
        return _report("broker dev", exc)
    bigcommerce = settings.first_shop.bigcommerce
    configure_logging(settings.log_level, settings.log_format)
    signing = settings.first_shop.signing_key
    sandbox = create_sandbox_app(
        SandboxConfig(
            shop=settings.first_shop.slug,
            keys={key.kid: key.secret.reveal() for key in settings.first_shop.signing_keys},
            versions=settings.api_versions,
        )
    )
    broker_url = f"http://{host}:{broker_port}"
    demo = create_demo_app(
        broker_url=broker_url,
        sandbox_url=settings.upstream_url,
        issuer_key=DEV_ISSUER_KEY,
        shop=settings.first_shop.slug,
        version=settings.api_versions[0],
    )
    store = "Redis at REDIS_URL" if settings.redis_url else "in-process store (one process)"
    print(
        "\n".join(
            [
                "referral broker, development mode",
                f"  broker   {broker_url}   (shop {settings.first_shop.slug}, {store})",
                f"  sandbox  {settings.upstream_url}   (Bubblehouse look-alike)",
                f"  demo     http://{host}:{demo_port}/   (open this in a browser)",
                f"  storefront origins (CORS): {' '.join(settings.first_shop.cors_origins)}",
                f"  issuer key for POST /tokens: {DEV_ISSUER_KEY}",
                # A throwaway key made for this run, so the minting recipes can be tried here.
                f"  signing key (mint tokens yourself): kid {signing.kid}, base64 secret "
                f"{base64.b64encode(signing.secret.reveal()).decode()}",
                f"  BigCommerce look-alike: {settings.upstream_url}/customer/current.jwt"
                f"?app_client_id={bigcommerce.client_id if bigcommerce else ''}",
                "Press Ctrl+C to stop.",
            ]
        ),
        flush=True,
    )
    asyncio.run(
        serve_together(
            [
                (create_app(settings), host, broker_port),
                (sandbox, host, sandbox_port),
                (demo, host, demo_port),
            ]
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker", description="Bubblehouse referral broker for storefronts."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="run the production server on HOST:PORT with WEB_CONCURRENCY workers"
    )
    serve.add_argument("--host", default=None, help="listen address (default: HOST, else 0.0.0.0)")
    dev = sub.add_parser("dev", help="run the broker, the sandbox and the demo page on loopback")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=None, help="broker port (default PORT or 8000)")
    dev.add_argument("--sandbox-port", type=int, default=None, help="default: broker port + 1")
    dev.add_argument("--demo-port", type=int, default=None, help="default: broker port + 2")
    dev.add_argument(
        "--cors-origin",
        action="append",
        metavar="URL",
        help="a storefront origin to allow besides the demo's (repeatable)",
    )
    sandbox = sub.add_parser("sandbox", help="run only the Bubblehouse look-alike")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument(
        "--port", type=int, default=None, help="default: SANDBOX_PORT, else PORT, else 8001"
    )
    token = sub.add_parser("token", help="print a customer token made with the configured keys")
    token.add_argument("--customer", required=True, help="the customer id")
    token.add_argument("--email", default=None, help="the customer's email (becomes ce)")
    token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    token.add_argument("--shop", default=None, help="the shop (with a shops file)")
    check = sub.add_parser(
        "check", help="check configuration, Redis and Bubblehouse; exit 0 when all is well"
    )
    check.add_argument(
        "--customer",
        default=None,
        help="also read this customer's referrals from Bubblehouse, as the broker would",
    )
    check.add_argument(
        "--shop", default=None, help="the shop of --customer (with a shops file of several)"
    )
    invalidate = sub.add_parser(
        "invalidate",
        help="drop one customer's cached referral history in Redis (like POST /invalidations)",
    )
    invalidate.add_argument("customer_id", metavar="CUSTOMER_ID", help="the customer id")
    invalidate.add_argument("--shop", default=None, help="the shop (with a shops file)")
    return parser


COMMANDS = {
    "serve": cmd_serve,
    "dev": cmd_dev,
    "sandbox": cmd_sandbox,
    "token": cmd_token,
    "check": cmd_check,
    "invalidate": cmd_invalidate,
}


# Commands of the development tools (devtools/), which the production image does not hold.
DEVELOPMENT = {"dev", "sandbox"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in DEVELOPMENT and importlib.util.find_spec("broker_dev") is None:
        print(
            f"broker {args.command}: the development tools are not installed here (the production "
            "image holds only the broker). In a checkout: bash scripts/setup.",
            file=sys.stderr,
        )
        return 2
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
