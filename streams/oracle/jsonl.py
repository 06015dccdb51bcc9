"""JSON lines in the oracles' own shapes <-> observations, and consensus outputs as JSON.

An input line is one JSON object: ``source`` (``chainlink`` or ``pyth``), ``chain``,
``feed_id`` (Pyth's Hermes ``id`` is accepted too), ``received_at`` (event time, epoch ms)
and that oracle's own fields:

- Chainlink, as ``getRoundData``/``latestRoundData`` return them: ``roundId``, ``answer``,
  ``startedAt``, ``updatedAt``, ``answeredInRound`` (numbers or decimal strings; the
  snake_case spellings are accepted too).
- Pyth, as a Hermes ``parsed[]`` entry: ``price`` = ``{price, conf, expo, publish_time}``
  and ``ema_price`` = ``{price, conf, expo, publish_time}`` (prices and confidences as
  decimal strings or numbers); or flat: ``price``, ``conf``, ``expo``, ``publish_time``,
  ``ema_price``, ``ema_conf``.

Parsing refuses with :class:`DomainError` reasons ``malformed_json``, ``missing_field``,
``invalid_field``, ``unknown_source`` (and ``invalid_round_id`` / ``invalid_price`` /
``invalid_confidence`` / ``invalid_timestamp`` for unusable numbers); everything else is
judged by the consensus engine, exactly as in the workers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from streams.domain import (
    ChainlinkRound,
    ConsensusPrice,
    OracleObservation,
    OracleSource,
    PythPriceUpdate,
)
from streams.errors import DomainError
from streams.oracle import reasons
from streams.oracle.consensus import ConsensusEngine, Refusal
from streams.oracle.normalize import MAX_DIGITS

_CHAINLINK_FIELDS = (("round_id", "roundId"), ("answer", "answer"),
                     ("started_at", "startedAt"), ("updated_at", "updatedAt"),
                     ("answered_in_round", "answeredInRound"))


def parse_line(text: str) -> OracleObservation:
    """One JSON line as an observation (DomainError with a reason code if unusable)."""
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an integer too long
        raise DomainError(reasons.MALFORMED_JSON, f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(record, dict):
        raise DomainError(reasons.MALFORMED_JSON, "a line must hold one JSON object")
    return observation_from_json(record)


def observation_from_json(record: Mapping[str, Any]) -> OracleObservation:
    """An observation from a JSON object in its oracle's own shape (see module docstring)."""
    source_name = _required(record, "source")
    if not isinstance(source_name, str) or source_name.upper() not in OracleSource.__members__:
        raise DomainError(reasons.UNKNOWN_SOURCE,
                          f"source must be chainlink or pyth, got {source_name!r}")
    source = OracleSource[source_name.upper()]
    chain = _text(_required(record, "chain"), "chain")
    feed_id = record.get("feed_id", record.get("id"))
    if feed_id is None:
        raise DomainError(reasons.MISSING_FIELD, "missing feed_id")
    received_at = _integer(_required(record, "received_at"), "received_at",
                           reasons.INVALID_TIMESTAMP)
    body = _chainlink_body(record) if source is OracleSource.CHAINLINK else _pyth_body(record)
    return OracleObservation(chain, source, _text(feed_id, "feed_id"), received_at, body)


def _chainlink_body(record: Mapping[str, Any]) -> ChainlinkRound:
    values = {}
    for snake, camel in _CHAINLINK_FIELDS:
        if camel in record:
            values[snake] = record[camel]
        elif snake in record:
            values[snake] = record[snake]
        else:
            raise DomainError(reasons.MISSING_FIELD, f"missing {camel}")
    return ChainlinkRound(
        round_id=_decimal_text(values["round_id"], "roundId", reasons.INVALID_ROUND_ID),
        answer=_decimal_text(values["answer"], "answer", reasons.INVALID_PRICE),
        started_at=_integer(values["started_at"], "startedAt", reasons.INVALID_TIMESTAMP),
        updated_at=_integer(values["updated_at"], "updatedAt", reasons.INVALID_TIMESTAMP),
        answered_in_round=_decimal_text(values["answered_in_round"], "answeredInRound",
                                        reasons.INVALID_ROUND_ID),
    )


def _pyth_body(record: Mapping[str, Any]) -> PythPriceUpdate:
    price = _required(record, "price")
    if isinstance(price, Mapping):  # Hermes parsed[] entry
        ema = record.get("ema_price") or price
        if not isinstance(ema, Mapping):
            raise DomainError(reasons.INVALID_FIELD, "ema_price must be an object like price")
        quote = (_required(price, "price"), _required(price, "conf"), _required(price, "expo"),
                 _required(price, "publish_time"), _required(ema, "price"),
                 _required(ema, "conf"))
    else:
        quote = (price, _required(record, "conf"), _required(record, "expo"),
                 _required(record, "publish_time"), record.get("ema_price", price),
                 record.get("ema_conf", record.get("conf")))
    value, conf, expo, publish_time, ema_value, ema_conf = quote
    return PythPriceUpdate(
        price=_integer(value, "price", reasons.INVALID_PRICE),
        conf=_integer(conf, "conf", reasons.INVALID_CONFIDENCE),
        expo=_integer(expo, "expo", reasons.INVALID_FIELD),
        publish_time=_integer(publish_time, "publish_time", reasons.INVALID_TIMESTAMP),
        ema_price=_integer(ema_value, "ema_price", reasons.INVALID_FIELD),
        ema_conf=_integer(ema_conf, "ema_conf", reasons.INVALID_FIELD),
    )


