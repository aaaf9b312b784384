"""The loader's detach/attach (what bench.throughput alternates): a detached program does not run, the
kernel's own run counter says so, and attaching again brings it back with its maps intact."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.ebpf.libbpf import prog_runs
from agent.ebpf.loader import Loader


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
