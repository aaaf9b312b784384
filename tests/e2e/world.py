"""The little cluster the e2e tests share: a list/watch API server that knows two nodes in two zones,
pods web (node-a, az-a) and pay (node-b, az-b), and netns pods whose processes sit in cgroups laid out
as kubelet lays them out.

Topology (host = node-a, zone az-a; it routes for the pods like a node):
  web      10.99.0.2  shop/Deployment web   systemd+containerd cgroup, node-a
  pay      10.99.0.3  shop/StatefulSet pay  cgroupfs cgroup, node-b (az-b)
  partner  10.99.0.4  named CIDR "partner"
  stranger 10.99.0.5  nothing knows it -> external (later: pod "late")
  nodeb    10.99.0.6  node-b's InternalIP
Service shop/pay: ClusterIP 10.96.0.10:80, DNAT'd by nft on the host to pay:8081.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

from tests.conftest import need_root
from tests.k8s.apiserver import ApiServer
from tests.k8s.objects import NODES, PODS, SERVICES, container_id, node, pod, service
from tests.pods.net import Pods

WEB_UID, PAY_UID, LATE_UID = ("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0", "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d",
                              "2b3c4d5e-6f7a-4b9c-8d1e-2f3a4b5c6d7e")
CGROUPS = {
    "web": "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope".format(
        WEB_UID.replace("-", "_"), container_id("web")),
    "pay": f"kubepods/besteffort/pod{PAY_UID}/{container_id('pay')}",
}
CLUSTER_IP = "10.96.0.10"
NFT = f"""table ip flowlens_test {{
chain pre {{
type nat hook prerouting priority dstnat;
ip daddr {CLUSTER_IP} tcp dport 80 dnat to 10.99.0.3:8081
}}
chain post {{
type nat hook postrouting priority srcnat;
ip saddr 10.99.0.0/24 ip daddr 10.99.0.3 tcp dport 8081 masquerade
}}
}}
"""
WEB = {"reporter": "client", "src_namespace": "shop", "src_workload": "web", "src_workload_kind": "Deployment"}
REQ, RESP, N = 1_000, 3_000, 3


def cluster_api() -> Iterator[ApiServer]:
    srv = ApiServer(bookmark_interval=1.0).start()
    srv.put(NODES, node("node-a", "az-a", ["10.99.0.1"]))
    srv.put(NODES, node("node-b", "az-b", ["10.99.0.6"]))
    srv.put(PODS, pod("shop", "web-5c9d8-x2k4p", node="node-a", ips=["10.99.0.2", "fd99::2"],
                      owner=("ReplicaSet", "web-5c9d8"), template_hash="5c9d8", containers=[container_id("web")],
                      uid=WEB_UID))
    srv.put(PODS, pod("shop", "pay-0", node="node-b", ips=["10.99.0.3"], owner=("StatefulSet", "pay"),
                      containers=[container_id("pay")], uid=PAY_UID))
    srv.put(SERVICES, service("shop", "pay", [CLUSTER_IP]))
    yield srv
    srv.stop()


def cluster_pods() -> Iterator[Pods]:
    need_root()
    p = Pods(["web", "pay", "partner", "stranger", "nodeb"], cgroups=CGROUPS, gateway=True).up()
    subprocess.run(["nft", "-f", "-"], input=NFT, text=True, check=True)
    yield p
    subprocess.run(["nft", "delete", "table", "ip", "flowlens_test"], check=False)
    p.down()


def exchange(pods: Pods, host: str, port: int, *, server: str, listen: tuple[str, int] | None = None,
             count: int = N) -> None:
    """``count`` connections web -> host:port moving REQ up and RESP down, checked on both sides."""
    at = listen or (host, port)
    srv = pods[server].serve("serve-tcp", at[0], str(at[1]), "--count", str(count), "--request", str(REQ),
                             "--response", str(RESP))
    moved = pods["web"].run("client-tcp", host, str(port), "--count", str(count), "--request", str(REQ),
                            "--response", str(RESP))
    assert moved == {"sent": count * REQ, "recv": count * RESP, "ok": count, "failed": 0, "reset": 0}
    srv.communicate(timeout=30)
