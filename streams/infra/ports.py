"""Free local TCP ports and waiting for a listener."""

from __future__ import annotations

import socket
import time

from streams.errors import InfraError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, what: str) -> None:
    """Block until host:port accepts connections, or raise InfraError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise InfraError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")