def _required(record: Mapping[str, Any], key: str) -> Any:
    if key not in record or record[key] is None:
        raise DomainError(reasons.MISSING_FIELD, f"missing {key}")
    return record[key]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise DomainError(reasons.INVALID_FIELD, f"{what} must be a non-empty string")
    return value


def _integer(value: Any, what: str, reason: str) -> int:
    """A JSON integer, or a decimal string of one (as the oracles publish big integers)."""
    if isinstance(value, bool):
        raise DomainError(reason, f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        if value.bit_length() > 256:  # wider than any oracle integer (int256)
            raise DomainError(reason, f"{what} has more than 256 bits")
        return value
    if isinstance(value, str):
        digits = value[1:] if value.startswith("-") else value
        if digits.isascii() and digits.isdigit():
            if len(digits) > MAX_DIGITS:
                raise DomainError(reason, f"{what} has {len(digits)} digits")
            return _integer(int(value), what, reason)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() \
            and abs(value) < 2**53:
        return int(value)
    raise DomainError(reason, f"{what} must be an integer, got {str(value)[:40]!r}")


def _decimal_text(value: Any, what: str, reason: str) -> str:
    """An integer field the schema keeps as a decimal string (uint80 / int256)."""
    if isinstance(value, str):
        return value  # the engine checks the digits, exactly as for Avro input
    return str(_integer(value, what, reason))


def observation_to_json(obs: OracleObservation) -> dict[str, Any]:
    """An observation as a JSON object in its oracle's own shape (inverse of parsing)."""
    head = {"source": obs.source.value.lower(), "chain": obs.chain, "feed_id": obs.feed_id,
            "received_at": obs.received_at}
    body = obs.body
    if isinstance(body, ChainlinkRound):
        return {**head, "roundId": body.round_id, "answer": body.answer,
                "startedAt": body.started_at, "updatedAt": body.updated_at,
                "answeredInRound": body.answered_in_round}
    return {**head,
            "price": {"price": str(body.price), "conf": str(body.conf), "expo": body.expo,
                      "publish_time": body.publish_time},
            "ema_price": {"price": str(body.ema_price), "conf": str(body.ema_conf),
                          "expo": body.expo, "publish_time": body.publish_time}}


def price_to_json(price: ConsensusPrice) -> dict[str, Any]:
    """A consensus output as one JSON object (``kind`` = ``price``)."""
    return {"kind": "price", "asset": price.asset, "event_time": price.event_time,
            "price": price.price, "confidence": price.confidence, "status": price.status.value,
            "dispersion_bps": price.dispersion_bps, "sources_used": list(price.sources_used),
            "sources_excluded": [{"source": e.source, "reason": e.reason}
                                 for e in price.sources_excluded],
            "unhealthy_chains": list(price.unhealthy_chains), "sequence": price.sequence}


def refusal_to_json(line: int, refusal: Refusal, event_time: int) -> dict[str, Any]:
    """A refused input line as one JSON object (``kind`` = ``dead_letter`` or ``dropped``)."""
    return {"kind": "dead_letter" if refusal.dead_letter else "dropped", "line": line,
            "reason": refusal.reason, "detail": refusal.detail, "event_time": event_time}


def _text_of(raw: str | bytes) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DomainError(reasons.MALFORMED_JSON, f"line is not UTF-8: {exc}") from None


def consensus_records(lines: Iterable[str | bytes], engine: ConsensusEngine,
                      with_dropped: bool = False) -> Iterator[dict[str, Any]]:
    """Run JSON lines through `engine`; yield one object per consensus output and per dead
    letter (and per drop if `with_dropped`), in order. Blank lines are skipped; a line of
    bytes that is not UTF-8 is a dead letter like any other bad line."""
    for number, raw in enumerate(lines, start=1):
        try:
            line = _text_of(raw)
            if not line.strip():
                continue
            obs = parse_line(line)
        except DomainError as exc:
            yield refusal_to_json(number, engine.refuse_input(exc.reason, exc.detail).refusal, -1)
            continue
        outcome = engine.observe(obs)
        yield from (price_to_json(p) for p in outcome.prices)
        refusal = outcome.refusal
        if refusal is not None and (refusal.dead_letter or with_dropped):
            yield refusal_to_json(number, refusal, obs.received_at)
