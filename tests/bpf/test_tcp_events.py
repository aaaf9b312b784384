"""Connect outcomes, connect latency, retransmits, resets and RTT against the
kernel's own view (nstat, ss) or exact counts of what the test caused."""

from __future__ import annotations

import json
import re
import subprocess
import time

from agent.ebpf import abi
from tests.bpf.test_edges import edge
from tests.pods.agent import AgentProc, Sample, find, one
from tests.pods.net import Pods, wait_closed

BOUNDS = abi.bucket_bounds_seconds()


def nft(pods: Pods, pod: str, script: str) -> None:
    """Load an nft ruleset in a pod (nft 1.0.6 wants each rule and brace on its own line)."""
    subprocess.run(["ip", "netns", "exec", pods[pod].ns, "nft", "-f", "-"], input=script, text=True,
                   check=True, timeout=30)


def test_refused_and_timeout_and_success(pods: Pods, agent: AgentProc) -> None:
    srv = pods["server"].ip4
    refused = pods["client"].run("client-tcp", srv, "8110", "--count", "3")  # nothing listens on 8110
    assert refused["failed"] == 3
    nft(pods, "server", """table inet fltimeout {
        chain input {
            type filter hook input priority 0;
            tcp dport 8112 drop
        }
    }
    """)
    try:
        timed = pods["client"].run("client-tcp", srv, "8112", "--count", "2", "--syncnt", "1", timeout=60)
    finally:
        pods["server"].sh("nft", "delete", "table", "inet", "fltimeout")
    assert timed["failed"] == 2
    m = agent.settle()
    lab = edge(8110, "tcp", "client")
    assert one(m, "flowlens_edge_connections_total", result="refused", **lab) == 3
    assert one(m, "flowlens_edge_connections_total", result="success", **lab) == 0
    assert one(m, "flowlens_edge_resets_total", direction="received", **lab) == 3
    lab = edge(8112, "tcp", "client")
    assert one(m, "flowlens_edge_connections_total", result="timeout", **lab) == 2
    assert one(m, "flowlens_edge_connections_total", result="success", **lab) == 0


def test_connect_duration_lies_within_the_connect_call(pods: Pods, agent: AgentProc) -> None:
    """Connect duration is the kernel's SYN-to-SYN-ACK time, which lies inside the client's connect() call:
    every connect timed (count), none longer than its call (sum), none zero (a unit or field error shows as
    a sum of 0 or 1000x the calls')."""
    server = pods["server"].serve("serve-tcp", pods["server"].ip4, "8122", "--count", "20", "--response", "1")
    moved = pods["client"].run("client-tcp", pods["server"].ip4, "8122", "--count", "20", "--response", "1",
                               "--time-connect")
    server.communicate(timeout=30)
    assert moved["ok"] == 20
    wait_closed(8122, pods["client"].ns)
    m = agent.settle()
    lab = edge(8122, "tcp", "client")
    assert one(m, "flowlens_edge_connect_duration_seconds_count", **lab) == 20
    total = one(m, "flowlens_edge_connect_duration_seconds_sum", **lab)
    assert 20e-6 <= total <= moved["connect_us"] / 1e6, (total, moved["connect_us"])


def test_connect_delayed_by_dropped_first_syn(pods: Pods, agent: AgentProc) -> None:
    # drop the first SYN of each (saddr, sport); its retransmission 1 s later passes
    nft(pods, "server", """table ip flsyn {
        set seen { type ipv4_addr . inet_service; flags dynamic; }
        chain input {
            type filter hook input priority 0;
            tcp dport 8114 tcp flags syn ip saddr . tcp sport @seen accept
            tcp dport 8114 tcp flags syn add @seen { ip saddr . tcp sport } drop
        }
    }
    """)
    try:
        server = pods["server"].serve("serve-tcp", pods["server"].ip4, "8114", "--count", "1", "--response", "10")
        moved = pods["client"].run("client-tcp", pods["server"].ip4, "8114", "--response", "10")
        server.communicate(timeout=30)
    finally:
        pods["server"].sh("nft", "delete", "table", "ip", "flsyn")
    assert moved["ok"] == 1
    wait_closed(8114, pods["client"].ns)
    m = agent.settle()
    lab = edge(8114, "tcp", "client")
    assert one(m, "flowlens_edge_connect_duration_seconds_count", **lab) == 1
    assert one(m, "flowlens_edge_connect_duration_seconds_sum", **lab) >= 1.0
    below_1s = max(b for b in BOUNDS if b < 1.0)
    assert one(m, "flowlens_edge_connect_duration_seconds_bucket", le=f"{below_1s:.6f}", **lab) == 0
    assert one(m, "flowlens_edge_connect_duration_seconds_bucket", le="+Inf", **lab) == 1


