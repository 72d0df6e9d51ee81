"""Named script replies: read by name into typed dataclasses, and every script replies so."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from broker.cache import _scripts as cache_scripts
from broker.cache._backends import Lookup
from broker.store import idempotency, limits
from broker.store.limits import Count
from broker.store.scripts import decode
from broker.store.store import KEY_FAILURES


@dataclass(frozen=True, slots=True)
class Sample:
    """A reply with one field of each kind the scripts send."""

    number: int
    flag: bool = False
    text: str = ""
    raw: bytes | None = None
    kind: Literal["a", "b"] = "a"


def test_fields_are_read_by_name_in_any_order() -> None:
    """The same named fields in two orders decode to the same typed record."""
    one = [b"count", 3, b"reset_ms", b"1500", b"key", b"rb:{x}:rl:read", b"repaired", 1]
    other = [b"repaired", 1, b"key", b"rb:{x}:rl:read", b"reset_ms", b"1500", b"count", 3]
    assert decode(Count, one) == decode(Count, other) == Count(3, 1500, "rb:{x}:rl:read", True)


def test_each_value_takes_its_fields_type() -> None:
    """int from an integer or a numeric string, bool from 0/1, str and Literal from bytes, bytes
    kept as they are."""
    raw = [b"number", b"12", b"flag", 1, b"text", b"holder-1", b"raw", b"\x00{}", b"kind", b"b"]
    assert decode(Sample, raw) == Sample(12, True, "holder-1", b"\x00{}", "b")


def test_absent_fields_keep_their_defaults_and_known_ones_fill_in() -> None:
    """A field left out, or sent as a Lua false (nil), keeps its default; ``known`` fields fill
    what the script does not send."""
    assert decode(Sample, [b"number", 1, b"raw", None]) == Sample(1)
    found = decode(Lookup, [b"allowed", 1, b"count", 0, b"reset_ms", 0], token="t-1")
    assert found == Lookup(True, 0, 0, token="t-1")


@pytest.mark.parametrize(
    "raw",
    [
        [b"number", 1, b"surprise", 2],  # a name the record does not know
        [b"flag", 1],  # a required field missing
        [b"number", b"seven"],  # not a number
        [b"number", 1, b"raw", 5],  # a number where a string belongs
        [b"number"],  # a name without a value
        b"number",  # not an array at all
        3,
    ],
)
def test_a_reply_that_does_not_fit_is_a_key_failure(raw: Any) -> None:
    """A reply the record cannot hold raises an error the Store treats as a bad key (repair)."""
    with pytest.raises(KEY_FAILURES):
        decode(Sample, raw)


SCRIPTS = {
    f"{module.__name__}.{name}": source
    for module in (cache_scripts, limits, idempotency)
    for name, source in vars(module).items()
    if name.endswith("_LUA") and name != "COUNT_LUA"  # COUNT_LUA: a fragment, returns nothing
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_replies_with_named_fields(name: str) -> None:
    """Every value a script returns is a table built with names (a literal starting with a
    quoted name, or one built by name), an error, or a named claim: never bare positions."""
    returned = re.findall(r"\breturn\b\s*(.*)", SCRIPTS[name])
    assert returned
    for value in returned:
        assert re.match(r"\{'[a-z_]+', |out\b|claim\(\)|redis\.error_reply\(", value), value
