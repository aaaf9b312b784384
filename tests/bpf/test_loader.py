"""The loader's detach/attach (what bench.throughput alternates): a detached program does not run, the
kernel's own run counter says so, and attaching again brings it back with its maps intact."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.ebpf import abi
from agent.ebpf.libbpf import prog_runs
from agent.ebpf.loader import Loader
from agent.ebpf.maps import EdgeMaps
from tests.pods.net import wait_closed


@pytest.fixture
def loader(load_here: Callable[..., Loader]) -> Loader:
    ld = load_here()
    assert ld.sample_stats(True)
    return ld


def connects(n: int) -> None:
    """n TCP connections to a loopback listener, each accepted and closed by both ends."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        for _ in range(n):
            with socket.create_connection(srv.getsockname()) as c:
                conn, _ = srv.accept()
                conn.close()
                c.close()


def runs(ld: Loader) -> int:
    return ld.run_stats()["inet_sock_set_state"][1].runs


def test_detached_programs_do_not_run(loader: Loader) -> None:
    before = runs(loader)
    connects(20)
    attached = runs(loader) - before
    assert attached >= 20 * 6  # SYN_SENT, SYN_RECV and both ESTABLISHED and CLOSE at least
    loader.detach()
    before = runs(loader)
    connects(20)
    assert runs(loader) - before == 0
    loader.attach()
    before = runs(loader)
    connects(20)
    assert runs(loader) - before >= 20 * 6
    loader.flush()  # the walk still runs on the maps it had


def fdinfo(fd: int) -> dict[str, str]:
    """The kernel's own account of a BPF fd (/proc/self/fdinfo), independent of bpf_prog_info."""
    lines = Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_program_counters_are_the_kernels(loader: Loader) -> None:
    """run time, runs and recursion misses (flowlens_agent_bpf_*) read the fields the kernel reports."""
    connects(20)
    loader.detach()  # the counters stand still while both are read
    progs = loader.programs()
    assert "inet_sock_set_state" in progs
    for prog, (_, fd) in progs.items():
        r, k = prog_runs(fd), fdinfo(fd)
        assert (r.run_ns, r.runs, r.misses) == (int(k["run_time_ns"]), int(k["run_cnt"]),
                                                int(k["recursion_misses"])), prog
    assert prog_runs(progs["inet_sock_set_state"][1]).runs >= 20 * 6


def edge_bytes(ld: Loader, port: int) -> tuple[int, int]:
    """(sent, received) of the client edges to server `port`, read from the kernel map after the walk."""
    maps = EdgeMaps(ld.map_fd("edges"), ld.map_fd("stats"), ld.opts.edge_map_size, os.cpu_count() or 1, ld.flush)
    keys, vals = maps.read()
    rows = (keys["port"] == port) & (keys["role"] == abi.ROLE_CLIENT)
    return int(vals[rows, abi.W_SENT].sum()), int(vals[rows, abi.W_RECV].sum())


NEW = 300


def test_missed_closes_never_take_a_new_connections_counts(loader: Loader) -> None:
    """Slots whose CLOSE was missed (programs detached, as the bench does) stay behind; a new
    connection whose socket reuses such a socket's memory, so its home slot, must be told apart from
    it (its identity: the hash of its 4-tuple) and counted exactly on its own edge, not on the old one.
    With a constant identity this fails: CLOSEs then flush into the stale slots, on the old edge."""
    os.sched_setaffinity(0, {0})  # one CPU: the slab hands freed sockets to the next ones here
    try:
        with socket.create_server(("127.0.0.1", 0)) as old, socket.create_server(("127.0.0.1", 0)) as new:
            held = []
            for _ in range(30):
                c = socket.create_connection(old.getsockname())
                held += [c, old.accept()[0]]
            loader.detach()
            for s in held:  # their CLOSE is missed: 60 slots stay OPEN
                s.close()
            loader.attach()
            port, old_port = new.getsockname()[1], old.getsockname()[1]
            for _ in range(NEW):
                with socket.create_connection(new.getsockname()) as c:
                    a, _ = new.accept()
                    c.sendall(b"q" * 1_001)
                    assert len(a.recv(4096)) == 1_001
                    a.sendall(b"r" * 2_003)
                    a.close()
                    got = 0
                    while chunk := c.recv(4096):
                        got += len(chunk)
                    assert got == 2_003
        wait_closed(port)  # the last FIN handshakes may still be in flight
        assert edge_bytes(loader, port) == (NEW * 1_001, NEW * 2_003)
        assert edge_bytes(loader, old_port) == (0, 0)  # the old connections moved no byte
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
