"""Exception hierarchy of APS.

    APSError
    ├── ConfigError            invalid or missing configuration
    ├── CodecError             bytes that are not a valid APS Avro message
    │   ├── FramingError         not Avro single-object encoding
    │   └── UnknownSchemaError      fingerprint of a schema this build does not know
    ├── InfraError             a broker or ClickHouse could not be started or reached
    └── DomainError            input the pure core refuses (invalid numbers, unknown feed ...)
        └── InvalidRulesError      scaling rules with a field outside its bound
"""

from __future__ import annotations


class APSError(Exception):
    """Root of every error APS raises on purpose."""


class ConfigError(APSError):
    """Invalid or missing configuration."""


class CodecError(APSError):
    """Bytes that are not a valid APS Avro message; `reason` is machine-readable."""

    reason = "malformed_avro"


class FramingError(CodecError):
    """Not Avro single-object encoding (wrong marker or too short)."""

    reason = "bad_framing"


class UnknownSchemaError(CodecError):
    """Single-object encoding with a fingerprint this build does not know."""

    reason = "unknown_schema"


class InfraError(APSError):
    """A broker or ClickHouse could not be started or reached."""


class DomainError(APSError):
    """Input the pure core refuses; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InvalidRulesError(DomainError):
    """Scaling rules with a field outside its documented bound (`streams.domain.rules`).

    `field` is the field's path (``limits.deadline_ms``, ``margin_ladder.steps[1].fraction``),
    `value` the refused value and `bound` what the field must be, all in `detail`.
    """

    def __init__(self, field: str, value: object, bound: str) -> None:
        super().__init__("invalid_rules", f"{field} = {value!r}, must be {bound}")
        self.field = field
        self.value = value
        self.bound = bound
