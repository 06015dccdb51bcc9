"""Avro single-object encoding: spec conformance and round trips of every record."""

from __future__ import annotations

import io
import json

import avro.io
import avro.schema
import pytest
from fastavro.schema import parse_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.codecs import avro as codec
from streams.codecs import decode, decode_datum, encode, encode_risk_input
from streams.domain import (
    AccountEvent,
    AccountState,
    ActionRefused,
    ChainlinkRound,
    CollateralChanged,
    CommandAction,
    ConsensusPrice,
    DeadLetter,
    ExcludedSource,
    ExecutionReport,
    ExecutionStatus,
    OracleObservation,
    OracleSource,
    PriceStatus,
    PythPriceUpdate,
    RiskInput,
    RulesChanged,
    ScalingRules,
)
from streams.errors import CodecError, FramingError, UnknownSchemaError
from tests.unit.factories import command, perp, perp_position, rules

# The Avro project's single-object-encoding sample (share/test/data/messageV1 in
# apache/avro): TestMessage{id: 42, name: "Bill", tags: ["dog_lover", "cat_hater"]},
# written by the Java implementation.
TEST_MESSAGE_SCHEMA = {
    "type": "record", "namespace": "org.apache.avro", "name": "TestMessage",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}
TEST_MESSAGE_BYTES = bytes.fromhex(
    "c301" "a92de1f8a242f53d"  # marker, CRC-64-AVRO fingerprint (little-endian)
    "54" "08" "42696c6c"  # id = 42 (zig-zag 0x54), name = "Bill"
    "04" "12" "646f675f6c6f766572" "12" "6361745f6861746572" "00"  # tags, end of array
)


def test_single_object_encoding_matches_the_java_reference_bytes() -> None:
    parsed = parse_schema(TEST_MESSAGE_SCHEMA)
    datum = {"id": 42, "name": "Bill", "tags": ["dog_lover", "cat_hater"]}
    assert codec.single_object_encode(parsed, datum) == TEST_MESSAGE_BYTES


def test_our_framing_has_marker_and_fingerprint_of_the_writer_schema() -> None:
    payload = encode(perp_position_event())
    entry = codec.registry().get("aps.AccountEvent")
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == entry.fingerprint


def test_reference_avro_implementation_reads_our_bytes() -> None:
    event = perp_position_event()
    payload = encode(event)
    entry = codec.registry().get("aps.AccountEvent")
    schema = avro.schema.parse(json.dumps(entry.parsed))
    datum = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(payload[10:])))
    assert datum["account_id"] == event.account_id
    assert datum["body"]["position"]["quantity"] == event.body.position.quantity


def perp_position_event() -> AccountEvent:
    from streams.domain import PositionChanged

    return AccountEvent("ev-1", "acct-1", 1_700_000_000_000,
                        PositionChanged(perp_position("ETH", 2.5)))


RECORDS = [
    perp_position_event(),
    AccountEvent("ev-2", "acct-1", 5, CollateralChanged("arbitrum", 1000.0, 500.0)),
    AccountEvent("ev-3", "acct-1", 6, RulesChanged(rules())),
    OracleObservation("ethereum", OracleSource.CHAINLINK, "ETH/USD", 1_000,
                      ChainlinkRound("110680464442257320802", "229750276106", 1706558123,
                                     1706558123, "110680464442257320802")),
    OracleObservation("solana", OracleSource.PYTH, "0xe62df6", 2_000,
                      PythPriceUpdate(6_140_993_501_000, 3_423_000_000, -8, 1706558123,
                                      6_141_000_000_000, 3_000_000_000)),
    ConsensusPrice("ETH", 10, 3000.5, 1.5, PriceStatus.DEGRADED, 12.5, ["a", "b"],
                   [ExcludedSource("c", "outlier")], ["arbitrum"], 7),
    command(),
    ExecutionReport("rep-1", "cmd-1", "acct-1", "arbitrum", ExecutionStatus.FILLED, "",
                    CommandAction.TRADE, perp(), -2.0, 3001.5, 0.9, 0.0, 11, "sim-arbitrum"),
    AccountState("acct-1", version=3, positions=[perp_position("BTC", -1.0)], rules=rules(),
                 last_fired={"delta:BTC": 5}, origin_offsets={"account.events:0": 9}),
    DeadLetter("consensus", "unknown_feed", "no feed x", "oracle.ticks", 0, 12, b"k", b"\x00",
               -1),
    ActionRefused("acct-1", "margin_ladder[1]+delta_band:ETH", "max_notional",
                  "250000.00 > 100000.0, 3 command(s) of the maximum",
                  {"notional": 250_000.0, "max_command_notional": 100_000.0, "commands": 3.0},
                  1_706_558_123_000, 2, 41),
    ActionRefused("acct-2", "delta_band:BTC", "degraded", "", {}, 7),
]


