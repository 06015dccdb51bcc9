"""Variant (d) of `aps bench pipeline`: the ceiling of a Python Kafka worker on this broker.

confluent-kafka consumes oracle.ticks (batched `consume`), fastavro decodes every
observation (single-object header checked, body read with the writer schema), and an
equally sized message (the payload's bytes) is produced to bench.ceiling.out for each; no
other logic. It stops after `--observations` messages, flushes, and writes its status.

Run as a process: ``python -m streams.bench.ceiling --bootstrap HOST:PORT --observations N
--status FILE``.
"""

from __future__ import annotations

import argparse
import io

from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro import schemaless_reader

from streams.bench.status import Status
from streams.codecs.avro import HEADER_LEN, MAGIC, registry
from streams.topics import ORACLE_TICKS

OUTPUT_TOPIC = "bench.ceiling.out"
BATCH = 1000


def run(bootstrap: str, observations: int, status: Status) -> None:
    """Consume, decode and re-produce `observations` messages."""
    schema = registry().get("aps.OracleObservation").parsed
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-ceiling",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10,
                         "log.connection.close": False})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "enable.idempotence": False, "log.connection.close": False})
    consumer.assign([TopicPartition(ORACLE_TICKS, 0, 0)])
    seen = 0
    while seen < observations:
        for message in consumer.consume(BATCH, 0.5):
            if message.error() is not None:
                continue
            status.first("first_tick_at")
            value = message.value()
            if value[:2] != MAGIC:
                raise ValueError("not single-object encoded")
            schemaless_reader(io.BytesIO(value[HEADER_LEN:]), schema)
            while True:
                try:
                    producer.produce(OUTPUT_TOPIC, key=message.key(), value=value)
                    break
                except BufferError:
                    producer.poll(0.01)
            seen += 1
            status.add("ticks")
        producer.poll(0)
    producer.flush(60)
    status.last("last_done_at")
    consumer.close()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--observations", type=int, required=True)
    parser.add_argument("--status", required=True)
    args = parser.parse_args()
    status = Status(args.status).start()
    try:
        run(args.bootstrap, args.observations, status)
    finally:
        status.stop()


if __name__ == "__main__":
    main()
