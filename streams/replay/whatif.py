"""`aps replay --what-if`: the recorded period replayed with changed rules or settings.

Never mixed with the audit: a what-if report says `"kind": "what-if"` and compares two
replays of the same record, one with the recorded settings (the baseline, itself checked
against the recorded commands: `baseline_matches_record`) and one with the changes. Rules
are changed where the log sets them: every `RulesChanged` account event of a covered
account carries the what-if rules instead (an account whose rules the log never sets keeps
none). The rules file is JSON, each rule set in the format the archive shows a
`RulesChanged` body in (`record` of `account_events`):

    {"all": {"rules": {...}}, "accounts": {"acct-7": {"rules": {...}}}}

`accounts` wins over `all` for the accounts it names; either may be left out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams import __version__
from streams.archive.readback import record_from_json
from streams.config import Settings
from streams.domain import AccountEvent, RiskInput, RulesChanged, ScalingCommand, ScalingRules
from streams.domain.rules import validate_rules
from streams.errors import ConfigError, DomainError
from streams.replay.audit import ReplayRequest, recorded_of, replay_keys, select_partitions
from streams.replay.diff import CommandDifference, Comparison, Emission, Kind, compare
from streams.replay.replayer import PartitionReplay, Replayer
from streams.replay.report import (
    FORMAT,
    FORMAT_VERSION,
    difference_json,
    iso,
    jsonable,
    rules_in_force,
    source_commit,
)
from streams.replay.sources import ReplaySource
from streams.risk.engine import EngineConfig
from streams.risk.settings import engine_config_hash

# a what-if difference, named from the what-if's side (diff.compare names the record's)
WHAT_IF_KIND: dict[Kind, str] = {"missing": "added", "extra": "removed", "changed": "changed"}


@dataclass(frozen=True, slots=True)
class RulesOverride:
    """What-if rules: for every account (`all`) and/or per account; `digest` is the sha256
    of the file's bytes, for the report."""

    all: ScalingRules | None
    accounts: Mapping[str, ScalingRules]
    digest: str

    def rules_for(self, account_id: str) -> ScalingRules | None:
        """The what-if rules of `account_id` (None: unchanged)."""
        return self.accounts.get(account_id, self.all)


def load_rules_override(path: Path) -> RulesOverride:
    """Read a what-if rules file (see module doc); ConfigError says what is wrong."""
    raw = path.read_bytes()
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    if not isinstance(document, dict) or not set(document) <= {"all", "accounts"}:
        raise ConfigError(f"{path}: expected an object with \"all\" and/or \"accounts\"")
    accounts = document.get("accounts", {})
    if not isinstance(accounts, dict):
        raise ConfigError(f"{path}: \"accounts\" must map account ids to rules")
    everyone = document.get("all")
    return RulesOverride(
        all=_rules(path, "all", everyone) if everyone is not None else None,
        accounts={account: _rules(path, account, body) for account, body in accounts.items()},
        digest=hashlib.sha256(raw).hexdigest())


def _rules(path: Path, where: str, body: Any) -> ScalingRules:
    try:
        rules = record_from_json(RulesChanged, json.dumps(body)).rules
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: the rules of {where!r} are not a RulesChanged body "
                          f"(as `record` of account_events shows one): {exc!r}") from None
    try:
        validate_rules(rules)
    except DomainError as exc:
        raise ConfigError(f"{path}: the rules of {where!r} would be refused by the engine: "
                          f"{exc.detail}") from None
    return rules


def rules_rewriter(override: RulesOverride) -> Callable[[RiskInput], RiskInput]:
    """A log rewrite that gives covered accounts' RulesChanged events the what-if rules."""
    def rewrite(item: RiskInput) -> RiskInput:
        event = item.body
        if not isinstance(event, AccountEvent) or not isinstance(event.body, RulesChanged):
            return item
        rules = override.rules_for(event.account_id)
        if rules is None:
            return item
        return dataclasses.replace(
            item, body=dataclasses.replace(event, body=RulesChanged(rules)))
    return rewrite


@dataclass(frozen=True, slots=True)
class WhatIfRequest:
    """The recorded settings (`baseline`) and the what-if changes."""

    baseline: ReplayRequest
    config: EngineConfig
    rules: RulesOverride | None = None


@dataclass(frozen=True, slots=True)
class WhatIfResult:
    """Both replays, the comparison of their commands, and the report."""

    baseline: list[PartitionReplay]
    what_if: list[PartitionReplay]
    comparison: Comparison
    report: dict[str, Any]


