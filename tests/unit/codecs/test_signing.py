"""Signatures of commands (made by the worker, checked by executors) and of execution reports
(made by executors, checked by the risk stage): one HMAC routine for both."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.codecs import decode, encode
from streams.codecs.signing import (
    key_id,
    sign,
    sign_encoded,
    signature_key_id,
    verify,
    verify_encoded,
)
from streams.domain import CommandAction, ExecutionReport, ExecutionStatus, ScalingCommand
from streams.errors import CodecError
from tests.unit.factories import command

KEY = "test-key"


def report() -> ExecutionReport:
    """An unsigned FILLED report."""
    return ExecutionReport("rep-1", "cmd-1", "acct-1", "arbitrum", ExecutionStatus.FILLED, "",
                           CommandAction.TRADE, None, -2.0, 2999.0, 1.2, 0.0, 1_250, "sim")


@pytest.mark.parametrize("record", [command(), report()], ids=["command", "report"])
def test_signed_record_verifies(record: object) -> None:
    assert verify(sign(record, KEY), KEY)  # type: ignore[type-var, arg-type]


@pytest.mark.parametrize("record", [command(), report()], ids=["command", "report"])
def test_unsigned_record_is_refused(record: object) -> None:
    assert not verify(record, KEY)  # type: ignore[arg-type]


def test_other_key_is_refused() -> None:
    assert not verify(sign(command(), "someone-else"), KEY)
    assert not verify(sign(report(), "someone-else"), KEY)


def test_any_altered_command_field_breaks_the_signature() -> None:
    signed = sign(command(), KEY)
    for change in ({"quantity": 20.0}, {"chain": "solana"}, {"account_id": "acct-2"},
                   {"deadline": signed.deadline + 1}):
        assert not verify(dataclasses.replace(signed, **change), KEY)


def test_any_altered_report_field_breaks_the_signature() -> None:
    signed = sign(report(), KEY)
    for change in ({"filled_quantity": -20.0}, {"status": ExecutionStatus.REJECTED},
                   {"top_up_amount": 1e6}, {"account_id": "acct-2"},
                   {"executed_at": signed.executed_at + 1}):
        assert not verify(dataclasses.replace(signed, **change), KEY)


def test_signing_is_deterministic() -> None:
    assert sign(command(), KEY).signature == sign(command(), KEY).signature


def test_the_signature_carries_the_signing_key_id() -> None:
    signed = sign(command(), KEY)
    assert key_id(KEY) == signature_key_id(signed) and len(key_id(KEY)) == 8
    assert signed.signature.startswith(f"{key_id(KEY)}:")
    assert key_id("someone-else") != key_id(KEY)
    assert signature_key_id(sign(command(), "someone-else")) == key_id("someone-else")


def test_the_key_id_is_covered_by_the_mac() -> None:
    signed = sign(command(), KEY)
    mac = signed.signature.split(":", 1)[1]
    assert not verify(dataclasses.replace(signed, signature=f"0badc0de:{mac}"), KEY)


def test_malformed_signatures_claim_no_key_id() -> None:
    bare = sign(command(), KEY).signature.split(":", 1)[1]  # the old format: a bare MAC
    for signature in ("", bare, "abc:def", f"{key_id(KEY)}:"):
        forged = dataclasses.replace(command(), signature=signature)
        assert signature_key_id(forged) is None and not verify(forged, KEY)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["command", "report"]), st.text(max_size=40), st.text(min_size=1,
                                                                              max_size=300),
       st.floats(allow_nan=False, allow_infinity=False))
def test_signing_the_encoding_equals_encoding_the_signed_record(kind: str, text: str,
                                                                 key: str,
                                                                 number: float) -> None:
    record: ScalingCommand | ExecutionReport = (
        dataclasses.replace(command(), account_id=text or "a", quantity=number)
        if kind == "command" else dataclasses.replace(report(), reason=text, fee=number))
    wire = sign_encoded(record, key)

    assert wire == encode(sign(record, key))
    decoded = decode(wire, type(record))
    assert verify_encoded(decoded, wire, key)
    assert not verify_encoded(decoded, wire, key + "x")


@pytest.mark.parametrize("record", [command(), report()], ids=["command", "report"])
def test_any_changed_byte_of_the_encoding_fails_verification(record: object) -> None:
    wire = sign_encoded(record, KEY)  # type: ignore[type-var, arg-type]
    decoded = decode(wire, type(record))  # type: ignore[arg-type]
    for index in range(len(wire)):
        altered = bytearray(wire)
        altered[index] ^= 0x01
        try:
            changed = decode(bytes(altered), type(record))  # type: ignore[arg-type]
        except CodecError:
            continue  # refused before any signature check
        assert not verify_encoded(changed, bytes(altered), KEY), f"byte {index}"
    assert not verify_encoded(decoded, wire + b"\x00", KEY)
    assert not verify_encoded(dataclasses.replace(decoded, signature=""), wire, KEY)
