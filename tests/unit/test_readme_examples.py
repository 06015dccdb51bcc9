"""The README's examples of `aps greeks` and `aps oracle consensus` are what the tools print."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.paths import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(title)
    ends = [README.find(mark, start + len(title)) for mark in ("\n**", "\n## ")]
    return README[start:min(end for end in ends if end != -1)]


def _json_blocks(text: str) -> list[list[str]]:
    return [block.strip().splitlines() for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def _as_json(lines: list[str]) -> list[object]:
    return [json.loads(line) for line in lines]


def test_greeks_examples() -> None:
    examples = re.findall(r"\$ echo '(.*?)' \| aps (greeks(?: --iv)?)\n(.*?)\n",
                          _section("**`aps greeks`**"))
    assert len(examples) == 2
    for line, command, printed in examples:
        result = CliRunner().invoke(app, command.split(), input=line + "\n")
        (answer,) = _as_json(result.stdout.splitlines())
        assert answer == pytest.approx(json.loads(printed), rel=1e-12)  # last-ulp libm drift


def test_oracle_consensus_examples() -> None:
    observations, prices, letters = _json_blocks(_section("**`aps oracle consensus`**"))
    run = CliRunner().invoke(app, ["oracle", "consensus", "--input", "-", "--no-summary"],
                             input="\n".join(observations) + "\n")
    assert _as_json(run.stdout.splitlines()) == _as_json(prices)
    bad = json.loads(observations[0])
    bad["price"] = {"price": "-5", "conf": "1", "expo": -8, "publish_time": 1692110601}
    del bad["ema_price"]
    refused = CliRunner().invoke(app, ["oracle", "consensus", "--input", "-", "--no-summary"],
                                 input=json.dumps(bad) + "\n")
    assert _as_json(refused.stdout.splitlines()) == _as_json(letters)
