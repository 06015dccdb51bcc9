"""Received signatures: a record signed with another key is refused, and the key mismatch is
logged once at CRITICAL and counted every time."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from streams.app.authenticity import SignatureCheck
from streams.app.metrics import KEY_MISMATCH
from streams.codecs.signing import key_id, sign
from tests.unit.factories import command


def _mismatches(stage: str) -> float:
    return KEY_MISMATCH.labels(stage)._value.get()


def test_a_record_signed_with_another_key_is_refused_and_reported_once(
        caplog: pytest.LogCaptureFixture) -> None:
    check = SignatureCheck("executor.test1", "ours", "APS_COMMAND_KEY", "risk worker")
    with caplog.at_level(logging.CRITICAL):
        assert not check.authentic(sign(command("a"), "theirs"))
        assert not check.authentic(sign(command("b"), "theirs"))
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    message = critical[0].getMessage()
    assert key_id("theirs") in message and key_id("ours") in message
    assert "APS_COMMAND_KEY" in message and "different keys" in message
    assert _mismatches("executor.test1") == 2


def test_forgeries_without_a_key_id_and_good_records_raise_no_alarm(
        caplog: pytest.LogCaptureFixture) -> None:
    check = SignatureCheck("executor.test2", "ours", "APS_COMMAND_KEY", "risk worker")
    tampered = dataclasses.replace(sign(command(), "ours"), quantity=99.0)
    with caplog.at_level(logging.CRITICAL):
        assert check.authentic(sign(command(), "ours"))
        assert not check.authentic(command())  # unsigned
        assert not check.authentic(tampered)  # our key id, altered body
    assert not caplog.records and _mismatches("executor.test2") == 0
