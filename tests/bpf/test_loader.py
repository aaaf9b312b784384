"""The loader's detach/attach (what bench.throughput alternates): a detached program does not run, the
kernel's own run counter says so, and attaching again brings it back with its maps intact."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

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
    return ld.run_stats()["inet_sock_set_state"][2]


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
