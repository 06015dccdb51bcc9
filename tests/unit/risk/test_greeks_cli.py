"""`aps greeks`: JSON lines in, one JSON line out per input line, streaming."""

from __future__ import annotations

import io
import json
import selectors
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.cli.greeks import iter_line_batches

GREEKS = {"price", "delta", "gamma", "vega", "theta", "rho"}
HULL_CALL = {"type": "call", "S": 42, "K": 40, "T": 0.5, "r": 0.1, "sigma": 0.2}
HULL_PUT = {**HULL_CALL, "type": "put"}


def _run(lines: list[Any], *args: str) -> tuple[int, list[dict[str, Any]]]:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    result = CliRunner().invoke(app, ["greeks", *args], input=text)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    return result.exit_code, answers


def test_prices_and_greeks_of_the_hull_example() -> None:
    code, (call, put) = _run([HULL_CALL, HULL_PUT])
    assert code == 0
    assert set(call) == GREEKS and set(put) == GREEKS
    assert call["price"] == pytest.approx(4.76, abs=0.005)
    assert put["price"] == pytest.approx(0.81, abs=0.005)
    # raw partial derivatives: vega per 1.00 of vol, theta per year, rho per 1.00 of rate
    assert call["vega"] == pytest.approx(8.8134, abs=1e-4)
    assert call["theta"] == pytest.approx(-4.5591, abs=1e-4)
    assert put["rho"] == pytest.approx(-5.0425, abs=1e-4)


def test_one_answer_per_line_in_order_with_errors_inline() -> None:
    code, answers = _run([
        HULL_CALL,
        "",
        "   ",
        "{not json",
        {**HULL_CALL, "sigam": 0.2},
        {**HULL_PUT, "id": "row-7"},
        {k: v for k, v in HULL_CALL.items() if k != "K"},
        {**HULL_CALL, "K": 0},
    ])
    assert code == 1  # some lines had errors
    assert len(answers) == 6  # blank lines are skipped
    assert set(answers[0]) == GREEKS
    assert answers[1] == {"error": "not valid JSON", "line": 4}
    assert answers[2]["line"] == 5 and "unknown field(s): sigam" in answers[2]["error"]
    assert answers[3]["id"] == "row-7" and set(answers[3]) == GREEKS | {"id"}
    assert answers[4] == {"error": 'missing field "K"', "line": 7}
    assert answers[5] == {"error": '"K" must be > 0', "line": 8}


def test_defaults_and_model_inference() -> None:
    bare = {"type": "call", "S": 100, "K": 95, "T": 0.25, "sigma": 0.5}
    forward = {"type": "put", "F": 100, "K": 95, "T": 0.25, "sigma": 0.5, "r": 0.03}
    code, answers = _run([
        bare, {**bare, "r": 0, "q": 0, "model": "bsm"},
        forward, {**forward, "model": "black76"},
    ])
    assert code == 0
    assert answers[0] == answers[1]
    assert answers[2] == answers[3]
    assert answers[2]["rho"] == pytest.approx(-0.25 * answers[2]["price"])  # Black-76: -T V


@pytest.mark.parametrize(("line", "message"), [
    ({**HULL_CALL, "type": "straddle"}, '"type" must be "call" or "put"'),
    ({**HULL_CALL, "model": "heston"}, '"model" must be "bsm" or "black76"'),
    ({**HULL_CALL, "model": "black76"}, 'model black76 takes "F", not "S"'),
    ({**HULL_CALL, "F": 42}, 'model bsm takes "S", not "F"'),
    ({"type": "put", "F": 42, "K": 40, "T": 0.5, "q": 0.01, "sigma": 0.2},
     '"q" does not apply to black76'),
    ({**HULL_CALL, "K": "40"}, '"K" must be a number'),
    ({**HULL_CALL, "r": True}, '"r" must be a number'),
    ('{"type": "call", "S": NaN, "K": 40, "T": 0.5, "sigma": 0.2}', '"S" must be finite'),
    ('{"type": "call", "S": 1' + "0" * 400 + ', "K": 40, "T": 0.5, "sigma": 0.2}',
     '"S" must be finite'),
    ({**HULL_CALL, "T": -1}, '"T" (years to expiry) must be >= 0'),
    ({**HULL_CALL, "sigma": -0.2}, '"sigma" must be >= 0'),
    ({**HULL_CALL, "price": 4.0}, "use --iv"),
    ([1, 2, 3], "each line must be a JSON object"),
])
def test_invalid_lines_get_a_clear_error(line: Any, message: str) -> None:
    code, answers = _run([line, HULL_CALL])
    assert code == 1
    assert message in answers[0]["error"] and answers[0]["line"] == 1
    assert set(answers[1]) == GREEKS  # the tool keeps going


