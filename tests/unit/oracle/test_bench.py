"""`aps bench oracle` runs end to end on a small stream and ends with its RESULT line."""

from __future__ import annotations

import pytest

from streams.bench.oracle import build_stream, run
from streams.oracle.feeds import load_feeds
from streams.paths import INFRA_DIR


def test_stream_has_the_requested_size_and_every_kind_of_input() -> None:
    stream = build_stream(load_feeds(INFRA_DIR / "feeds.toml"), 5000)
    assert len(stream) == 5000
    assert {(o.source.value, o.chain) for o in stream} >= {
        ("PYTH", "solana"), ("PYTH", "arbitrum"), ("CHAINLINK", "arbitrum")}


def test_run_prints_figures_and_a_result_line(capsys: pytest.CaptureFixture[str]) -> None:
    run(observations=3000)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("RESULT observations_per_s=")
    fields = dict(item.split("=") for item in lines[-1].split()[1:])
    assert float(fields["observations_per_s"]) > 0
    assert any(line.startswith("consensus only:") for line in lines)
