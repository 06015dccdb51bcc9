-- Archive of topic aps.deadletter, values aps.DeadLetter.
-- Input a stage refused, with the reason. event_time = the input's event time, or the
-- dead letter's Kafka timestamp when unknown (-1 in record). The payload is hex in record.
-- Dedup: one row per Kafka message; re-archiving it (after a crash) inserts a copy that
-- ReplacingMergeTree collapses on merge. Query with FINAL (or count distinct coordinates).
CREATE TABLE IF NOT EXISTS dead_letters
(
    topic            String,
    kafka_partition  Int32,
    kafka_offset     Int64,
    kafka_key        String,
    kafka_timestamp  Int64,
    event_time       Int64,
    event_dt         DateTime('UTC'),
    archived_at      DateTime('UTC'),
    stage            String,
    reason           String,
    detail           String,
    source_topic     String,
    source_partition Int32,
    source_offset    Int64,
    source_key       String,
    payload_size     Int64,
    record           String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_dt)
ORDER BY (topic, kafka_partition, kafka_offset, kafka_timestamp);