def test_an_action_refused_without_input_coordinates_reads_them_as_unknown() -> None:
    refused = decode(encode(ActionRefused("a", "gamma_bound:SOL", "cooldown", "", {}, 9)),
                     ActionRefused)
    assert (refused.partition, refused.input_offset) == (-1, -1)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip(record: object) -> None:
    assert decode(encode(record), type(record)) == record


def test_risk_input_union_keeps_the_branch() -> None:
    for body in (RECORDS[0], RECORDS[5]):
        item = RiskInput("t", 1, 2, body)
        assert decode(encode(item), RiskInput) == item


BODIES = [r for r in RECORDS if isinstance(r, (AccountEvent, ConsensusPrice, ExecutionReport))]


@settings(max_examples=200, deadline=None)
@given(body=st.sampled_from(BODIES), topic=st.text(max_size=40),
       partition=st.integers(-(2**31), 2**31 - 1), offset=st.integers(-(2**63), 2**63 - 1))
def test_risk_input_from_encoded_body_equals_encoding_the_record(
        body: object, topic: str, partition: int, offset: int) -> None:
    spliced = encode_risk_input(topic, partition, offset, encode(body))
    assert spliced == encode(RiskInput(topic, partition, offset, body))  # type: ignore[arg-type]


def test_risk_input_from_a_body_that_is_not_framed_is_refused() -> None:
    with pytest.raises(FramingError):
        encode_risk_input("t", 0, 0, b"plain")
    with pytest.raises(CodecError, match="cannot be the body"):
        encode_risk_input("t", 0, 0, encode(command()))


def test_not_single_object_encoded_is_bad_framing() -> None:
    with pytest.raises(FramingError):
        decode(b"{\"json\": true}", AccountEvent)


def test_unknown_fingerprint_is_refused() -> None:
    with pytest.raises(UnknownSchemaError):
        decode(b"\xc3\x01" + b"\x00" * 8 + b"\x02", AccountEvent)


def test_truncated_body_is_a_codec_error() -> None:
    payload = encode(RECORDS[0])
    with pytest.raises(CodecError):
        decode(payload[:-5], AccountEvent)


def test_wrong_record_type_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        decode(encode(RECORDS[5]), AccountEvent)


def test_decode_datum_names_the_writer_schema() -> None:
    name, datum = decode_datum(encode(RECORDS[5]))
    assert name == "aps.ConsensusPrice"
    assert datum["status"] == "DEGRADED"


def test_every_schema_file_is_loadable_and_unique() -> None:
    registry = codec.registry()
    fingerprints = {registry.get(n).fingerprint for n in registry.names()}
    assert len(fingerprints) == len(registry.names())
    assert {"aps.ScalingCommand", "aps.RiskInput", "aps.DeadLetter"} <= set(registry.names())


def test_default_rules_round_trip() -> None:
    state = AccountState("a", rules=ScalingRules())
    assert decode(encode(state), AccountState) == state


def test_a_null_or_non_bytes_payload_is_bad_framing_not_a_crash() -> None:
    for payload in (None, "text", 42):
        with pytest.raises(FramingError):
            decode(payload, AccountEvent)  # type: ignore[arg-type]


def test_bytes_after_a_valid_record_are_refused() -> None:
    payload = encode(RECORDS[0])
    with pytest.raises(CodecError, match="after the end of the record"):
        decode(payload + b"\x00garbage", AccountEvent)
    with pytest.raises(CodecError):
        decode(payload[:-2], AccountEvent)
