"""Workload run inside a test pod (netns + cgroup): moves known byte counts.

Prints one JSON line with what it moved, the ground truth tests compare with.
Every loop is bounded by a count and by socket timeouts.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import struct
import time


def family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def recv_exact(s: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        chunk = s.recv(min(65536, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def was_reset(s: socket.socket, e: OSError) -> bool:
    """True when the peer's RST ended the connection.  The call that meets the RST says so as ECONNRESET;
    a call made after it had already arrived (socket in CLOSE) fails with ENOTCONN or EPIPE instead, and
    the RST's ECONNRESET is then still pending in SO_ERROR."""
    if e.errno == errno.ECONNRESET:
        return True
    pending = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return e.errno in (errno.ENOTCONN, errno.EPIPE) and pending == errno.ECONNRESET


def serve_tcp(a: argparse.Namespace) -> dict[str, int]:
    srv = socket.socket(family(a.host), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.host, a.port))
    srv.listen(64)
    srv.settimeout(30)
    print(json.dumps({"listening": a.port}), flush=True)
    moved = {"recv": 0, "sent": 0}
    for _ in range(a.count):
        c, _ = srv.accept()
        c.settimeout(30)
        if a.reset:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            moved["recv"] += recv_exact(c, a.request)
            c.close()  # linger 0: RST instead of FIN
            continue
        moved["recv"] += recv_exact(c, 1 << 62)  # until the client's FIN
        c.sendall(b"r" * a.response)
        moved["sent"] += a.response
        c.close()
    return moved


def client_tcp(a: argparse.Namespace) -> dict[str, int]:
    moved = {"sent": 0, "recv": 0, "ok": 0, "failed": 0, "reset": 0}
    if a.time_connect:
        moved["connect_us"] = 0
    for _ in range(a.count):
        s = socket.socket(family(a.host), socket.SOCK_STREAM)
        if a.syncnt:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, a.syncnt)
        s.settimeout(30)
        t0 = time.perf_counter_ns()
        try:
            s.connect((a.host, a.port))
        except OSError:
            moved["failed"] += 1
            s.close()
            continue
        if a.time_connect:
            moved["connect_us"] += (time.perf_counter_ns() - t0) // 1000 + 1  # the call's wall time, rounded up
        moved["ok"] += 1
        try:
            s.sendall(b"q" * a.request)
            moved["sent"] += a.request
            if a.hold:
                for _ in range(int(a.hold / 0.05)):  # ping-pong on one live connection
                    s.sendall(b"p")
                    moved["sent"] += 1
                    time.sleep(0.05)
            s.shutdown(socket.SHUT_WR)
            moved["recv"] += recv_exact(s, a.response)
        except OSError as e:
            if not was_reset(s, e):
                raise
            moved["reset"] += 1
        s.close()
    return moved


def serve_udp(a: argparse.Namespace) -> dict[str, int]:
    s = socket.socket(family(a.host), socket.SOCK_DGRAM)
    s.bind((a.host, a.port))
    s.settimeout(30)
    print(json.dumps({"listening": a.port}), flush=True)
    moved = {"recv": 0, "sent": 0}
    for _ in range(a.count):
        data, peer = s.recvfrom(65536)
        moved["recv"] += len(data)
        moved["sent"] += s.sendto(b"r" * a.response, peer)
    return moved


def client_udp(a: argparse.Namespace) -> dict[str, int]:
    s = socket.socket(family(a.host), socket.SOCK_DGRAM)
    s.settimeout(10)
    moved = {"sent": 0, "recv": 0}
    if a.connected:
        s.connect((a.host, a.port))
    for _ in range(a.count):
        if a.connected:
            moved["sent"] += s.send(b"q" * a.request)
            moved["recv"] += len(s.recv(65536))
        else:
            moved["sent"] += s.sendto(b"q" * a.request, (a.host, a.port))
            moved["recv"] += len(s.recvfrom(65536)[0])
    return moved


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["serve-tcp", "client-tcp", "serve-udp", "client-udp"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--request", type=int, default=0)
    p.add_argument("--response", type=int, default=0)
    p.add_argument("--syncnt", type=int, default=0)
    p.add_argument("--time-connect", action="store_true", help="report connect_us: connect() calls' wall time")
    p.add_argument("--hold", type=float, default=0.0, help="seconds of ping-pong before closing")
    p.add_argument("--reset", action="store_true", help="server closes with RST")
    p.add_argument("--connected", action="store_true", help="UDP client calls connect()")
    a = p.parse_args()
    fn = {"serve-tcp": serve_tcp, "client-tcp": client_tcp, "serve-udp": serve_udp, "client-udp": client_udp}
    print(json.dumps(fn[a.mode](a)), flush=True)


if __name__ == "__main__":
    main()
