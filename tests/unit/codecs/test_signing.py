"""Command signatures: made by the worker, checked by executors."""

from __future__ import annotations

import dataclasses

from streams.codecs.signing import sign, verify
from tests.unit.factories import command

KEY = "test-key"


def test_signed_command_verifies() -> None:
    assert verify(sign(command(), KEY), KEY)


def test_unsigned_command_is_refused() -> None:
    assert not verify(command(), KEY)


def test_other_key_is_refused() -> None:
    assert not verify(sign(command(), "someone-else"), KEY)


def test_any_altered_field_breaks_the_signature() -> None:
    signed = sign(command(), KEY)
    for change in ({"quantity": 20.0}, {"chain": "solana"}, {"account_id": "acct-2"},
                   {"deadline": signed.deadline + 1}):
        assert not verify(dataclasses.replace(signed, **change), KEY)


def test_signing_is_deterministic() -> None:
    assert sign(command(), KEY).signature == sign(command(), KEY).signature
