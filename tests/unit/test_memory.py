"""The in-process key space: bounded, least recently used first out, expiring, counting."""

from __future__ import annotations

from broker.store.memory import Memory


def test_memory_is_bounded_and_expires() -> None:
    """The memory backend evicts the least recently used keys and honours expiry."""
    now = [0]
    memory = Memory(max_keys=100, clock=lambda: now[0])
    for i in range(1000):
        memory.set(f"k{i}", i)
    assert len(memory) == 100
    assert memory.get("k0") is None
    assert memory.get("k999") == 999
    memory.set("short", "v", ttl_ms=10)
    assert memory.pttl("short") == 10
    now[0] += 11
    assert memory.get("short") is None
    assert memory.pttl("short") == -2


def test_a_count_opens_its_window_at_the_first_hit() -> None:
    """incr counts within one window that starts at the first count and ends with it, as the
    Redis counters do (INCR, then PEXPIRE only when the key had no expiry)."""
    now = [0]
    memory = Memory(clock=lambda: now[0])
    assert memory.incr("rate", 1000) == (1, 1000)
    now[0] += 400
    assert memory.incr("rate", 1000) == (2, 600)
    now[0] += 600
    assert memory.incr("rate", 1000) == (1, 1000)
