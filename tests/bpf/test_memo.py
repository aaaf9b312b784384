"""The per-CPU memos of edges that CLOSEs count into (bpf/memo.h): connections of two edges (four keys
with both reporters) closing in turn on one CPU share its 8 memos; keys on a memo another key holds take
the miss path (straight into the edge) and, past the patience, fold it and take it over; the walk folds
what is left at each poll.  Ground truth: the bytes the test pods moved and the connects they made."""

from __future__ import annotations

from tests.bpf.test_edges import edge, health
from tests.pods.agent import AgentProc, one
from tests.pods.net import Pods, wait_closed

N, REQ, RESP = 60, 1_009, 2_017


def test_two_edges_closing_in_turn_on_one_cpu_are_exact(pods: Pods, agent: AgentProc) -> None:
    ports = (8124, 8126)
    args = ("--count", str(N), "--request", str(REQ), "--response", str(RESP))
    # pinned to CPU 0, all four: softirq work runs where the packet was sent, so every CLOSE of both
    # edges lands in CPU 0's memos
    servers = [pods["server"].serve("serve-tcp", pods["server"].ip4, str(p), *args, cpus="0") for p in ports]
    clients = [pods["client"].spawn("client-tcp", pods["server"].ip4, str(p), *args, cpus="0") for p in ports]
    for c in clients:
        moved = pods["client"].result(c)
        assert moved == {"sent": N * REQ, "recv": N * RESP, "ok": N, "failed": 0, "reset": 0}
    for s in servers:
        pods["server"].result(s)
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
            assert got == [N * REQ, N * RESP, 0, N], f"{port} {reporter} {got}\n{health(m)}"
        client = edge(port, "tcp", "client")
        # every connect timed once: the histogram buckets went through the memo and were folded whole
        assert one(m, "flowlens_edge_connect_duration_seconds_count", **client) == N
        assert one(m, "flowlens_edge_connect_duration_seconds_sum", **client) > 0
        assert one(m, 'flowlens_edge_connect_duration_seconds_bucket', le="+Inf", **client) == N
