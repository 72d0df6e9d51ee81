"""The OpenAPI description against a live broker: served as JSON, and every generated request
answered as the document says (schemathesis)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker.config.settings import Settings
from broker.rules.tokens import TokenMinter
from broker.web.app import create_app
from broker_dev.sandbox import SandboxConfig, create_sandbox_app
from tests.servers import serve_app
from tests.stack import bigcommerce_env
from tests.support import ISSUER_KEY, SECRET_A, SECRET_B, SHOP, make_settings
from tests.unit.test_openapi import document_for

READ_PATH = "/api/{version}/{shop}/CustomerReferrals2"
WRITE_PATH = "/api/{version}/{shop}/Refer2"


def test_served_document_is_the_document(live: LiveBroker) -> None:
    """GET /openapi.json serves this module's document as JSON."""
    response = httpx2.get(live.url + "/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == json.loads(json.dumps(document_for(live.settings)))


@pytest.mark.slow
def test_live_broker_conforms_to_its_document(live: LiveBroker) -> None:
    """Generated requests, valid and invalid, never get a 500 or an undocumented answer."""
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    failures: list[str] = []
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        merchant = operation.path in ("/tokens", "/invalidations")
        credential = ISSUER_KEY if merchant else live.customer_token
        headers = {"Authorization": f"Bearer {credential}"}
        modes = [GenerationMode.POSITIVE]
        # A preflight's headers are any strings: only its path parameters can be bent.
        headers_bent = operation.headers and operation.method.upper() != "OPTIONS"
        if operation.path_parameters or operation.query or headers_bent or operation.body:
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            label = f"{operation.method.upper()} {operation.path} ({mode.value})"
            try:
                seen[label] = fuzz(operation, mode, live.url, headers)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis groups its failures
                failures.append(f"{label}:\n{exc}")
    assert not failures, "\n\n".join(failures)
    # The run reached the interesting answers, not only validation errors.
    assert 200 in seen[f"POST {WRITE_PATH} (positive)"]
    assert 200 in seen[f"GET {READ_PATH} (positive)"]
    assert 204 in seen[f"OPTIONS {READ_PATH} (positive)"]
    assert 204 in seen["POST /invalidations (positive)"]
    assert 401 in seen["POST /bigcommerce/token (positive)"]


class LiveBroker:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.customer_token = TokenMinter(settings).customer_token("c-42", "c42@example.com").token


@pytest.fixture(scope="module")
def live() -> Iterator[LiveBroker]:
    """The broker served on loopback, in front of the sandbox served the same way."""
    keys = {"key-a": base64.b64decode(SECRET_A), "key-b": base64.b64decode(SECRET_B)}
    with serve_app(create_sandbox_app(SandboxConfig(SHOP, keys))) as sandbox:
        # Low limits, so that the 429 answers are exercised too.
        settings = make_settings(
            BROKER_UPSTREAM_URL=sandbox.url,
            BROKER_RATE_LIMIT_READ="25/10s",
            BROKER_RATE_LIMIT_WRITE="10/60s",
            **bigcommerce_env(),
        )
        with serve_app(create_app(settings)) as broker:
            yield LiveBroker(broker.url, settings)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def fuzz(operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]) -> set[int]:
    """Run one operation's generated cases against the broker; return the statuses seen.

    Fifteen cases an operation and mode: each operation has a handful of inputs, and fifteen
    reach its success, its refusals and (with the low limits) its 429.
    """
    statuses: set[int] = set()

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=15,
        deadline=timedelta(seconds=5),
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
        statuses.add(response.status_code)

    run()
    return statuses


def schema_valid_input_is_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """A body the document calls valid is never refused as invalid input or JSON."""
    if response.status_code == 400:
        body = response.json()
        raise AssertionError(f"schema-valid input refused: {body.get('field')} {case.body!r}")
    return None


@pytest.mark.slow
@pytest.mark.parametrize("path", [WRITE_PATH, "/tokens"])
def test_schema_valid_bodies_are_accepted(live: LiveBroker, path: str) -> None:
    """Every body the document allows (email destinations and token emails included) passes
    the broker's own validation: the document promises nothing the broker refuses."""
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    operation = schema[path]["POST"]
    credential = ISSUER_KEY if path == "/tokens" else live.customer_token
    headers = {"Authorization": f"Bearer {credential}"}

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @hypothesis_settings(
        max_examples=150,
        deadline=timedelta(seconds=5),
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    def run(case: Any) -> None:
        if isinstance(case.body, dict) and path == WRITE_PATH:
            case.body.pop("customer", None)  # the token's identity decides; that is not format
        case.call_and_validate(
            base_url=live.url, headers=headers, checks=[schema_valid_input_is_accepted]
        )

    run()
