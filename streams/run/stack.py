"""The local stack: broker (embedded Tansu unless APS_KAFKA_BOOTSTRAP is set), topics, and one
process each for the pipeline worker, every chain's executor and the archiver.

Each child runs in its own process group and is stopped with SIGTERM (then SIGKILL after a
grace period), so Ctrl-C or an error leaves no process behind. The archiver runs at a lower
scheduling priority (`ARCHIVER_NICE`): on a busy machine the decision path gets the CPU
first and the archive catches up in the gaps (its lag is reported).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from streams.config import DEV_COMMAND_KEY, DEV_REPORT_KEY, Settings
from streams.errors import InfraError
from streams.infra.broker import EmbeddedBroker, create_topics
from streams.infra.ports import free_port
from streams.infra.processes import cpu_seconds, die_with_parent, lower_priority
from streams.topics import topic_specs

ARCHIVER_NICE = 10


@dataclass
class Child:
    """A process of the stack."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    web_port: int


class Stack:
    """Starts and stops the local pipeline processes."""

    def __init__(self, settings: Settings, log_dir: Path, *, archiver: bool = True) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.with_archiver = archiver
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = settings.kafka_bootstrap or ""
        self.children: list[Child] = []
        self.command_key = settings.command_key
        self.report_key = settings.report_key

    def start_broker(self) -> str:
        """Start the embedded broker if needed and create every topic; return bootstrap."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.embedded_broker:
            self.broker = EmbeddedBroker(log_path=self.log_dir / "broker.log").start()
            self.bootstrap = self.broker.bootstrap
            self._run_keys()
        create_topics(self.bootstrap, topic_specs(self.settings))
        return self.bootstrap

    def _run_keys(self) -> None:
        """With the stack's own (embedded) broker, replace the development keys by secrets
        made for this run: the children see APS_KAFKA_BOOTSTRAP set and refuse the public
        development keys (streams.config.check_keys), and nothing outlives the run."""
        if self.command_key == DEV_COMMAND_KEY:
            self.command_key = secrets.token_hex(32)
        if self.report_key == DEV_REPORT_KEY:
            self.report_key = secrets.token_hex(32)

    def start_processes(self, *, worker: bool = True, chains: tuple[str, ...] | None = None,
                        archiver: bool | None = None) -> None:
        """Start the worker, one executor per chain (default: every configured chain) and the
        archiver (default: as configured)."""
        if worker:
            self.start_worker()
        for chain in self.settings.chains if chains is None else chains:
            self.start_executor(chain)
        if self.with_archiver if archiver is None else archiver:
            self.start_archiver()

    def start_archiver(self) -> None:
        """Start the archiver process (at a lower priority, see the module docstring)."""
        self._spawn("archiver", ["archiver"], web_port=free_port(), nice=ARCHIVER_NICE)

    def start_worker(self, name: str = "worker", web_port: int | None = None) -> None:
        """Start one pipeline worker process (several may run: they split the partitions).

        A process's local tables live in a data directory named after its web port: pass
        the `web_port` of a previous process to restart on that process's data directory."""
        self._spawn(name, ["worker"], web_port=web_port or free_port())

    def start_executor(self, chain: str, web_port: int | None = None) -> None:
        """Start the executor process of `chain` (`web_port`: as for `start_worker`)."""
        self._spawn(f"executor-{chain}", ["executor", "--chain", chain],
                    web_port=web_port or free_port())

    def kill_process(self, name: str) -> None:
        """SIGKILL one child (a crash: no flush, no commit, no cleanup) and forget it."""
        for child in [c for c in self.children if c.name == name]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait(timeout=10)
            self.children.remove(child)

    def _spawn(self, name: str, args: list[str], web_port: int, nice: int = 0) -> None:
        env = dict(os.environ)
        env.update({
            "APS_KAFKA_BOOTSTRAP": self.bootstrap,
            "APS_DATA_DIR": str(self.settings.data_dir),
            "APS_PARTITIONS": str(self.settings.partitions),
            "APS_CHAINS": ",".join(self.settings.chains),
            "APS_FEEDS_FILE": str(self.settings.feeds_file),
            "APS_CHAINS_FILE": str(self.settings.chains_file),
            "APS_COMMAND_KEY": self.command_key,
            "APS_REPORT_KEY": self.report_key,
            "APS_WEB_PORT": str(web_port),
            "APS_LOG_LEVEL": self.settings.log_level,
            "APS_FETCH_WAIT_MS": str(self.settings.fetch_wait_ms),
            "APS_RISK_PERSIST_MS": str(self.settings.risk_persist_ms),
            "PYTHONUNBUFFERED": "1",
        })
        if self.settings.clickhouse_url:
            env["APS_CLICKHOUSE_URL"] = self.settings.clickhouse_url
        if self.settings.engine_config is not None:
            # the worker's engines decide with the same settings as the offline twin
            env["APS_ENGINE_CONFIG"] = str(self.settings.engine_config.resolve())
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        def prepare() -> None:
            die_with_parent()
            lower_priority(nice)

        proc = subprocess.Popen([sys.executable, "-m", "streams", *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=prepare)
        log.close()
        self.children.append(Child(name, proc, log_path, web_port))

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each running child and the embedded broker, seconds."""
        pids = {child.name: child.proc.pid for child in self.children}
        if self.broker is not None and self.broker.pid is not None:
            pids["broker"] = self.broker.pid
        used = {name: cpu_seconds(pid) for name, pid in pids.items()}
        return {name: value for name, value in used.items() if value is not None}

    def child(self, name: str) -> Child:
        """The running child called `name`."""
        return next(c for c in self.children if c.name == name)

    def check_alive(self) -> None:
        """Raise InfraError naming the first child that exited, with the tail of its log."""
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                tail = child.log_path.read_text(errors="replace").splitlines()[-25:]
                raise InfraError(f"{child.name} exited with code {code}; last log lines "
                                 f"({child.log_path}):\n" + "\n".join(tail))

    def stop_process(self, name: str, timeout: float = 30.0) -> None:
        """Stop one child gracefully (SIGTERM, then SIGKILL after `timeout`)."""
        for child in [c for c in self.children if c.name == name]:
            _terminate(child.proc, timeout)
            self.children.remove(child)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every child, then the embedded broker."""
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            remaining = max(0.1, deadline - time.monotonic())
            _terminate(child.proc, remaining)
        self.children.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
