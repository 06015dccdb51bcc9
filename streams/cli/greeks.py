"""`aps greeks`: a streaming calculator of option prices, Greeks and implied volatility.

Reads JSON lines from stdin and writes one JSON line per non-blank input line, in input
order. Input is read in whatever pieces the pipe delivers (at most 64 KiB at a time), each
piece is evaluated in one vectorized call and its answers are flushed at once, so the tool
works interactively and in long pipes alike. See docs/greeks.md for the formats.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO

import numpy as np
import typer

from streams.risk.iv import IV_STATUS_MESSAGES, IVStatus, solve_implied_vol
from streams.risk.pricing import InvalidOptionInput, option_greeks

GREEK_NAMES = ("price", "delta", "gamma", "vega", "theta", "rho")
_COMMON_FIELDS = frozenset({"id", "type", "model", "S", "F", "K", "T", "r", "q"})
_READ_SIZE = 65536


class RequestError(ValueError):
    """A line that is not a valid request; the message is written back to the user."""


@dataclass(frozen=True, slots=True)
class OptionRequest:
    """One parsed input line: the option and either sigma (pricing) or price (--iv)."""

    is_call: bool
    is_black76: bool
    underlying: float
    strike: float
    expiry_years: float
    rate: float
    carry_yield: float
    sigma_or_price: float


def parse_request(fields: Any, implied: bool) -> OptionRequest:
    """Validate one decoded JSON line; raises `RequestError` with a readable message."""
    if not isinstance(fields, dict):
        raise RequestError("each line must be a JSON object")
    target = "price" if implied else "sigma"
    unknown = sorted(set(fields) - _COMMON_FIELDS - {target})
    if unknown:
        hint = " (use --iv to solve for sigma from a price)" if "price" in unknown else ""
        raise RequestError(f"unknown field(s): {', '.join(unknown)}{hint}")
    option_type = fields.get("type")
    if option_type not in ("call", "put"):
        raise RequestError('"type" must be "call" or "put"')
    is_black76 = _model_is_black76(fields)
    if is_black76 and "q" in fields:
        raise RequestError('"q" does not apply to black76 (the forward F already carries it)')
    expiry = _number(fields, "T")
    if expiry < 0:
        raise RequestError('"T" (years to expiry) must be >= 0')
    value = _number(fields, target)
    if value < 0:
        raise RequestError(f'"{target}" must be >= 0')
    return OptionRequest(
        is_call=option_type == "call",
        is_black76=is_black76,
        underlying=_positive(fields, "F" if is_black76 else "S"),
        strike=_positive(fields, "K"),
        expiry_years=expiry,
        rate=_number(fields, "r", default=0.0),
        carry_yield=_number(fields, "q", default=0.0),
        sigma_or_price=value,
    )


def _model_is_black76(fields: dict[str, Any]) -> bool:
    model = fields.get("model")
    if model is None:  # inferred from the underlying given: S -> bsm, F -> black76
        model = "black76" if "F" in fields and "S" not in fields else "bsm"
    if model not in ("bsm", "black76"):
        raise RequestError('"model" must be "bsm" or "black76"')
    wanted, other = ("F", "S") if model == "black76" else ("S", "F")
    if other in fields:
        raise RequestError(f'model {model} takes "{wanted}", not "{other}"')
    return bool(model == "black76")


def _number(fields: dict[str, Any], name: str, default: float | None = None) -> float:
    if name not in fields:
        if default is None:
            raise RequestError(f'missing field "{name}"')
        return default
    value = fields[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f'"{name}" must be a number')
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond double range
        number = math.inf
    if not math.isfinite(number):
        raise RequestError(f'"{name}" must be finite')
    return number


def _positive(fields: dict[str, Any], name: str) -> float:
    value = _number(fields, name)
    if value <= 0:
        raise RequestError(f'"{name}" must be > 0')
    return value


def evaluate(requests: list[OptionRequest], implied: bool) -> list[dict[str, Any]]:
    """Answers for valid requests, in order: Greeks, or sigma (--iv), or an error."""
    if not requests:
        return []
    columns = [np.array([getattr(req, name) for req in requests]) for name in
               ("underlying", "strike", "expiry_years", "rate", "carry_yield", "sigma_or_price",
                "is_call", "is_black76")]
    underlying, strike, expiry, rate, carry, value, is_call, is_black76 = columns
    if implied:
        result = solve_implied_vol(value, underlying, strike, expiry, rate, carry, is_call,
                                   is_black76)
        return [{"sigma": float(sigma)} if status == IVStatus.OK
                else {"error": IV_STATUS_MESSAGES[IVStatus(int(status))]}
                for sigma, status in zip(result.sigma, result.status, strict=True)]
    try:
        greeks = option_greeks(underlying, strike, expiry, rate, carry, value, is_call, is_black76)
    except InvalidOptionInput:
        if len(requests) == 1:
            return [{"error": "inputs overflow double precision (non-finite result)"}]
        return [answer for req in requests for answer in evaluate([req], implied)]
    rows = np.stack([getattr(greeks, name) for name in GREEK_NAMES], axis=1) + 0.0  # no -0.0
    return [dict(zip(GREEK_NAMES, map(float, row), strict=True)) for row in rows]


def answer_lines(lines: list[bytes], first_line_number: int,
                 implied: bool) -> list[dict[str, Any]]:
    """Answers for a batch of raw input lines, in order (blank lines yield nothing)."""
    answers: list[dict[str, Any]] = []
    pending: list[tuple[int, OptionRequest]] = []
    for offset, raw in enumerate(lines):
        if not raw.strip():
            continue
        answer: dict[str, Any] = {}
        try:
            fields = json.loads(raw)
            answer.update(_echoed_id(fields))
            pending.append((len(answers), parse_request(fields, implied)))
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer.update(error="not valid JSON", line=first_line_number + offset)
        except RequestError as exc:
            answer.update(error=str(exc), line=first_line_number + offset)
        answers.append(answer)
    results = evaluate([request for _, request in pending], implied)
    for (slot, _), result in zip(pending, results, strict=True):
        answers[slot].update(result)
    return answers


def _echoed_id(fields: Any) -> dict[str, Any]:
    """{"id": ...} when the line has an id that can be written back as JSON, else {}."""
    if not isinstance(fields, dict) or "id" not in fields:
        return {}
    try:
        json.dumps(fields["id"], allow_nan=False)
    except ValueError:
        return {}
    return {"id": fields["id"]}


def iter_line_batches(source: BinaryIO, read_size: int = _READ_SIZE) -> Iterator[list[bytes]]:
    """Complete lines as they arrive: each read returns what the pipe has (without waiting
    for more), so a batch is never held back for lines that have not been written yet."""
    partial = b""
    while True:
        chunk = source.read1(read_size) if hasattr(source, "read1") else source.read(read_size)
        if not chunk:
            break
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        if lines:
            yield lines
    if partial:
        yield [partial]


def run_calculator(source: BinaryIO, sink: TextIO, implied: bool) -> int:
    """Answer every line of `source` on `sink`, flushing per batch; returns the error count."""
    errors = 0
    line_number = 1
    for batch in iter_line_batches(source):
        answers = answer_lines(batch, line_number, implied)
        line_number += len(batch)
        errors += sum("error" in answer for answer in answers)
        if answers:
            sink.write("".join(json.dumps(answer, allow_nan=False) + "\n" for answer in answers))
            sink.flush()
    return errors


_HELP = (
    "Option prices and Greeks (or implied volatility) for JSON lines on stdin.\n\n"
    'Each line: {"type": "call"|"put", "S" (bsm) or "F" (black76), "K", "T" (years), '
    '"r" (default 0), "q" (bsm only, default 0), "sigma"}, optionally "model" (inferred from '
    'S/F) and "id" (echoed).\n\n'
    "Each answer: price, delta, gamma, vega (per 1.00 of vol), theta (dV/dt per year), rho "
    '(per 1.00 of rate), or "error" with the line number. Exit status 1 if any line had an '
    "error. Details: docs/greeks.md."
)


def greeks_command(
    iv: bool = typer.Option(False, "--iv", help="Solve for implied volatility: lines carry "
                            '"price" instead of "sigma" and the answer is {"sigma": ...}.'),
) -> None:
    """Answer JSON lines on stdin with prices and Greeks, or implied volatilities (--iv)."""
    try:
        errors = run_calculator(sys.stdin.buffer, sys.stdout, implied=iv)
    except BrokenPipeError:  # the reader went away (e.g. `| head`): nothing left to do
        # point stdout at /dev/null so that the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(code=0) from None
    if errors:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add `aps greeks` to the root app."""
    app.command("greeks", help=_HELP)(greeks_command)
