-- Archive of topic oracle.prices, values aps.ConsensusPrice.
-- Trusted price per asset from the consensus stage. event_time = consensus event time.
-- Dedup: one row per Kafka message; re-archiving it (after a crash) inserts a copy that
-- ReplacingMergeTree collapses on merge. Query with FINAL (or count distinct coordinates).
CREATE TABLE IF NOT EXISTS consensus_prices
(
    topic            String,
    kafka_partition  Int32,
    kafka_offset     Int64,
    kafka_key        String,
    kafka_timestamp  Int64,
    event_time       Int64,
    event_dt         DateTime('UTC'),
    archived_at      DateTime('UTC'),
    asset            String,
    price            Float64,
    confidence       Float64,
    status           String,
    dispersion_bps   Float64,
    sources_used     Array(String),
    sources_excluded Array(String),
    unhealthy_chains Array(String),
    sequence         Int64,
    record           String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_dt)
ORDER BY (topic, kafka_partition, kafka_offset, kafka_timestamp);
