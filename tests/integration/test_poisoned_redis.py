"""A poisoned Redis: keys overwritten with the wrong type or garbage are a miss for that key,
repaired, never an outage and never a 500 (a real redis-server, the broker over HTTP)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
import redis as sync_redis
from structlog.testing import capture_logs

from tests.servers import RedisProcess
from tests.stack import Broker, Sandbox, running_broker

Poison = Callable[[sync_redis.Redis, str], Any]


def keys_ending(client: sync_redis.Redis, suffix: str) -> list[str]:
    """Every broker key (SCAN rb:*) whose name ends with ``suffix``."""
    return sorted(k.decode() for k in client.scan_iter("rb:*") if k.decode().endswith(suffix))


def one_key(client: sync_redis.Redis, suffix: str) -> str:
    found = keys_ending(client, suffix)
    assert len(found) == 1, f"expected one key ending {suffix!r}, found {found}"
    return found[0]


@pytest.fixture
def plain(redis_server: RedisProcess) -> Iterator[sync_redis.Redis]:
    """A plain client on the test's Redis, to overwrite the broker's keys."""
    client = sync_redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def strict_broker(sandbox: Sandbox, redis_server: RedisProcess) -> Iterator[Broker]:
    """A broker on the real Redis with every read going to Redis: no near tier, strict limits
    (the read limit counted in Redis on each read)."""
    with running_broker(
        sandbox.url,
        REDIS_URL=redis_server.url,
        BROKER_NEAR_CACHE_MB="0",
        BROKER_RATE_LIMIT_SYNC="0",
    ) as broker:
        yield broker


def assert_no_outage(broker: Broker, events: Sequence[Mapping[str, Any]]) -> None:
    """Redis stays up, the bad key was logged as such, and Redis was never called down."""
    assert broker.client.get("/readyz").json()["redis"] == "up"
    names = [e["event"] for e in events]
    assert "store.key_error" in names
    assert "store.redis_down" not in names


# The suffix of the cached list's key (rb:{<customer>}:c:<function>:<version>).
ENTRY = ":c:CustomerReferrals2:v2023061"
POISONS: dict[str, tuple[str, Poison]] = {
    "entry is a string": (ENTRY, lambda r, k: r.set(k, "not a hash")),
    "entry body is not JSON": (
        ENTRY,
        lambda r, k: r.hset(k, "b", "<html>oops"),
    ),
    "entry body is a JSON list": (
        ENTRY,
        lambda r, k: r.hset(k, "b", "[1,2]"),
    ),
    "entry freshness is not a number": (
        ENTRY,
        lambda r, k: r.hset(k, "f", "soon"),
    ),
    "generation is not a number": (":g", lambda r, k: r.set(k, "seven")),
    "generation is 1e300": (":g", lambda r, k: r.set(k, "1e300")),
    "generation is a fraction": (":g", lambda r, k: r.set(k, "5.5")),
    "generation has a leading zero": (":g", lambda r, k: r.set(k, "007")),
    "generation has a leading space": (":g", lambda r, k: r.set(k, " 12")),
    "lease is a hash": (
        ENTRY,
        lambda r, k: (r.delete(k), r.hset(k.replace(":c:", ":l:"), "x", "1")),
    ),
    "read counter is not an integer": (":rl:read", lambda r, k: r.set(k, "lots")),
    "read counter is a hash": (":rl:read", lambda r, k: (r.delete(k), r.hset(k, "a", "1"))),
}


@pytest.mark.parametrize("case", list(POISONS))
def test_poisoned_read_key_is_a_repaired_miss(
    case: str, strict_broker: Broker, sandbox: Sandbox, plain: sync_redis.Redis
) -> None:
    """A cache, generation or read-rate key overwritten with garbage: the read answers 200 with
    the real list and its rate headers, Redis stays up, the key is repaired (next read a hit)."""
    suffix, poison = POISONS[case]
    if suffix == ":g":
        # A generation key exists once the customer has sent.
        strict_broker.refer({"channel": "sms"}).raise_for_status()
    first = strict_broker.read()
    assert first.status_code == 200
    assert strict_broker.read().headers["cache-status"].startswith("broker; hit")
    poison(plain, one_key(plain, suffix))
    calls = sandbox.calls().get("CustomerReferrals2", 0)
    with capture_logs() as events:
        answer = strict_broker.read()
        assert answer.status_code == 200
        assert answer.json() == first.json()
        assert answer.headers["ratelimit-policy"] == '"read";q=60;w=10'
        assert_no_outage(strict_broker, events)
    with capture_logs() as later:
        again = strict_broker.read()
    assert again.headers["cache-status"].startswith("broker; hit")
    assert again.json() == first.json()
    assert sandbox.calls().get("CustomerReferrals2", 0) <= calls + 1
    assert not [e for e in later if e["log_level"] == "warning"]  # repaired once, for good
    assert len([e for e in events if e["log_level"] == "warning"]) <= 2
    assert plain.type(one_key(plain, ENTRY)) == b"hash"


def test_poisoned_generation_never_serves_the_list_from_before_a_send(
    strict_broker: Broker, plain: sync_redis.Redis
) -> None:
    """After a send, a generation key overwritten with garbage still gives a list that holds
    the send (the repair drops the entry with the generation, never resurrects the old list)."""
    strict_broker.read()
    sent = strict_broker.refer({"channel": "sms"}).json()["referral"]
    strict_broker.read()
    plain.set(one_key(plain, ":g"), "garbage")
    with capture_logs() as events:
        listed = strict_broker.read().json()["referrals"]
        assert_no_outage(strict_broker, events)
    assert sent["referral_bhid"] in {r["referral_bhid"] for r in listed}


IDEM_POISONS: dict[str, Poison] = {
    "record is a string": lambda r, k: r.set(k, "garbage", keepttl=True),
    "record is a string without expiry": lambda r, k: r.set(k, "garbage"),
    "status is not a number": lambda r, k: r.hset(k, "c", "abc"),
    "status is missing": lambda r, k: r.hdel(k, "c"),
    "status is out of range": lambda r, k: r.hset(k, "c", "42"),
    "body is missing": lambda r, k: r.hdel(k, "b"),
    "headers are not JSON": lambda r, k: r.hset(k, "h", "{{{"),
    "headers are a JSON list": lambda r, k: r.hset(k, "h", "[]"),
    "headers hold a number": lambda r, k: r.hset(k, "h", '{"Content-Type": 1}'),
    "headers are missing": lambda r, k: r.hdel(k, "h"),
    "state is neither pending nor done": lambda r, k: r.hset(k, "s", "?"),
    "state is missing": lambda r, k: r.hdel(k, "s"),
}


@pytest.mark.parametrize("case", list(IDEM_POISONS))
def test_poisoned_idempotency_record(
    case: str, strict_broker: Broker, sandbox: Sandbox, plain: sync_redis.Redis
) -> None:
    """A done idempotency record with a missing or mistyped field: the retry is refused with
    409 idempotency_key_reused (never a 500, never sent to Bubblehouse again), Redis stays up,
    no key is deleted, and the record still lapses in time."""
    headers = {"Idempotency-Key": "order-1"}
    first = strict_broker.refer({"channel": "sms"}, headers=headers)
    assert first.status_code == 200
    records = [k for k in keys_ending(plain, "") if ":idem:" in k]
    assert len(records) == 1
    record = records[0]
    IDEM_POISONS[case](plain, record)
    sends = sandbox.calls()["Refer2"]
    with capture_logs() as events:
        for _ in range(2):
            retry = strict_broker.refer({"channel": "sms"}, headers=headers)
            assert retry.status_code == 409, retry.text
            assert retry.json()["id"] == "idempotency_key_reused"
        assert_no_outage(strict_broker, events)
    assert sandbox.calls()["Refer2"] == sends
    assert plain.exists(record)
    assert 0 < plain.pttl(record) <= 86_400_000


def test_out_of_memory_redis_still_answers(strict_broker: Broker, plain: sync_redis.Redis) -> None:
    """A Redis at maxmemory with noeviction refuses writes (OOM): reads still get 200 with the
    real list, sends still go out, and Redis is still reported up."""
    first = strict_broker.read()
    plain.config_set("maxmemory-policy", "noeviction")
    plain.config_set("maxmemory", "1")
    try:
        with capture_logs() as events:
            for customer in ("alice", "bob", "carol"):
                answer = strict_broker.read(customer=customer)
                assert answer.status_code == 200, answer.text
            assert strict_broker.read().json() == first.json()
            sent = strict_broker.refer({"channel": "sms"}, headers={"Idempotency-Key": "oom-1"})
            assert sent.status_code == 200, sent.text
            assert_no_outage(strict_broker, events)
    finally:
        plain.config_set("maxmemory", "0")
    assert strict_broker.client.get("/readyz").json()["redis"] == "up"


def test_out_of_memory_keeps_idempotency_records(
    strict_broker: Broker, plain: sync_redis.Redis
) -> None:
    """A retry during an OOM spell of a send made before it replays the first answer (reading a
    record needs no memory), and after the spell the record is still there and replayed."""
    headers = {"Idempotency-Key": "before-oom"}
    first = strict_broker.refer({"channel": "sms"}, headers=headers)
    assert first.status_code == 200
    plain.config_set("maxmemory-policy", "noeviction")
    plain.config_set("maxmemory", "1")
    try:
        during = strict_broker.refer({"channel": "sms"}, headers=headers)
        assert during.status_code == 200, during.text
    finally:
        plain.config_set("maxmemory", "0")
    records = [k for k in keys_ending(plain, "") if ":idem:" in k]
    assert len(records) == 1 and plain.hget(records[0], "s") == b"d"
    after = strict_broker.refer({"channel": "sms"}, headers=headers)
    assert after.headers["idempotent-replayed"] == "true"
    assert after.json() == first.json()


def test_out_of_memory_deletes_no_key(
    strict_broker: Broker, sandbox: Sandbox, plain: sync_redis.Redis
) -> None:
    """OOM is no fault of a key: reads refused by a full Redis repair (delete) nothing, so the
    cached entry and the customer's generation are still there once memory is back."""
    strict_broker.refer({"channel": "sms"}).raise_for_status()
    strict_broker.read()
    entry, gen = one_key(plain, ENTRY), one_key(plain, ":g")
    before = plain.get(gen)
    plain.config_set("maxmemory-policy", "noeviction")
    plain.config_set("maxmemory", "1")
    try:
        with capture_logs() as events:
            assert strict_broker.read().status_code == 200
            assert_no_outage(strict_broker, events)
    finally:
        plain.config_set("maxmemory", "0")
    assert plain.exists(entry) and plain.get(gen) == before
    calls = sandbox.calls()["CustomerReferrals2"]
    assert strict_broker.read().headers["cache-status"].startswith("broker; hit")
    assert sandbox.calls()["CustomerReferrals2"] == calls


