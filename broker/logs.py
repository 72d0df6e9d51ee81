"""Structured logs: structlog set up once per process, JSON lines on stdout by default.

Customer ids are logged only as a keyed hash (:func:`customer_hash`); tokens, keys, emails,
destinations and bodies are never passed to a logger, and :func:`_scrub` drops any field whose
name says it holds one, as a second line of defence.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_SENSITIVE = ("token", "authorization", "secret", "password", "issuer_key", "email", "destination")


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event):
        lowered = name.lower()
        if any(word in lowered for word in _SENSITIVE):
            event[name] = "[redacted]"
    return event


def _dumps(event: Any, **_: Any) -> bytes:
    return orjson.dumps(event, default=str)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route structlog to stdout as JSON (or a console layout for development)."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        factory: Any = structlog.PrintLoggerFactory()
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        factory = structlog.BytesLoggerFactory()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def hash_key(secret: bytes) -> bytes:
    """The key that hashes customer ids in logs, derived from the signing secret."""
    return hmac.new(secret, b"referral-broker log customer hash", hashlib.sha256).digest()


def customer_hash(key: bytes, customer_id: str) -> str:
    """A keyed, stable, non-reversible stand-in for a customer id in logs."""
    return hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:16]
