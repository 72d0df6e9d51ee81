"""The OpenAPI description: valid, complete, true to the app, and true to the live broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from starlette.routing import Mount, Route

from broker.config.settings import Settings
from broker.errors import (
    CATALOGUE,
    INVALID_TOKEN_REASONS,
    PLATFORM_TOKEN_REASONS,
    BrokerError,
    InvalidInput,
    InvalidPlatformToken,
    InvalidToken,
    UpstreamRateLimited,
    UpstreamRejected,
    problem_body,
)
from broker.openapi.document import DOCUMENTED, PROBLEM, example_error, openapi_document
from broker.rules import inputs
from broker.rules.fields import Body
from broker.rules.tokens import Customer
from broker.web.app import create_app
from tests.support import SHOP, make_settings

READ_PATH = "/api/{version}/{shop}/CustomerReferrals2"
WRITE_PATH = "/api/{version}/{shop}/Refer2"
CONTRACT = {
    ("/tokens", "post"),
    ("/invalidations", "post"),
    (READ_PATH, "get"),
    (READ_PATH, "post"),
    (READ_PATH, "options"),
    (WRITE_PATH, "post"),
    (WRITE_PATH, "options"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
    ("/shopify/token", "get"),
    ("/bigcommerce/token", "post"),
    ("/bigcommerce/token", "options"),
}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def document_for(settings: Settings) -> dict[str, Any]:
    """The document of the app these settings build, from its own routes."""
    return openapi_document(settings, create_app(settings).routes)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return document_for(make_settings())


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def node_ref(ref: str) -> list[str]:
    return ref.removeprefix("#/").split("/")


def deref(document: dict[str, Any], node: Any) -> Any:
    """Follow local ``$ref`` pointers until a concrete node."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node_ref(node["$ref"]):
            target = target[part]
        node = target
    return node


def schemas_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON Schema held under a ``schema`` key anywhere in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            else:
                yield from schemas_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from schemas_in(item)


def problem_validator(document: dict[str, Any]) -> Any:
    return jsonschema_rs.validator_for(document["components"]["schemas"]["Problem"])


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    """The document validates against the OpenAPI 3.1 meta-schema, and so does every schema."""
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()
    schemas = [*document["components"]["schemas"].values(), *schemas_in(document)]
    for text in {json.dumps(schema, sort_keys=True) for schema in schemas}:
        jsonschema_rs.meta.validate(json.loads(text))
    json.dumps(document)  # plain JSON: no tuples, sets or objects


def test_every_route_of_the_contract_is_described(document: dict[str, Any]) -> None:
    """Exactly the routes of spec section 3, each with the methods it answers."""
    described = {(path, method) for path, method, _ in operations(document)}
    assert described == CONTRACT


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    """Every operation has its own operationId (code generators need them)."""
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))


def test_versions_and_shop_are_enums_from_the_settings() -> None:
    """The path parameters list the configured versions and shop, nothing else."""
    settings = make_settings(BROKER_API_VERSIONS="v2023061,v20230601")
    document = document_for(settings)
    for path in (READ_PATH, WRITE_PATH):
        parameters = {p["name"]: p for p in document["paths"][path]["parameters"]}
        assert parameters["version"]["schema"]["enum"] == ["v2023061", "v20230601"]
        assert parameters["shop"]["schema"]["enum"] == [SHOP]
        assert all(p["required"] for p in parameters.values())


def test_security(document: dict[str, Any]) -> None:
    """Issuer key on /tokens, customer token on the calls, none on preflights and probes."""
    schemes = document["components"]["securitySchemes"]
    assert schemes["customerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["customerToken"]["description"],
    }
    assert schemes["issuerKey"]["scheme"] == "bearer"
    by_route = {(path, method): op["security"] for path, method, op in operations(document)}
    assert by_route[("/tokens", "post")] == [{"issuerKey": []}]
    assert by_route[("/invalidations", "post")] == [{"issuerKey": []}]
    for route in [(READ_PATH, "get"), (READ_PATH, "post"), (WRITE_PATH, "post")]:
        assert by_route[route] == [{"customerToken": []}]
    for route in [(READ_PATH, "options"), (WRITE_PATH, "options"), ("/healthz", "get")]:
        assert by_route[route] == []
    assert {} in by_route[("/metrics", "get")]  # optional bearer


