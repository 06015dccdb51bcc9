"""The pipeline worker: consensus, sequencer and risk agents in one Faust app ("aps").

    oracle.ticks ──consensus──> oracle.prices
                      └───────────────────────────────┐ (every price to every partition)
    account.events ─────┬─sequencer───────────────> risk.inputs ──risk──> exec.*
    execution.reports ──┘                                           └──> risk.refusals

Run several workers to scale out: Faust splits the partitions of risk.inputs between them.
"""

from __future__ import annotations

import faust

from streams.app.batchsend import BatchedTopic
from streams.app.consensus_agent import install_consensus
from streams.app.factory import new_app, output_topic, raw_topic
from streams.app.pricegate import PriceGate
from streams.app.risk_agent import install_risk
from streams.app.sequencer_agent import install_sequencer
from streams.config import Settings
from streams.topics import (
    ACCOUNT_EVENTS,
    DEAD_LETTER,
    EXECUTION_REPORTS,
    ORACLE_PRICES,
    ORACLE_TICKS,
    RISK_INPUTS,
    RISK_REFUSALS,
    exec_commands,
    topic_specs,
)

APP_ID = "aps"


def create_worker_app(settings: Settings, bootstrap: str) -> faust.App:
    """The pipeline app with every agent installed."""
    app = new_app(APP_ID, settings, bootstrap, web_port=settings.web_port,
                  datadir=settings.data_dir / f"worker-{settings.web_port}")
    counts = {spec.name: spec.partitions for spec in topic_specs(settings)}

    def topic(name: str) -> faust.types.TopicT:  # type: ignore[name-defined]
        return raw_topic(app, name, counts[name])

    def output(name: str) -> BatchedTopic:
        return output_topic(app, name, counts[name])

    dead_letters = output(DEAD_LETTER)
    risk_inputs = topic(RISK_INPUTS)
    # written by the consensus stage (prices) and the sequencer (account events, reports)
    entries = output(RISK_INPUTS)
    # one price per asset in flight between the two stages (streams/app/pricegate.py)
    gate = PriceGate()
    install_consensus(app, settings, ticks=topic(ORACLE_TICKS), prices=output(ORACLE_PRICES),
                      risk_inputs=entries, dead_letters=dead_letters, gate=gate)
    install_sequencer(
        app, settings,
        sources=app.topic(ACCOUNT_EVENTS, EXECUTION_REPORTS,
                          key_serializer="raw", value_serializer="raw"),
        risk_inputs=entries, dead_letters=dead_letters,
    )
    install_risk(app, settings, risk_inputs=risk_inputs,
                 commands={chain: output(exec_commands(chain)) for chain in settings.chains},
                 dead_letters=dead_letters, refusals=output(RISK_REFUSALS), gate=gate,
                 bootstrap=bootstrap)
    return app
