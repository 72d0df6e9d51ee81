"""Request bodies declared once: each field's name, type, rules and message, checked and described.

A :class:`Body` is a small declarative description of a JSON object the broker accepts (the
fields of :mod:`broker.rules.inputs`). The same declaration does two jobs:

- :meth:`Body.check` validates decoded input and raises
  :class:`~broker.errors.InvalidInput` naming the first field at fault, in declaration order,
  with that field's own message;
- :meth:`Body.schema` writes it as JSON Schema for the OpenAPI document
(:mod:`broker.openapi.document`).

Text rules shared by every field: patterns are applied with ``fullmatch`` (``$`` would let a
trailing newline through), no accepted string may hold a control character (:func:`has_control`),
and email addresses are judged by ``email-validator`` (RFC 6531 internationalised addresses
included, no DNS).

Where a rule cannot be written as a JSON Schema pattern (an address the library accepts, a
printable Unicode string), the field's ``documented`` pattern is what the document shows: a
common form the check always accepts, never one it refuses, with the full rule in words. So a
client that sends what the document allows is never refused for its form (the live conformance
test generates such bodies), and ``format: email`` (whose generators and validators accept
special-use domains such as ``.test``, which the library refuses) is never claimed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Any

from email_validator import EmailNotValidError, validate_email

from broker.errors import InvalidInput

MAX_EMAIL = 254
MAX_LOCAL_PART = 64
EMAIL_FORMAT = "idn-email"
# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators...
CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
# ...which are exactly these, as the JSON Schema pattern of a string with no rule of its own.
NO_CONTROL = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]*"
# An address of a common form that email-validator always accepts: a dot-atom local part of at
# most 49 characters, one to three host labels (no "--", so no A-label look-alikes) and a
# two- or three-letter top-level label, which no special-use name (.test, .local, .invalid,
# .localhost, .onion, .arpa) is.
EMAIL_DOCUMENTED = (
    r"[A-Za-z0-9_+-]{1,32}(\.[A-Za-z0-9_+-]{1,16})?"
    r"@([A-Za-z0-9]{1,20}(-[A-Za-z0-9]{1,20})?\.){1,3}[A-Za-z]{2,3}"
)
EMAIL_RULE = (
    " Judged by the email-validator library, without DNS: internationalised addresses (RFC 6531)"
    " are accepted; special-use domains (.test, .local, .localhost, .invalid, .onion, .arpa) are"
    " not; at most 254 characters. The pattern shows a common form that is always accepted."
)


def has_control(value: str) -> bool:
    """Whether ``value`` holds a control character (a newline, a tab, NUL, DEL, U+2028...)."""
    return any(unicodedata.category(char) in CONTROL_CATEGORIES for char in value)


def is_email(value: str) -> bool:
    """A syntactically valid address of at most 254 characters (no DNS lookup)."""
    if len(value) > MAX_EMAIL or has_control(value):
        return False
    if len(value.rpartition("@")[0]) > MAX_LOCAL_PART:
        return False
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


class Kind(Enum):
    """The JSON type of a field."""

    STRING = "string"
    BOOLEAN = "boolean"
    INTEGER = "integer"
    OBJECT = "object"


@dataclass(frozen=True)
class Field:
    """One member of a request body.

    ``message`` is the ``invalid_input`` message when the value is missing (and required) or of
    the wrong type; ``rule_message`` when a string or number breaks a rule (length, pattern,
    format, control characters, minimum); both may name the field as ``{field}``. ``null`` counts
    as absent. A required string may not be empty. ``when`` makes a field conditional: required
    (and checked) when the named sibling has the given value, absent or null otherwise
    (``absent_message``); a body has at most one conditional field.
    """

    name: str
    kind: Kind
    message: str
    description: str = ""
    required: bool = False
    rule_message: str | None = None
    max_length: int | None = None
    pattern: re.Pattern[str] | None = None
    format: str | None = None
    printable: bool = False
    minimum: int | None = None
    body: Body | None = None
    when: tuple[str, str] | None = None
    absent_message: str = ""
    documented: str | None = None  # the pattern the document shows, when the rule has none

    @property
    def shown_pattern(self) -> str:
        """The pattern of this string field in the document (see the module docstring)."""
        if self.documented is not None:
            return self.documented
        if self.format == EMAIL_FORMAT:
            return EMAIL_DOCUMENTED
        return NO_CONTROL if self.pattern is None else self.pattern.pattern

    def refuse(self, field: str, message: str | None = None) -> InvalidInput:
        return InvalidInput(field, (message or self.message).format(field=field))

    def check(self, value: object, field: str | None = None) -> Any:
        """The value, checked (``field`` is the name in errors, a prefix included)."""
        field = field or self.name
        if value is None:
            if self.required:
                raise self.refuse(field)
            return None
        if self.kind is Kind.STRING:
            return self._string(value, field)
        if self.kind is Kind.BOOLEAN:
            if not isinstance(value, bool):
                raise self.refuse(field)
            return value
        if self.kind is Kind.INTEGER:
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # JSON Schema's integer: 60.0 is one (a float is finite)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.refuse(field)
            if self.minimum is not None and value < self.minimum:
                raise self.refuse(field, self.rule_message)
            return value
        if not isinstance(value, dict):
            raise self.refuse(field)
        assert self.body is not None
        return self.body.check(value, prefix=f"{field}.")

    def _string(self, value: object, field: str) -> str:
        if not isinstance(value, str) or (self.required and not value):
            raise self.refuse(field)
        broken = (
            has_control(value)
            or (self.max_length is not None and len(value) > self.max_length)
            or (self.printable and not value.isprintable())
            or (self.pattern is not None and not self.pattern.fullmatch(value))
            or (self.format == EMAIL_FORMAT and not is_email(value))
        )
        if broken:
            raise self.refuse(field, self.rule_message)
        return value

    def schema(self) -> dict[str, Any]:
        """This field as JSON Schema (anchored patterns; null allowed unless required)."""
        if self.body is not None:
            ref = {"$ref": f"#/components/schemas/{self.body.name}"}
            return ref if self.required else {"anyOf": [ref, {"type": "null"}]}
        strict = self.required and self.when is None
        schema: dict[str, Any] = {"type": self.kind.value if strict else [self.kind.value, "null"]}
        if self.kind is Kind.STRING and strict:
            schema["minLength"] = 1
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.kind is Kind.STRING:
            schema["pattern"] = f"^{self.shown_pattern}$"
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.description:
            rule = EMAIL_RULE if self.format == EMAIL_FORMAT else ""
            schema["description"] = self.description + rule
        return schema


@dataclass(frozen=True)
class Body:
    """A JSON object the broker accepts: its fields, in the order they are checked."""

    name: str
    fields: tuple[Field, ...]
    description: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def check(self, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        """The checked values of the fields present; unknown fields are refused first."""
        for name in data:
            if name not in self.names:
                raise InvalidInput(f"{prefix}{name}", f"Unknown field '{prefix}{name}'.")
        values: dict[str, Any] = {}
        for spec in self.fields:
            value = data.get(spec.name)
            if spec.when is not None:
                sibling, expected = spec.when
                if values.get(sibling) != expected:
                    if value is not None:
                        raise spec.refuse(prefix + spec.name, spec.absent_message)
                    continue
            checked = spec.check(value, prefix + spec.name)
            if checked is not None:
                values[spec.name] = checked
        return values

    def schema(self) -> dict[str, Any]:
        """This body as a JSON Schema object, closed to unknown members."""
        schema: dict[str, Any] = {"type": "object"}
        if self.description:
            schema["description"] = self.description
        required = [f.name for f in self.fields if f.required and f.when is None]
        if required:
            schema["required"] = required
        schema["properties"] = {f.name: f.schema() for f in self.fields}
        schema["additionalProperties"] = False
        for spec in self.fields:
            if spec.when is not None:
                sibling, expected = spec.when
                then: dict[str, Any] = {"type": spec.kind.value}
                if spec.kind is Kind.STRING:
                    then["pattern"] = f"^{spec.shown_pattern}$"
                schema["if"] = {
                    "properties": {sibling: {"const": expected}},
                    "required": [sibling],
                }
                schema["then"] = {"required": [spec.name], "properties": {spec.name: then}}
                schema["else"] = {"properties": {spec.name: {"type": "null"}}}
        return schema
