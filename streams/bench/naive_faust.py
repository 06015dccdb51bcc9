"""Variant (b) of `aps bench pipeline`: the job as a per-event Faust app, written plainly.

What a team writes first with Faust, one event per agent call:

- agent ``naive-consensus`` on oracle.ticks: for each observation, the consensus engine
  (in memory) and, for each consensus price, one revaluation request per account holding
  the asset, ``await``-sent to bench.faust.revalue keyed by account id (JSON body);
- agent ``naive-accounts`` on account.events + bench.faust.revalue (co-partitioned, 4
  partitions): the account's state in the Faust table ``naive-accounts`` (RocksDB, JSON
  bytes, changelogged); an account event updates it, a request revalues that one account
  (streams.bench.naive_job.revalue, one Python call) and evaluates its rules; commands are
  Avro-encoded, signed and ``await``-sent to exec.<chain>.commands. The state is written
  back when a command changed it (or when the account spans several assets).

The index of which accounts hold which asset lives in this process's memory (fed by the
accounts agent): a single-worker shortcut a first version takes. Counters and timing go to
the status file (streams.bench.status).

Run as a process: ``python -m streams.bench.naive_faust`` with BENCH_BOOTSTRAP,
BENCH_DATA_DIR, BENCH_STATUS, BENCH_WEB_PORT and BENCH_FEEDS in the environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import faust
from faust.types import StreamT

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

APP_ID = "bench-naive-faust"
REQUESTS_TOPIC = "bench.faust.revalue"
PARTITIONS = 4


def create_app(bootstrap: str, datadir: Path, web_port: int, feeds_file: Path,
               status: Status) -> faust.App:
    """The Faust app of variant (b)."""
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        APP_ID, broker=f"kafka://{bootstrap}", store="rocksdb://", datadir=str(datadir),
        web_port=web_port, web_host="127.0.0.1", web_bind="127.0.0.1",
        topic_partitions=PARTITIONS, consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0, broker_heartbeat_interval=2.0, autodiscover=False,
        key_serializer="raw", value_serializer="raw", web_stats_enabled=False,
        web_tables_enabled=False,
    )
    ticks = app.topic(ORACLE_TICKS, partitions=1)
    requests = app.topic(REQUESTS_TOPIC, partitions=PARTITIONS)
    inputs = app.topic(ACCOUNT_EVENTS, REQUESTS_TOPIC)
    commands = {chain: app.topic(exec_commands(chain), partitions=PARTITIONS)
                for chain in DEFAULT_CHAINS}
    accounts = app.Table("naive-accounts", partitions=PARTITIONS, key_type=bytes,
                         value_type=bytes)
    fanout = Fanout(load_feeds(feeds_file))
    config = NaiveConfig.default()

    async def consensus(stream: StreamT) -> None:
        async for payload in stream:
            status.first("first_tick_at")
            for quote, holders in fanout.observe(payload):
                body = json.dumps(quote.to_json()).encode()
                for account_id in holders:
                    await requests.send(key=account_id.encode(), value=body)
                status.add("requests", len(holders))
                status.add("prices")
            status.add("ticks")
            status.last("last_tick_at")

    async def on_input(stream: StreamT) -> None:
        async for event in stream.events():
            message = event.message
            if message.topic == ACCOUNT_EVENTS:
                _apply_account_event(message.value)
                continue
            key = message.key
            raw = accounts.get(key)
            if raw is None:
                status.add("unknown_accounts")
                continue
            state = json.loads(raw)
            quote = Quote.from_json(json.loads(message.value))
            figures = revalue(state, quote, config)
            emitted = decide(state, quote, figures, DEV_COMMAND_KEY)
            if emitted or len(state["groups"]) > 1:
                accounts[key] = json.dumps(state).encode()
            for command in emitted:
                await commands[command.chain].send(key=key, value=encode_command(command))
            status.add("commands", len(emitted))
            status.add("revaluations")
            status.last("last_revaluation_at")

    def _apply_account_event(payload: bytes) -> None:
        try:
            event = decode(payload, AccountEvent)
        except CodecError:
            status.add("bad_account_events")
            return
        key = event.account_id.encode()
        raw = accounts.get(key)
        state = apply_event(json.loads(raw) if raw else new_account(event.account_id), event)
        accounts[key] = json.dumps(state).encode()
        fanout.expose(event.account_id, exposures(state))
        status.add("account_events")

    app.agent(ticks, name="naive-consensus")(consensus)
    app.agent(inputs, name="naive-accounts")(on_input)
    return app


def main() -> None:
    """Run the worker until stopped (configuration from BENCH_* variables)."""
    env = os.environ
    status = Status(env["BENCH_STATUS"]).start()
    app = create_app(env["BENCH_BOOTSTRAP"], Path(env["BENCH_DATA_DIR"]),
                     int(env["BENCH_WEB_PORT"]), Path(env["BENCH_FEEDS"]), status)
    try:
        faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
    finally:
        status.stop()


if __name__ == "__main__":
    main()
