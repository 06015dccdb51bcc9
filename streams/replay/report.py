"""The replay report: a versioned JSON document, and its summary for the terminal.

The JSON is deterministic: it holds no wall-clock time, keys come in a fixed order and
lists in a defined order, so two replays of the same record give byte-identical reports
(`aps replay` twice, then `cmp`). The format is documented in docs/replay.md; a change to
it bumps `FORMAT_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from streams import __version__
from streams.clock import iso_utc
from streams.paths import PROJECT_ROOT
from streams.replay.diff import CommandDifference, Comparison, Emission
from streams.replay.replayer import PartitionReplay, Period

FORMAT = "aps.replay"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ReportHeader:
    """What a report says about the replay itself: what ran, on what, with which settings."""

    kind: str  # "audit" or "what-if"
    source: str
    period: Period
    partitions: Sequence[PartitionReplay]
    config_hash: str
    signatures_compared: bool
    reports_verified: bool


def source_commit() -> str:
    """The git commit of the APS source that runs (\"unknown\" outside a git checkout)."""
    try:
        done = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def iso(ms: int | None) -> str | None:
    """Epoch ms as ISO 8601 UTC with milliseconds (None stays None)."""
    return None if ms is None else iso_utc(ms)


def jsonable(value: Any) -> Any:
    """A compared value as JSON: NaN and infinities as strings, bytes as hex (as the
    archive's `record` writes them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def header_json(header: ReportHeader) -> dict[str, Any]:
    """The report's header: version, commit, settings and rules hashes, inputs read."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": header.kind,
        "aps_version": __version__,
        "aps_commit": source_commit(),
        "engine_config_hash": header.config_hash,
        "rules_in_force": rules_in_force(header.partitions),
        "source": header.source,
        "period": {"from": header.period.start_ms, "to": header.period.end_ms,
                   "from_iso": iso(header.period.start_ms), "to_iso": iso(header.period.end_ms)},
        "signatures_compared": header.signatures_compared,
        "reports_verified": header.reports_verified,
        "partitions": [_partition_json(p) for p in header.partitions],
    }


def rules_in_force(partitions: Sequence[PartitionReplay]) -> dict[str, Any]:
    """The rules in force at the end of the period: accounts with rules, each distinct
    rules hash with how many accounts hold it, and a digest of every (account, rules hash)
    pair (sha256 over sorted "account rules_hash" lines), which two replays agree on exactly
    when every account had the same rules."""
    pairs = sorted((a, h) for p in partitions for a, h in p.rules_in_force.items())
    text = "".join(f"{account} {rules_hash}\n" for account, rules_hash in pairs)
    hashes: dict[str, int] = {}
    for _, rules_hash in pairs:
        hashes[rules_hash] = hashes.get(rules_hash, 0) + 1
    return {"accounts": len(pairs), "digest": hashlib.sha256(text.encode()).hexdigest(),
            "hashes": dict(sorted(hashes.items()))}


def _partition_json(part: PartitionReplay) -> dict[str, Any]:
    first, last = part.first or (None, None), part.last or (None, None)
    return {
        "partition": part.partition,
        "read": part.read,
        "in_period": part.in_period,
        "first_offset": first[0], "first_event_time": first[1],
        "last_offset": last[0], "last_event_time": last[1],
        "skipped": dict(sorted(part.skipped.items())),
        "forged_reports_from_record": part.forged_from_record,
        "missing_offsets": part.missing_offsets,
        "first_missing_offset": part.first_missing_offset,
        "replayed_commands": len(part.emitted),
    }


def summary_json(comparison: Comparison) -> dict[str, int]:
    """recorded, replayed, matched, missing, extra, changed."""
    return {"recorded": comparison.recorded, "replayed": comparison.replayed,
            "matched": comparison.matched, "missing": comparison.count("missing"),
            "extra": comparison.count("extra"), "changed": comparison.count("changed")}


def difference_json(d: CommandDifference) -> dict[str, Any]:
    """One difference: kind, command, account, where decided, and the fields that differ."""
    out: dict[str, Any] = {"kind": d.kind, "command_id": d.command_id,
                           "account_id": d.account_id, **_at_json(d.at)}
    if d.fields:
        out["fields"] = [{"field": f.field, "recorded": jsonable(f.recorded),
                          "replayed": jsonable(f.replayed)} for f in d.fields]
    return out


def _at_json(at: Emission | None) -> dict[str, Any]:
    if at is None:
        return {"partition": None, "input_offset": None, "event_time": None}
    return {"partition": at.partition, "input_offset": at.input_offset,
            "event_time": at.event_time}


