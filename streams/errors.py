"""Exception hierarchy of APS.

    APSError
    ├── ConfigError            invalid or missing configuration
    ├── CodecError             bytes that are not a valid APS Avro message
    │   ├── FramingError         not Avro single-object encoding
    │   └── UnknownSchemaError      fingerprint of a schema this build does not know
    ├── InfraError             a broker or ClickHouse could not be started or reached
    └── DomainError            input the pure core refuses (invalid numbers, unknown feed ...)
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
