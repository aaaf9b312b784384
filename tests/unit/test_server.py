"""The /metrics server writes batches of pieces with scatter/gather sendmsg: every byte, in order."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import pytest

from agent.export.server import IOV_MAX, MetricsServer, send


def test_send_resumes_partial_writes_past_iov_max() -> None:
    """A socket with a timeout is non-blocking underneath, so sendmsg takes only what fits in the 4 KB
    send buffer: ``send`` must resume mid-piece, and split batches longer than IOV_MAX."""
    batch = [bytes([i % 251]) * (i * 7 % 1500) for i in range(3 * IOV_MAX)]  # some pieces empty
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.settimeout(10)
    got = bytearray()

    def read() -> None:
        while chunk := b.recv(65536):
            got.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        send(a, batch)
    finally:
        a.close()
        reader.join(10)
        b.close()
    assert bytes(got) == b"".join(batch) and len(got) > 1_000_000


@contextmanager
def serving(metrics: Callable[[], Iterable[list[bytes]]]) -> Iterator[str]:
    def ok() -> tuple[bool, str]:
        return True, "ok"

    srv = MetricsServer("127.0.0.1", 0, metrics, ok, ok)
    srv.start()
    try:
        yield f"http://127.0.0.1:{srv.port}/metrics"
    finally:
        srv.stop()


def test_metrics_body_is_the_batches_in_order() -> None:
    batches = [[b"# agent\n"], [b"x{a=\"1\"} 1\n", b""], [b"y 2\n" * 50_000]]
    with serving(lambda: iter(batches)) as url:
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert r.read() == b"".join(b"".join(x) for x in batches)


def test_a_failing_first_batch_is_a_clean_500() -> None:
    def broken() -> Iterator[list[bytes]]:
        raise RuntimeError("table gone")
        yield []

    with serving(broken) as url:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=10)
        assert e.value.code == 500 and b"table gone" in e.value.read()