def audit_report(header: ReportHeader, comparison: Comparison) -> dict[str, Any]:
    """The whole audit report as a JSON-ready dict."""
    first = comparison.first_divergence
    return {
        **header_json(header),
        "identical": comparison.identical,
        "summary": summary_json(comparison),
        "first_divergence": None if first is None else {
            "command_id": first.command_id, "kind": first.kind, **_at_json(first.at)},
        "differences": [difference_json(d) for d in comparison.differences],
    }


def dumps(report: Mapping[str, Any]) -> str:
    """The report's text: indented JSON, one trailing newline, no NaN literals."""
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def print_audit(console: Console, report: Mapping[str, Any], path: str, shown: int = 10) -> None:
    """The audit's summary for humans: counts, the first divergence, the first differences."""
    summary = report["summary"]
    table = Table(title=f"aps replay ({report['kind']}): {report['source']}")
    for name in summary:
        table.add_column(name, justify="right")
    table.add_row(*(str(v) for v in summary.values()))
    console.print(table)
    reads = ", ".join(f"partition {p['partition']}: {p['read']} read, {p['in_period']} in period"
                      for p in report["partitions"])
    console.print(f"inputs: {reads}; engine settings {report['engine_config_hash']}")
    for p in report["partitions"]:
        if p["missing_offsets"]:
            console.print(f"[yellow]partition {p['partition']}: {p['missing_offsets']} "
                          f"offset(s) of the log are not in the record, the first "
                          f"{p['first_missing_offset']}[/yellow]: from there on the replay "
                          "cannot be exact")
    if report["identical"]:
        console.print("[green]identical[/green]: every recorded command of the period was "
                      "decided again, field for field, and nothing else was")
    else:
        first = report["first_divergence"]
        console.print(f"[red]differences[/red]: first divergence {first['kind']} command "
                      f"{first['command_id']} at partition {first['partition']} offset "
                      f"{first['input_offset']} (event time {iso(first['event_time'])})")
        _print_differences(console, report["differences"][:shown])
        if len(report["differences"]) > shown:
            console.print(f"... {len(report['differences']) - shown} more in {path}")
    console.print(f"report: {path}")


def _print_differences(console: Console, differences: Sequence[Mapping[str, Any]]) -> None:
    table = Table()
    for column in ("kind", "command", "account", "offset", "fields (recorded -> replayed)"):
        table.add_column(column)
    for d in differences:
        fields = "; ".join(f"{f['field']}: {f['recorded']!r} -> {f['replayed']!r}"
                           for f in d.get("fields", []))
        table.add_row(d["kind"], d["command_id"], d["account_id"],
                      "" if d["input_offset"] is None else str(d["input_offset"]), fields)
    console.print(table)


def print_what_if(console: Console, report: Mapping[str, Any], path: str,
                  shown: int = 10) -> None:
    """The what-if's summary for humans: what would have changed, and for whom."""
    summary = report["summary"]
    table = Table(title=f"aps replay (what-if, not an audit): {report['source']}")
    for name in summary:
        table.add_column(name.replace("_", " "), justify="right")
    table.add_row(*(str(v) for v in summary.values()))
    console.print(table)
    hashes = report["engine_config_hash"]
    console.print(f"engine settings {hashes['recorded']} -> {hashes['what_if']}; rules "
                  f"changed for {_override_scope(report['rules_override'])}")
    if not report["baseline_matches_record"]:
        console.print("[yellow]the replay with the recorded settings does not match the "
                      "record[/yellow]: run the audit (aps replay without --what-if) first")
    affected = [a for a in report["accounts"]
                if a["commands"]["recorded"] != a["commands"]["what_if"]
                or a["past_maintenance"]["recorded"] != a["past_maintenance"]["what_if"]]
    if affected:
        accounts = Table(title="accounts whose outcome changes")
        for column in ("account", "commands", "lowest margin ratio", "past maintenance"):
            accounts.add_column(column)
        for a in affected[:shown]:
            accounts.add_row(a["account_id"], _pair(a["commands"]),
                             _pair(a["lowest_margin_ratio"]), _pair(a["past_maintenance"]))
        console.print(accounts)
        if len(affected) > shown:
            console.print(f"... {len(affected) - shown} more in {path}")
    console.print(f"report: {path}")


def _override_scope(override: Mapping[str, Any] | None) -> str:
    if override is None:
        return "no account"
    named = f"{len(override['accounts'])} named account(s)"
    return f"every account ({named} with rules of their own)" if override["all"] else named


def _pair(values: Mapping[str, Any]) -> str:
    def show(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return f"{show(values['recorded'])} -> {show(values['what_if'])}"
