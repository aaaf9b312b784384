"""Standalone identity (no cluster): named CIDRs, then cgroups, else external.

An end whose address lies in a configured CIDR is that name, kind ``cidr``,
longest prefix first.  Otherwise the local end is named from its cgroup
(container id, systemd unit or leaf directory, kind ``host``) and the remote
end is ``external``; no address is ever a label value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from agent.config import NameRule
from agent.identity.base import EXTERNAL, UNKNOWN, Address, End
from agent.identity.cgroups import CgroupIndex, name_of

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CidrNames:
    """Longest-prefix match over the configured names, cached per address."""

    def __init__(self, rules: Iterable[NameRule]) -> None:
        nets = [(ipaddress.ip_network(r.cidr), End(r.namespace, r.name, "cidr")) for r in rules]
        self._nets: list[tuple[Network, End]] = sorted(nets, key=lambda n: -n[0].prefixlen)
        self._cache: dict[Address, End | None] = {}

    def lookup(self, addr: Address) -> End | None:
        if addr in self._cache:
            return self._cache[addr]
        hit = next((end for net, end in self._nets if net.version == addr.version and addr in net), None)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[addr] = hit
        return hit


class Standalone:
    """:class:`agent.identity.base.Resolver` for a host without Kubernetes."""

    def __init__(self, rules: Iterable[NameRule], cgroups: CgroupIndex) -> None:
        self.cidrs = CidrNames(rules)
        self.cgroups = cgroups

    def local(self, cgroup: int, addr: Address | None) -> End:
        if addr is not None:
            named = self.cidrs.lookup(addr)
            if named:
                return named
        rel = self.cgroups.path(cgroup)
        return UNKNOWN if rel is None else End("", name_of(rel), "host")

    def remote(self, addr: Address | None) -> End:
        if addr is None:
            return UNKNOWN
        return self.cidrs.lookup(addr) or EXTERNAL

    def backend(self, proto: str, local: Address | None, remote: Address | None, port: int) -> End | None:
        return None

    def exists(self, end: End) -> bool:
        return True

    def refresh(self) -> bool:
        """Nothing to watch: cgroups rescan lazily on unknown ids."""
        return False