def test_retransmits_match_kernel_counter(pods: Pods, agent: AgentProc) -> None:
    # every 8th packet lost of everything the server receives on port 8116 after the handshake
    nft(pods, "server", """table inet flloss {
        chain input {
            type filter hook input priority 0;
            tcp dport 8116 ct state established numgen inc mod 8 == 0 drop
        }
    }
    """)
    before = pods["client"].nstat("TcpRetransSegs")
    try:
        server = pods["server"].serve("serve-tcp", pods["server"].ip4, "8116", "--count", "4",
                                      "--request", "400000", "--response", "10")
        pods["client"].run("client-tcp", pods["server"].ip4, "8116", "--count", "4", "--request", "400000",
                           "--response", "10", timeout=120)
        server.communicate(timeout=60)
    finally:
        pods["server"].sh("nft", "delete", "table", "inet", "flloss")
    kernel = pods["client"].nstat("TcpRetransSegs") - before
    wait_closed(8116, pods["client"].ns)
    m = agent.settle()
    ours = one(m, "flowlens_edge_retransmits_total", **edge(8116, "tcp", "client"))
    assert kernel > 10, "the loss rule caused too few retransmits to compare"
    assert abs(ours - kernel) <= 0.05 * kernel, (ours, kernel)


def test_resets_sent_and_received(pods: Pods, agent: AgentProc) -> None:
    server = pods["server"].serve("serve-tcp", pods["server"].ip4, "8118", "--count", "3", "--request", "100",
                                  "--reset")
    moved = pods["client"].run("client-tcp", pods["server"].ip4, "8118", "--count", "3", "--request", "100",
                               "--response", "1")
    server.communicate(timeout=30)
    assert moved["reset"] == 3
    m = agent.settle()
    assert one(m, "flowlens_edge_resets_total", direction="sent", **edge(8118, "tcp", "server")) == 3
    assert one(m, "flowlens_edge_resets_total", direction="received", **edge(8118, "tcp", "client")) == 3


def _median_seconds(m: Sample, lab: dict[str, str], name: str) -> float:
    cum = [one(m, f"{name}_bucket", le=f"{b:.6f}", **lab) for b in BOUNDS]
    total = one(m, f"{name}_count", **lab)
    i = next(i for i, c in enumerate(cum) if c >= total / 2)
    lo = BOUNDS[i - 1] if i else BOUNDS[0] / 2
    return float((lo * BOUNDS[i]) ** 0.5)  # geometric middle of the bucket


def test_live_connection_rtt_agrees_with_ss_and_bytes_flow_before_close(pods: Pods, agent: AgentProc) -> None:
    """A live connection is read by the poll-time walk: srtt once per poll (`ss` reads the same srtt), and
    its byte counters, so bytes show up before the close and end exact after it.  srtt moves (on a veth pair
    between ~25 us and a few hundred us as ACKs get delayed), so compare with the range of srtt that `ss`
    saw over the same seconds, with the histogram's factor-2 bucket resolution on each side."""
    server = pods["server"].serve("serve-tcp", pods["server"].ip4, "8120", "--count", "1", "--response", "1")
    client = pods["client"].spawn("client-tcp", pods["server"].ip4, "8120", "--hold", "6", "--response", "1")
    seen: list[float] = []  # srtt seconds from ss while the connection lives

    def ss_srtt() -> None:
        ss = pods["client"].sh("ss", "-tin", "dst", pods["server"].ip4, "dport", "= :8120")
        found = re.search(r"\brtt:([\d.]+)/", ss)
        if found:
            seen.append(float(found.group(1)) / 1e3)

    try:
        deadline = time.monotonic() + 10
        while True:  # the connection is still open: no close is needed for RTT
            ss_srtt()
            m = agent.settle(polls=1)
            if find(m, "flowlens_edge_rtt_seconds_count", **edge(8120, "tcp", "client")) and \
                    one(m, "flowlens_edge_rtt_seconds_count", **edge(8120, "tcp", "client")) >= 5:
                break
            assert time.monotonic() < deadline, "no RTT samples on a live connection"
        ss_srtt()
        median = _median_seconds(m, edge(8120, "tcp", "client"), "flowlens_edge_rtt_seconds")
        assert seen and min(seen) / 2 <= median <= max(seen) * 2, (median, seen)
        assert one(m, "flowlens_edge_active_connections", **edge(8120, "tcp", "client")) == 1
        live = one(m, "flowlens_edge_sent_bytes_total", **edge(8120, "tcp", "client"))
        assert live >= 5, "bytes of a live connection not counted before its close"
    finally:
        out, _ = client.communicate(timeout=30)
        server.communicate(timeout=30)
    sent = json.loads(out.strip().splitlines()[-1])["sent"]
    assert live < sent  # the ping-pong went on after that read
    for pod in ("client", "server"):
        wait_closed(8120, pods[pod].ns)
    m = agent.settle()
    for reporter in ("client", "server"):  # directions are the client's, whoever reports
        assert one(m, "flowlens_edge_sent_bytes_total", **edge(8120, "tcp", reporter)) == sent
        assert one(m, "flowlens_edge_received_bytes_total", **edge(8120, "tcp", reporter)) == 1
    assert one(m, "flowlens_edge_active_connections", **edge(8120, "tcp", "client")) == 0
