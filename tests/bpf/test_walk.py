"""The poll-time walk (flush_conns) racing the connections it reads.

The agent walks `conns` once per poll; here a thread walks it in a tight loop (thousands of walks a
second) while two clients churn loopback connections through a small table, so walks meet every moment
of a connection's life: handshake, FIN processing, CLOSE, slots freed and claimed again.  Ground truth:
what the traffic tool moved.  Each edge must come out exact with no connection left in the gauge.  Before
the walk read live counters as lower bounds it counted a FIN as a byte on ~0.5% of these connections
(bench/changes.md item 9)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

import numpy as np
import pytest

from agent.ebpf import abi
from agent.ebpf.loader import Loader
from agent.ebpf.maps import EdgeMaps
from tests.pods.net import TRAFFIC, wait_closed

PORTS = (8140, 8141)
N, REQ, RESP = 1500, 7, 11


@pytest.fixture
def loader(load_here: Callable[..., Loader]) -> Loader:
    return load_here(conn_map_size=128, bpf_stats=False)


def churn(port: int) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """N loopback connections to `port`: the client sends REQ bytes, the server answers RESP and closes."""
    def tool(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(TRAFFIC), *args, "127.0.0.1", str(port), "--count", str(N),
                                 "--request", str(REQ), "--response", str(RESP)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = tool("serve-tcp")
    assert server.stdout is not None and "listening" in server.stdout.readline()
    return server, tool("client-tcp")


def test_walk_in_a_tight_loop_leaves_every_edge_exact(loader: Loader) -> None:
    stop, walks = threading.Event(), [0]

    def walk() -> None:
        while not stop.is_set():
            loader.flush()
            walks[0] += 1

    walker = threading.Thread(target=walk)
    walker.start()
    try:
        procs = [churn(p) for p in PORTS]
        outs = [(s.communicate(timeout=120), c.communicate(timeout=120)) for s, c in procs]
    finally:
        stop.set()
        walker.join()
    for (_, s_err), (c_out, c_err) in outs:
        assert '"failed": 0, "reset": 0' in c_out, (c_out, c_err, s_err)
    assert walks[0] > 1000, "the walk did not run often enough to meet the connections"
    for p in PORTS:
        wait_closed(p)
    got = edge_rows(loader, PORTS)
    for p in PORTS:
        for role, sent, recv in ((abi.ROLE_CLIENT, REQ, RESP), (abi.ROLE_SERVER, RESP, REQ)):
            assert got[(p, role)] == [N * sent, N * recv, N, 0], (p, role, "sent/recv/connections/active")
    stats = kernel_stats(loader)
    assert stats == [0] * abi.STATS_SLOTS, dict(zip(abi.STATS, stats))


def test_a_close_no_program_saw_is_flushed_by_the_next_walk(load_here: Callable[..., Loader]) -> None:
    """Connections counted live, then closed while the programs are detached, so no CLOSE runs (as when the
    kernel skips a nested run, recursion_misses): the next walk finds their sockets in TCP_CLOSE, gives each
    the last flush its CLOSE would have (the FIN byte a live read leaves out, the gauge) and counts it.
    Before, they stayed in the gauge until their sockets' memory was reused."""
    loader = load_here(bpf_stats=False)
    port, n = 8150, 4
    with socket.create_server(("127.0.0.1", port)) as lst:
        pairs = []
        for _ in range(n):
            cli = socket.create_connection(("127.0.0.1", port))
            srv, _ = lst.accept()
            pairs.append((cli, srv))
        for cli, srv in pairs:
            cli.sendall(b"q" * REQ)
            assert srv.recv(REQ, socket.MSG_WAITALL) == b"q" * REQ
            srv.sendall(b"r" * RESP)
            assert cli.recv(RESP, socket.MSG_WAITALL) == b"r" * RESP
        live = edge_rows(loader, (port,))  # a walk: every connection in the gauge
        assert [live[(port, r)][3] for r in (abi.ROLE_CLIENT, abi.ROLE_SERVER)] == [n, n]
        loader.detach()
        for cli, srv in pairs:
            srv.close()
            cli.close()
        wait_closed(port)
    loader.attach()
    got = edge_rows(loader, (port,))
    assert got[(port, abi.ROLE_CLIENT)] == [n * REQ, n * RESP, n, 0], "client sent/recv/connections/active"
    assert got[(port, abi.ROLE_SERVER)] == [n * RESP, n * REQ, n, 0], "server sent/recv/connections/active"
    stats = dict(zip(abi.STATS, kernel_stats(loader)))
    assert stats["close_missed"] == 2 * n, stats


def kernel_stats(loader: Loader) -> list[int]:
    """The programs' own counters (every slot of `stats`, abi.STATS names the used ones), summed over CPUs."""
    return EdgeMaps(loader.map_fd("edges"), loader.map_fd("stats"), 0, os.cpu_count() or 1).stats()


def edge_rows(loader: Loader, ports: tuple[int, ...]) -> dict[tuple[int, int], list[int]]:
    """Run the walk, then read `edges`: (port, role) -> [sent, received, successful connects, active]."""
    maps = EdgeMaps(loader.map_fd("edges"), loader.map_fd("stats"), 16384, os.cpu_count() or 1,
                    flush=loader.flush)
    keys, vals = maps.read()
    out = {}
    for k, v in zip(keys, vals):
        if int(k["port"]) in ports:
            row = [int(v[w]) for w in (abi.W_SENT, abi.W_RECV, abi.W_CONNS + abi.RESULTS.index("success"))]
            out[(int(k["port"]), int(k["role"]))] = row + [int(v[abi.W_ACTIVE:abi.W_ACTIVE + 1].view(np.int64)[0])]
    return out