def test_every_catalogue_error_is_documented(document: dict[str, Any]) -> None:
    """Every error id of the catalogue is named by some response, under its class's status."""
    statuses = {cls.id: cls.status for cls in DOCUMENTED}
    named: set[str] = set()
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            content = deref(document, response).get("content", {}).get(PROBLEM)
            if content is not None:
                examples = set(content.get("examples", {}))
                named |= examples
                assert all(str(statuses[e]) == status for e in examples), (path, method, status)
                enum = content["schema"].get("properties", {}).get("id", {}).get("enum", [])
                assert set(enum) <= examples
    assert {cls.id for cls in CATALOGUE} <= named
    assert set(document["components"]["examples"]) == named


def test_every_error_response_is_a_problem(document: dict[str, Any]) -> None:
    """Every operation documents errors, and every error answer is the problem+json schema."""
    for path, method, operation in operations(document):
        errors = {
            status: response
            for status, response in operation["responses"].items()
            if not status.startswith("2")
        }
        assert "500" in errors, (path, method)
        for status, response in errors.items():
            content = deref(document, response)["content"]
            assert list(content) == [PROBLEM], (path, method, status)
            schema = content[PROBLEM]["schema"]
            assert {"$ref": "#/components/schemas/Problem"} in [schema, *schema.get("allOf", [])]
            assert "X-Request-ID" in response["headers"]


def test_statuses_of_the_calls(document: dict[str, Any]) -> None:
    """The browser calls document the statuses the contract names (spec 3.4 and 4)."""
    statuses = {
        (path, method): set(op["responses"])
        for path, method, op in operations(document)
        if method != "options"
    }
    calls = {"200", "400", "401", "403", "404", "405", "429", "500", "502", "503", "504", "4XX"}
    assert calls | {"413", "415"} <= statuses[(READ_PATH, "post")]
    assert calls <= statuses[(READ_PATH, "get")]
    assert calls | {"409", "413", "415"} <= statuses[(WRITE_PATH, "post")]
    assert {"200", "400", "401", "405", "413", "415", "429", "500"} <= statuses[("/tokens", "post")]
    assert {"200", "503"} <= statuses[("/readyz", "get")]
    assert "401" in statuses[("/metrics", "get")]


def test_rate_limit_answers_document_retry_after(document: dict[str, Any]) -> None:
    """Every 429 requires Retry-After; the calls' answers carry the rate-limit headers."""
    for path, method, operation in operations(document):
        if "429" in operation["responses"]:
            headers = operation["responses"]["429"]["headers"]
            assert deref(document, headers["Retry-After"])["required"] is True
            assert {"RateLimit", "RateLimit-Policy"} <= set(headers), (path, method)
    read = document["paths"][READ_PATH]["get"]["responses"]["200"]["headers"]
    assert {"Cache-Status", "RateLimit", "RateLimit-Policy", "X-Request-ID"} <= set(read)


@pytest.mark.parametrize("cls", CATALOGUE, ids=lambda cls: cls.id)
def test_rendered_errors_fit_the_problem_schema(
    document: dict[str, Any], cls: type[BrokerError]
) -> None:
    """What problem_body renders for each error validates against the documented schema."""
    validator = problem_validator(document)
    body = problem_body(example_error(cls), "req-1")
    assert validator.is_valid(body), list(validator.iter_errors(body))
    assert document["components"]["examples"][cls.id]["value"]["id"] == cls.id


@pytest.mark.parametrize(
    "error",
    [UpstreamRejected("no_customers_match_customer_identity", 404), UpstreamRateLimited(3)],
    ids=["rejected", "upstream-429"],
)
def test_upstream_errors_fit_the_problem_schema(
    document: dict[str, Any], error: BrokerError
) -> None:
    """Bubblehouse's passed-through ids and its 429 are problem documents too."""
    validator = problem_validator(document)
    body = problem_body(error, "req-1")
    assert validator.is_valid(body), list(validator.iter_errors(body))


