"""The load of the throughput benchmark: nginx served to wrk, on loopback or between two pods.

Debian's nginx (one worker, ``return 200`` of a 64 B body, no access log) serves wrk (one thread, 16
connections) in two shapes: ``persistent`` (keep-alive) and ``churn`` (``Connection: close``: one TCP
connection per request).  Two networks (a :class:`Net`):

- ``loopback``: both ends in the host's namespace on 127.0.0.1, no device in between: the least kernel
  work per request, so the largest share for anything that hooks it (the stress case);
- ``pods``: nginx and wrk each in its own network namespace and cgroup, joined by veth pairs on a
  bridge (tests/pods/net.py): the path of pod-to-pod traffic on a Kubernetes node.

nginx also serves its request count (stub_status) on a unix socket in its directory: the bench counts
windows there, from the host, whichever namespace the load runs in.

Packet capture reads the interface every packet crosses: ``lo``, or the bridge (as ``tcpdump -i cni0``
on a node).

wrk runs on the first CPU and nginx on the last (``taskset``), when there are two or more: left to the
scheduler, the two moved between CPUs from window to window, and back-to-back 2 s windows of the same
mode differed by a standard deviation of 1.9% (loopback) and 3.2-4.1% (pods) of req/s; pinned, 0.7% and
1.3% (10 pairs of churn windows each, 2026-12-01).  The kernel's softirq work for a packet runs where
it was sent (loopback and veth both hand it over on the sending CPU), so pinning moves none of it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.pods.agent import free_port
from tests.pods.net import BRIDGE, Pods

NETS = ("loopback", "pods")
SHAPES = ("persistent", "churn")
BODY = "0123456789abcdef" * 4

NGINX_CONF = """worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 100000000;
  server {{
    listen {ip}:{port} backlog=4096;
    location / {{ return 200 "{body}"; }}
  }}
  server {{
    listen unix:{d}/status.sock;
    location = /status {{ stub_status; }}
  }}
}}
"""


@dataclass(frozen=True)
class Net:
    """Where the two ends run: command prefixes (empty: the host), the server's address, the capture interface."""

    name: str
    server: tuple[str, ...]
    client: tuple[str, ...]
    ip: str
    iface: str


def exit_on_sigterm() -> None:
    """Make SIGTERM (``kill``, ``timeout``) unwind the bench as Ctrl-C does, through every ``finally``: wrk,
    nginx and tcpdump stopped, the pods' namespaces and bridge removed, the programs detached.  Python's
    default is to die at once: a bench killed in its host checks left wrk (started for an hour) and nginx
    running (2026-12-02).  Exit status 128 + 15, as a shell reports a process killed by SIGTERM."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise SystemExit(f"bench: missing {', '.join(missing)} (make bench installs them with apt-get)")


def pin(cpu: int) -> tuple[str, ...]:
    """Command prefix that runs on ``cpu`` (counted from the end when negative), none on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    return ("taskset", "-c", str(cpus[cpu])) if len(cpus) > 1 else ()


@contextmanager
def network(name: str) -> Iterator[Net]:
    """The network ``name`` (one of NETS), set up for the block and removed after it."""
    server, client = pin(-1), pin(0)
    if name == "loopback":
        yield Net(name, server, client, "127.0.0.1", "lo")
        return
    if name != "pods":
        raise ValueError(f"network {name!r}: expected one of {', '.join(NETS)}")
    pods = Pods(["bench-srv", "bench-cli"]).up()
    try:
        srv, cli = pods["bench-srv"], pods["bench-cli"]
        yield Net(name, (*server, *srv.cmd()), (*client, *cli.cmd()), srv.ip4, BRIDGE)
    finally:
        pods.down()


@contextmanager
def nginx(net: Net, tmp: Path) -> Iterator[int]:
    """nginx on a free port of ``net``'s server address for the duration of the block; yields the port."""
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp, ip=net.ip, port=port, body=BODY))
    proc = subprocess.Popen([*net.server, "nginx", "-c", str(conf), "-p", str(tmp)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        url = f"http://{net.ip}:{port}/"
        while subprocess.run([*net.client, "curl", "-fs", url], capture_output=True).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def wrk_cmd(net: Net, port: int, shape: str, seconds: int) -> list[str]:
    cmd = [*net.client, "wrk", "-t1", "-c16", f"-d{seconds}s", f"http://{net.ip}:{port}/"]
    return cmd + (["-H", "Connection: close"] if shape == "churn" else [])


def rate(out: str) -> float:
    """Requests per second wrk printed; non-2xx answers or connect errors make the run invalid."""
    if "Non-2xx" in out or re.search(r"Socket errors: connect [1-9]", out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(m.group(1))


@contextmanager
def running(net: Net, port: int, shape: str) -> Iterator[None]:
    """wrk loading nginx for the whole block (stopped with SIGINT, on which it prints its summary; checked
    by :func:`rate`), so windows are counted on one load that never stops or ramps up."""
    proc = subprocess.Popen(wrk_cmd(net, port, shape, 3600), stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # let the 16 connections ramp up before the first window
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave a load running after the bench
            proc.communicate()
            raise
    rate(out)


def served(tmp: Path) -> int:
    """Requests nginx (started in ``tmp``) has handled: stub_status on its unix socket, which the bench
    reaches from the host whatever namespace nginx serves the load in."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(tmp / "status.sock"))
        s.sendall(b"GET /status HTTP/1.0\r\n\r\n")
        data = b"".join(iter(lambda: s.recv(4096), b""))
    # "Active connections: N\nserver accepts handled requests\n A H R\n..."
    return int(data.split(b"\r\n\r\n", 1)[1].splitlines()[2].split()[2])


@contextmanager
def capture(net: Net) -> Iterator[None]:
    """tcpdump on ``net``'s interface writing every packet to /dev/null, once it says it is listening."""
    proc = subprocess.Popen(["tcpdump", "-i", net.iface, "-n", "-w", "/dev/null"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        if "listening" not in line:
            raise RuntimeError(f"tcpdump: {line}")
        yield
    finally:
        proc.terminate()
        proc.wait(10)
