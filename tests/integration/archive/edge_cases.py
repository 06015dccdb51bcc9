"""Messages at the edges of what the archive maps: odd values, odd bytes, odd framing.

Used to prove that the column-wise mapping gives exactly the rows of the per-row reference
(`rows.archive_row`) for every table, including what must be kept raw.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from streams.archive.rows import KafkaMessage
from streams.archive.workload import Workload
from streams.codecs.avro import encode, registry
from streams.domain import Collateral, DeadLetter, Valuation
from tests.integration.archive import samples as s

ODD_DOUBLES = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1e-5, 1.5e-7, 9.99e-5, 1e-4,
               123456789.123, 9_999_999_999.5, 1e10, 1e15, 1e16, 1.2345678901234567e19, 1e21,
               1e308, -1e308, 0.1 + 0.2, 3000.0, -2.5e-300]
ODD_STRINGS = ['quote " and backslash \\', "new\nline\ttab\r", "control \x01\x0b\x1f\x7f",
               "unicode é € 😀", "line separator \u2028 \u2029", "slash / and <tag>", ""]


def _with(topic: str, key: bytes | None, value: bytes | None) -> tuple[str, bytes | None,
                                                                         bytes | None]:
    return topic, key, value


def value_edge_cases() -> list[tuple[str, bytes | None, bytes | None]]:
    """(topic, key, value) of valid records with odd doubles, strings, empty collections."""
    out = []
    for i, x in enumerate(ODD_DOUBLES):
        cmd = s.command(f"acct-d{i}", i)
        cmd = replace(cmd, quantity=x, limit_price=-x, trigger={"delta": x, "band": 1.0},
                      provenance=replace(cmd.provenance, price=x, confidence=abs(x)))
        out.append(_with("exec.ethereum.commands", b"d", encode(cmd)))
        state = s.account_state(f"acct-d{i}", i, ratio=x)
        out.append(_with(s.CHANGELOG, f"acct-d{i}".encode(), encode(state)))
    for i, text in enumerate(ODD_STRINGS):
        cmd = replace(s.command(f"acct-s{i}", i), command_id=text, rule=text * 2,
                      trigger={text or "empty": 1.5})
        out.append(_with("exec.arbitrum.commands", text.encode(), encode(cmd)))
        out.append(_with("oracle.prices", b"p", encode(replace(
            s.consensus("ETH", i), asset=text, sources_used=[text, "x"]))))
    base = s.account_state("acct-e", 1, ratio=None)
    sums = [[], [Collateral("a", 0.1, 0.2)], [Collateral("a", 0.1, 1.0), Collateral("b", 0.2, 2.0)],
            [Collateral(c, 0.1 * n, 0.3) for n, c in enumerate("abc", 1)],
            [Collateral("a", math.inf, 1.0), Collateral("b", -math.inf, 1.0)],  # fsum refuses
            [Collateral("a", 1e308, 1.0), Collateral("b", 1e308, 1.0)],  # fsum overflows
            [Collateral("a", math.nan, 1.0), Collateral("b", 1.0, 1.0)]]
    for i, collateral in enumerate(sums):
        state = replace(base, version=i, collateral=collateral, positions=[], pending=[],
                        last_fired={}, recent_commands=[], origin_offsets={}, rules=None)
        out.append(_with(s.CHANGELOG, b"acct-e", encode(state)))
    valued = replace(base, valuation=Valuation(1, 1.0, 2.0, 3.0, 4.0, 5.0, []))
    out.append(_with(s.CHANGELOG, b"acct-v", encode(valued)))
    for event_time in (-1, 0, s.T0):
        letter = DeadLetter("risk", "r", "d", "account.events", 1, 2, None, b"\x00\xff", event_time)
        out.append(_with("aps.deadletter", None, encode(letter)))
    letter = DeadLetter("risk", "r", "d", "t", 1, 2, b"\xff\xfekey", b"", 5)
    out.append(_with("aps.deadletter", b"\xff", encode(letter)))
    return out


def byte_edge_cases() -> list[tuple[str, bytes | None, bytes | None]]:
    """(topic, key, value) whose bytes are odd: framing, schema, truncation, UTF-8, maps."""
    cmd = encode(s.command("acct-b", 1))
    price = encode(s.consensus("ETH", 1))
    tick = next(x.value for x in s.samples("b-") if x.table == "oracle_ticks")
    assert tick is not None
    unknown = b"\xc3\x01" + b"\x00" * 8 + cmd[10:]
    invalid_utf8 = cmd.replace(b"acct-b-cmd-1", b"\xff\xfect-b-cmd-1")
    twin = encode(replace(s.command("acct-m", 1), trigger={"aaaa": 1.0, "bbbb": 2.0}))
    repeated_key = twin.replace(b"bbbb", b"aaaa")
    out = [
        _with("exec.ethereum.commands", b"k", b"not avro at all"),
        _with("exec.ethereum.commands", b"k", unknown),
        _with("exec.ethereum.commands", b"k", price),  # valid, the wrong topic
        _with("exec.ethereum.commands", b"k", invalid_utf8),
        _with("exec.ethereum.commands", b"k", repeated_key),
        _with("exec.ethereum.commands", b"k", cmd + b"trailing bytes"),
        _with("exec.ethereum.commands", None, None),
        _with("oracle.prices", b"\xff\xfe", None),
        _with("no.such.topic", None, b"x"),
        _with(s.CHANGELOG, b"acct-gone", None),  # a tombstone
        _with(s.CHANGELOG, b"\xffbad-key", None),
        _with("oracle.ticks", b"t", tick[:-3]),  # truncated inside its last string
        _with("oracle.ticks", b"t", tick[:-1]),
    ]
    out += [_with("exec.ethereum.commands", b"k", cmd[:n]) for n in (9, 10, 11, 30, len(cmd) - 1)]
    return out


def mutants(count: int, seed: int = 11) -> list[tuple[str, bytes | None, bytes | None]]:
    """Valid workload messages with bytes flipped, cut or appended (seeded)."""
    rng = random.Random(seed)
    out = []
    for message in Workload(seed, accounts=50).messages(count):
        value = message.value
        if value is None:
            continue
        kind = rng.randrange(3)
        if kind == 0:
            at = rng.randrange(len(value))
            value = value[:at] + bytes([rng.randrange(256)]) + value[at + 1:]
        elif kind == 1:
            value = value[:rng.randrange(len(value))]
        else:
            value = value + rng.randbytes(rng.randrange(1, 20))
        out.append(_with(message.topic, message.key, value))
    return out


def as_messages(cases: list[tuple[str, bytes | None, bytes | None]],
                first_offset: int = 0) -> list[KafkaMessage]:
    """Cases with distinct Kafka coordinates (one partition per topic)."""
    offsets: dict[str, int] = {}
    out = []
    for topic, key, value in cases:
        offset = offsets.get(topic, first_offset)
        offsets[topic] = offset + 1
        out.append(KafkaMessage(topic, 0, offset, key, value, s.T0 + offset))
    return out


def fingerprints() -> set[bytes]:
    """Fingerprints of every known schema (to tell a mutant's framing from garbage)."""
    return {registry().get(name).fingerprint for name in registry().names()}