def test_problem_schema_refuses_leaks_and_incomplete_bodies(document: dict[str, Any]) -> None:
    """Unknown members (a trace, upstream text) and an invalid_token without reason are refused."""
    validator = problem_validator(document)
    body = problem_body(example_error(CATALOGUE[1]), "req-1")
    assert validator.is_valid(body)
    assert not validator.is_valid({**body, "traceback": "..."})
    assert not validator.is_valid({k: v for k, v in body.items() if k != "reason"})
    reasons = document["components"]["schemas"]["Problem"]["properties"]["reason"]["enum"]
    assert reasons == list(dict.fromkeys(INVALID_TOKEN_REASONS + PLATFORM_TOKEN_REASONS))


def test_each_token_error_carries_only_its_own_reasons(document: dict[str, Any]) -> None:
    """invalid_platform_token takes the reasons of spec 3.8 and invalid_token those of spec 2,
    each refused with the other's own reasons (issuer, subject)."""
    validator = problem_validator(document)
    platform = problem_body(InvalidPlatformToken("issuer"), "req-1")
    customer = problem_body(InvalidToken("subject"), "req-1")
    assert validator.is_valid(platform) and validator.is_valid(customer)
    assert not validator.is_valid({**platform, "reason": "subject"})
    assert not validator.is_valid({**customer, "reason": "issuer"})
    assert set(PLATFORM_TOKEN_REASONS) == {
        "signature", "expired", "audience", "issuer", "store", "operation", "malformed",
        "lifetime", "missing_claim",
    }  # fmt: skip


