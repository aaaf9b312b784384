"""The per-CPU memo of the last edge a CLOSE counted into (lifecycle.bpf.c `memos`): connections of two
edges closing in turn on one CPU make nearly every CLOSE fold the other edge's counts out of the memo, and
the walk folds what is left at each poll.  Ground truth: the bytes the test pods moved and the connects
they made."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.bpf.test_edges import edge, health
from tests.pods.agent import AgentProc, one
from tests.pods.net import TRAFFIC, Pod, Pods, wait_closed

N, REQ, RESP = 60, 1_009, 2_017


def on_cpu0(pod: Pod, *args: str) -> subprocess.Popen[str]:
    """traffic.py in `pod`, pinned to CPU 0 with everything else of this test: softirq work runs where the
    packet was sent, so every CLOSE of both edges lands in CPU 0's memo."""
    return subprocess.Popen(pod.cmd("taskset", "-c", "0", sys.executable, str(TRAFFIC), *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(p: subprocess.Popen[str]) -> dict[str, int]:
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_two_edges_closing_in_turn_on_one_cpu_are_exact(pods: Pods, agent: AgentProc) -> None:
    ports = (8124, 8126)
    args = ("--count", str(N), "--request", str(REQ), "--response", str(RESP))
    servers = [on_cpu0(pods["server"], "serve-tcp", pods["server"].ip4, str(p), *args) for p in ports]
    for s in servers:
        assert s.stdout is not None and "listening" in s.stdout.readline()
    clients = [on_cpu0(pods["client"], "client-tcp", pods["server"].ip4, str(p), "--time-connect", *args)
               for p in ports]
    for c in clients:
        moved = result(c)
        del moved["connect_us"]
        assert moved == {"sent": N * REQ, "recv": N * RESP, "ok": N, "failed": 0, "reset": 0}
    for s in servers:
        result(s)
    for port in ports:
        for pod in ("client", "server"):
            wait_closed(port, pods[pod].ns)
    m = agent.settle()
    for port in ports:
        for reporter in ("client", "server"):
            lab = edge(port, "tcp", reporter)
            got = [one(m, f"flowlens_edge_{name}", **lab) for name in
                   ("sent_bytes_total", "received_bytes_total", "active_connections")]
            got.append(one(m, "flowlens_edge_connections_total", result="success", **lab))
            assert got == [N * REQ, N * RESP, 0, N], (port, reporter, got, health(m))
        client = edge(port, "tcp", "client")
        # every connect timed once: the histogram buckets went through the memo and were folded whole
        assert one(m, "flowlens_edge_connect_duration_seconds_count", **client) == N
        assert one(m, "flowlens_edge_connect_duration_seconds_sum", **client) > 0
        assert one(m, 'flowlens_edge_connect_duration_seconds_bucket', le="+Inf", **client) == N
