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
from agent.identity.watch import ListFn, Reflector, WatchState

log = logging.getLogger("flowlens.k8s")

# resource -> (API group, list-all path)
PATHS = {
    "pods": ("", "/api/v1/pods"),
    "services": ("", "/api/v1/services"),
    "nodes": ("", "/api/v1/nodes"),
    "endpointslices": ("discovery.k8s.io", "/apis/discovery.k8s.io/v1/endpointslices"),
    "jobs": ("batch", "/apis/batch/v1/jobs"),
}
# the reflector's keyword arguments (as the client's generated list functions name them) -> query names
QUERY = {"field_selector": "fieldSelector", "limit": "limit", "_continue": "continue", "watch": "watch",
         "resource_version": "resourceVersion", "allow_watch_bookmarks": "allowWatchBookmarks",
         "timeout_seconds": "timeoutSeconds"}
SCOPES = {"cluster": ("pods", "services", "nodes", "jobs"),
          "node": ("pods", "services", "nodes", "jobs", "endpointslices")}


def wanted(identity: str, kubeconfig: str, env: Mapping[str, str]) -> bool:
    """Kubernetes mode: asked for, or in a pod with a service account, or a kubeconfig given."""
    if identity != "auto":
        return identity == "kubernetes"
    return bool(kubeconfig or env.get("KUBECONFIG") or env.get("KUBERNETES_SERVICE_HOST"))


def api_client(kubeconfig: str, env: Mapping[str, str]) -> Any:
    """A ``kubernetes`` ApiClient: in-cluster service account, else the kubeconfig file."""
    from kubernetes import client, config  # imported only in Kubernetes mode (+11 MB RSS)

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


def lister(client: Any, path: str) -> ListFn:
    """A list/watch function on ``path`` through the client's transport (auth, TLS, kubeconfig), returning
    the raw response.  Not the generated API classes: importing CoreV1Api and the models its signatures
    name (pydantic validators built at import) cost 23 MB of RSS, for five GETs whose JSON we parse
    ourselves.  Arguments that are None are left out of the query.  Non-2xx answers raise the client's
    ApiException, as its list functions do."""
    from kubernetes.client.exceptions import ApiException

    def call(*, _request_timeout: Any = None, **params: Any) -> Any:
        query = [(QUERY[k], v) for k, v in params.items() if v is not None]
        req = client.param_serialize(method="GET", resource_path=path, query_params=query,
                                     header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        resp = client.call_api(*req, _request_timeout=_request_timeout)
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        return resp.response

    return call


class Watches:
    def __init__(self, client: Any, index: ClusterIndex, scope: str, node: str, timeout: float,
                 backoff_max: float) -> None:
        self.index = index
        self.reflectors = []
        for resource in SCOPES[scope]:
            selector = f"spec.nodeName={node}" if resource == "pods" and scope == "node" else ""
            self.reflectors.append(Reflector(resource, lister(client, PATHS[resource][1]), index,
                                             field_selector=selector, timeout=timeout, backoff_max=backoff_max))
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
