"""Kubernetes objects as the API server returns them (JSON dicts), for tests."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

Obj = dict[str, Any]
PODS, SERVICES, NODES = "/api/v1/pods", "/api/v1/services", "/api/v1/nodes"
SLICES, JOBS = "/apis/discovery.k8s.io/v1/endpointslices", "/apis/batch/v1/jobs"


def container_id(name: str) -> str:
    """A stable 64-hex container id for a test container name."""
    return hashlib.sha256(name.encode()).hexdigest()


def pod(namespace: str, name: str, *, node: str, ips: Sequence[str] = (), owner: tuple[str, str] | None = None,
        template_hash: str = "", containers: Sequence[str] = (), phase: str = "Running",
        host_network: bool = False, uid: str = "") -> Obj:
    meta: Obj = {"namespace": namespace, "name": name, "uid": uid or str(uuid.uuid4())}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "controller": True,
                                    "uid": str(uuid.uuid4())}]
    if template_hash:
        meta["labels"] = {"pod-template-hash": template_hash}
    status: Obj = {"phase": phase, "podIP": ips[0] if ips else "", "podIPs": [{"ip": i} for i in ips],
                   "containerStatuses": [{"name": f"c{i}", "containerID": f"containerd://{c}", "ready": True}
                                         for i, c in enumerate(containers)]}
    return {"metadata": meta, "spec": {"nodeName": node, "hostNetwork": host_network}, "status": status}


def service(namespace: str, name: str, ips: list[str]) -> Obj:
    return {"metadata": {"namespace": namespace, "name": name},
            "spec": {"clusterIP": ips[0], "clusterIPs": ips, "ports": [{"port": 80}]}}


def node(name: str, zone: str, ips: list[str]) -> Obj:
    return {"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "status": {"addresses": [{"type": "InternalIP", "address": i} for i in ips]}}


def endpoint_slice(namespace: str, name: str, backends: list[tuple[str, str, str]], zone: str = "") -> Obj:
    """backends: (ip, pod name, node name)."""
    return {"metadata": {"namespace": namespace, "name": name}, "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "nodeName": nd, "zone": zone,
                           "targetRef": {"kind": "Pod", "name": p, "namespace": namespace}} for ip, p, nd in backends]}


def job(namespace: str, name: str, cronjob: str) -> Obj:
    return {"metadata": {"namespace": namespace, "name": name, "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob, "controller": True, "uid": "x"}]}}


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll a real condition until it holds; returns the seconds it took, or fails naming it."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start