def run_what_if(source: ReplaySource, settings: Settings, request: WhatIfRequest,
                on_progress: Callable[[int], None] = lambda _n: None,
                on_partition: Callable[[int, int], None] = lambda _p, _end: None
                ) -> WhatIfResult:
    """Replay the period twice (recorded settings, then the what-if) and compare."""
    base = request.baseline
    partitions = select_partitions(source, base.partitions)
    _, report_key = replay_keys(settings)
    rewrite = rules_rewriter(request.rules) if request.rules else None

    def replay_all(config: EngineConfig, change: Callable[[RiskInput], RiskInput] | None
                   ) -> list[PartitionReplay]:
        replayer = Replayer(config, period=base.period, report_key=report_key,
                            command_key=None, rewrite=change)
        out = []
        for partition in partitions:
            on_partition(partition, source.end_offset(partition, base.period.end_ms))
            out.append(replayer.replay(source, partition, on_progress))
        return out

    baseline = replay_all(base.config, None)
    what_if = replay_all(request.config, rewrite)
    recorded = recorded_of(source.commands(base.period.start_ms, base.period.end_ms), baseline,
                           replayed_all=not base.partitions,
                           partition_count=max(source.partitions()) + 1)
    matches_record = compare(recorded, _emitted(baseline), signatures=False).identical
    comparison = compare([c for c, _ in _emitted(baseline).values()], _emitted(what_if),
                         _locator(baseline), signatures=False)
    report = what_if_report(source.description, request, baseline, what_if, comparison,
                            matches_record)
    return WhatIfResult(baseline, what_if, comparison, report)


def _emitted(replays: Sequence[PartitionReplay]) -> dict[str, tuple[ScalingCommand, Emission]]:
    return {cid: v for r in replays for cid, v in r.emitted.items()}


def _locator(baseline: Sequence[PartitionReplay]
             ) -> Callable[[ScalingCommand], Emission | None]:
    emitted = _emitted(baseline)
    return lambda command: emitted[command.command_id][1]


def what_if_report(source: str, request: WhatIfRequest, baseline: Sequence[PartitionReplay],
                   what_if: Sequence[PartitionReplay], comparison: Comparison,
                   matches_record: bool) -> dict[str, Any]:
    """The what-if report as a JSON-ready dict (docs/replay.md)."""
    period = request.baseline.period
    rules = request.rules
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "what-if",
        "aps_version": __version__,
        "aps_commit": source_commit(),
        "engine_config_hash": {"recorded": engine_config_hash(request.baseline.config),
                               "what_if": engine_config_hash(request.config)},
        "rules_override": None if rules is None else {
            "all": rules.all is not None, "accounts": sorted(rules.accounts),
            "file_sha256": rules.digest},
        "rules_in_force": {"recorded": rules_in_force(baseline),
                           "what_if": rules_in_force(what_if)},
        "source": source,
        "period": {"from": period.start_ms, "to": period.end_ms,
                   "from_iso": iso(period.start_ms), "to_iso": iso(period.end_ms)},
        "baseline_matches_record": matches_record,
        "summary": {"recorded": comparison.recorded, "what_if": comparison.replayed,
                    "unchanged": comparison.matched,
                    **{name: comparison.count(kind) for kind, name in WHAT_IF_KIND.items()},
                    **_breaches(baseline, what_if)},
        "commands": [_what_if_difference(d) for d in comparison.differences],
        "accounts": _accounts(baseline, what_if),
    }


def _what_if_difference(d: CommandDifference) -> dict[str, Any]:
    out = difference_json(d)
    out["kind"] = WHAT_IF_KIND[d.kind]
    for field in out.get("fields", []):
        field["what_if"] = field.pop("replayed")
    return out


def _lowest(replays: Sequence[PartitionReplay]) -> dict[str, tuple[float, bool]]:
    return {a: v for r in replays for a, v in r.lowest.items()}


def _breaches(baseline: Sequence[PartitionReplay], what_if: Sequence[PartitionReplay]
              ) -> dict[str, int]:
    return {"past_maintenance_recorded": sum(b for _, b in _lowest(baseline).values()),
            "past_maintenance_what_if": sum(b for _, b in _lowest(what_if).values())}


def _accounts(baseline: Sequence[PartitionReplay], what_if: Sequence[PartitionReplay]
              ) -> list[dict[str, Any]]:
    """Per account: lowest margin ratio and past maintenance, recorded vs what-if, and
    the commands each decided in the period."""
    before, after = _lowest(baseline), _lowest(what_if)
    counts_before = _command_counts(baseline)
    counts_after = _command_counts(what_if)
    rows = []
    for account in sorted(set(before) | set(after)):
        ratio_b, breached_b = before.get(account, (None, None))
        ratio_a, breached_a = after.get(account, (None, None))
        rows.append({"account_id": account,
                     "lowest_margin_ratio": {"recorded": jsonable(ratio_b),
                                             "what_if": jsonable(ratio_a)},
                     "past_maintenance": {"recorded": breached_b, "what_if": breached_a},
                     "commands": {"recorded": counts_before.get(account, 0),
                                  "what_if": counts_after.get(account, 0)}})
    return rows


def _command_counts(replays: Sequence[PartitionReplay]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for command, _ in _emitted(replays).values():
        counts[command.account_id] = counts.get(command.account_id, 0) + 1
    return counts
