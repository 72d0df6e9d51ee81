"""Logging: structlog events, one JSON object per line in production, secrets never written.

Every line carries the process id and the broker version; a failure logged with
``log.exception`` carries its type, message and traceback as structured fields (no locals, which
could hold secrets). The server's own stdlib logging (uvicorn) is routed through the same
pipeline by :func:`route_stdlib_logging`, so every line of a JSON run is JSON.

Customer ids are logged as a keyed hash (:func:`customer_hash`). Tokens, keys, emails and
destinations are never handed to a logger, and :func:`_scrub` drops any field whose
name says it holds one, as a second line of defence.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer

from broker import __version__

_SENSITIVE = ("token", "authorization", "secret", "password", "issuer_key", "email", "destination")
# Field names already found harmless. Names come from the code, never from input, so the set
# stays small; the request line's dozen names then cost one subset test instead of 80 substring
# tests per line.
_CLEAN: set[str] = set()
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if event.keys() <= _CLEAN:
        return event
    for name in list(event):
        if name in _CLEAN:
            continue
        lowered = name.lower()
        if any(word in lowered for word in _SENSITIVE):
            event[name] = "[redacted]"
        else:
            _CLEAN.add(name)
    return event


def _dumps(event: Any, **_: Any) -> bytes:
    return orjson.dumps(event, default=str)


def _dumps_str(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


class _Stamp:
    """Level, UTC timestamp, process id and broker version, then the scrub: one processor.

    Every line goes through this, the per-request line included, so it is one call doing
    dictionary stores rather than a chain of processors. The process id is read when the
    pipeline is built, so each worker process (which configures logging itself) writes its own.
    """

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event["level"] = _LEVEL_NAMES.get(method, method)
        event["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event["pid"] = self.pid
        event["version"] = __version__
        return _scrub(logger, method, event)


def _processors(fmt: str) -> tuple[list[Any], Any]:
    """The shared processors and the renderer for ``fmt``."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _Stamp(),
    ]
    if fmt == "console":
        return shared, structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    # Type, message and frames of an exception as JSON; never the frames' locals.
    shared.append(
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
    )
    return shared, structlog.processors.JSONRenderer(serializer=_dumps)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route structlog to stdout as JSON (or a console layout for development)."""
    shared, renderer = _processors(fmt)
    factory: Any = (
        structlog.PrintLoggerFactory() if fmt == "console" else structlog.BytesLoggerFactory()
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def route_stdlib_logging(level: str = "info", fmt: str = "json") -> None:
    """Send the server's stdlib loggers (uvicorn's) through the broker's processors to stdout.

    uvicorn's lines (``Invalid HTTP request received.``, worker starts and deaths) then come out
    in the same format as the broker's events, with ``logger`` naming their source.
    """
    shared, renderer = _processors(fmt)
    if fmt != "console":
        # A logging.Formatter returns str.
        renderer = structlog.processors.JSONRenderer(serializer=_dumps_str)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.getLevelNamesMapping()[level.upper()])
    # The app writes its own request line; uvicorn writes access lines when this has a handler.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False


def hash_key(secret: bytes) -> bytes:
    """The key that hashes customer ids in logs, derived from a secret."""
    return hmac.new(secret, b"referral-broker log customer hash", hashlib.sha256).digest()


@functools.lru_cache(maxsize=16_384)
def customer_hash(key: bytes, customer_id: str) -> str:
    """A keyed, stable, non-reversible stand-in for a customer id in logs (remembered: every
    request of a customer logs it)."""
    return hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:16]
