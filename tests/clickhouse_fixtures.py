"""ClickHouse fixtures (embedded chdb and a real server); being written."""
