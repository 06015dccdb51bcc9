"""JSON lines in the oracles' own shapes, and the `aps oracle consensus` dry-run tool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.domain import ChainlinkRound, OracleSource, PythPriceUpdate
from streams.errors import DomainError
from streams.oracle import reasons
from streams.oracle.consensus import ConsensusEngine
from streams.oracle.feeds import load_feeds
from streams.oracle.jsonl import consensus_records, observation_to_json, parse_line
from streams.oracle.synthetic import observations_from_paths, random_walk_paths
from streams.paths import INFRA_DIR
from tests.unit.oracle.helpers import CL_ETH, PYTH_ETH, T0

FEEDS = INFRA_DIR / "feeds.toml"

# Real ETH/USD rounds on Ethereum mainnet around 2023-08-15 (getRoundData, proxy 0x5f4e...;
# /work/shared/data/oracle/chainlink/ETH-USD_mainnet_0x5f4e.csv rows 6625 and 6624), and the
# phase-6 round 0 (all zeros, last row of the same file).
ROUND_314177 = {"roundId": 110680464442257314177, "answer": 183956000000,
                "startedAt": 1692107723, "updatedAt": 1692107723,
                "answeredInRound": 110680464442257314177}
ROUND_314178 = {"round_id": "110680464442257314178", "answer": "184202000000",
                "started_at": "1692111359", "updated_at": "1692111359",
                "answered_in_round": "110680464442257314178"}
ROUND_ZERO = {"roundId": "110680464442257309696", "answer": "0", "startedAt": 0,
              "updatedAt": 0, "answeredInRound": "110680464442257309696"}
# Real Pyth ETH/USD update from Hermes' legacy endpoint on 2023-08-15
# (/work/shared/data/oracle/pyth/hermes_api_latest_price_feeds_ethusd.json).
HERMES_ETH = {"id": PYTH_ETH,
              "price": {"price": "184136023127", "conf": "177166324", "expo": -8,
                        "publish_time": 1692110601},
              "ema_price": {"price": "184100641000", "conf": "178704085", "expo": -8,
                            "publish_time": 1692110601}}


def chainlink_line(fields: dict[str, object], received_at: int, feed_id: str = CL_ETH) -> str:
    return json.dumps({"source": "chainlink", "chain": "ethereum", "feed_id": feed_id,
                       "received_at": received_at, **fields})


def pyth_line(received_at: int) -> str:
    return json.dumps({"source": "pyth", "chain": "solana", "received_at": received_at,
                       **HERMES_ETH})


def test_parse_chainlink_in_both_spellings_and_number_styles() -> None:
    camel = parse_line(chainlink_line(ROUND_314177, 1692107724_500))
    snake = parse_line(chainlink_line(ROUND_314178, 1692111360_000))
    assert camel.source is OracleSource.CHAINLINK and camel.received_at == 1692107724_500
    assert camel.body == ChainlinkRound("110680464442257314177", "183956000000", 1692107723,
                                        1692107723, "110680464442257314177")
    assert isinstance(snake.body, ChainlinkRound) and snake.body.updated_at == 1692111359


def test_parse_pyth_hermes_entry_and_flat_shape() -> None:
    nested = parse_line(pyth_line(1692110601_400))
    assert nested.feed_id == PYTH_ETH
    assert nested.body == PythPriceUpdate(184136023127, 177166324, -8, 1692110601,
                                          184100641000, 178704085)
    flat = parse_line(json.dumps({"source": "PYTH", "chain": "solana", "feed_id": PYTH_ETH,
                                  "received_at": 5, "price": 12, "conf": "1", "expo": -8,
                                  "publish_time": 4}))
    assert flat.body == PythPriceUpdate(12, 1, -8, 4, 12, 1)


@pytest.mark.parametrize("line, reason", [
    ("{not json", reasons.MALFORMED_JSON),
    ("[1, 2]", reasons.MALFORMED_JSON),
    ('{"source": "redstone", "chain": "x", "feed_id": "y", "received_at": 1}',
     reasons.UNKNOWN_SOURCE),
    ('{"source": "pyth", "chain": "solana", "received_at": 1, "price": 1}',
     reasons.MISSING_FIELD),
    (chainlink_line({**ROUND_314177, "roundId": 1.1068046444225731e20}, 1),
     reasons.INVALID_ROUND_ID),
    (chainlink_line({**ROUND_314177, "answer": float("nan")}, 1), reasons.INVALID_PRICE),
    (chainlink_line({**ROUND_314177, "updatedAt": "soon"}, 1), reasons.INVALID_TIMESTAMP),
    (pyth_line(1).replace('"184136023127"', '"1.5"'), reasons.INVALID_PRICE),
])
def test_unusable_lines_are_refused_with_a_reason(line: str, reason: str) -> None:
    with pytest.raises(DomainError) as err:
        parse_line(line)
    assert err.value.reason == reason


def test_observations_survive_the_json_round_trip() -> None:
    registry = load_feeds(FEEDS)
    paths = random_walk_paths({"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 100.0}, T0, 120, seed=2)
    observations = observations_from_paths(paths, registry, seed=2)
    assert {o.source for o in observations} == set(OracleSource)
    assert [parse_line(json.dumps(observation_to_json(o))) for o in observations] == observations


def dry_run_input() -> str:
    lines = [
        chainlink_line(ROUND_314177, 1692107723_000 + 1500),
        pyth_line(1692110601_000 + 400),
        "{not json",
        pyth_line(1692110601_000 + 900),  # the same update again: dropped
        chainlink_line(ROUND_314178, 1692111359_000 + 1500),
        chainlink_line(ROUND_ZERO, 1692111400_000),
        chainlink_line(ROUND_314178, 1692111401_000, feed_id="0xdeadbeef"),
        "",
    ]
    return "\n".join(lines) + "\n"


def test_dry_run_writes_prices_and_dead_letters(tmp_path: Path) -> None:
    source = tmp_path / "obs.jsonl"
    source.write_text(dry_run_input())
    result = CliRunner().invoke(app, ["oracle", "consensus", "--feeds", str(FEEDS),
                                      "--input", str(source)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    prices = [r for r in records if r["kind"] == "price"]
    letters = [r for r in records if r["kind"] == "dead_letter"]
    # alone, then two sources, then Pyth stale 26 s after its publish time (a review), then
    # the next Chainlink round alone again
    assert [p["status"] for p in prices] == ["HALTED", "DEGRADED", "HALTED", "HALTED"]
    assert prices[1]["sources_used"] == ["chainlink@ethereum", "pyth@solana"]
    assert 1839.56 <= prices[1]["price"] <= 1841.36023127
    assert {"source": "pyth@arbitrum", "reason": "no_data"} in prices[1]["sources_excluded"]
    assert prices[2]["event_time"] == 1692110601_000 + 26_001
    assert {"source": "pyth@solana", "reason": "stale"} in prices[2]["sources_excluded"]
    assert prices[3]["event_time"] == 1692111359_000 + 1500
    assert prices[3]["price"] == 1842.02
    assert [p["sequence"] for p in prices] == [1, 2, 3, 4]
    assert [(d["line"], d["reason"]) for d in letters] == [
        (3, reasons.MALFORMED_JSON), (6, reasons.EMPTY_ROUND), (7, reasons.UNKNOWN_FEED)]
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["counters"]["observations"] == 7
    assert summary["counters"]["dropped.duplicate"] == 1


def test_dry_run_reads_stdin_and_can_show_drops() -> None:
    result = CliRunner().invoke(app, ["oracle", "consensus", "--feeds", str(FEEDS), "--input", "-",
                                      "--dropped", "--no-summary"], input=dry_run_input())
    assert result.exit_code == 0, result.output
    kinds = [json.loads(line)["kind"] for line in result.stdout.splitlines()]
    assert kinds.count("dropped") == 1 and kinds.count("dead_letter") == 3
    assert result.stderr == ""


def test_dry_run_refuses_a_bad_feeds_file(tmp_path: Path) -> None:
    bad = tmp_path / "feeds.toml"
    bad.write_text("[[feeds]]\nasset = 1\n")
    result = CliRunner().invoke(app, ["oracle", "consensus", "--feeds", str(bad), "--input", "-"],
                                input="")
    assert result.exit_code == 2
    assert "error:" in result.stderr


def test_consensus_records_matches_the_engine() -> None:
    engine = ConsensusEngine(load_feeds(FEEDS))
    records = list(consensus_records(dry_run_input().splitlines(), engine))
    assert len(records) == 7
    assert engine.counters["prices"] == 4


def test_lines_no_parser_could_read_never_stop_a_dry_run(tmp_path: Path) -> None:
    huge = "9" * 5000
    lines = [
        chainlink_line({**ROUND_314177, "answer": huge}, 1692107724_500).encode(),  # string
        (b'{"source": "pyth", "chain": "solana", "received_at": ' + huge.encode() + b"}"),
        b"\xff\xfe not utf-8 at all",
        chainlink_line({**ROUND_314177, "roundId": huge, "answeredInRound": huge},
                       1692107724_600).encode(),
        chainlink_line(ROUND_314178, 1692111360_000).encode(),  # a good line still counts
    ]
    source = tmp_path / "obs.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(app, ["oracle", "consensus", "--feeds", str(FEEDS),
                                      "--input", str(source), "--no-summary"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    letters = [(r["line"], r["reason"]) for r in records if r["kind"] == "dead_letter"]
    assert letters == [(1, reasons.INVALID_PRICE), (2, reasons.MALFORMED_JSON),
                       (3, reasons.MALFORMED_JSON), (4, reasons.INVALID_ROUND_ID)]
    assert [r["event_time"] for r in records if r["kind"] == "price"] == [1692111360_000]
