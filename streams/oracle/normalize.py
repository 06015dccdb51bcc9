"""Exact normalization and validation of raw oracle observations.

Values stay integers (a mantissa and a base-10 exponent) until the consensus step, so no
float drift creeps in: ``answer = 229750276106`` with 8 decimals is exactly
``Decimal("2297.50276106")``. Validation raises :class:`DomainError` with a reason code
from :mod:`streams.oracle.reasons`.

Chainlink round ids are uint80 values ``(phaseId << 64) | aggregatorRoundId``: the proxy
bumps the phase when it points at a new aggregator, whose round numbers start again at 1.
Comparing whole round ids therefore orders rounds correctly across a phase change.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

from streams.domain import ChainlinkRound, PythPriceUpdate
from streams.errors import DomainError
from streams.oracle import reasons

PHASE_SHIFT = 64
AGGREGATOR_ROUND_MASK = (1 << PHASE_SHIFT) - 1
UINT80_LIMIT = 1 << 80
INT256_LIMIT = 1 << 255
INT64_LIMIT = 1 << 63
PYTH_EXPO_MIN = -18
PYTH_EXPO_MAX = 0


class ExactPrice(NamedTuple):
    """``mantissa * 10**exponent``, exactly."""

    mantissa: int
    exponent: int

    def to_decimal(self) -> Decimal:
        """The exact value as a Decimal (no context rounding)."""
        return Decimal(f"{self.mantissa}E{self.exponent}")

    def to_fraction(self) -> Fraction:
        """The exact value as a Fraction."""
        return Fraction(self.mantissa) * Fraction(10) ** self.exponent

    def to_float(self) -> float:
        """The nearest float to the exact value (correctly rounded)."""
        return to_float(self.mantissa, self.exponent)


def to_float(mantissa: int, exponent: int) -> float:
    """Nearest float to ``mantissa * 10**exponent`` (int/int division rounds correctly)."""
    if exponent >= 0:
        return float(mantissa * 10**exponent)
    return mantissa / 10**-exponent


class ChainlinkFields(NamedTuple):
    """A Chainlink round with its integers parsed and checked."""

    round_id: int
    phase: int
    aggregator_round: int
    answer: int
    started_at: int
    updated_at: int
    answered_in_round: int


class PythFields(NamedTuple):
    """A Pyth update with its integers checked."""

    price: int
    conf: int
    expo: int
    publish_time: int


def split_round_id(round_id: int) -> tuple[int, int]:
    """(phaseId, aggregatorRoundId) of a Chainlink proxy round id."""
    return round_id >> PHASE_SHIFT, round_id & AGGREGATOR_ROUND_MASK


def compose_round_id(phase: int, aggregator_round: int) -> int:
    """The proxy round id of an aggregator round in a phase."""
    return (phase << PHASE_SHIFT) | aggregator_round


# int256, the widest integer an oracle publishes, has 78 decimal digits; a longer string is
# refused before int() (Python refuses more than 4300 digits with a ValueError of its own)
MAX_DIGITS = 80


def parse_uint(text: str, what: str, reason: str) -> int:
    """A non-negative integer written in ASCII decimal digits, else DomainError(reason)."""
    if type(text) is not str or not text.isascii() or not text.isdigit():
        shown = text[:40] if isinstance(text, str) else text
        raise DomainError(reason, f"{what} is not a non-negative decimal integer: {shown!r}")
    if len(text) > MAX_DIGITS:
        raise DomainError(reason, f"{what} has {len(text)} digits, more than any oracle"
                          f" integer (int256: 78)")
    return int(text)


def parse_int(text: str, what: str, reason: str) -> int:
    """An integer in ASCII decimal digits with an optional leading '-', else DomainError."""
    digits = text[1:] if type(text) is str and text.startswith("-") else text
    value = parse_uint(digits, what, reason)
    return -value if digits is not text else value


def normalize_chainlink(body: ChainlinkRound) -> ChainlinkFields:
    """Parse and check a Chainlink round's integers (not yet its ordering or freshness).

    Refuses: a round id outside uint80 (``invalid_round_id``), the all-zero "no such round"
    answer such as round 0 of a phase (``empty_round``), an answer that is not an int256
    (``invalid_price``), negative or inverted times (``invalid_timestamp``), and an
    answeredInRound ahead of the round (``invalid_round_id``); an answeredInRound behind
    the round means a carried-over, stale answer (``carried_over_answer``).
    """
    round_id = parse_uint(body.round_id, "roundId", reasons.INVALID_ROUND_ID)
    if round_id >= UINT80_LIMIT:
        raise DomainError(reasons.INVALID_ROUND_ID, f"roundId {round_id} exceeds uint80")
    phase, aggregator_round = split_round_id(round_id)
    started_at, updated_at = body.started_at, body.updated_at
    if type(started_at) is not int or type(updated_at) is not int:
        raise DomainError(reasons.INVALID_TIMESTAMP, "startedAt/updatedAt must be integers")
    if updated_at == 0 or aggregator_round == 0:
        raise DomainError(reasons.EMPTY_ROUND,
                          f"round {round_id} (phase {phase}, round {aggregator_round}) has no "
                          f"answer (updatedAt={updated_at})")
    answer = parse_int(body.answer, "answer", reasons.INVALID_PRICE)
    if not -INT256_LIMIT <= answer < INT256_LIMIT:
        raise DomainError(reasons.INVALID_PRICE, "answer exceeds int256")
    if started_at < 0 or updated_at < 0 or started_at > updated_at:
        raise DomainError(reasons.INVALID_TIMESTAMP,
                          f"startedAt={started_at} updatedAt={updated_at}")
    answered = parse_uint(body.answered_in_round, "answeredInRound", reasons.INVALID_ROUND_ID)
    if answered > round_id:
        raise DomainError(reasons.INVALID_ROUND_ID,
                          f"answeredInRound {answered} is ahead of roundId {round_id}")
    if answered < round_id:
        raise DomainError(reasons.CARRIED_OVER_ANSWER,
                          f"round {round_id} carries the answer of round {answered}")
    return ChainlinkFields(round_id, phase, aggregator_round, answer, started_at, updated_at,
                           answered)


def check_positive(answer: int, what: str = "answer") -> None:
    """Refuse a zero or negative price (``non_positive_price``)."""
    if answer <= 0:
        raise DomainError(reasons.NON_POSITIVE_PRICE, f"{what} {answer} is not positive")


def normalize_pyth(body: PythPriceUpdate) -> PythFields:
    """A Pyth update's checked fields (see :func:`validate_pyth`)."""
    validate_pyth(body)
    return PythFields(body.price, body.conf, body.expo, body.publish_time)


