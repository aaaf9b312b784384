"""The identity stage's interface: who is at each end of an edge.

The collector asks a :class:`Resolver` for the local end (socket cgroup and
local address) and the remote end (remote address).  Standalone mode names
ends from named CIDRs and cgroups; Kubernetes mode (:mod:`agent.identity.kube`)
implements the same protocol, so nothing outside ``agent/identity`` changes.
Names can arrive after an edge was first seen (a watch catching up), so
:meth:`Resolver.refresh` says when earlier answers may have changed and the
collector asks again.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class End:
    """One end of an edge, as exported in ``*_namespace/_workload/_workload_kind``."""

    namespace: str
    workload: str
    kind: str
    pod: str = ""
    zone: str = ""  # topology zone, not a label of edges (zone metrics use it)


EXTERNAL = End("", "external", "external")
UNKNOWN = End("", "unknown", "unknown")


class Resolver(Protocol):
    def local(self, cgroup: int, addr: Address | None) -> End:
        """The end owning a socket in cgroup ``cgroup`` with local address ``addr``."""
        ...

    def remote(self, addr: Address | None) -> End:
        """The end at remote address ``addr`` (None when the kernel did not know it)."""
        ...

    def backend(self, proto: str, local: Address | None, remote: Address | None, port: int) -> End | None:
        """Where a connection to a Service address really went (None: not a Service, or not known)."""
        ...

    def exists(self, end: End) -> bool:
        """False once the pod or workload behind ``end`` is gone (its series may then expire)."""
        ...

    def refresh(self) -> bool:
        """Called once per poll: pick up watch results; True if earlier answers may have changed."""
        ...


def parse_addr(raw: bytes) -> Address | None:
    """16 kernel bytes to an address: v4-mapped becomes IPv4, all-zero is None."""
    if not any(raw):
        return None
    a = ipaddress.IPv6Address(raw)
    return a.ipv4_mapped or a
