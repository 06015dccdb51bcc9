"""Prometheus metrics of the workers (served on each process's web port at /metrics)."""

from __future__ import annotations

import gc
import time

from prometheus_client import Counter, Histogram

MESSAGES = Counter("aps_messages_total", "Messages consumed, by stage", ["stage"])
DEAD_LETTERS = Counter("aps_dead_letters_total", "Inputs sent to aps.deadletter",
                       ["stage", "reason"])
COMMANDS = Counter("aps_commands_total", "Scaling commands emitted", ["reason", "chain"])
EXECUTIONS = Counter("aps_executions_total", "Execution reports", ["chain", "status"])
DROPPED = Counter("aps_dropped_total", "Inputs counted and not used (duplicates, stale)",
                  ["stage", "reason"])
REVALUATIONS = Counter("aps_revaluations_total",
                       "Accounts revalued by price updates (one per account per update)")
CONFLATED = Counter("aps_conflated_prices_total",
                    "Consensus prices superseded by a later price of the same asset before they "
                    "were published (within one batch, or while held by the price gate)")
GATED = Counter("aps_gated_prices_total", "Consensus prices held until the risk stage had "
                "applied the asset's previous price (streams/app/pricegate.py)")
KEY_MISMATCH = Counter("aps_key_mismatch_total", "Signed inputs whose key id is not the id of "
                       "this process's key (the keys of the signer and this process differ)",
                       ["stage"])
REFUSALS = Counter("aps_risk_refusals_total", "Actions a rule wanted and the policy refused "
                   "(sent to risk.refusals), by rule family and reason", ["rule_kind", "reason"])
REFUSALS_DROPPED = Counter("aps_risk_refusals_dropped_total", "Refusals the engine did not "
                           "keep (more than EngineConfig.max_refusals between two reads)")
DUPLICATES = Counter("aps_duplicates_total", "Inputs already applied, skipped", ["stage"])
BATCH_SECONDS = Histogram("aps_batch_seconds", "Time to process one batch", ["stage"],
                          buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0))
RISK_STEP_SECONDS = Counter("aps_risk_step_seconds_total", "Time the risk stage spent, by "
                            "step: apply (the engine), persist (encode and write changed "
                            "state), send (sign and send commands)", ["step"])
GC_SECONDS = Counter("aps_gc_seconds_total", "Time spent in Python's cyclic garbage collector")


def watch_gc() -> None:
    """Count the cyclic collector's pauses in aps_gc_seconds_total (call once per process)."""
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            GC_SECONDS.inc(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
