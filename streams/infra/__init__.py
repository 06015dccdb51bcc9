"""Launch helpers for local infrastructure: the embedded broker and ClickHouse server."""
