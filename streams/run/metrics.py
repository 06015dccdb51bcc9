"""Reading the Prometheus metrics the run's processes serve (for the summary)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int, timeout: float = 2.0) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                    float]:
    """Every sample served at http://127.0.0.1:`port`/metrics, by (name, sorted labels);
    empty if the process does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def stage_wait_max(ports: Iterable[int]) -> dict[str, float]:
    """Worst `aps_stage_wait_max_seconds` per stage over the processes on `ports`."""
    worst: dict[str, float] = {}
    for port in ports:
        for (name, labels), value in scrape(port).items():
            if name != "aps_stage_wait_max_seconds":
                continue
            stage = dict(labels).get("stage", "?")
            worst[stage] = max(worst.get(stage, 0.0), value)
    return worst


WaitBuckets = dict[str, dict[float, float]]


def stage_wait_buckets(ports: Iterable[int]) -> WaitBuckets:
    """Cumulative `aps_stage_wait_seconds` bucket counts per stage (upper bound -> batches),
    summed over the processes on `ports`."""
    out: WaitBuckets = {}
    for port in ports:
        for (name, labels), value in scrape(port).items():
            if name != "aps_stage_wait_seconds_bucket":
                continue
            tags = dict(labels)
            buckets = out.setdefault(tags.get("stage", "?"), {})
            bound = float(tags["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return out


def worst_wait_between(before: WaitBuckets, after: WaitBuckets) -> dict[str, float]:
    """Per stage, the smallest bucket bound that holds every batch started between the two
    snapshots: an upper bound of the worst lag in that window (inf: beyond the last bucket)."""
    worst = {}
    for stage, buckets in after.items():
        earlier = before.get(stage, {})
        delta = sorted((bound, count - earlier.get(bound, 0.0))
                       for bound, count in buckets.items())
        total = delta[-1][1] if delta else 0.0
        if total <= 0:
            continue
        worst[stage] = next(bound for bound, count in delta if count >= total)
    return worst


def stage_busy(ports: Iterable[int]) -> dict[str, float]:
    """Seconds each stage spent processing batches (`aps_batch_seconds_sum`), summed over
    the processes on `ports`."""
    busy: dict[str, float] = {}
    for port in ports:
        for (name, labels), value in scrape(port).items():
            if name == "aps_batch_seconds_sum":
                stage = dict(labels).get("stage", "?")
                busy[stage] = busy.get(stage, 0.0) + value
    return busy


def archive_lag_max(ports: Iterable[int]) -> float | None:
    """Worst archive delay (`aps_archive_delay_seconds`: age of a batch's oldest message
    when it was committed), from the largest histogram bucket that holds every batch: an
    upper bound; None if no process serves it."""
    for port in ports:
        buckets = sorted((float(dict(labels)["le"]), value)
                         for (name, labels), value in scrape(port).items()
                         if name == "aps_archive_delay_seconds_bucket")
        if not buckets:
            continue
        total = buckets[-1][1]
        for bound, count in buckets:
            if count >= total:
                return bound
    return None


def archived_rows(port: int) -> int | None:
    """Rows the archiver on `port` has inserted (`aps_archived_rows_total`), None if it
    does not answer."""
    samples = scrape(port, timeout=0.5)
    rows = [v for (name, _), v in samples.items() if name == "aps_archived_rows_total"]
    return int(sum(rows)) if samples else None
