"""HTTP endpoints: ``/metrics`` (Prometheus text format 0.0.4), ``/healthz`` (the poll loop is alive)
and ``/readyz`` (a first poll has completed and at least one feature is attached).

``/metrics`` is streamed: the body comes from an iterator of batches (lists of ``bytes`` pieces, see
agent/export/edges.py), each written as it is produced with one scatter/gather ``sendmsg``, so a scrape
of 10k edges never holds the whole text (~110 MB) in memory and its pieces are never joined.  With no
Content-Length the response is HTTP/1.0 and ends when the connection closes, which every Prometheus
version reads.  Always text 0.0.4, whatever the Accept header asks: Prometheus falls back to it, and one
format keeps the flow renderer (agent/export/edges.py) simple.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]
TEXT = "text/plain; version=0.0.4; charset=utf-8"
IOV_MAX = 1024  # Linux's limit on buffers per sendmsg


def send(sock: socket.socket, batch: list[bytes]) -> None:
    """Write every piece of ``batch`` in order.  A blocking socket's sendmsg normally takes all of it; a
    signal can cut it short, so what it did not take is sent again from where it stopped."""
    pending: list[bytes | memoryview] = list(batch)
    while pending:
        n = sock.sendmsg(pending[:IOV_MAX])
        k = 0
        while k < len(pending) and n >= len(pending[k]):
            n -= len(pending[k])
            k += 1
        pending = pending[k:]
        if n:
            pending[0] = memoryview(pending[0])[n:]


class MetricsServer:
    def __init__(self, host: str, port: int, metrics: Callable[[], Iterable[list[bytes]]], healthy: Check,
                 ready: Check) -> None:
        render, hc, rc = metrics, healthy, ready

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._stream(render())
                elif path in ("/healthz", "/readyz"):
                    ok, why = (hc if path == "/healthz" else rc)()
                    self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
                else:
                    self._send(404, b"try /metrics, /healthz or /readyz\n", "text/plain")

            def _stream(self, batches: Iterable[list[bytes]]) -> None:
                it = iter(batches)
                try:
                    first = next(it, [])  # the agent's own families: a failure here is still a clean 500
                except Exception as e:
                    log.exception("rendering /metrics failed")
                    self._send(500, f"rendering metrics failed: {e}\n".encode(), "text/plain")
                    return
                self.send_response(200)
                self.send_header("Content-Type", TEXT)
                self.end_headers()
                send(self.connection, first)
                for batch in it:
                    send(self.connection, batch)

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("http: " + format, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
