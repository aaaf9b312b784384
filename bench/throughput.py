"""Throughput overhead: nginx + wrk on loopback with the agent off, on, and packet capture on.

Debian's nginx (one worker, ``return 200`` of a 64 B body, no access log) serves wrk (one thread,
16 connections) in two shapes: ``persistent`` (keep-alive) and ``churn`` (``Connection: close``: one
TCP connection per request).  Each round runs the three modes back to back on the same load:

- ``off``: nothing attached;
- ``agent``: the agent from this checkout with its default settings (so ``bpf_stats`` on, measuring a
  tenth of each poll interval), started before and stopped after the measured window;
- ``capture``: ``tcpdump -i lo -w /dev/null``, the traditional way to see the same traffic.

The ratio of a mode is its requests/s over ``off`` in the same round, so drift of the machine
cancels; the result is the median over rounds.  During each agent window the bench also reads the
agent's CPU (on-CPU time of all its threads, /proc/<pid>/task/*/schedstat, in millicores), its peak
RSS (VmHWM) and the per-program ``run_time_ns / run_cnt`` from its own ``flowlens_agent_bpf_*``
metrics.  wrk's one thread is the bottleneck: perf shows it on-CPU the whole window while the other
core idles 10-25%, and the loopback softirq work of both ends of a connection (handshake, close) runs
on its CPU, so every nanosecond the kernel spends for us on that path shows up in the ratio.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from bench.collector import rss_mb
from tests.pods.agent import AgentProc, Sample, free_port

SHAPES = ("persistent", "churn")
MODES = ("off", "agent", "capture")
BODY = "0123456789abcdef" * 4

NGINX_CONF = """worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 100000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ return 200 "{body}"; }}
  }}
}}
"""


def need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise SystemExit(f"bench: missing {', '.join(missing)} (make bench installs them with apt-get)")


@contextmanager
def nginx(tmp: Path) -> Iterator[int]:
    """nginx on a free loopback port for the duration of the block; yields the port."""
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp, port=port, body=BODY))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["curl", "-fs", f"http://127.0.0.1:{port}/"], capture_output=True).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def wrk(port: int, shape: str, seconds: int) -> float:
    """Requests per second wrk reached (non-2xx or socket errors make the run invalid)."""
    cmd = ["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    if shape == "churn":
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or re.search(r"Socket errors: connect [1-9]", out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(m.group(1))


@contextmanager
def capture() -> Iterator[None]:
    """tcpdump on loopback writing every packet to /dev/null, once it says it is listening."""
    proc = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-w", "/dev/null"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        if "listening" not in line:
            raise RuntimeError(f"tcpdump: {line}")
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def task_cpu(pid: int) -> dict[str, int]:
    """On-CPU nanoseconds of each thread of ``pid`` (/proc/<pid>/task/*/schedstat; /proc/<pid>/stat counts
    in 10 ms ticks, too coarse for an agent that polls a few milliseconds every 5 s)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[task.name] = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended
    return out


def cpu_seconds(before: dict[str, int], after: dict[str, int]) -> float:
    """CPU of the threads alive at both reads (the short-lived /metrics threads of the reads excluded)."""
    return sum(after[t] - before[t] for t in before.keys() & after.keys()) / 1e9


def bpf_runs(s: Sample) -> dict[str, tuple[float, float]]:
    """program -> (ns, runs) from the agent's flowlens_agent_bpf_* counters."""
    out: dict[str, tuple[float, float]] = {}
    for (name, lab), v in s.items():
        if name == "flowlens_agent_bpf_runs_total":
            prog = dict(lab)["program"]
            ns = s[("flowlens_agent_bpf_run_seconds_total", lab)] * 1e9
            out[prog] = (ns, v)
    return out


@dataclass
class Shape:
    """Raw numbers of one load shape, per round."""

    rps: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    millicores: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    bpf: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # program -> [(ns, runs)]

    def ratios(self, mode: str) -> list[float]:
        return [m / o for m, o in zip(self.rps[mode], self.rps["off"])]

    def ratio(self, mode: str) -> float:
        return median(self.ratios(mode))

    def noise(self) -> float:
        """Range of ``off`` req/s over rounds, as a fraction of their median: the machine's drift."""
        off = self.rps["off"]
        return (max(off) - min(off)) / median(off)

    def ns_per_event(self, prog: str) -> float:
        runs = self.bpf[prog]
        return sum(ns for ns, _ in runs) / max(sum(n for _, n in runs), 1)

    def events_per_s(self, prog: str, seconds: int) -> float:
        return median(n for _, n in self.bpf[prog]) / seconds


def run_agent(tmp: Path, port: int, shape: str, seconds: int, out: Shape) -> float:
    agent = AgentProc(tmp, {}).start()
    try:
        assert agent.proc is not None
        pid = agent.proc.pid
        before = bpf_runs(agent.samples())
        cpu0 = task_cpu(pid)
        t0 = time.monotonic()
        rps = wrk(port, shape, seconds)
        cpu, wall = cpu_seconds(cpu0, task_cpu(pid)), time.monotonic() - t0
        after = bpf_runs(agent.samples())
        out.millicores.append(1000 * cpu / wall)
        out.rss_mb.append(rss_mb(pid=pid))
        for prog, (ns, n) in after.items():
            ns0, n0 = before.get(prog, (0.0, 0.0))
            if n > n0:
                out.bpf.setdefault(prog, []).append((ns - ns0, n - n0))
    finally:
        agent.stop()
    return rps


def measure(rounds: int, seconds: int, log: object = print) -> dict[str, Shape]:
    need("nginx", "wrk", "tcpdump", "curl")
    results = {s: Shape() for s in SHAPES}
    with tempfile.TemporaryDirectory(prefix="flowlens-bench-") as d, nginx(Path(d)) as port:
        for shape in SHAPES:
            wrk(port, shape, 1)  # warm-up, not counted
            for r in range(rounds):
                res = results[shape]
                res.rps["off"].append(wrk(port, shape, seconds))
                res.rps["agent"].append(run_agent(Path(d), port, shape, seconds, res))
                with capture():
                    res.rps["capture"].append(wrk(port, shape, seconds))
                log(f"  {shape} round {r + 1}/{rounds}: " +
                    ", ".join(f"{m} {res.rps[m][-1]:,.0f}/s" for m in MODES))  # type: ignore[operator]
    return results
