"""Records read back from the archive's `record` JSON equal the records that were encoded."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.archive.readback import record_from_json
from streams.archive.rows import record_json
from streams.codecs.avro import decode, decode_datum, to_datum
from streams.domain import (
    AccountEvent,
    AccountState,
    ConsensusPrice,
    DeadLetter,
    ExecutionReport,
    RiskInput,
    ScalingCommand,
)
from tests.integration.archive import samples as s

CLASSES = {cls.__name__: cls for cls in (AccountEvent, AccountState, ConsensusPrice,
                                          DeadLetter, ExecutionReport, RiskInput,
                                          ScalingCommand)}


def _archived_text(value: bytes) -> str:
    """What the archive's per-row reference writes into `record` for these bytes."""
    _, datum = decode_datum(value)
    return record_json(datum)


@pytest.mark.parametrize("sample", s.samples("rb-"), ids=lambda x: f"{x.table}-{x.topic}")
def test_every_archived_sample_reads_back_to_the_encoded_record(sample: s.Sample) -> None:
    name, _ = decode_datum(sample.value)
    cls = CLASSES.get(name.removeprefix("aps."))
    if cls is None:
        pytest.skip(f"{name} is not read back by the replay")
    assert record_from_json(cls, _archived_text(sample.value)) == decode(sample.value, cls)


@given(price=st.floats(allow_nan=True, allow_infinity=True),
       confidence=st.floats(min_value=0.0, allow_infinity=True))
def test_doubles_read_back_exactly_including_nan_and_infinities(price: float,
                                                                confidence: float) -> None:
    original = dataclasses.replace(s.consensus("ETH", 3), price=price, confidence=confidence)
    back = record_from_json(ConsensusPrice, record_json(to_datum(original)))
    assert (math.isnan(back.price) and math.isnan(price)) or back.price == price
    assert back.confidence == confidence
    assert math.copysign(1.0, back.price) == math.copysign(1.0, price) or math.isnan(price)


def test_a_union_of_several_records_is_read_by_its_type_name() -> None:
    item = RiskInput("execution.reports", 2, 3, s.report("acct-1", 1))
    text = record_json(to_datum(item))
    assert '"_type":"ExecutionReport"' in text
    assert record_from_json(RiskInput, text) == item


def test_bytes_are_read_back_from_hex() -> None:
    letter = DeadLetter("risk", "bad", "detail", "account.events", 1, 2, b"\x00key",
                        b"\xc3\x01\xff", 5)
    assert record_from_json(DeadLetter, record_json(to_datum(letter))) == letter


def test_text_that_is_not_such_a_record_is_refused() -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        record_from_json(RiskInput, '{"origin_topic": "x"}')
    with pytest.raises(ValueError):
        record_from_json(RiskInput, "not json")
