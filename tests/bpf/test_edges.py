"""Edge counters against ground truth: traffic of known sizes between test pods,
the agent as a separate process, values read from its /metrics."""

from __future__ import annotations

import pytest

from tests.pods.agent import AgentProc, Sample, one
from tests.pods.net import Pods, wait_closed

EDGE = {"src_workload": "client", "src_namespace": "test", "src_workload_kind": "cidr",
        "dst_workload": "server", "dst_namespace": "test", "dst_workload_kind": "cidr"}


def edge(port: int, proto: str, reporter: str) -> dict[str, str]:
    return {**EDGE, "dst_port": str(port), "protocol": proto, "reporter": reporter}


def tcp_exact(pods: Pods, agent: AgentProc, host: str, port: int, n: int, req: int, resp: int) -> Sample:
    """`n` client connections sending `req` and receiving `resp` bytes each; both ends' edges must hold
    exactly that once the agent settled.  Returns the settled samples."""
    server = pods["server"].serve("serve-tcp", host, str(port), "--count", str(n), "--request", str(req),
                                  "--response", str(resp))
    moved = pods["client"].run("client-tcp", host, str(port), "--count", str(n), "--request", str(req),
                               "--response", str(resp))
    server.communicate(timeout=30)
    assert moved == {"sent": n * req, "recv": n * resp, "ok": n, "failed": 0, "reset": 0}
    for pod in ("client", "server"):
        wait_closed(port, pods[pod].ns)
    m = agent.settle()
    for reporter in ("client", "server"):
        lab = edge(port, "tcp", reporter)
        got = [one(m, f"flowlens_edge_{name}", **lab) for name in
               ("sent_bytes_total", "received_bytes_total", "active_connections")]
        got.append(one(m, "flowlens_edge_connections_total", result="success", **lab))
        assert got == [n * req, n * resp, 0, n], f"{reporter} sent/received/active/connections {got}\n{health(m)}"
    return m


def health(m: Sample) -> str:
    """The agent's own loss, table and skipped-run counters, to say why an edge came out wrong: one line
    each, in a string, which pytest prints whole (it cuts the repr of a long dict)."""
    return "\n".join(f"{name}{dict(lab)} {v:g}" for (name, lab), v in sorted(m.items(), key=str)
                     if name.startswith(("flowlens_agent_lost", "flowlens_agent_map_entries", "flowlens_agent_polls",
                                         "flowlens_agent_kernel_events", "flowlens_agent_bpf_recursion_misses")))


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_tcp_bytes_exact_both_reporters(pods: Pods, agent: AgentProc, v6: bool) -> None:
    port = 8106 if v6 else 8104
    m = tcp_exact(pods, agent, pods["server"].ip6 if v6 else pods["server"].ip4, port, 7, 30_001, 123_457)
    # the ephemeral client ports never appear: every tcp series of this pair has the server port
    ports = {dict(lab)["dst_port"] for (name, lab) in m if name == "flowlens_edge_sent_bytes_total"
             and ("src_workload", "client") in lab and ("protocol", "tcp") in lab}
    assert ports <= {"8104", "8106", "8110", "8112", "8114", "8116", "8118", "8120", "8122", "8124", "8126"}


@pytest.mark.parametrize("v6,connected", [(False, False), (False, True), (True, False)],
                         ids=["ipv4-sendto", "ipv4-connected", "ipv6-sendto"])
def test_udp_bytes_exact_both_reporters(pods: Pods, agent: AgentProc, v6: bool, connected: bool) -> None:
    port = 9100 + 2 * v6 + connected
    n, req, resp = 25, 701, 1_203
    srv = pods["server"]
    host = srv.ip6 if v6 else srv.ip4
    server = srv.serve("serve-udp", host, str(port), "--count", str(n), "--response", str(resp))
    args = ["client-udp", host, str(port), "--count", str(n), "--request", str(req)]
    moved = pods["client"].run(*args, *(["--connected"] if connected else []))
    server.communicate(timeout=30)
    assert moved == {"sent": n * req, "recv": n * resp}
    m = agent.settle()
    for reporter in ("client", "server"):
        lab = edge(port, "udp", reporter)
        if reporter == "client" and not connected:
            # an unbound sendto socket has no local address (0.0.0.0): standalone
            # identity names it from its cgroup, the pod's cgroup leaf "client"
            lab.update(src_namespace="", src_workload_kind="host")
        assert one(m, "flowlens_edge_sent_bytes_total", **lab) == n * req
        assert one(m, "flowlens_edge_received_bytes_total", **lab) == n * resp