def validate_pyth(body: PythPriceUpdate) -> None:
    """Check a Pyth update: integer fields, a sane exponent, price > 0, conf >= 0.

    Pyth updates carry their own exponent, so a sane exponent other than the configured
    one is still normalized exactly; one outside ``PYTH_EXPO_MIN..PYTH_EXPO_MAX`` is
    refused as ``absurd_exponent``. Price and conf are int64 on the wire (as in Pyth's own
    message format); larger integers are refused.
    """
    price, conf, expo, publish_time = body.price, body.conf, body.expo, body.publish_time
    if type(price) is not int or not -INT64_LIMIT <= price < INT64_LIMIT:
        raise DomainError(reasons.INVALID_PRICE, f"price is not an int64: {price!r}")
    if type(expo) is not int or not PYTH_EXPO_MIN <= expo <= PYTH_EXPO_MAX:
        raise DomainError(reasons.ABSURD_EXPONENT,
                          f"expo {expo!r} outside {PYTH_EXPO_MIN}..{PYTH_EXPO_MAX}")
    check_positive(price, "price")
    if type(conf) is not int or not 0 <= conf < INT64_LIMIT:
        raise DomainError(reasons.INVALID_CONFIDENCE, f"conf {conf!r} is not a non-negative "
                          f"int64")
    if type(publish_time) is not int or publish_time <= 0:
        raise DomainError(reasons.INVALID_TIMESTAMP, f"publish_time {publish_time!r}")
