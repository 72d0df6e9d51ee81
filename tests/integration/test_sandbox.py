"""The sandbox upstream, run as a real HTTP server and called over loopback."""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx2
import jwt
import pytest

from broker.config.settings import ConfigError
from broker_dev.sandbox import SandboxConfig, create_sandbox_app, sandbox_config_from_env
from broker_dev.sandbox.data import REUSE_WINDOW
from tests.servers import serve_app
from tests.support import SECRET_B, SHOP, broker_env, make_settings

SETTINGS = make_settings()
KEYS = {key.kid: key.secret.reveal() for key in SETTINGS.first_shop.signing_keys}
CONFIG = SandboxConfig(shop=SHOP, keys=KEYS)
API = f"/api/v2023061/{SHOP}"


class Omitted(enum.Enum):
    """The value of a claim that :func:`mint` leaves out of the token."""

    OMIT = enum.auto()


OMIT = Omitted.OMIT


def mint(
    sub: str | Omitted = f"{SHOP}/alice",
    *,
    kid: str | None = "key-a",
    alg: str = "HS256",
    key: bytes | None = None,
    **claims: Any,
) -> str:
    """A token as the broker would sign it; claims set to OMIT are left out."""
    now = int(time.time())
    # Valid for a day: these tokens are minted once, at import, and the suite runs for minutes.
    payload: dict[str, Any] = {"aud": "BH", "sub": sub, "iat": now, "exp": now + 86400}
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not OMIT}
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key or KEYS["key-a"], algorithm=alg, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SHOP_TOKEN = bearer(mint(SHOP))
ALICE = bearer(mint(f"{SHOP}/alice", ce="alice@example.com"))
ALICE_ADMIN = bearer(mint(f"{SHOP}/alice", l="admin"))


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """One sandbox for the module; each test starts from a reset."""
    with serve_app(create_sandbox_app(CONFIG)) as server:
        yield server.url


@pytest.fixture
def client(server_url: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=server_url, timeout=10) as client:
        client.post("/_sandbox/reset").raise_for_status()
        yield client