@pytest.mark.parametrize("garbage", ["seven", "hash"])
def test_send_with_a_poisoned_generation_gives_a_usable_token(
    garbage: str, strict_broker: Broker, plain: sync_redis.Redis
) -> None:
    """A send whose customer's generation key holds garbage is answered 200 with a numeric
    Consistency-Token; Redis stays up, and a read with that token holds the send."""
    strict_broker.refer({"channel": "sms"}).raise_for_status()
    strict_broker.read()
    gen = one_key(plain, ":g")
    if garbage == "hash":
        plain.delete(gen)
        plain.hset(gen, "x", "1")
    else:
        plain.set(gen, garbage)
    with capture_logs() as events:
        sent = strict_broker.refer({"channel": "sms"})
        assert sent.status_code == 200, sent.text
        assert_no_outage(strict_broker, events)
    token = sent.headers["consistency-token"]
    made = token.split(".")[1]  # v1.<generation>.<time>.<mac>
    assert made.isdigit() and plain.get(gen) == made.encode()
    read = strict_broker.read(headers={"Consistency-Token": token})
    listed = {r["referral_bhid"] for r in read.json()["referrals"]}
    assert sent.json()["referral"]["referral_bhid"] in listed


def test_read_only_replica_still_answers(strict_broker: Broker, plain: sync_redis.Redis) -> None:
    """A Redis turned into a read-only replica (READONLY replies, as after a failover that kept
    the old address): reads and sends still answer 200, Redis stays up, and once it is a primary
    again reads are cached in it again."""
    broker = strict_broker
    primary = RedisProcess().start()
    try:
        broker.read().raise_for_status()
        plain.replicaof("127.0.0.1", primary.port)
        try:
            with capture_logs() as events:
                assert [broker.read().status_code for _ in range(3)] == [200] * 3
                sent = broker.refer({"channel": "sms"})
                assert sent.status_code == 200, sent.text
                assert_no_outage(broker, events)
            assert any(e.get("error") == "ReadOnlyError" for e in events)
        finally:
            plain.replicaof("NO", "ONE")
        broker.read(customer="bob")
        assert broker.read(customer="bob").headers["cache-status"].startswith("broker; hit")
    finally:
        primary.cleanup()
