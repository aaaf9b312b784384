"""Which backend a connection to a Service ClusterIP really reached.

kube-proxy (iptables/nftables/IPVS) DNATs a ClusterIP connection on the
client's node; the socket keeps the ClusterIP as its peer, so the kernel
edge is ``client -> ClusterIP:port``.  The node's conntrack table holds the
translation: the original tuple (client ip, ClusterIP, port) and the reply
tuple whose source is the backend pod.  We read ``<proc>/net/nf_conntrack``
(text; the agent runs in the host network namespace) only when a new edge to
a Service needs its backend, at most once per poll, and keep just the DNAT'd
entries as ``(proto, client ip, service ip, port) -> Counter(backend ip)``.

A Service whose backends belong to several workloads (rare) is attributed to
the workload with the most tracked connections.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("flowlens.conntrack")
Key = tuple[str, str, str, int]  # proto, client ip, service ip, service port


def parse(text: str) -> dict[Key, Counter[str]]:
    """DNAT'd entries of an ``nf_conntrack`` dump (reply source != original destination)."""
    out: dict[Key, Counter[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[2] not in ("tcp", "udp"):
            continue
        kv = [p.split("=", 1) for p in parts if "=" in p]
        src = [v for k, v in kv if k == "src"]
        dst = [v for k, v in kv if k == "dst"]
        dport = [v for k, v in kv if k == "dport"]
        if len(src) < 2 or len(dst) < 1 or not dport:
            continue
        try:
            client, service, backend = (str(ipaddress.ip_address(a)) for a in (src[0], dst[0], src[1]))
            port = int(dport[0])
        except ValueError:
            continue
        if backend != service:
            out.setdefault((parts[2], client, service, port), Counter())[backend] += 1
    return out


class Conntrack:
    def __init__(self, path: Path | None, clock: Callable[[], float] = time.monotonic,
                 min_interval: float = 1.0) -> None:
        self.path = path
        self.clock = clock
        self.min_interval = min_interval
        self._table: dict[Key, Counter[str]] = {}
        self._read_at = float("-inf")
        self.reads = 0
        self.error = ""

    def backends(self, proto: str, client: str, service: str, port: int) -> Counter[str]:
        """Backend IPs seen for this client -> service:port, freshest table (re-read at most once a second)."""
        key = (proto, client, service, port)
        if key not in self._table and self.path and self.clock() - self._read_at >= self.min_interval:
            self._read()
        return self._table.get(key, Counter())

    def _read(self) -> None:
        assert self.path is not None
        self._read_at = self.clock()
        try:
            self._table = parse(self.path.read_text())
            self.reads += 1
            self.error = ""
        except OSError as e:
            if not self.error:
                log.warning("conntrack %s: %s; Service backends will not be attributed", self.path, e.strerror)
            self.error = f"{self.path}: {e.strerror}"