def call(
    client: httpx2.Client,
    function: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    return client.post(f"{API}/{function}", json=body or {}, headers=headers)


def error_of(response: httpx2.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) <= {"id", "message"}
    return response.status_code, body["id"]


# -- configuration ---------------------------------------------------------------------------


def test_config_from_env_reads_the_broker_variables_and_sandbox_ones() -> None:
    """The shop, keys and versions are read as the broker reads them, plus SANDBOX_*."""
    env = broker_env(BROKER_API_VERSIONS="v2023061,v20230601", SANDBOX_DELAY="0.25")
    env["SANDBOX_FAST"] = "yes"
    config = sandbox_config_from_env(env)
    assert config.shop == SHOP
    assert config.keys == KEYS
    assert config.versions == ("v2023061", "v20230601")
    assert (config.delay, config.fast, config.seed) == (0.25, True, True)


def test_config_from_env_needs_only_the_three_shared_variables() -> None:
    """No issuer key or other broker variable is needed by the sandbox."""
    config = sandbox_config_from_env(
        {"BROKER_SHOP": "s", "BROKER_SIGNING_KEYS": f"k:{SECRET_B}", "SANDBOX_SEED": "0"}
    )
    assert (config.shop, list(config.keys), config.versions, config.seed) == (
        "s",
        ["k"],
        ("v2023061",),
        False,
    )


def test_config_from_env_reports_every_problem_by_name() -> None:
    """Bad values raise ConfigError naming each variable and never a secret."""
    env = {
        "BROKER_SIGNING_KEYS": "key-a:c2hvcnQ=",
        "SANDBOX_DELAY": "soon",
        "SANDBOX_FAST": "perhaps",
    }
    with pytest.raises(ConfigError) as caught:
        sandbox_config_from_env(env)
    text = str(caught.value)
    for name in ("BROKER_SHOP", "BROKER_SIGNING_KEYS", "SANDBOX_DELAY", "SANDBOX_FAST"):
        assert name in text
    assert "c2hvcnQ" not in text


# -- routing and global errors ---------------------------------------------------------------


def test_status2_names_the_token_kind(client: httpx2.Client) -> None:
    """Status2 answers ok with the kind of token it was given, by GET or POST."""
    for headers, kind in ((SHOP_TOKEN, "shop"), (ALICE, "customer"), ({}, "anonymous")):
        for response in (
            call(client, "Status2", headers=headers),
            client.get(f"{API}/Status2", headers=headers),
        ):
            assert response.status_code == 200
            assert response.json() == {"ok": True, "shop": SHOP, "token_kind": kind}


def test_unknown_version_is_invalid_global_api_version(client: httpx2.Client) -> None:
    """A version that is not configured is 400 invalid_global_api_version."""
    response = client.post(f"/api/v20230601/{SHOP}/Status2", json={})
    assert error_of(response) == (400, "invalid_global_api_version")


def test_old_dated_version_is_obsolete(client: httpx2.Client) -> None:
    """A dated version from before 2023 is 400 obsolete_global_api_version."""
    response = client.post(f"/api/v2019061/{SHOP}/Status2", json={})
    assert error_of(response) == (400, "obsolete_global_api_version")


def test_other_shop_is_unknown_shop(client: httpx2.Client) -> None:
    """A shop other than the configured one is 404 unknown_shop."""
    response = client.post("/api/v2023061/other-shop/Status2", json={}, headers=SHOP_TOKEN)
    assert error_of(response) == (404, "unknown_shop")


def test_other_function_is_unknown_function(client: httpx2.Client) -> None:
    """A function the sandbox does not have is 404 unknown_function."""
    assert error_of(call(client, "Refer1", headers=ALICE)) == (404, "unknown_function")


def test_refer2_is_post_only(client: httpx2.Client) -> None:
    """Refer2 by GET is 405 method_not_allowed."""
    assert error_of(client.get(f"{API}/Refer2", headers=ALICE)) == (405, "method_not_allowed")


def test_paths_outside_the_api_are_json_404(client: httpx2.Client) -> None:
    """Any other path is a Bubblehouse-shaped 404."""
    assert error_of(client.get("/nothing/here")) == (404, "not_found")


def test_body_that_is_not_a_json_object_is_invalid_json(client: httpx2.Client) -> None:
    """Malformed JSON and non-object JSON are 400 invalid_json."""
    for raw in (b"{nope", b"[1, 2]"):
        response = client.post(
            f"{API}/CustomerReferrals2",
            content=raw,
            headers={**ALICE, "Content-Type": "application/json"},
        )
        assert error_of(response) == (400, "invalid_json")


def test_deanonymize_must_be_a_boolean(client: httpx2.Client) -> None:
    """A deanonymize that is not a boolean is 400 invalid_input."""
    response = call(client, "CustomerReferrals2", {"deanonymize": "maybe"}, ALICE)
    assert error_of(response) == (400, "invalid_input")


# -- tokens ------------------------------------------------------------------------------------


BAD_TOKENS = {
    "wrong algorithm": mint(alg="HS512", key=KEYS["key-a"] * 2),
    "unknown kid": mint(kid="key-z"),
    "no kid": mint(kid=None),
    "key of another kid": mint(kid="key-b"),
    "expired": mint(exp=int(time.time()) - 60),
    "issued in the future": mint(iat=int(time.time()) + 3600),
    "wrong audience": mint(aud="XX"),
    "audience list": mint(aud=["BH", "XX"]),
    "no audience": mint(aud=OMIT),
    "no subject": mint(sub=OMIT),
    "other shop": mint(sub="other-shop/alice"),
    "empty customer id": mint(sub=f"{SHOP}/"),
    "email not a string": mint(ce=42),
    "not a jwt": "not-a-jwt",
}


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_tokens_are_invalid_token(client: httpx2.Client, token: str) -> None:
    """Every failed token check is 401 invalid_token with a message."""
    response = call(client, "Status2", headers=bearer(token))
    assert error_of(response) == (401, "invalid_token")
    assert response.json()["message"]


def test_alg_none_is_invalid_token(client: httpx2.Client) -> None:
    """An unsigned token is refused."""
    token = jwt.encode({"aud": "BH", "sub": SHOP}, None, algorithm="none", headers={"kid": "key-a"})
    assert error_of(call(client, "Status2", headers=bearer(token))) == (401, "invalid_token")


def test_expired_token_says_so(client: httpx2.Client) -> None:
    """An expired token's message is Bubblehouse's own example."""
    response = call(client, "Status2", headers=bearer(mint(exp=int(time.time()) - 60)))
    assert response.json() == {"id": "invalid_token", "message": "The token has expired"}


def test_other_authorization_scheme_is_invalid_token(client: httpx2.Client) -> None:
    """Only Bearer is understood."""
    response = call(client, "Status2", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert error_of(response) == (401, "invalid_token")


def test_token_without_exp_or_iat_is_accepted(client: httpx2.Client) -> None:
    """exp and iat are optional; the second key verifies too."""
    token = mint(exp=OMIT, iat=OMIT, kid="key-b", key=KEYS["key-b"])
    response = call(client, "Status2", headers=bearer(token))
    assert response.json()["token_kind"] == "customer"


# -- customer identity -------------------------------------------------------------------------


def test_shop_token_without_customer_is_missing_customer_identity(client: httpx2.Client) -> None:
    """A shop token needs a customer input."""
    response = call(client, "CustomerReferrals2", {}, SHOP_TOKEN)
    assert error_of(response) == (400, "missing_customer_identity")


def test_shop_token_with_empty_customer_is_empty_customer_identity(client: httpx2.Client) -> None:
    """A customer input whose every field is empty is 404 empty_customer_identity."""
    for customer in ({}, {"shopid": "", "email": None}):
        response = call(client, "CustomerReferrals2", {"customer": customer}, SHOP_TOKEN)
        assert error_of(response) == (404, "empty_customer_identity")


def test_unknown_customer_is_no_customers_match(client: httpx2.Client) -> None:
    """A customer nobody knows is 404 no_customers_match_customer_identity."""
    body = {"customer": {"shopid": "zoe"}}
    response = call(client, "CustomerReferrals2", body, SHOP_TOKEN)
    assert error_of(response) == (404, "no_customers_match_customer_identity")


def test_partial_mismatch_is_refused(client: httpx2.Client) -> None:
    """A field that disagrees with the matched customer is a partial mismatch (404)."""
    for customer in (
        {"shopid": "alice", "email": "bob@example.com"},
        {"shopid": "alice", "bhid": "0000000000000001"},
    ):
        response = call(client, "CustomerReferrals2", {"customer": customer}, SHOP_TOKEN)
        assert error_of(response) == (
            404,
            "customer_identity_partially_mismatches_matched_customer",
        )


def test_shop_token_finds_customers_by_shopid_or_email(client: httpx2.Client) -> None:
    """Seeded customers are found by shopid, or by email case-insensitively."""
    by_id = call(client, "CustomerReferrals2", {"customer": {"shopid": "alice"}}, SHOP_TOKEN)
    by_email = call(
        client, "CustomerReferrals2", {"customer": {"email": "ALICE@example.com"}}, SHOP_TOKEN
    )
    assert by_id.status_code == by_email.status_code == 200
    assert by_id.json() == by_email.json()
    assert len(by_id.json()["referrals"]) == 5


def test_customer_token_naming_someone_else_is_refused(client: httpx2.Client) -> None:
    """A customer input naming another customer than the token's is 403."""
    for customer in ({"shopid": "bob"}, {"email": "bob@example.com"}):
        response = call(client, "CustomerReferrals2", {"customer": customer}, ALICE)
        assert error_of(response) == (403, "customer_identity_does_not_match_token")


def test_customer_token_naming_itself_is_fine(client: httpx2.Client) -> None:
    """A customer input that matches the token is accepted."""
    body = {"customer": {"shopid": "alice", "email": "Alice@Example.com"}}
    assert call(client, "CustomerReferrals2", body, ALICE).status_code == 200


def test_customer_token_creates_its_customer(client: httpx2.Client) -> None:
    """Any customer id of a customer token exists from first use, with its ce email."""
    carol = bearer(mint(f"{SHOP}/carol", ce="carol@shop.example"))
    response = call(client, "CustomerReferrals2", {}, carol)
    assert response.json() == {
        "summary": {"sent": 0, "approved": 0, "rejected": 0, "earned_pts": 0},
        "referrals": [],
    }
    found = call(
        client, "CustomerReferrals2", {"customer": {"email": "carol@shop.example"}}, SHOP_TOKEN
    )
    assert found.status_code == 200


def test_demo_customers_are_seeded_on_demand(client: httpx2.Client) -> None:
    """A shop token finds any demo-* customer, with demo referrals."""
    body = {"customer": {"shopid": "demo-42"}}
    response = call(client, "CustomerReferrals2", body, SHOP_TOKEN)
    assert response.json()["summary"]["sent"] == 4


def test_without_seed_nobody_is_known() -> None:
    """With seed off, neither alice nor demo-* customers exist for a shop token."""
    app = create_sandbox_app(SandboxConfig(SHOP, KEYS, seed=False))
    with serve_app(app) as server, httpx2.Client(base_url=server.url) as client:
        for shopid in ("alice", "demo-1"):
            body = {"customer": {"shopid": shopid}}
            response = call(client, "CustomerReferrals2", body, SHOP_TOKEN)
            assert error_of(response) == (404, "no_customers_match_customer_identity")
        assert call(client, "CustomerReferrals2", {}, ALICE).json()["referrals"] == []


# -- CustomerReferrals2 ------------------------------------------------------------------------


def test_history_has_summary_and_newest_referral2_rows_first(client: httpx2.Client) -> None:
    """Alice's seeded history: summary, newest first, newest Referral2 shape."""
    body = call(client, "CustomerReferrals2", {}, ALICE).json()
    assert body["summary"] == {"sent": 4, "approved": 2, "rejected": 1, "earned_pts": 500}
    rows = body["referrals"]
    newest = [row["accepted_at"] or row["sent_at"] for row in rows]
    assert newest == sorted(newest, reverse=True)
    fields = {
        "referral_bhid",
        "acceptance_bhid",
        "channel",
        "destination",
        "status",
        "link",
        "sent_at",
        "accepted_at",
        "reward_pts",
        "reward_pts_value",
        "reward_amount",
        "coupon_code",
    }
    assert all(set(row) == fields for row in rows)
    approved = next(row for row in rows if row["reward_pts"])
    assert approved["reward_pts_value"] == "5.000000"
    assert approved["sent_at"].endswith("Z")
    shared = [row for row in rows if row["channel"] == "custom-social"]
    assert len({row["referral_bhid"] for row in shared}) == 1
    assert {row["status"] for row in shared} == {"approved", "rejected"}
    assert any(row["reward_amount"] == "10.000000" for row in shared)


def test_destinations_are_masked_by_default(client: httpx2.Client) -> None:
    """Emails are masked; a plain customer token asking to deanonymize is ignored."""
    for body in ({}, {"deanonymize": True}):
        rows = call(client, "CustomerReferrals2", body, ALICE).json()["referrals"]
        emails = {row["destination"] for row in rows if row["channel"] == "email"}
        assert emails == {"f***@example.com", "c***@example.com"}


def test_deanonymize_works_for_shop_and_admin_tokens(client: httpx2.Client) -> None:
    """Shop tokens and customer-admin tokens see destinations in full when they ask."""
    shop = call(
        client,
        "CustomerReferrals2",
        {"customer": {"shopid": "alice"}, "deanonymize": True},
        SHOP_TOKEN,
    )
    admin = client.get(f"{API}/CustomerReferrals2?deanonymize=true", headers=ALICE_ADMIN)
    for response in (shop, admin):
        emails = {r["destination"] for r in response.json()["referrals"] if r["destination"]}
        assert emails == {"friend@example.com", "carol@example.com"}


def test_anonymous_history_is_empty(client: httpx2.Client) -> None:
    """Without a token CustomerReferrals2 answers an empty history."""
    assert call(client, "CustomerReferrals2").json() == {"referrals": []}
    assert client.get(f"{API}/CustomerReferrals2").json() == {"referrals": []}


# -- Refer2 ------------------------------------------------------------------------------------


def test_refer2_needs_a_token(client: httpx2.Client) -> None:
    """Refer2 is not anonymous."""
    response = call(client, "Refer2", {"channel": "whatsapp"})
    assert error_of(response) == (401, "invalid_token")


def test_refer2_by_email_creates_an_invited_referral(client: httpx2.Client) -> None:
    """An email referral is invited, Bubblehouse sends it, and it heads the history."""
    body = {"channel": "email", "destination": "newfriend@example.com", "sender": "x@y.z"}
    response = call(client, "Refer2", body, ALICE)
    assert response.status_code == 200
    answer = response.json()
    referral = answer["referral"]
    assert answer["share_action"] == {"type": "none"}
    assert "newfriend@example.com" in answer["message"]
    assert referral["status"] == "invited"
    assert referral["destination"] == "newfriend@example.com"
    assert referral["acceptance_bhid"] is None
    assert referral["accepted_at"] is None
    assert referral["link"].startswith(f"https://{SHOP}.example/r/")
    history = call(client, "CustomerReferrals2", {}, ALICE).json()
    assert history["referrals"][0]["referral_bhid"] == referral["referral_bhid"]
    assert history["referrals"][0]["destination"] == "n***@example.com"
    assert history["summary"]["sent"] == 5


def test_refer2_with_shop_token_acts_for_the_named_customer(client: httpx2.Client) -> None:
    """A shop token refers on behalf of the customer it names."""
    body = {"customer": {"shopid": "bob"}, "channel": "telegram"}
    assert call(client, "Refer2", body, SHOP_TOKEN).status_code == 200
    bob = bearer(mint(f"{SHOP}/bob"))
    assert call(client, "CustomerReferrals2", {}, bob).json()["referrals"][0]["channel"] == (
        "telegram"
    )


SHARE_URLS = {
    "whatsapp": "https://wa.me/?text=",
    "twitter": "https://x.com/intent/tweet?text=",
    "facebook": "https://www.facebook.com/sharer/sharer.php?u=",
    "messenger": "fb-messenger://share/?link=",
    "telegram": "https://t.me/share/url?url=",
    "threads": "https://www.threads.net/intent/post?text=",
    "sms": "sms:?&body=",
}


@pytest.mark.parametrize("channel", SHARE_URLS)
def test_refer2_share_action_opens_a_url(client: httpx2.Client, channel: str) -> None:
    """Channels with a share URL answer open_url carrying the referral link."""
    answer = call(client, "Refer2", {"channel": channel}, ALICE).json()
    action = answer["share_action"]
    link = answer["referral"]["link"]
    assert action["type"] == "open_url"
    assert action["link"] == link
    assert action["url"].startswith(SHARE_URLS[channel])
    assert link in unquote(action["url"])


@pytest.mark.parametrize(
    "channel", ["instagram", "custom-personal", "custom-social", "carrier-pigeon"]
)
def test_refer2_share_action_copies_the_link(client: httpx2.Client, channel: str) -> None:
    """Channels without a share URL, known or not, answer copy_link."""
    answer = call(client, "Refer2", {"channel": channel, "destination": None}, ALICE).json()
    assert answer["share_action"]["type"] == "copy_link"
    assert answer["share_action"]["link"] == answer["referral"]["link"]
    assert answer["referral"]["channel"] == channel


def test_refer2_qr_code_shows_a_qr_code(client: httpx2.Client) -> None:
    """qr-code answers show_qr_code with the link as the data to encode."""
    answer = call(client, "Refer2", {"channel": "qr-code"}, ALICE).json()
    link = answer["referral"]["link"]
    assert answer["share_action"] == {"type": "show_qr_code", "link": link, "data": link}


@pytest.mark.parametrize(
    ("body", "error_id"),
    [
        ({}, "invalid_channel"),
        ({"channel": "Email"}, "invalid_channel"),
        ({"channel": ""}, "invalid_channel"),
        ({"channel": 5}, "invalid_channel"),
        ({"channel": "email"}, "invalid_destination"),
        ({"channel": "email", "destination": "not-an-email"}, "invalid_destination"),
        ({"channel": "email", "destination": "a@" + "b" * 250 + ".com"}, "invalid_destination"),
        ({"channel": "whatsapp", "destination": "friend@example.com"}, "invalid_destination"),
        ({"channel": "email", "destination": "ALICE@example.com"}, "self_referral"),
    ],
)
def test_refer2_validation(client: httpx2.Client, body: dict[str, Any], error_id: str) -> None:
    """Refer2 refuses bad channels and destinations with 400 and a sandbox id."""
    assert error_of(call(client, "Refer2", body, ALICE)) == (400, error_id)


def test_refer2_checks_identity_like_reads(client: httpx2.Client) -> None:
    """Refer2 applies the same identity rules as CustomerReferrals2."""
    assert error_of(call(client, "Refer2", {"channel": "sms"}, SHOP_TOKEN)) == (
        400,
        "missing_customer_identity",
    )
    body = {"customer": {"shopid": "bob"}, "channel": "sms"}
    assert error_of(call(client, "Refer2", body, ALICE)) == (
        403,
        "customer_identity_does_not_match_token",
    )


def test_refer2_reuses_a_recent_identical_referral() -> None:
    """The same channel and destination within the reuse window returns the same row."""
    now = [1_700_000_000.0]
    app = create_sandbox_app(CONFIG, clock=lambda: now[0])
    with serve_app(app) as server, httpx2.Client(base_url=server.url) as client:
        email = {"channel": "email", "destination": "pal@example.com"}
        first = call(client, "Refer2", email, ALICE).json()["referral"]
        now[0] += REUSE_WINDOW - 1
        again = call(client, "Refer2", {**email, "destination": "PAL@example.com"}, ALICE).json()
        assert again["referral"] == first
        assert "a moment ago" in again["message"]
        other = call(client, "Refer2", {**email, "destination": "mate@example.com"}, ALICE)
        assert other.json()["referral"]["referral_bhid"] != first["referral_bhid"]
        now[0] += 2
        later = call(client, "Refer2", email, ALICE).json()["referral"]
        assert later["referral_bhid"] != first["referral_bhid"]
        assert later["referral_bhid"] > first["referral_bhid"]
        sms = [call(client, "Refer2", {"channel": "sms"}, ALICE).json() for _ in range(2)]
        assert sms[0]["referral"] == sms[1]["referral"]
        rows = call(client, "CustomerReferrals2", {}, ALICE).json()["referrals"]
        assert sum(1 for row in rows if row["status"] == "invited") == 5


# -- faults ------------------------------------------------------------------------------------


def fault(client: httpx2.Client, **spec: Any) -> None:
    client.post("/_sandbox/faults", json=spec).raise_for_status()


@pytest.mark.parametrize(
    ("spec", "status", "body"),
    [
        ({"status": 500}, 500, {"id": "internal_error"}),
        ({"status": 401}, 401, {"id": "invalid_token"}),
        ({"status": 418}, 418, {"id": "sandbox_fault"}),
        (
            {"status": 400, "id": "invalid_global_api_version"},
            400,
            {"id": "invalid_global_api_version"},
        ),
        (
            {"status": 404, "id": "no_customers_match_customer_identity"},
            404,
            {"id": "no_customers_match_customer_identity"},
        ),
        ({"status": 409, "id": "some_future_id", "message": "Hm."}, 409, None),
        ({"rate_limit": True}, 429, {"id": "rate_limit_exceeded"}),
        ({"reject_tokens": True}, 401, {"id": "invalid_token"}),
    ],
)
def test_json_faults_answer_bubblehouse_errors(
    client: httpx2.Client, spec: dict[str, Any], status: int, body: dict[str, str] | None
) -> None:
    """Status, rate-limit and token faults answer their status with an {id, message} body."""
    fault(client, **spec)
    response = call(client, "CustomerReferrals2", {}, ALICE)
    assert response.status_code == status
    if body is None:
        assert response.json() == {"id": "some_future_id", "message": "Hm."}
    else:
        assert response.json().items() >= body.items()
    if "id" in spec and "message" not in spec:
        assert response.json() == {"id": spec["id"]}


def test_html_fault_answers_502_html(client: httpx2.Client) -> None:
    """The html fault answers 502 with an HTML page, not JSON."""
    fault(client, html=True)
    response = call(client, "Refer2", {"channel": "sms"}, ALICE)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>")


def test_drop_fault_closes_the_connection_without_an_answer(client: httpx2.Client) -> None:
    """The drop fault closes the connection; the next call is answered normally."""
    fault(client, drop=True, times=1)
    with pytest.raises(httpx2.RemoteProtocolError, match="without sending"):
        call(client, "CustomerReferrals2", {}, ALICE)
    assert call(client, "CustomerReferrals2", {}, ALICE).status_code == 200
    assert client.get("/_sandbox/calls").json()["CustomerReferrals2"] == 2


def test_delay_fault_slows_then_answers(client: httpx2.Client) -> None:
    """A delay-only fault sleeps and then answers normally."""
    fault(client, delay=0.3)
    started = time.monotonic()
    response = call(client, "Status2", {}, ALICE)
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200


def test_delayed_status_fault_sleeps_then_fails(client: httpx2.Client) -> None:
    """Delay combines with another fault kind."""
    fault(client, delay=0.2, status=503)
    started = time.monotonic()
    response = call(client, "Status2", {}, ALICE)
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 503


def test_fault_times_and_functions(client: httpx2.Client) -> None:
    """A fault hits only its functions, only its number of times."""
    fault(client, status=500, times=2, functions=["CustomerReferrals2"])
    assert call(client, "Status2", {}, ALICE).status_code == 200
    codes = [call(client, "CustomerReferrals2", {}, ALICE).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert client.get("/_sandbox/faults").json() == {"faults": []}


def test_faults_are_listed_and_cleared(client: httpx2.Client) -> None:
    """Faults can be listed and cleared with DELETE."""
    fault(client, rate_limit=True)
    listed = client.get("/_sandbox/faults").json()["faults"]
    assert [(f["kind"], f["times"], f["functions"]) for f in listed] == [("rate_limit", None, None)]
    assert client.delete("/_sandbox/faults").json() == {"faults": []}
    assert call(client, "Status2", {}, ALICE).status_code == 200


def test_first_posted_fault_wins(client: httpx2.Client) -> None:
    """Faults apply in the order they were posted."""
    fault(client, status=500, times=1)
    fault(client, rate_limit=True, times=1)
    codes = [call(client, "Status2", {}, ALICE).status_code for _ in range(3)]
    assert codes == [500, 429, 200]


@pytest.mark.parametrize(
    "spec",
    [
        {"status": 200},
        {"status": "500"},
        {"delay": -1},
        {"times": 0},
        {"functions": "Refer2"},
        {"html": "yes"},
        {"id": "x"},
        {"status": 400, "id": "Not A Slug"},
        {"explode": True},
        [],
    ],
)
def test_malformed_faults_are_refused(client: httpx2.Client, spec: Any) -> None:
    """A fault the sandbox cannot apply is 400 invalid_fault and is not added."""
    response = client.post("/_sandbox/faults", json=spec)
    assert error_of(response) == (400, "invalid_fault")
    assert client.get("/_sandbox/faults").json() == {"faults": []}


# -- calls and requests ------------------------------------------------------------------------


def test_calls_count_every_api_request_even_refused_ones(client: httpx2.Client) -> None:
    """The counters include 401s, 404s and faulted calls, and reset to zero."""
    assert client.get("/_sandbox/calls").json() == {
        "CustomerReferrals2": 0,
        "Refer2": 0,
        "Status2": 0,
    }
    call(client, "CustomerReferrals2", {}, ALICE)
    call(client, "CustomerReferrals2", {}, bearer("bad"))
    client.post("/api/v2023061/other-shop/Refer2", json={})
    fault(client, status=500)
    call(client, "Refer2", {"channel": "sms"}, ALICE)
    assert client.get("/_sandbox/calls").json() == {
        "CustomerReferrals2": 2,
        "Refer2": 2,
        "Status2": 0,
    }
    client.post("/_sandbox/reset")
    assert set(client.get("/_sandbox/calls").json().values()) == {0}


def test_requests_record_headers_claims_and_body_but_no_token(client: httpx2.Client) -> None:
    """The request log keeps selected headers, the verified JWT and the body; never the token."""
    token = mint(f"{SHOP}/alice", ce="alice@example.com")
    headers = {
        **bearer(token),
        "X-Request-ID": "req-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "User-Agent": "test-agent",
        "X-Other": "dropped",
    }
    call(client, "Refer2", {"channel": "sms"}, headers)
    call(client, "Status2", {}, bearer("bad"))
    log = client.get("/_sandbox/requests")
    assert token not in log.text
    first, second = log.json()["requests"]
    assert first["function"] == "Refer2"
    assert first["method"] == "POST"
    assert first["headers"] == {
        "x-request-id": "req-1",
        "traceparent": headers["traceparent"],
        "content-type": "application/json",
        "user-agent": "test-agent",
    }
    assert first["token"] == "verified"
    assert first["jwt"]["header"] == {"alg": "HS256", "kid": "key-a", "typ": "JWT"}
    assert first["jwt"]["claims"]["sub"] == f"{SHOP}/alice"
    assert first["jwt"]["claims"]["ce"] == "alice@example.com"
    assert first["body"] == {"channel": "sms"}
    assert (second["token"], second["jwt"]) == ("invalid", None)
    assert client.delete("/_sandbox/requests").json() == {"requests": []}
    assert client.get("/_sandbox/requests").json() == {"requests": []}


def test_requests_keep_the_last_hundred(client: httpx2.Client) -> None:
    """Only the newest 100 requests are kept."""
    for number in range(105):
        call(client, "Status2", {"n": number})
    kept = client.get("/_sandbox/requests").json()["requests"]
    assert [entry["body"]["n"] for entry in kept] == list(range(5, 105))


def test_reset_forgets_state_and_faults(client: httpx2.Client) -> None:
    """Reset drops new referrals and faults and re-seeds the demo data."""
    call(client, "Refer2", {"channel": "sms"}, ALICE)
    fault(client, status=500, functions=["Refer2"])
    client.post("/_sandbox/reset").raise_for_status()
    assert client.get("/_sandbox/faults").json() == {"faults": []}
    assert call(client, "CustomerReferrals2", {}, ALICE).json()["summary"]["sent"] == 4


def test_form_encoded_input_is_accepted(client: httpx2.Client) -> None:
    """Simple parameters may be sent form-encoded."""
    response = client.post(f"{API}/Refer2", data={"channel": "sms"}, headers=ALICE)
    assert response.json()["referral"]["channel"] == "sms"


# -- configured delay and fast mode ------------------------------------------------------------


def test_configured_delay_slows_every_answer() -> None:
    """SandboxConfig.delay is added to every API answer."""
    app = create_sandbox_app(SandboxConfig(SHOP, KEYS, delay=0.25))
    with serve_app(app) as server, httpx2.Client(base_url=server.url) as client:
        started = time.monotonic()
        assert call(client, "Status2").status_code == 200
        assert time.monotonic() - started >= 0.25
        started = time.monotonic()
        client.get("/_sandbox/calls")
        assert time.monotonic() - started < 0.25


def test_fast_mode_answers_a_fixed_body_checking_only_the_jwt_header() -> None:
    """Fast mode: fixed ~2 KB body, header-only token check, counted, not logged."""
    app = create_sandbox_app(SandboxConfig(SHOP, KEYS, fast=True))
    forged = mint(f"{SHOP}/anyone", key=b"f" * 32)
    with serve_app(app) as server, httpx2.Client(base_url=server.url) as client:
        first = call(client, "CustomerReferrals2", {}, ALICE)
        second = client.get(f"{API}/CustomerReferrals2", headers=bearer(forged))
        assert first.status_code == second.status_code == 200
        assert first.content == second.content
        assert 1800 <= len(first.content) <= 2600
        assert json.loads(first.content)["referrals"]
        bad = call(client, "CustomerReferrals2", {}, bearer(mint(kid="key-z")))
        assert error_of(bad) == (401, "invalid_token")
        hs512 = bearer(mint(alg="HS512", key=KEYS["key-a"] * 2))
        assert error_of(call(client, "CustomerReferrals2", {}, hs512)) == (401, "invalid_token")
        assert call(client, "CustomerReferrals2").json() == {"referrals": []}
        wrong_shop = client.post("/api/v2023061/x/CustomerReferrals2", headers=ALICE)
        assert error_of(wrong_shop) == (404, "unknown_shop")
        assert call(client, "Refer2", {"channel": "sms"}, ALICE).status_code == 200
        fault(client, status=503, times=1)
        assert call(client, "CustomerReferrals2", {}, ALICE).status_code == 503
        assert client.get("/_sandbox/calls").json()["CustomerReferrals2"] == 7
        logged = client.get("/_sandbox/requests").json()["requests"]
        assert [entry["function"] for entry in logged] == ["Refer2"]
