"""Kubernetes identity: both ends of an edge named from the cluster index.

Local end (a socket on this node): its cgroup -> container id / pod uid
(:mod:`agent.identity.containers`) -> pod -> workload, so host-network pods
resolve through their cgroup, never their IP.  A process in no pod is the
node itself (kind ``Node``), which is also how the other side of the
connection names this node's addresses.

Remote end, first match wins: a pod IP (``cluster`` scope: every pod; a
Running pod wins an IP over a finished one), an EndpointSlice backend
(``node`` scope: remote pods are known only as Service backends; their
workload is read from the pod name, see :func:`workload_from_pod_name`), a
Service ClusterIP (kind ``Service``), a node address (kind ``Node``), a
named CIDR, else ``external``.  Loopback is this node.  Until a name is known the end is
``unknown``; answers are cached and dropped whenever the index changes.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

from agent.identity.base import EXTERNAL, UNKNOWN, Address, End
from agent.identity.cgroups import CgroupIndex
from agent.identity.cluster import ClusterIndex, PodRec, workload_from_pod_name
from agent.identity.conntrack import Conntrack
from agent.identity.containers import parse
from agent.identity.standalone import CidrNames


class KubeResolver:
    """:class:`agent.identity.base.Resolver` backed by a :class:`ClusterIndex`."""

    def __init__(self, index: ClusterIndex, cgroups: CgroupIndex, cidrs: CidrNames, conntrack: Conntrack,
                 node: str) -> None:
        self.index, self.cgroups, self.cidrs, self.conntrack = index, cgroups, cidrs, conntrack
        self.node = node
        self._local: dict[int, End] = {}  # by cgroup: a pod's sockets share it, whatever their address
        self._remote: dict[Address, End] = {}

    def refresh(self) -> bool:
        if not self.index.sync():
            return False
        self._local.clear()
        self._remote.clear()
        return True

    def _pod_end(self, pod: PodRec) -> End:
        workload, kind = self.index.owner(pod)
        return End(pod.namespace, workload, kind, pod.name, self.index.zone_of(pod.node))

    def _node_end(self) -> End:
        return End("", self.node, "Node", zone=self.index.zone_of(self.node))

    def local(self, cgroup: int, addr: Address | None) -> End:
        end = self._local.get(cgroup)
        if end is None:
            end = self._local[cgroup] = self._find_local(cgroup)
        return end

    def _find_local(self, cgroup: int) -> End:
        rel = self.cgroups.path(cgroup)
        if rel is None:
            return UNKNOWN
        owner = parse(rel)
        pod = self.index.by_container.get(owner.container) if owner.container else None
        if pod is None and owner.pod_uid:
            pod = self.index.pods.get(owner.pod_uid)
        if pod is not None:
            return self._pod_end(pod)
        if owner.pod_uid or owner.container:
            return UNKNOWN  # a container whose pod the watch has not delivered (yet)
        return self._node_end()

    def remote(self, addr: Address | None) -> End:
        if addr is None:
            return UNKNOWN
        end = self._remote.get(addr)
        if end is None:
            end = self._remote[addr] = self._find_remote(str(addr), addr)
        return end

    def _find_remote(self, ip: str, addr: Address) -> End:
        if addr.is_loopback:
            return self._node_end()  # this node talking to itself
        idx = self.index
        pod = idx.pod_by_ip.get(ip)
        if pod is not None:
            return self._pod_end(pod)
        b = idx.backend_by_ip.get(ip)
        if b is not None:
            workload, kind = workload_from_pod_name(b.pod)
            return End(b.namespace, workload, kind, b.pod, b.zone or idx.zone_of(b.node))
        svc = idx.service_by_ip.get(ip)
        if svc is not None:
            return End(svc.namespace, svc.name, "Service")
        node = idx.node_by_ip.get(ip)
        if node is not None:
            return End("", node.name, "Node", zone=node.zone)
        return self.cidrs.lookup(addr) or EXTERNAL

    def backend(self, proto: str, local: Address | None, remote: Address | None, port: int) -> End | None:
        if local is None or remote is None or str(remote) not in self.index.service_by_ip:
            return None
        seen = self.conntrack.backends(proto, str(local), str(remote), port)
        ends: Counter[End] = Counter()
        for ip, n in seen.items():
            ends[self.remote(ipaddress.ip_address(ip))] += n
        return ends.most_common(1)[0][0] if ends else None

    def exists(self, end: End) -> bool:
        if end.kind in ("Service", "Node", "cidr", "external", "unknown", "other", "host"):
            return True
        if end.pod:
            return (end.namespace, end.pod) in self.index.pod_names
        return self.index.workloads.get((end.namespace, end.workload, end.kind), 0) > 0
