"""``broker serve`` with a shops file (spec 2.1): SIGHUP adds, re-keys and removes shops without
a restart and without failing a request; a bad file on SIGHUP is logged one line per problem
(shop and key, never a value) and the running shops kept; request lines carry the shop."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest

from tests.e2e.test_sighup import hang_up_and_wait
from tests.serving import Served, broker_serve, calls_in_a_loop, wait_for_event, worker_pids

VERSION = "v2023061"
OLD = base64.b64encode(b"o" * 40).decode()
NEW = base64.b64encode(b"n" * 40).decode()
SOUTH_SECRET = base64.b64encode(b"s" * 40).decode()
KEY_NORTH = "north-issuer-key-0123456789abcdef0123"
KEY_SOUTH = "south-issuer-key-0123456789abcdef0123"
NORTH_ONLY = f"""
[shops.north]
signing_keys = ["k1:{OLD}"]
issuer_keys = ["{KEY_NORTH}"]
"""
SOUTH = f"""
[shops.south]
signing_keys = ["s1:{SOUTH_SECRET}"]
issuer_keys = ["{KEY_SOUTH}"]
"""
NORTH_REKEYED = f"""
[shops.north]
signing_keys = ["k2:{NEW}", "k1:{OLD}"]
issuer_keys = ["{KEY_NORTH}"]
"""
# No single-shop variable may be set beside the file.
WITHOUT_SINGLE_SHOP = {
    "BROKER_SHOP": None,
    "BROKER_SIGNING_KEYS": None,
    "BROKER_ISSUER_KEYS": None,
    "BROKER_CORS_ORIGINS": None,
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """One worker serving the shops of ``shops.toml`` (north alone at start)."""
    (tmp_path / "shops.toml").write_text(NORTH_ONLY)
    with broker_serve(tmp_path, BROKER_SHOPS_FILE="shops.toml", **WITHOUT_SINGLE_SHOP) as running:
        wait_for_event(running, "broker.started")
        yield running


def mint(served: Served, key: str) -> httpx2.Response:
    return httpx2.post(
        f"{served.url}/tokens",
        json={"customer_id": "alice"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def kid_of(response: httpx2.Response) -> str:
    kid: str = jwt.get_unverified_header(response.json()["token"])["kid"]
    return kid


def test_shops_added_rekeyed_and_removed_on_sighup_without_a_failed_request(
    served: Served,
) -> None:
    """SIGHUP with south added and north re-keyed: a client minting north tokens in a loop sees
    no failure, the pid stays, north signs with its new key and south is served; a second SIGHUP
    removes south (its key refused, its path 404)."""
    assert kid_of(mint(served, KEY_NORTH)) == "k1"
    assert mint(served, KEY_SOUTH).status_code == 401
    pid = served.proc.pid
    with calls_in_a_loop(lambda: mint(served, KEY_NORTH).status_code) as seen:
        (served.output.parent / "shops.toml").write_text(NORTH_REKEYED + SOUTH)
        hang_up_and_wait(served, "config.reloaded")
        time.sleep(0.5)
    assert seen.failures == [] and seen.answered > 20
    assert served.proc.poll() is None and served.proc.pid == pid
    assert kid_of(mint(served, KEY_NORTH)) == "k2"
    south = mint(served, KEY_SOUTH)
    assert south.status_code == 200 and kid_of(south) == "s1"

    (served.output.parent / "shops.toml").write_text(NORTH_REKEYED)
    hang_up_and_wait(served, "config.reloaded")
    assert mint(served, KEY_SOUTH).status_code == 401
    gone = httpx2.post(f"{served.url}/api/{VERSION}/south/CustomerReferrals2", timeout=10)
    assert gone.status_code == 404 and gone.json()["id"] == "not_found"
    assert mint(served, KEY_NORTH).status_code == 200
    lines = [e for e in served.written_events() if e.get("event") == "request"]
    assert any(e.get("shop") == "north" and e.get("route") == "/tokens" for e in lines)
    assert any(e.get("shop") == "south" for e in lines)


def test_a_bad_shops_file_on_sighup_is_logged_per_problem_and_the_running_shops_kept(
    served: Served,
) -> None:
    """A file naming north's issuer key in a second shop and a short secret: one logged line per
    problem naming the shop and key (never a value), the reload refused, north still served
    with its key and the worker kept."""
    workers = worker_pids(served.proc.pid)
    short = base64.b64encode(b"short-secret-value").decode()
    bad = (
        NORTH_ONLY
        + f"""
[shops.west]
signing_keys = ["w1:{short}"]
issuer_keys = ["{KEY_NORTH}"]
"""
    )
    (served.output.parent / "shops.toml").write_text(bad)
    hang_up_and_wait(served, "config.reload_refused")
    problems = [e for e in served.written_events() if e.get("event") == "config.problem"]
    assert [p["variable"] for p in problems] == ["BROKER_SHOPS_FILE"] * 2
    assert problems[0]["problem"].startswith("[shops.west] signing_keys: key #1 (kid 'w1')")
    assert problems[1]["problem"].startswith("[shops.west] issuer_keys: key #1 is also")
    text = served.output.read_text()
    assert short not in text and KEY_NORTH not in text
    assert kid_of(mint(served, KEY_NORTH)) == "k1"
    assert worker_pids(served.proc.pid) == workers
