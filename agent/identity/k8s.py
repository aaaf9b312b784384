"""Connect to the Kubernetes API and run one reflector thread per collection.

Two scopes (setting ``scope``):

``cluster``
    every pod, service, node and job of the cluster.  Exact names for every
    remote pod; API load and memory grow with cluster size x node count.
``node``
    pods of this node only (``spec.nodeName`` field selector), services,
    nodes, jobs and EndpointSlices (remote pods known as Service backends).
    Pod watch traffic no longer multiplies by the node count: the mode for
    large clusters.

Threads are daemons and start after the agent's programs are attached; an
API server that is down at start or later never blocks the agent: names
stay ``unknown`` or stale until a reflector catches up.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.identity.cluster import ClusterIndex
from agent.identity.watch import Reflector, WatchState

log = logging.getLogger("flowlens.k8s")

# resource -> (API class, list-all function)
CALLS = {
    "pods": ("CoreV1Api", "list_pod_for_all_namespaces"),
    "services": ("CoreV1Api", "list_service_for_all_namespaces"),
    "nodes": ("CoreV1Api", "list_node"),
    "endpointslices": ("DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces"),
    "jobs": ("BatchV1Api", "list_job_for_all_namespaces"),
}
SCOPES = {"cluster": ("pods", "services", "nodes", "jobs"),
          "node": ("pods", "services", "nodes", "jobs", "endpointslices")}


def wanted(identity: str, kubeconfig: str, env: Mapping[str, str]) -> bool:
    """Kubernetes mode: asked for, or in a pod with a service account, or a kubeconfig given."""
    if identity != "auto":
        return identity == "kubernetes"
    return bool(kubeconfig or env.get("KUBECONFIG") or env.get("KUBERNETES_SERVICE_HOST"))


def api_client(kubeconfig: str, env: Mapping[str, str]) -> Any:
    """A ``kubernetes`` ApiClient: in-cluster service account, else the kubeconfig file."""
    from kubernetes import client, config  # imported only in Kubernetes mode (~40 MB)

    conf = client.Configuration()
    path = kubeconfig or env.get("KUBECONFIG", "")
    if not path and env.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(f"kubeconfig {path}: no such file")
        config.load_kube_config(config_file=path, client_configuration=conf)  # type: ignore[no-untyped-call]
    conf.retries = 0  # the reflector backs off itself, with jitter
    return client.ApiClient(conf)


class Watches:
    def __init__(self, client: Any, index: ClusterIndex, scope: str, node: str, timeout: float,
                 backoff_max: float) -> None:
        from kubernetes import client as k

        self.index = index
        self.reflectors = []
        for resource in SCOPES[scope]:
            cls, fn = CALLS[resource]
            list_fn = getattr(getattr(k, cls)(client), fn)
            selector = f"spec.nodeName={node}" if resource == "pods" and scope == "node" else ""
            self.reflectors.append(Reflector(resource, list_fn, index, field_selector=selector, timeout=timeout,
                                             backoff_max=backoff_max))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for r in self.reflectors:
            t = threading.Thread(target=r.run, args=(self._stop,), name=f"watch-{r.resource}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()

    def states(self) -> list[WatchState]:
        return [r.state for r in self.reflectors]

    def summary(self) -> str:
        """One line for /readyz: synced, or which collections are not and why."""
        bad = [f"{s.resource}: {s.last_error or 'listing'}" for s in self.states() if not (s.synced and s.up)]
        return "kubernetes: synced" if not bad else "kubernetes: degraded (" + "; ".join(bad) + ")"


def node_name(setting: str, env: Mapping[str, str] = os.environ) -> str:
    """This node's name: the setting (the chart passes spec.nodeName), else the host name."""
    return setting or env.get("NODE_NAME", "") or os.uname().nodename
