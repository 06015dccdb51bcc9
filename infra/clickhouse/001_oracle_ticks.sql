-- Archive of topic oracle.ticks, values aps.OracleObservation.
-- Raw oracle observations as published (Chainlink rounds, Pyth updates).
-- event_time = received_at. raw_price: Chainlink answer or Pyth price, an exact integer as text;
-- Pyth: price = raw_price * 10^expo; Chainlink decimals are per feed (feeds config).
-- source_time: Chainlink updated_at / Pyth publish_time, epoch seconds.
-- Dedup: one row per Kafka message; re-archiving it (after a crash) inserts a copy that
-- ReplacingMergeTree collapses on merge. Query with FINAL (or count distinct coordinates).
CREATE TABLE IF NOT EXISTS oracle_ticks
(
    topic           String,
    kafka_partition Int32,
    kafka_offset    Int64,
    kafka_key       String,
    kafka_timestamp Int64,
    event_time      Int64,
    event_dt        DateTime('UTC'),
    archived_at     DateTime('UTC'),
    chain           String,
    source          String,
    feed_id         String,
    body_type       String,
    round_id        String,
    raw_price       String,
    expo            Nullable(Int32),
    conf            Nullable(Int64),
    source_time     Int64,
    record          String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_dt)
ORDER BY (topic, kafka_partition, kafka_offset, kafka_timestamp);
