"""Topic names and partition counts, from infra/topics.toml."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache

from streams.config import Settings
from streams.paths import INFRA_DIR

ORACLE_TICKS = "oracle.ticks"
ORACLE_PRICES = "oracle.prices"
ACCOUNT_EVENTS = "account.events"
RISK_INPUTS = "risk.inputs"
RISK_REFUSALS = "risk.refusals"
EXECUTION_REPORTS = "execution.reports"
DEAD_LETTER = "aps.deadletter"


def exec_commands(chain: str) -> str:
    """The execution topic of one chain."""
    return f"exec.{chain}.commands"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One concrete topic: name, partition count and value schema."""

    name: str
    partitions: int
    schema: str


@cache
def _raw_specs() -> dict[str, dict[str, object]]:
    with open(INFRA_DIR / "topics.toml", "rb") as fh:
        return tomllib.load(fh)["topics"]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline uses, expanded for the configured chains."""
    specs = []
    for pattern, raw in _raw_specs().items():
        parts = raw["partitions"]
        count = settings.partitions if parts == "default" else int(parts)  # type: ignore[arg-type]
        names = ([pattern.format(chain=c) for c in settings.chains] if "{chain}" in pattern
                 else [pattern])
        specs.extend(TopicSpec(n, count, str(raw["schema"])) for n in names)
    return specs


def schema_for_topic(topic: str) -> str | None:
    """Value schema of a topic (by name or by pattern), or None if not an APS topic."""
    for pattern, raw in _raw_specs().items():
        if pattern == topic or ("{chain}" in pattern and _matches(pattern, topic)):
            return str(raw["schema"])
    return None


def _matches(pattern: str, topic: str) -> bool:
    head, _, tail = pattern.partition("{chain}")
    return topic.startswith(head) and topic.endswith(tail) and len(topic) > len(head) + len(tail)
