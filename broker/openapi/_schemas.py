"""The components of the broker's OpenAPI description: answers, the problem, headers.

Bubblehouse's answers as the broker forwards them: open objects whose unknown members pass
through. Where the sandbox invents a shape that Bubblehouse does not document
(``share_action``'s union, a ``summary`` object), the description says so, and the schema stays
open. The request bodies are not here: :mod:`broker.rules.inputs` declares them, for both jobs.
"""

from __future__ import annotations

from typing import Any

from broker.errors import INVALID_TOKEN_REASONS, PLATFORM_TOKEN_REASONS, SLUG
from broker.web.requestlog import REQUEST_ID

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _referral_schema() -> dict[str, Any]:
    nullable_string = {"type": ["string", "null"]}
    return {
        "type": "object",
        "description": "One referral (either Bubblehouse revision); unknown fields pass through.",
        "properties": {
            "referral_bhid": {"type": "string"},
            "acceptance_bhid": nullable_string,
            "channel": {"type": "string", "description": "An open list: expect new values."},
            "destination": {
                **nullable_string,
                "description": (
                    "Anonymized by Bubblehouse by default, in a format it does not document "
                    "(the sandbox's `f***@example.com` is its own)."
                ),
            },
            "status": {"type": "string", "description": "An open list: expect new values."},
            "link": nullable_string,
            "sent_at": {"type": "string"},
            "updated_at": nullable_string,
            "accepted_at": nullable_string,
            "reward_pts": {"type": ["integer", "null"]},
            "reward_pts_value": nullable_string,
            "reward_amount": nullable_string,
            "coupon_code": nullable_string,
        },
        "additionalProperties": True,
    }


def body_schemas() -> dict[str, Any]:
    """The answers' schemas (the request bodies are :mod:`broker.rules.inputs`' declarations)."""
    return {
        "Referral2": _referral_schema(),
        "TokenResponse": {
            "type": "object",
            "required": ["token", "token_type", "expires_in", "expires_at"],
            "properties": {
                "token": {"type": "string", "description": "A customer JWT (HS256)."},
                "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer", "minimum": 1},
                "expires_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "RFC 3339, UTC.",
                },
            },
            "additionalProperties": False,
        },
        "CustomerReferrals2Output": {
            "type": "object",
            "description": (
                "Bubblehouse's answer, unchanged: `referrals` plus whatever else Bubblehouse "
                "sends (its docs name a member with referral counts and totals, without a "
                "legible name). The sandbox's `summary` object, its newest-first order, its "
                "masking format (`f***@example.com`) and its 16-hex-digit ids are sandbox "
                "inventions, not Bubblehouse's contract."
            ),
            "required": ["referrals"],
            "properties": {"referrals": {"type": "array", "items": _ref("Referral2")}},
            "additionalProperties": True,
        },
        "Refer2Output": {
            "type": "object",
            "required": ["referral"],
            "properties": {
                "referral": _ref("Referral2"),
                "message": {"type": ["string", "null"]},
                "share_action": {
                    "description": (
                        "Opaque (ReferralShareAction1, whose shape Bubblehouse does not "
                        "publish): what to do next to finish sharing, if anything; may be "
                        "absent. The sandbox's union of `type` none, open_url, copy_link and "
                        "show_qr_code is a sandbox invention: expect any other object."
                    )
                },
            },
            "additionalProperties": True,
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Ready": {
            "type": "object",
            "required": ["status", "redis"],
            "properties": {
                "status": {"type": "string"},
                "redis": {"type": "string", "enum": ["up", "down", "memory"]},
            },
        },
    }


def problem_schema() -> dict[str, Any]:
    def when(error_id: str, member: str, values: tuple[str, ...] | None = None) -> dict[str, Any]:
        then: dict[str, Any] = {"required": [member]}
        if values is not None:
            then["properties"] = {member: {"enum": list(values)}}
        return {"if": {"properties": {"id": {"const": error_id}}}, "then": then}

    reasons = list(dict.fromkeys(INVALID_TOKEN_REASONS + PLATFORM_TOKEN_REASONS))

    return {
        "type": "object",
        "description": "An RFC 9457 problem document that is also a Bubblehouse-style error.",
        "required": ["type", "title", "status", "id", "message", "retryable", "request_id"],
        "properties": {
            "type": {"type": "string", "description": "A stable URI for the id."},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "id": {"type": "string", "pattern": SLUG.pattern},
            "message": {"type": "string", "description": "Safe to show a shopper or developer."},
            "retryable": {"type": "boolean"},
            "request_id": {"type": "string", "description": "Same as the X-Request-ID header."},
            "retry_after": {"type": "integer", "minimum": 1, "description": "Seconds."},
            "reason": {
                "type": "string",
                "enum": reasons,
                "description": "Why a token was refused (invalid_token, invalid_platform_token).",
            },
            "field": {"type": "string", "description": "The invalid input field."},
            "upstream_status": {"type": "integer"},
            "upstream_message": {
                "type": "string",
                "maxLength": 500,
                "description": (
                    "Bubblehouse's own words from a 4xx JSON refusal (for Refer2, text the shop "
                    "configured for shoppers), control characters removed."
                ),
            },
        },
        "additionalProperties": False,
        "allOf": [
            when("invalid_token", "reason", INVALID_TOKEN_REASONS),
            when("invalid_platform_token", "reason", PLATFORM_TOKEN_REASONS),
            when("invalid_input", "field"),
            when("rate_limit_exceeded", "retry_after"),
        ],
    }


def headers() -> dict[str, Any]:
    def header(description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
        return {"description": description, "required": required, "schema": schema}

    text = {"type": "string"}
    return {
        "X-Request-ID": header(
            "The request id (the caller's, when valid, else a new one); also in error bodies.",
            {"type": "string", "pattern": REQUEST_ID.pattern},
            required=True,
        ),
        "Cache-Status": header(
            "RFC 9211, e.g. `broker; hit; ttl=42` or `broker; fwd=miss; stored`.",
            {"type": "string", "pattern": "^broker; "},
            required=True,
        ),
        "RateLimit": header("The remaining quota (IETF httpapi ratelimit-headers).", text),
        "RateLimit-Policy": header("The quota policy (IETF httpapi ratelimit-headers).", text),
        "Retry-After": header(
            "Seconds to wait before trying again.", {"type": "integer", "minimum": 1}, True
        ),
        "WWW-Authenticate": header("The bearer challenge.", text, required=True),
        "Allow": header("The methods this path answers.", text),
        "Cache-Control": header("Never stored by shared caches.", text),
        "Vary": header("Authorization, Origin.", text),
        "Idempotent-Replayed": header(
            "true when this is the stored answer to an earlier request with the same key.",
            {"type": "string", "enum": ["true"]},
        ),
        "Access-Control-Allow-Origin": header("The allowed origin.", text),
        "Access-Control-Allow-Methods": header("The allowed methods.", text),
        "Access-Control-Allow-Headers": header("The allowed request headers.", text),
    }
