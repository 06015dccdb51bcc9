"""Operator errors at start-up: `aps worker`, `aps executor`, `aps topics`, `aps archiver`
and `aps run` exit non-zero within seconds with one clear line on stderr, no traceback.

Each case runs the real `aps` command in a subprocess. The partition-count case runs
against the session broker (tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streams.config import load_settings
from streams.infra.broker import create_topics
from streams.topics import topic_specs

pytestmark = pytest.mark.integration

UNREACHABLE = "127.0.0.1:1"
# the broker check gives up after 10 s; interpreter start and imports take a few more
BROKER_BOUND_S = 20.0


def _environment(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without its APS_* settings, plus `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("APS_")}
    full.update(env)
    return full


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start `aps args` with only `env` as APS_* settings."""
    return subprocess.Popen([sys.executable, "-m", "streams", *args], env=_environment(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def aps(args: list[str], env: dict[str, str], timeout: float = 60.0
        ) -> tuple[int, str, float]:
    """Run `aps args` with only `env` as APS_* settings; (exit code, stderr, seconds)."""
    started = time.monotonic()
    with _start(args, env) as proc:
        _, stderr = _communicate(proc, timeout)
    return proc.returncode, stderr, time.monotonic() - started


def _communicate(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """(stdout, stderr) of `proc` once it exits; killed if it runs past `timeout`."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


def one_clear_line(stderr: str, *needles: str) -> str:
    """The single non-empty stderr line, checked for `needles` and for no traceback."""
    assert "Traceback" not in stderr and "╭" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Settings that would pass every local check, with a broker nobody listens on (and keys
    of their own: an external broker refuses the development keys first)."""
    return {"APS_DATA_DIR": str(tmp_path / "data"), "APS_KAFKA_BOOTSTRAP": UNREACHABLE,
            "APS_COMMAND_KEY": "c" * 64, "APS_REPORT_KEY": "r" * 64}


WORKER = ["worker"]
EXECUTOR = ["executor", "--chain", "ethereum"]


@pytest.mark.parametrize("command", [WORKER, EXECUTOR, ["archiver"], ["run"]],
                         ids=["worker", "executor", "archiver", "run"])
@pytest.mark.parametrize("where", ["/proc/x", "under-a-file"])
def test_a_data_dir_that_cannot_be_created(command: list[str], where: str,
                                           env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    env["APS_DATA_DIR"] = "/proc/x" if where == "/proc/x" else str(tmp_path / "file" / "d")
    code, stderr, _ = aps(command, env)
    assert code != 0
    one_clear_line(stderr, "APS_DATA_DIR", "cannot be created")


@pytest.mark.parametrize("case", ["missing", "directory", "malformed"])
@pytest.mark.parametrize(("command", "variable"), [
    (WORKER, "APS_FEEDS_FILE"), (EXECUTOR, "APS_CHAINS_FILE"),
    (["run"], "APS_FEEDS_FILE"), (["run"], "APS_CHAINS_FILE")],
    ids=["worker-feeds", "executor-chains", "run-feeds", "run-chains"])
def test_a_missing_unreadable_or_malformed_file(command: list[str], variable: str, case: str,
                                               env: dict[str, str], tmp_path: Path) -> None:
    malformed = tmp_path / "malformed.toml"
    malformed.write_text("[default\nfee_bps = 1\n")
    env[variable] = {"missing": str(tmp_path / "missing.toml"), "directory": str(tmp_path),
                     "malformed": str(malformed)}[case]
    code, stderr, _ = aps(command, env)
    assert code == 2
    one_clear_line(stderr, variable)


@pytest.mark.parametrize("command", [WORKER, EXECUTOR, ["archiver"]],
                         ids=["worker", "executor", "archiver"])
def test_a_web_port_in_use(command: list[str], env: dict[str, str], listening: int) -> None:
    env["APS_WEB_PORT"] = str(listening)
    code, stderr, _ = aps(command, env)
    assert code != 0
    one_clear_line(stderr, f"APS_WEB_PORT {listening} is not free")


def test_an_unreachable_broker_within_a_bounded_time(env: dict[str, str],
                                                     tmp_path: Path) -> None:
    """Every command that needs the broker gives up on it within the bound (the commands
    run side by side: each spends its time waiting for the broker)."""
    commands = {"worker": WORKER, "executor": EXECUTOR, "topics": ["topics"],
                "archiver": ["archiver"], "run": ["run"]}
    started = time.monotonic()
    running = {name: _start(args, {**env, "APS_DATA_DIR": str(tmp_path / name)})
               for name, args in commands.items()}
    for name, proc in running.items():
        stdout, stderr = _communicate(proc, 60)
        assert proc.returncode == 1, (name, stderr)
        # what is wrong and what to do about it, and none of librdkafka's own errors
        one_clear_line(stderr, f"cannot reach the Kafka broker at {UNREACHABLE}",
                       "APS_KAFKA_BOOTSTRAP")
        assert "%3|" not in stdout + stderr, name
    assert time.monotonic() - started < BROKER_BOUND_S


@pytest.mark.parametrize("command", [WORKER, EXECUTOR, ["topics"], ["run"]],
                         ids=["worker", "executor", "topics", "run"])
def test_partitions_differing_from_the_existing_topics(command: list[str], kafka_bootstrap: str,
                                                       tmp_path: Path) -> None:
    chains = f"ethereum,pf{uuid.uuid4().hex[:8]}"  # a topic of this test's own, besides
    existing = load_settings({}, kafka_bootstrap=kafka_bootstrap, chains=tuple(chains.split(",")))
    create_topics(kafka_bootstrap, topic_specs(existing))
    wrong = existing.partitions + 2
    code, stderr, seconds = aps(command, {
        "APS_KAFKA_BOOTSTRAP": kafka_bootstrap, "APS_DATA_DIR": str(tmp_path / "data"),
        "APS_CHAINS": chains, "APS_PARTITIONS": str(wrong),
        "APS_COMMAND_KEY": "c" * 64, "APS_REPORT_KEY": "r" * 64})
    assert code == 2
    line = one_clear_line(stderr, f"have {existing.partitions} partitions",
                          f"APS_PARTITIONS={wrong}",
                          f"set APS_PARTITIONS={existing.partitions}")
    assert kafka_bootstrap in line
    assert seconds < BROKER_BOUND_S


def test_topics_with_the_configured_partitions_still_start(kafka_bootstrap: str) -> None:
    chains = f"pf{uuid.uuid4().hex[:8]}"
    full = {k: v for k, v in os.environ.items() if not k.startswith("APS_")}
    full.update({"APS_KAFKA_BOOTSTRAP": kafka_bootstrap, "APS_CHAINS": chains})
    proc = subprocess.run([sys.executable, "-m", "streams", "topics"], env=full,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"exec.{chains}.commands\t4\taps.ScalingCommand\tcreated" in proc.stdout