def test_expired_and_zero_vol_lines_have_defined_answers_without_negative_zero() -> None:
    code, answers = _run([
        {"type": "put", "S": 110, "K": 100, "T": 0, "sigma": 0.3},
        {"type": "call", "S": 110, "K": 100, "T": 1, "r": 0.05, "sigma": 0},
    ])
    assert code == 0
    assert answers[0] == dict.fromkeys(GREEKS, 0.0)
    assert answers[1]["price"] == pytest.approx(110 - 100 * 2.718281828459045 ** -0.05)
    assert answers[1]["gamma"] == 0.0


def test_overflowing_line_is_an_error_and_its_batch_neighbours_are_answered() -> None:
    huge = {"type": "call", "S": 1e308, "K": 100, "T": 10, "q": -1, "sigma": 0.2}
    code, answers = _run([HULL_CALL, huge, HULL_PUT])
    assert code == 1
    assert "overflow" in answers[1]["error"]
    assert set(answers[0]) == GREEKS and set(answers[2]) == GREEKS


def test_implied_volatility_mode() -> None:
    code, answers = _run([
        {k: v for k, v in HULL_CALL.items() if k != "sigma"} | {"price": 4.759422392871535},
        {"type": "put", "F": 100, "K": 90, "T": 1, "r": 0.02, "price": 2.5, "id": 3},
        {"type": "call", "S": 42, "K": 40, "T": 0.5, "r": 0.1, "price": 1.0},
        {"type": "call", "S": 42, "K": 40, "T": 0, "price": 2.5},
        HULL_CALL,
    ], "--iv")
    assert code == 1
    assert answers[0] == {"sigma": pytest.approx(0.2, rel=1e-12)}
    assert answers[1]["id"] == 3 and 0.0 < answers[1]["sigma"] < 1.0
    assert "below the intrinsic value" in answers[2]["error"]
    assert "expiry" in answers[3]["error"]
    assert "unknown field(s): sigma" in answers[4]["error"]


class _Trickle(io.RawIOBase):
    """A stream that hands out its bytes in small pieces, splitting lines across reads."""

    def __init__(self, data: bytes, piece: int) -> None:
        self._data, self._piece = data, piece

    def read1(self, size: int = -1) -> bytes:
        chunk, self._data = self._data[:self._piece], self._data[self._piece:]
        return chunk


def test_line_batches_reassemble_lines_split_across_reads() -> None:
    data = b'{"a": 1}\n{"b": 22}\n\n{"c": 333}'  # no final newline
    batches = list(iter_line_batches(_Trickle(data, piece=5)))  # type: ignore[arg-type]
    assert [line for batch in batches for line in batch] == [b'{"a": 1}', b'{"b": 22}', b"",
                                                           b'{"c": 333}']
    assert len(batches) > 1  # answered as the pieces arrive, not all at the end


def _aps(*args: str, **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "from streams.cli import main; main()",
                             *args], **popen)


def _read_line(stream: Any, timeout: float) -> bytes:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    ready = selector.select(timeout)
    selector.close()
    assert ready, "no answer within the timeout: the calculator does not stream"
    return stream.readline()


def test_answers_stream_while_stdin_stays_open() -> None:
    proc = _aps("greeks", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for request, price in ((HULL_CALL, 4.76), (HULL_PUT, 0.81)):
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
            answer = json.loads(_read_line(proc.stdout, timeout=60))
            assert answer["price"] == pytest.approx(price, abs=0.005)
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


def test_a_reader_that_goes_away_ends_the_tool_quietly(tmp_path: Path) -> None:
    source = tmp_path / "lines.jsonl"
    source.write_text((json.dumps(HULL_CALL) + "\n") * 20_000)
    with source.open("rb") as stdin:
        proc = _aps("greeks", stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        json.loads(_read_line(proc.stdout, timeout=60))
        proc.stdout.close()  # like `aps greeks < lines | head -1`
        assert proc.wait(timeout=60) == 0
        assert b"Traceback" not in proc.stderr.read()
