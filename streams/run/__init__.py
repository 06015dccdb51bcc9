"""Running the whole pipeline locally: processes, scenario producer, monitor and summary."""
