"""No process is left behind: children of a killed parent go away with it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

PARENT = (
    "from streams.infra.broker import EmbeddedBroker\n"
    "import time\n"
    "broker = EmbeddedBroker().start()\n"
    "print(broker.port, flush=True)\n"
    "time.sleep(120)\n"
)


def _running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def test_embedded_broker_dies_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    port = parent.stdout.readline().strip()
    pattern = f"listener-url tcp://127.0.0.1:{port}"
    assert port and _running(pattern)
    parent.kill()  # SIGKILL: the parent runs no cleanup at all
    parent.wait()
    deadline = time.monotonic() + 10
    while _running(pattern) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pattern)
