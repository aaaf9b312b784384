"""The agent as a separate process, and a reader of its /metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
Sample = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProc:
    def __init__(self, tmp: Path, settings: dict[str, Any]) -> None:
        self.port = free_port()
        self.config = tmp / "flowlens.yaml"
        self.config.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{self.port}", **settings}))
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20, argv: list[str] | None = None) -> AgentProc:
        """Run the agent from this checkout, or `argv` (which must read `self.config`), until ready."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = argv or [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)]
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                if self.get("/readyz").startswith("ready"):
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError(f"agent not ready in {timeout}s: {self.log.read_text()}")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return str(r.read().decode())

    def samples(self) -> Sample:
        out: Sample = {}
        for fam in text_string_to_metric_families(self.get("/metrics")):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def settle(self, polls: int = 2, timeout: float = 20) -> Sample:
        """Wait until the agent has polled `polls` more times, then read /metrics.

        Call after the traffic finished: every kernel update happened before
        those polls started, so the values read are final."""
        def count() -> float:
            return self.samples()[("flowlens_agent_polls_total", frozenset())]
        target = count() + polls
        deadline = time.monotonic() + timeout
        while count() < target:
            if time.monotonic() > deadline:
                raise TimeoutError("agent stopped polling")
            time.sleep(0.05)
        return self.samples()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def find(samples: Sample, name: str, **labels: str) -> list[float]:
    """Values of every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return [v for (n, lab), v in samples.items() if n == name and want <= lab]


def one(samples: Sample, name: str, **labels: str) -> float:
    vals = find(samples, name, **labels)
    assert len(vals) == 1, f"{name}{labels}: expected one series, got {len(vals)}"
    return vals[0]
