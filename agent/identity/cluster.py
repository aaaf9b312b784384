"""What the agent knows of the cluster, as slim tuples, fed by the reflectors.

Each object is parsed once into a small record of interned strings; the
whole API object is dropped.  Derived lookups (container id -> pod, IP ->
pod / service / node / backend) are rebuilt from the records only when
something changed and only on the poll thread (:meth:`ClusterIndex.sync`),
so watch threads never contend with lookups.  An object that does not parse
is skipped and counted in ``malformed``; it never stops a watch.

Workload owners follow the controller reference: a ReplicaSet whose name is
``<deployment>-<pod-template-hash>`` is that Deployment (the hash is the
pod's ``pod-template-hash`` label, so no ReplicaSet watch is needed); a Job
owned by a CronJob is that CronJob (Jobs are watched, they are few);
StatefulSet, DaemonSet and others are themselves; no controller is ``Pod``.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from agent.identity.containers import container_id

Obj = dict[str, Any]
ZONE_LABEL = "topology.kubernetes.io/zone"
_s: Callable[[str], str] = sys.intern
_HASH = "[bcdfghjklmnpqrstvwxz2456789]"
_DEPLOY_POD = re.compile(rf"^(.+)-{_HASH}{{6,10}}-{_HASH}{{5}}$")
_STS_POD = re.compile(r"^(.+)-\d+$")


def workload_from_pod_name(name: str) -> tuple[str, str]:
    """Best guess of a remote pod's workload from its generated name (node scope only).

    ``<deploy>-<rs hash>-<5>`` is a Deployment, ``<sts>-<n>`` a StatefulSet;
    anything else stays the pod (kind ``Pod``).  Cluster scope never guesses.
    """
    m = _DEPLOY_POD.match(name)
    if m:
        return m.group(1), "Deployment"
    m = _STS_POD.match(name)
    if m:
        return m.group(1), "StatefulSet"
    return name, "Pod"


class PodRec(NamedTuple):
    uid: str
    namespace: str
    name: str
    workload: str
    kind: str
    node: str
    ips: tuple[str, ...]
    containers: tuple[str, ...]
    running: bool
    host_network: bool


class NodeRec(NamedTuple):
    name: str
    zone: str
    ips: tuple[str, ...]


class ServiceRec(NamedTuple):
    namespace: str
    name: str
    ips: tuple[str, ...]


class BackendRec(NamedTuple):
    """One EndpointSlice endpoint: a (possibly remote) pod behind a Service."""

    ip: str
    namespace: str
    pod: str
    node: str
    zone: str


def _meta(obj: Obj) -> Obj:
    meta = obj["metadata"]
    if not isinstance(meta, dict):
        raise TypeError("metadata is not an object")
    return meta


def _key(obj: Obj) -> tuple[str, str]:
    meta = _meta(obj)
    return _s(str(meta.get("namespace", ""))), _s(str(meta["name"]))


def parse_pod(obj: Obj) -> PodRec:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    ns, name = _key(obj)
    refs = meta.get("ownerReferences") or []
    ctrl = next((r for r in refs if r.get("controller")), None)
    workload, kind = name, "Pod"
    if ctrl:
        kind, workload = str(ctrl["kind"]), str(ctrl["name"])
        h = (meta.get("labels") or {}).get("pod-template-hash")
        if kind == "ReplicaSet" and h and workload.endswith("-" + h):
            kind, workload = "Deployment", workload[: -len(h) - 1]
    ips = [p["ip"] for p in status.get("podIPs") or []] or ([status["podIP"]] if status.get("podIP") else [])
    cids = [container_id(str(c["containerID"])) for key in ("initContainerStatuses", "containerStatuses")
            for c in status.get(key) or [] if c.get("containerID")]
    return PodRec(_s(str(meta["uid"])), ns, name, _s(workload), _s(kind), _s(str(spec.get("nodeName") or "")),
                  tuple(_s(str(i)) for i in ips), tuple(cids), status.get("phase") in ("Running", "Pending"),
                  bool(spec.get("hostNetwork")))


def parse_node(obj: Obj) -> NodeRec:
    meta, status = _meta(obj), obj.get("status") or {}
    ips = [a["address"] for a in status.get("addresses") or [] if a.get("type") in ("InternalIP", "ExternalIP")]
    return NodeRec(_s(str(meta["name"])), _s(str((meta.get("labels") or {}).get(ZONE_LABEL, ""))),
                   tuple(_s(str(i)) for i in ips))


def parse_service(obj: Obj) -> ServiceRec:
    ns, name = _key(obj)
    spec = obj.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return ServiceRec(ns, name, tuple(_s(str(i)) for i in ips if i and i != "None"))


def parse_slice(obj: Obj) -> tuple[BackendRec, ...]:
    ns, _ = _key(obj)
    out = []
    for ep in obj.get("endpoints") or []:
        ref = ep.get("targetRef") or {}
        if ref.get("kind") != "Pod":
            continue
        for ip in ep.get("addresses") or []:
            out.append(BackendRec(_s(str(ip)), ns, _s(str(ref["name"])), _s(str(ep.get("nodeName") or "")),
                                  _s(str(ep.get("zone") or ""))))
    return tuple(out)


def parse_job(obj: Obj) -> str:
    """The CronJob owning a Job, or ''."""
    refs = _meta(obj).get("ownerReferences") or []
    return next((_s(str(r["name"])) for r in refs if r.get("kind") == "CronJob"), "")


PARSERS: dict[str, Callable[[Obj], Any]] = {
    "pods": parse_pod, "nodes": parse_node, "services": parse_service,
    "endpointslices": parse_slice, "jobs": parse_job,
}


class ClusterIndex:
    """Implements :class:`agent.identity.watch.Sink`; lookups after :meth:`sync`."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[str, str], Any]] = {r: {} for r in PARSERS}
        self.malformed: Counter[str] = Counter()
        self.generation = 0  # bumped by every change the watches apply
        self._synced_gen = -1
        self._lock = threading.Lock()
        self.pods: dict[str, PodRec] = {}
        self.by_container: dict[str, PodRec] = {}
        self.pod_by_ip: dict[str, PodRec] = {}
        self.service_by_ip: dict[str, ServiceRec] = {}
        self.node_by_ip: dict[str, NodeRec] = {}
        self.nodes: dict[str, NodeRec] = {}
        self.backend_by_ip: dict[str, BackendRec] = {}
        self.cronjob: dict[tuple[str, str], str] = {}
        self.workloads: Counter[tuple[str, str, str]] = Counter()
        self.pod_names: set[tuple[str, str]] = set()

    # --- Sink (watch threads) -------------------------------------------------------------
    def replace(self, resource: str, items: Iterable[Obj]) -> None:
        table: dict[tuple[str, str], Any] = {}
        for obj in items:
            parsed = self._parse(resource, obj)
            if parsed is not None:
                table[parsed[0]] = parsed[1]
        with self._lock:
            self.tables[resource] = table
            self.generation += 1

    def apply(self, resource: str, kind: str, obj: Obj) -> None:
        parsed = self._parse(resource, obj)
        if parsed is None:
            return
        with self._lock:
            if kind == "DELETED":
                self.tables[resource].pop(parsed[0], None)
            else:
                self.tables[resource][parsed[0]] = parsed[1]
            self.generation += 1

    def _parse(self, resource: str, obj: Obj) -> tuple[tuple[str, str], Any] | None:
        try:
            return _key(obj), PARSERS[resource](obj)
        except (KeyError, TypeError, ValueError, AttributeError):
            self.malformed[resource] += 1
            return None

    # --- lookups (poll thread) ------------------------------------------------------------
    def sync(self) -> bool:
        """Rebuild the derived lookups if a watch changed anything; True if it did."""
        with self._lock:
            if self.generation == self._synced_gen:
                return False
            self._synced_gen = self.generation
            tables = {r: list(t.items()) for r, t in self.tables.items()}
        pods = [p for _, p in tables["pods"]]
        self.pods = {p.uid: p for p in pods}
        self.by_container = {c: p for p in pods for c in p.containers}
        # a running pod wins an IP over a finished one that still lists it
        by_ip = {ip: p for p in sorted(pods, key=lambda p: p.running) if not p.host_network for ip in p.ips}
        self.pod_by_ip = by_ip
        self.service_by_ip = {ip: s for _, s in tables["services"] for ip in s.ips}
        self.nodes = {n.name: n for _, n in tables["nodes"]}
        self.node_by_ip = {ip: n for n in self.nodes.values() for ip in n.ips}
        self.backend_by_ip = {b.ip: b for _, bs in tables["endpointslices"] for b in bs}
        self.cronjob = {k: v for k, v in tables["jobs"] if v}
        self.workloads = Counter((p.namespace, *self.owner(p)) for p in pods)
        self.workloads.update((b.namespace, *workload_from_pod_name(b.pod)) for b in self.backend_by_ip.values())
        self.pod_names = {(p.namespace, p.name) for p in pods}
        self.pod_names.update((b.namespace, b.pod) for b in self.backend_by_ip.values())
        return True

    def owner(self, pod: PodRec) -> tuple[str, str]:
        """(workload, kind) of a pod, with Job -> CronJob resolved."""
        if pod.kind == "Job":
            cron = self.cronjob.get((pod.namespace, pod.workload))
            if cron:
                return cron, "CronJob"
        return pod.workload, pod.kind

    def zone_of(self, node: str) -> str:
        rec = self.nodes.get(node)
        return rec.zone if rec else ""
