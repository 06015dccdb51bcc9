-- Archive of messages from any archived topic that could not be decoded.
-- Raw value and key are kept as hex, with the reason, so nothing is lost.
-- reason: bad_framing | unknown_schema | malformed_avro | wrong_schema | empty_value |
-- unknown_topic | unmappable; event_time = Kafka timestamp.
-- Dedup: one row per Kafka message; re-archiving it (after a crash) inserts a copy that
-- ReplacingMergeTree collapses on merge. Query with FINAL (or count distinct coordinates).
CREATE TABLE IF NOT EXISTS undecodable_messages
(
    topic           String,
    kafka_partition Int32,
    kafka_offset    Int64,
    kafka_key       String,
    kafka_timestamp Int64,
    event_time      Int64,
    event_dt        DateTime('UTC'),
    archived_at     DateTime('UTC'),
    reason          String,
    detail          String,
    expected_schema String,
    payload_size    Int64,
    payload_hex     String,
    key_hex         String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_dt)
ORDER BY (topic, kafka_partition, kafka_offset, kafka_timestamp);
