"""Lua scripts on Redis: run by their SHA, and their replies read by name, never by position.

Every script of the broker replies with named fields, a flat array ``name, value, name,
value...`` in which a field without a value is simply left out (a nested array of such replies
when a script answers for several keys). :func:`decode` turns one reply into a typed, frozen
dataclass whose field names are the reply's names: each value is converted to the field's
declared type (``int``, ``bool``, ``str``, ``bytes``, optionally ``| None``), an absent field
keeps its default. A name the dataclass does not know, a required field missing, or a value that
does not convert raises :class:`DecodeError`, which the Store treats as a bad key (and nothing
else: a ValueError of the broker's own code is a bug, not a bad key).
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

R = TypeVar("R")
Client = Redis | RedisCluster


class DecodeError(Exception):
    """A value read from Redis does not have the broker's shape (a tampered or foreign value)."""


class Script:
    """A Lua script run by its SHA (``EVALSHA``), loaded again when Redis has forgotten it.

    redis-py's own ``Script`` inspects its arguments for a pipeline on every call; this is the
    same protocol with less work per call, which the cached read pays on every request.
    """

    __slots__ = ("client", "sha", "source")

    def __init__(self, client: Client, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.client.script_load(self.source)
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)


def _text(value: Any) -> str:
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise DecodeError("a string reply that is not UTF-8") from None


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(f"expected a string reply, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    """An integer reply, or a string holding a canonical integer (``12``, ``-3``; not ``012``,
    `` 12``, ``1e3`` or ``5.5``)."""
    if isinstance(value, int):
        return value
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if not isinstance(text, str) or not text.lstrip("-").isdigit() or not text.isascii():
        raise DecodeError(f"not an integer: {text!r:.40}")
    number = int(text)
    if str(number) != text:
        raise DecodeError(f"not a canonical integer: {text!r:.40}")
    return number


def _flag(value: Any) -> bool:
    return _int(value) != 0


_CONVERTERS: dict[Any, Callable[[Any], Any]] = {int: _int, bool: _flag, str: _text, bytes: _bytes}


def _converter(hint: Any) -> Callable[[Any], Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        [hint] = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return _text
    return _CONVERTERS[hint]


Table = dict[bytes, tuple[str, Callable[[Any], Any]]]
_TABLES: dict[type, Table] = {}


def _fields(cls: type) -> Table:
    """Reply name -> (field name, converter), worked out once per dataclass."""
    table = _TABLES.get(cls)
    if table is None:
        hints = typing.get_type_hints(cls)
        table = _TABLES[cls] = {
            field.name.encode(): (field.name, _converter(hints[field.name]))
            for field in dataclasses.fields(cls)
            if field.init
        }
    return table


@dataclass(frozen=True, slots=True)
class Released:
    """The reply of a script that gives up a claim or a lease: whether it was still held."""

    released: bool


def decode(cls: type[R], raw: Any, **known: Any) -> R:
    """The named reply ``raw`` as a ``cls``; ``known`` fills fields the script does not send."""
    if not isinstance(raw, list) or len(raw) % 2:
        raise DecodeError(f"not a named reply: {type(raw).__name__}")
    table = _TABLES.get(cls) or _fields(cls)
    pairs = iter(raw)
    for name, value in zip(pairs, pairs, strict=True):  # even length: checked above
        if value is None:
            continue  # a Lua false: the field is absent
        found = table.get(name) if isinstance(name, bytes) else None
        if found is None:
            raise DecodeError(f"{cls.__name__} has no field {name!r}")
        known[found[0]] = found[1](value)
    try:
        return cls(**known)
    except TypeError as exc:  # a required field missing from the reply
        raise DecodeError(f"{cls.__name__}: {exc}") from None
