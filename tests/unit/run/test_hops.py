"""Per-hop latencies of a run: commands linked to the input that emitted them."""

from __future__ import annotations

from streams.app.latency import input_header, parse_input_header
from streams.run.hops import CommandStamp, HopRecords, hop_latencies, stale_quotes


def _records() -> HopRecords:
    """Two SOL prices and a BTC price; the BTC price (offset 12) settles fills that free
    a SOL account, decided on the SOL quote of offset 10."""
    records = HopRecords()
    records.ticks = {1_000: 100, 2_000: 200, 3_000: 300}
    for offset, asset, event_time, ts in ((10, "SOL", 1_000, 110), (11, "SOL", 2_000, 210),
                                          (12, "BTC", 3_000, 310)):
        records.risk_prices[(0, asset, event_time)] = ts
        records.risk_price_entries[(0, offset)] = (ts, asset, event_time)
    records.commands = {
        "direct": CommandStamp(215, 0, "SOL", 2_000, (0, 11)),
        "freed": CommandStamp(320, 0, "SOL", 1_000, (0, 12)),
    }
    return records


def test_a_command_is_measured_from_the_input_that_emitted_it() -> None:
    hops = {hop.hop: hop for hop in hop_latencies(_records(), partitions=1)}

    # direct: 215 - 210 and 215 - 200; freed: 320 - 310 and 320 - 300 (not 320 - 110)
    assert hops["risk_input_to_command"].max == 10
    assert hops["tick_to_command"].max == 20
    assert hops["tick_to_command"].count == 2


def test_without_its_header_a_command_falls_back_to_its_quote() -> None:
    records = _records()
    freed = records.commands["freed"]
    records.commands["freed"] = CommandStamp(freed.ts, 0, freed.asset, freed.price_event_time)

    hops = {hop.hop: hop for hop in hop_latencies(records, partitions=1)}

    assert hops["risk_input_to_command"].max == 320 - 110
    assert hops["tick_to_command"].max == 320 - 100


def test_commands_freed_by_a_later_price_are_counted_from_their_quote_apart() -> None:
    stale = stale_quotes(_records())

    assert stale.count == 1
    assert stale.max == 320 - 110


def test_input_header_round_trips_and_refuses_garbage() -> None:
    assert parse_input_header([("x", b"1"), input_header(3, 4567)]) == (3, 4567)
    assert parse_input_header([("aps-input", b"3:x")]) is None
    assert parse_input_header(None) is None
