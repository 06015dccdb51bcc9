"""Progress of a benchmark variant process, written to a JSON file the harness polls.

The variant keeps its counters and the wall-clock instants that bound its measurement
(first observation consumed, last revaluation done) in memory, stamped in line with the
work; a daemon thread writes them out every 0.1 s (atomically: temp file + rename).
Standard library only: the Quix Streams variant imports it from its own virtualenv.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

INTERVAL_S = 0.1


class Status:
    """Counters and instants of one variant process."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path else None
        self.counters: dict[str, int] = {}
        self.instants: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-status", daemon=True)

    def start(self) -> Status:
        """Start writing in the background (no-op without a path)."""
        if self.path is not None:
            self._thread.start()
        return self

    def add(self, name: str, n: int = 1) -> None:
        """Add `n` to a counter."""
        self.counters[name] = self.counters.get(name, 0) + n

    def first(self, name: str) -> None:
        """Stamp instant `name` now unless it is stamped already."""
        if name not in self.instants:
            self.instants[name] = time.time()

    def last(self, name: str) -> None:
        """Stamp instant `name` now (the latest stamp wins)."""
        self.instants[name] = time.time()

    def snapshot(self) -> dict[str, Any]:
        """What the file holds."""
        return {"t": time.time(), "pid": os.getpid(), "peak_rss": peak_rss(),
                "counters": dict(self.counters), "instants": dict(self.instants)}

    def write(self) -> None:
        """Write the file now."""
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, self.path)

    def stop(self) -> None:
        """Stop the writer and write one last time."""
        self._stop.set()
        self.write()

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self.write()


def peak_rss(pid: int | str = "self") -> int:
    """Peak resident set size of a process, bytes (VmHWM; 0 where /proc is unavailable).

    Not getrusage's ru_maxrss: Linux keeps that across exec, so a child forked from a big
    parent reports the parent's size."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status a variant wrote (None before its first write)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
