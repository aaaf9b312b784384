"""Memory the Kubernetes identity keeps per 1,000 pods, in each scope.

A synthetic cluster (pods spread over nodes, one Service + EndpointSlice per
10 pods, Deployments with hashed pod names) is served by the list/watch test
server; the real reflectors list and watch it through the ``kubernetes``
client into a fresh :class:`ClusterIndex`.  We report the Python heap held
once synced (``tracemalloc``, after a GC) at two cluster sizes; the slope
between them is the cost per 1,000 pods (records plus derived lookups), the
rest is fixed (the client's lazily imported API modules and models).  The
RSS of ``import kubernetes`` itself is reported too.

    python -m bench.k8s_memory [--pods 10000] [--nodes 200]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

from tests.k8s.apiserver import ApiServer
from tests.k8s.objects import NODES, PODS, SERVICES, SLICES, container_id, endpoint_slice, node, pod, service


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cluster(api: ApiServer, pods: int, nodes: int) -> None:
    for n in range(nodes):
        api.put(NODES, node(f"node-{n}", f"az-{n % 3}", [f"192.168.{n // 250}.{n % 250 + 1}"]))
    for i in range(pods):
        dep, ip, nd = f"app{i // 10}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"node-{i % nodes}"
        api.put(PODS, pod("bench", f"{dep}-7d9f8b6c5d-x{i:04d}"[:40], node=nd, ips=[ip],
                          owner=("ReplicaSet", f"{dep}-7d9f8b6c5d"), template_hash="7d9f8b6c5d",
                          containers=[container_id(f"c{i}")]))
        if i % 10 == 9:
            svc = f"app{i // 10}"
            api.put(SERVICES, service("bench", svc, [f"172.20.{i // 2560}.{i // 10 % 256}"]))
            members = [(f"10.{j // 65536}.{j // 256 % 256}.{j % 256}", f"{svc}-7d9f8b6c5d-x{j:04d}",
                        f"node-{j % nodes}") for j in range(i - 9, i + 1)]
            api.put(SLICES, endpoint_slice("bench", f"{svc}-abc", members))


def measure(api: ApiServer, scope: str) -> tuple[int, float]:
    from agent.identity import k8s
    from agent.identity.cluster import ClusterIndex

    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as f:
        f.write(api.kubeconfig())
        f.flush()
        client = k8s.api_client(f.name, {})
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = ClusterIndex()
    w = k8s.Watches(client, index, scope, "node-0", timeout=30, backoff_max=2)
    t0 = time.monotonic()
    w.start()
    while not all(s.synced for s in w.states()):
        time.sleep(0.05)
    index.sync()
    took = time.monotonic() - t0
    w.stop()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del index
    return held, took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=200)
    a = ap.parse_args()
    before = rss_kb()
    import kubernetes  # noqa: F401 - the import's own cost is one of the numbers

    imported = rss_kb()
    small = a.pods // 10
    warm = ApiServer().start()  # first use imports the client's API modules: keep that out of the numbers
    cluster(warm, 10, 2)
    for scope in ("cluster", "node"):
        measure(warm, scope)
    warm.stop()
    sizes: dict[str, list[tuple[int, int, float]]] = {"cluster": [], "node": []}
    for pods in (small, a.pods):
        api = ApiServer().start()
        cluster(api, pods, a.nodes)
        for scope in sizes:
            held, took = measure(api, scope)
            sizes[scope].append((pods, held, took))
        api.stop()
    print(f"synthetic cluster: {small} and {a.pods} pods on {a.nodes} nodes, one Service + EndpointSlice per 10 pods")
    print(f"`import kubernetes`: +{(imported - before) / 1024:.1f} MiB RSS")
    print(f"| scope | heap at {small} pods | heap at {a.pods} pods | per 1,000 pods (slope) | list+sync at {a.pods} |")
    print("|---|---|---|---|---|")
    for scope, ((n1, h1, _), (n2, h2, t2)) in sizes.items():
        per_k = (h2 - h1) / (n2 - n1) * 1000
        print(f"| {scope} | {h1 / 2**20:.1f} MiB | {h2 / 2**20:.1f} MiB | {per_k / 2**20:.2f} MiB | {t2:.1f} s |")

if __name__ == "__main__":
    main()
