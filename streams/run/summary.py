"""The end-of-run summary printed by `aps run`."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from streams.run.runner import RunReport
from streams.topics import ORACLE_PRICES


def _counter_table(title: str, counter: Counter[str], label: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(label)
    table.add_column("count", justify="right")
    for key, count in sorted(counter.items()):
        table.add_row(key, str(count))
    if not counter:
        table.add_row("(none)", "0")
    return table


def _bound(seconds: float) -> str:
    return "over 30 s" if seconds == float("inf") else f"<= {1000 * seconds:.0f} ms"


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"  # NaN: no sample


def _hop_table(report: RunReport) -> Table:
    table = Table(title="Latency per hop, ms (from the records' Kafka timestamps)",
                  title_justify="left")
    for name, justify in (("hop", "left"), ("count", "right"), ("p50", "right"),
                          ("p99", "right"), ("max", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for hop in report.hops:
        table.add_row(hop.hop.replace("_", " "), str(hop.count), _ms(hop.p50), _ms(hop.p99),
                      _ms(hop.max))
    return table


def _print_live_vs_offline(report: RunReport, console: Console) -> None:
    offline = report.offline
    if offline is None:
        return
    live = set(report.breached)
    same = report.live_commands & offline.commands
    verdict = ("[green]within[/]" if report.live_matches_offline else "[red]OUTSIDE[/]")
    console.print(
        f"past maintenance, live vs offline (same book and prices, the executors' settlement"
        f" model): live {len(live)}, offline {len(offline.breached)}; {verdict} the target"
        f" live <= offline + {report.breach_allowance()}")
    console.print(
        f"commands, live vs offline: live {len(report.live_commands)}, offline"
        f" {len(offline.commands)}, identical ids {len(same)}; only live"
        f" {len(report.live_commands - offline.commands)}, only offline"
        f" {len(offline.commands - report.live_commands)}")


def print_summary(report: RunReport, console: Console) -> None:
    """Events per topic, commands by reason and chain, executions, accounts near or past
    liquidation, archive check, and how to query the history."""
    topics = Table(title="Events per topic", title_justify="left")
    topics.add_column("topic")
    topics.add_column("messages", justify="right")
    topics.add_column("archived", justify="right")
    for topic, count in sorted(report.topic_counts.items()):
        archived = report.archive_counts.get(topic, 0)
        mark = "" if archived == count else " [red](!)[/]"
        topics.add_row(topic, str(count), f"{archived}{mark}")
    console.print(topics)
    console.print(_counter_table("Commands by reason", report.commands_by_reason, "reason"))
    console.print(_counter_table("Commands by chain", report.commands_by_chain, "chain"))
    console.print(_counter_table("Executions by status", report.reports_by_status, "status"))
    if report.dead_letters_by_reason:
        console.print(_counter_table("Dead letters (stage:reason)",
                                     report.dead_letters_by_reason, "stage:reason"))
    near = Table(title=f"Accounts near or past liquidation ({len(report.near_liquidation)})",
                 title_justify="left")
    near.add_column("account")
    near.add_column("lowest margin ratio", justify="right")
    near.add_column("past maintenance")
    breached = set(report.breached)
    for account, ratio in report.near_liquidation[:15]:
        near.add_row(account, f"{ratio:.3f}", "YES" if account in breached else "no")
    if len(report.near_liquidation) > 15:
        near.add_row(f"... {len(report.near_liquidation) - 15} more", "", "")
    console.print(near)
    accounts = report.accounts
    console.print(
        f"accounts: {accounts}, with commands: {len(report.accounts_with_commands)}, "
        f"past maintenance: {len(report.breached)}; commands without a report: "
        f"{len(report.commands_without_report)}"
    )
    console.print(_hop_table(report))
    stale = report.stale_quotes
    if stale is not None and stale.count:
        console.print(
            f"{stale.count} commands were emitted by a later price than the quote they were "
            f"priced on (it settled fills or moved the event-time clock); counted from that "
            f"quote's entry on risk.inputs instead: p50 {_ms(stale.p50)}, p99 "
            f"{_ms(stale.p99)}, max {_ms(stale.max)} ms")
    if report.stage_wait_max_s:
        worst = ", ".join(f"{stage} {1000 * wait:.0f} ms"
                          for stage, wait in sorted(report.stage_wait_max_s.items()))
        console.print(f"worst lag per stage since start, the book load included (oldest record"
                      f" of a batch when it started): {worst}")
    if report.market_wait_max_s:
        market = ", ".join(f"{stage} {_bound(wait)}"
                           for stage, wait in sorted(report.market_wait_max_s.items()))
        console.print(f"worst lag per stage while the market played (histogram bound): {market}")
    if report.stage_busy_s:
        busy = ", ".join(f"{stage} {seconds:.1f}"
                         for stage, seconds in sorted(report.stage_busy_s.items()))
        console.print(f"seconds spent processing batches, per stage: {busy}")
    if report.cpu_s:
        prices = report.topic_counts.get(ORACLE_PRICES, 0)
        worker = report.cpu_s.get("worker")
        per_price = (f" (worker {1000 * worker / prices:.1f} ms of CPU per consensus price)"
                     if worker and prices else "")
        used = ", ".join(f"{name} {seconds:.1f}" for name, seconds in sorted(report.cpu_s.items()))
        console.print(f"CPU seconds used: {used}{per_price}")
    if report.archive_lag_max_s is not None:
        console.print(f"archive lag (age of a batch's oldest message when it was committed):"
                      f" at most {report.archive_lag_max_s:g} s")
    _print_live_vs_offline(report, console)
    verdict = "[green]match[/]" if report.archive_matches else "[red]DO NOT match[/]"
    console.print(f"archive row counts {verdict} topic counts")
    console.print(f"finished in {report.elapsed_s:.0f}s. Query the history with:\n"
                  "  aps history commands --limit 5\n"
                  "  aps history accounts --limit 10\n"
                  "  aps history sql "
                  "\"SELECT reason, count() FROM commands FINAL GROUP BY reason\"")
