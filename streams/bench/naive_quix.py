"""Variant (c) of `aps bench pipeline`: the same job in Quix Streams, written plainly.

What a team writes first with Quix Streams (3.28), one message per function call:

- a dataframe on oracle.ticks: ``apply(expand=True)`` runs the consensus engine (in
  memory) on each observation and expands each consensus price into one revaluation
  request per account holding the asset, sent ``to_topic`` bench.quix.revalue keyed by
  account id (JSON);
- account.events ``concat`` bench.quix.revalue (co-partitioned, 4 partitions) into one
  stateful dataframe: the account's state lives in Quix State (RocksDB, changelogged) under
  the account id; an account event updates it, a request revalues that one account
  (streams.bench.naive_job.revalue, one Python call) and evaluates its rules; each command
  (Avro, signed) goes ``to_topic`` exec.<chain>.commands, the topic picked per message.

Like variant (b), the index of which accounts hold which asset is kept in this process's
memory. Runs in its own virtualenv (.venv-quix, bench/requirements-quix.txt: Quix Streams
needs an older confluent-kafka than APS pins) with the project on PYTHONPATH.

Run as a process: ``python -m streams.bench.naive_quix --bootstrap HOST:PORT --state-dir D
--status FILE --feeds FEEDS.toml``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.models import SerializationContext, Serializer, Topic

from streams.bench.naive_job import (
    Fanout,
    NaiveConfig,
    Quote,
    apply_event,
    decide,
    encode_command,
    exposures,
    new_account,
    revalue,
)
from streams.bench.status import Status
from streams.codecs import decode
from streams.config import DEFAULT_CHAINS, DEV_COMMAND_KEY
from streams.domain import AccountEvent
from streams.errors import CodecError
from streams.oracle.feeds import load_feeds
from streams.topics import ACCOUNT_EVENTS, ORACLE_TICKS, exec_commands

CONSUMER_GROUP = "bench-naive-quix"
REQUESTS_TOPIC = "bench.quix.revalue"
STATE_KEY = "account"


class CommandSerializer(Serializer):
    """Writes the payload of a (chain, payload) pair."""

    def __call__(self, value: tuple[str, bytes], ctx: SerializationContext) -> bytes:
        return value[1]


class NaiveQuixJob:
    """The two per-message functions of the Quix app, with their shared state."""

    def __init__(self, feeds_file: Path, status: Status) -> None:
        self.fanout = Fanout(load_feeds(feeds_file))
        self.config = NaiveConfig.default()
        self.status = status

    def on_tick(self, payload: bytes) -> list[list[Any]]:
        """Revaluation requests ([account id, quote]) caused by one observation."""
        status = self.status
        status.first("first_tick_at")
        out: list[list[Any]] = []
        for quote, holders in self.fanout.observe(payload):
            body = quote.to_json()
            out.extend([account_id, body] for account_id in holders)
            status.add("requests", len(holders))
            status.add("prices")
        status.add("ticks")
        status.last("last_tick_at")
        return out

    def on_input(self, value: Any, state: Any) -> list[tuple[str, bytes]]:
        """An account event (bytes) or a revaluation request ([account id, quote])."""
        if isinstance(value, bytes | bytearray):
            self._apply_account_event(bytes(value), state)
            return []
        status = self.status
        account = state.get(STATE_KEY)
        if account is None:
            status.add("unknown_accounts")
            return []
        quote = Quote.from_json(value[1])
        figures = revalue(account, quote, self.config)
        emitted = decide(account, quote, figures, DEV_COMMAND_KEY)
        if emitted or len(account["groups"]) > 1:
            state.set(STATE_KEY, account)
        status.add("commands", len(emitted))
        status.add("revaluations")
        status.last("last_revaluation_at")
        return [(c.chain, encode_command(c)) for c in emitted]

    def _apply_account_event(self, payload: bytes, state: Any) -> None:
        try:
            event = decode(payload, AccountEvent)
        except CodecError:
            self.status.add("bad_account_events")
            return
        account = apply_event(state.get(STATE_KEY) or new_account(event.account_id), event)
        state.set(STATE_KEY, account)
        self.fanout.expose(event.account_id, exposures(account))
        self.status.add("account_events")


def create_app(bootstrap: str, state_dir: Path, job: NaiveQuixJob) -> Application:
    """The Quix Streams application of variant (c)."""
    app = Application(
        broker_address=bootstrap, consumer_group=CONSUMER_GROUP, auto_offset_reset="earliest",
        state_dir=str(state_dir), loglevel="WARNING",
        # Tansu completes a group join after half the session timeout (as for APS's Faust)
        consumer_extra_config={"session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000},
    )
    ticks = app.topic(ORACLE_TICKS, key_deserializer="bytes", value_deserializer="bytes")
    requests = app.topic(REQUESTS_TOPIC, key_serializer="str", value_serializer="json",
                         key_deserializer="str", value_deserializer="json")
    events = app.topic(ACCOUNT_EVENTS, key_deserializer="str", value_deserializer="bytes")
    commands: dict[str, Topic] = {
        chain: app.topic(exec_commands(chain), key_serializer="str",
                         value_serializer=CommandSerializer())
        for chain in DEFAULT_CHAINS}

    fan = app.dataframe(ticks).apply(job.on_tick, expand=True)
    fan.to_topic(requests, key=lambda request: request[0])
    merged = app.dataframe(events).concat(app.dataframe(requests))
    out = merged.apply(job.on_input, stateful=True, expand=True)
    out.to_topic(lambda value, key, timestamp, headers: commands[value[0]])
    return app


def main() -> None:
    """Run the application until stopped."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--feeds", required=True)
    args = parser.parse_args()
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    status = Status(args.status).start()
    job = NaiveQuixJob(Path(args.feeds), status)
    try:
        create_app(args.bootstrap, Path(args.state_dir), job).run()
    finally:
        status.stop()


if __name__ == "__main__":
    main()