def undescribed(node: Any) -> Any:
    """A schema without its descriptions."""
    if isinstance(node, dict):
        return {k: undescribed(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [undescribed(item) for item in node]
    return node


BODIES = [
    inputs.TOKEN_REQUEST,
    inputs.INVALIDATION_REQUEST,
    inputs.PLATFORM_TOKEN_REQUEST,
    inputs.CUSTOMER_REFERRALS2,
    inputs.REFER2,
    inputs.CUSTOMER_IDENTITY,
]


@pytest.mark.parametrize("body", BODIES, ids=lambda body: body.name)
def test_request_bodies_are_the_declarations_that_validate(
    document: dict[str, Any], body: Body
) -> None:
    """Each request body schema is the inputs' declaration: its fields, rules and patterns."""
    schema = document["components"]["schemas"][body.name]
    # Descriptions may add the settings' numbers (TokenRequest's ttl); the rules are the same.
    assert undescribed(schema) == undescribed(body.schema())
    assert list(schema["properties"]) == [spec.name for spec in body.fields]
    assert schema["additionalProperties"] is False
    for spec in body.fields:
        if spec.pattern is not None or spec.documented is not None:
            assert schema["properties"][spec.name]["pattern"] == f"^{spec.shown_pattern}$"
        if spec.max_length is not None:
            assert schema["properties"][spec.name]["maxLength"] == spec.max_length


def test_operations_take_the_declared_bodies(document: dict[str, Any]) -> None:
    """The operations name the declared bodies, the GET query and the Idempotency-Key rule."""
    taken = {
        (path, method): op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        for path, method, op in operations(document)
        if "requestBody" in op
    }
    prefix = "#/components/schemas/"
    assert taken == {
        ("/tokens", "post"): prefix + inputs.TOKEN_REQUEST.name,
        ("/invalidations", "post"): prefix + inputs.INVALIDATION_REQUEST.name,
        (READ_PATH, "post"): prefix + inputs.CUSTOMER_REFERRALS2.name,
        (WRITE_PATH, "post"): prefix + inputs.REFER2.name,
        ("/bigcommerce/token", "post"): prefix + inputs.PLATFORM_TOKEN_REQUEST.name,
    }
    query = document["paths"][READ_PATH]["get"]["parameters"]
    assert [p["name"] for p in query] == list(inputs.QUERY_FIELDS)
    [key] = document["paths"][WRITE_PATH]["post"]["parameters"]
    assert key["name"] == "Idempotency-Key"
    assert key["schema"]["pattern"] == f"^{inputs.IDEMPOTENCY_KEY.pattern}$"
    assert document["components"]["schemas"]["Referral2"]["additionalProperties"] is True


ALICE = Customer(SHOP, "alice", "alice@example.com", 2**40)
SAMPLES = [
    (inputs.REFER2, {"channel": "email", "destination": "friend@example.com"}),
    (inputs.REFER2, {"channel": "whatsapp"}),
    (inputs.REFER2, {"channel": "sms", "destination": None, "sender": "alice"}),
    (inputs.REFER2, {"channel": "email"}),
    (inputs.REFER2, {"channel": "sms", "destination": "friend@example.com"}),
    (inputs.REFER2, {"channel": "Email!"}),
    (inputs.REFER2, {"channel": "whatsapp\n"}),
    (inputs.REFER2, {"channel": "x" * 65}),
    (inputs.REFER2, {"channel": "sms", "sender": "alice\u2028"}),
    (inputs.REFER2, {"channel": "sms", "sender": 7}),
    (inputs.REFER2, {"channel": "sms", "extra": 1}),
    (inputs.REFER2, {"channel": "sms", "customer": {"shopid": "alice"}}),
    (inputs.REFER2, {"channel": "sms", "customer": {"shopid": "alice\n"}}),
    (inputs.REFER2, {"channel": "sms", "customer": {"name": "alice"}}),
    (inputs.REFER2, {"channel": "sms", "customer": "alice"}),
    (inputs.REFER2, {"destination": "friend@example.com"}),
    (inputs.CUSTOMER_REFERRALS2, {}),
    (inputs.CUSTOMER_REFERRALS2, {"deanonymize": False, "customer": None}),
    (inputs.CUSTOMER_REFERRALS2, {"deanonymize": "false"}),
    (inputs.CUSTOMER_REFERRALS2, {"customer": {"email": ALICE.email, "bhid": None}}),
    (inputs.CUSTOMER_REFERRALS2, {"customer": {"email": 3}}),
    (inputs.TOKEN_REQUEST, {"customer_id": "alice", "email": "alice@example.com", "ttl": 60}),
    (inputs.TOKEN_REQUEST, {"customer_id": "alice", "email": None, "ttl": None}),
    (inputs.TOKEN_REQUEST, {"customer_id": ""}),
    (inputs.TOKEN_REQUEST, {"customer_id": "a/b"}),
    (inputs.TOKEN_REQUEST, {"customer_id": "x" * 129}),
    (inputs.TOKEN_REQUEST, {"customer_id": "alice\x85"}),
    (inputs.TOKEN_REQUEST, {"customer_id": "alice", "ttl": 0}),
    (inputs.TOKEN_REQUEST, {"customer_id": "alice", "ttl": 1.5}),
    (inputs.TOKEN_REQUEST, {"customer_id": "alice", "email": "alice"}),
    (inputs.TOKEN_REQUEST, {"email": "alice@example.com"}),
    (inputs.INVALIDATION_REQUEST, {"customer_id": "alice"}),
    (inputs.INVALIDATION_REQUEST, {"customer_id": 7}),
]


@pytest.mark.parametrize(("body", "data"), SAMPLES, ids=lambda x: getattr(x, "name", None))
def test_schema_and_validation_agree(
    document: dict[str, Any], body: Body, data: dict[str, Any]
) -> None:
    """The documented schema accepts exactly what the declaration's validation accepts."""
    schema = {**document["components"]["schemas"][body.name], "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema, validate_formats=True)
    try:
        body.check(data)
    except InvalidInput:
        accepted = False
    else:
        accepted = True
    assert validator.is_valid(data) is accepted, list(validator.iter_errors(data))


def test_refer2_schema_requires_destination_for_email(document: dict[str, Any]) -> None:
    """Refer2's schema wants an email destination for the email channel and none otherwise."""
    schema = document["components"]["schemas"]["Refer2Input"]
    # Its $refs point into the document's components, so they ride along in the root.
    validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
    assert validator.is_valid({"channel": "email", "destination": "friend@example.com"})
    assert validator.is_valid({"channel": "whatsapp"})
    assert validator.is_valid({"channel": "sms", "destination": None})
    assert not validator.is_valid({"channel": "email"})
    assert not validator.is_valid({"channel": "sms", "destination": "friend@example.com"})
    assert not validator.is_valid({"channel": "Email!"})
    assert not validator.is_valid({"channel": "sms", "extra": 1})


def app_routes(settings: Settings) -> set[tuple[str, str]]:
    """(path, method) of every route the app really has."""
    routes: set[tuple[str, str]] = set()
    for route in create_app(settings).routes:
        if isinstance(route, Mount):
            continue  # the demo page's static files: not an API route
        assert isinstance(route, Route)
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        routes |= {(route.path, method) for method in methods}
    return routes


def test_app_routes_and_document_agree(document: dict[str, Any]) -> None:
    """Every path of the app is documented, and every documented path exists in the app."""
    settings = make_settings()
    routes = app_routes(settings)
    described = {(path, method) for path, method, _ in operations(document)}
    assert {path for path, _ in routes} == {path for path, _ in described}
    assert described <= routes
    assert routes - described == set()


# --- the live broker ----------------------------------------------------------------------


def test_sandbox_inventions_are_marked(document: dict[str, Any]) -> None:
    """The sandbox's guessed shapes are named as the sandbox's, never as Bubblehouse's."""
    text = json.dumps(document)
    schemas = document["components"]["schemas"]
    share = schemas["Refer2Output"]["properties"]["share_action"]["description"]
    assert "sandbox invention" in share and "open_url" in share
    listing = schemas["CustomerReferrals2Output"]["description"]
    assert "summary" in listing and "newest-first" in listing and "sandbox inventions" in listing
    refer = document["paths"][WRITE_PATH]["post"]["description"]
    assert "self_referral" in refer and "sandbox" in refer
    assert "masking" in document["info"]["description"]
    assert "share_action" not in schemas["Refer2Output"]["required"]
    assert "summary" not in schemas["CustomerReferrals2Output"]["properties"]
    assert '"enum": ["none"' not in text  # the union is never presented as a type


def test_invalidation_body_is_the_brokers_rule(document: dict[str, Any]) -> None:
    """POST /invalidations' body schema refuses what the broker refuses."""
    schema = document["components"]["schemas"]["InvalidationRequest"]
    validator = jsonschema_rs.validator_for(schema)
    assert validator.is_valid({"customer_id": "alice"})
    for bad in (
        {},
        {"customer_id": ""},
        {"customer_id": "a/b"},
        {"customer_id": "a\n"},
        {"customer_id": "a\u2028"},
        {"customer_id": "a", "x": 1},
    ):
        assert not validator.is_valid(bad), bad


def test_every_route_needs_a_description_and_every_description_a_route() -> None:
    """A route the document cannot describe, or a description of no route, stops the build."""
    settings = make_settings()
    routes = list(create_app(settings).routes)
    with pytest.raises(LookupError, match="'healthz'"):
        openapi_document(settings, [r for r in routes if getattr(r, "name", "") != "healthz"])
    extra = Route("/extra", lambda request: None, methods=["GET"], name="extra")
    with pytest.raises(LookupError, match="'extra'"):
        openapi_document(settings, [*routes, extra])
    wider = Route("/healthz", lambda request: None, methods=["GET", "POST"], name="healthz")
    with pytest.raises(LookupError, match="answers POST"):
        openapi_document(
            settings, [wider if getattr(r, "name", "") == "healthz" else r for r in routes]
        )


def test_preflights_are_documented_where_the_routes_answer_options(
    document: dict[str, Any],
) -> None:
    """An OPTIONS operation exists exactly for the routes with OPTIONS, naming their methods."""
    with_options = {
        route.path: route
        for route in create_app(make_settings()).routes
        if isinstance(route, Route) and "OPTIONS" in (route.methods or ())
    }
    documented = {path for path, method, _ in operations(document) if method == "options"}
    assert documented == set(with_options) == {READ_PATH, WRITE_PATH, "/bigcommerce/token"}
    refer = document["paths"][WRITE_PATH]["options"]["description"]
    assert "methods POST, OPTIONS and" in refer


def test_numbers_come_from_the_settings() -> None:
    """Rate limits and token lifetimes in the document are the configured ones."""
    document = document_for(
        make_settings(
            BROKER_RATE_LIMIT_READ="7/3s",
            BROKER_RATE_LIMIT_WRITE="0",
            BROKER_TOKEN_TTL="300",
            BROKER_TOKEN_MAX_TTL="1200",
        )
    )
    assert (
        "Rate limit: 7 per 3 s per customer" in document["paths"][READ_PATH]["get"]["description"]
    )
    assert "Rate limit: none" in document["paths"][WRITE_PATH]["post"]["description"]
    schemas = document["components"]["schemas"]
    assert schemas["TokenResponse"]["properties"]["expires_in"]["maximum"] == 1200
    assert (
        "at most 1200 s; 300 s when left out"
        in schemas["TokenRequest"]["properties"]["ttl"]["description"]
    )
