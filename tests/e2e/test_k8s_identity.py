"""The agent process against the list/watch test server and netns pods whose
processes sit in cgroups laid out as kubelet lays them out (topology: tests/e2e/world.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.world import CLUSTER_IP, LATE_UID, REQ, RESP, WEB, N, exchange
from tests.k8s.apiserver import ApiServer
from tests.k8s.objects import PODS, pod, wait_until
from tests.pods.agent import AgentProc, Sample, find, one
from tests.pods.net import Pods


@pytest.fixture(scope="module")
def agent(api: ApiServer, pods: Pods, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    tmp: Path = tmp_path_factory.mktemp("k8s")
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(api.kubeconfig())
    a = AgentProc(tmp, {"poll_interval": 0.3, "idle_polls": 3, "kubeconfig": str(kubeconfig), "node_name": "node-a",
                        "series_grace": 3, "k8s_backoff_max": 2,
                        "names": [{"cidr": "10.99.0.4/32", "name": "partner", "namespace": "ext"}]}).start()
    wait_until(lambda: "kubernetes: synced" in a.get("/readyz"), 15, "agent synced with the API")
    yield a
    assert a.stop() == 0, a.log.read_text()


def edge_bytes(m: Sample, **labels: str) -> tuple[float, float]:
    return (one(m, "flowlens_edge_sent_bytes_total", **labels),
            one(m, "flowlens_edge_received_bytes_total", **labels))


def test_both_ends_named_from_the_cluster(pods: Pods, agent: AgentProc) -> None:
    exchange(pods, "10.99.0.3", 8080, server="pay")
    exchange(pods, CLUSTER_IP, 80, server="pay", listen=("10.99.0.3", 8081))  # kube-proxy style DNAT
    exchange(pods, "10.99.0.6", 9000, server="nodeb")
    exchange(pods, "10.99.0.4", 9001, server="partner")
    exchange(pods, "10.99.0.5", 9002, server="stranger")
    m = agent.settle()
    want = (N * REQ, N * RESP)
    pay = {"dst_namespace": "shop", "dst_workload": "pay"}
    assert edge_bytes(m, **WEB, **pay, dst_workload_kind="StatefulSet", dst_port="8080") == want
    assert edge_bytes(m, **WEB, **pay, dst_workload_kind="Service", dst_port="80",
                      dst_backend="pay", dst_backend_kind="StatefulSet") == want
    assert edge_bytes(m, **WEB, dst_workload="node-b", dst_workload_kind="Node", dst_port="9000") == want
    assert edge_bytes(m, **WEB, dst_namespace="ext", dst_workload="partner", dst_workload_kind="cidr",
                      dst_port="9001") == want
    assert edge_bytes(m, **WEB, dst_workload="external", dst_workload_kind="external", dst_port="9002") == want
    # the server end, seen on "its" node: pay is named through its cgroupfs-layout cgroup
    server = {"reporter": "server", "dst_workload": "pay", "dst_workload_kind": "StatefulSet", "dst_port": "8080"}
    assert edge_bytes(m, src_workload="web", src_workload_kind="Deployment", **server) == want
    # behind the DNAT the backend sees the node's masqueraded address
    assert edge_bytes(m, reporter="server", src_workload="node-a", src_workload_kind="Node",
                      dst_workload="pay", dst_port="8081") == want
    # zones: web (az-a) -> pay pod, pay Service backend and node-b (az-b); partner/stranger unknown
    assert one(m, "flowlens_zone_bytes_total", src_zone="az-a", dst_zone="az-b") == 3 * N * REQ
    assert one(m, "flowlens_zone_bytes_total", src_zone="az-b", dst_zone="az-a") == 3 * N * RESP
    assert one(m, "flowlens_zone_bytes_total", src_zone="az-a", dst_zone="unknown") == 2 * N * REQ
    cost = one(m, "flowlens_zone_cost_dollars_total", src_zone="az-a", dst_zone="az-b")
    assert cost == pytest.approx(3 * N * REQ / 1e9 * 0.01)
    assert not find(m, "flowlens_zone_cost_dollars_total", dst_zone="unknown")
    # per local pod, no remote labels
    assert one(m, "flowlens_pod_sent_bytes_total", namespace="shop", pod="web-5c9d8-x2k4p",
               workload="web", workload_kind="Deployment") == 5 * N * REQ
    assert one(m, "flowlens_agent_k8s_synced", resource="pods") == 1


def test_api_down_30s_then_back_converges_without_losing_counts(api: ApiServer, pods: Pods,
                                                                agent: AgentProc) -> None:
    api.stop()
    wait_until(lambda: "degraded" in agent.get("/readyz"), 20, "/readyz reports the outage")
    start = time.monotonic()
    # while the API is down a pod appears at the stranger's address, and a connection to it stays open
    api.put(PODS, pod("shop", "late", node="node-b", ips=["10.99.0.5"], uid=LATE_UID))
    server = pods["stranger"].serve("serve-tcp", "10.99.0.5", "9003", "--response", str(RESP))
    client = pods["web"].spawn("client-tcp", "10.99.0.5", "9003", "--request", str(REQ), "--response", str(RESP),
                               "--hold", "36")
    m = agent.settle()
    assert one(m, "flowlens_agent_k8s_watch_up", resource="pods") == 0
    assert find(m, "flowlens_edge_active_connections", **WEB, dst_workload="external", dst_port="9003") == [1.0]
    time.sleep(max(0.0, 30 - (time.monotonic() - start)))  # the outage lasts 30 s
    api.start()
    took = wait_until(lambda: bool(find(agent.samples(), "flowlens_edge_active_connections", **WEB,
                                        dst_workload="late")) and "kubernetes: synced" in agent.get("/readyz"),
                      10, "every watch back and the new pod's name on the live connection's edge")
    out, err = client.communicate(timeout=60)
    server.communicate(timeout=30)
    moved = json.loads(out.strip().splitlines()[-1])
    assert moved["ok"] == 1 and moved["recv"] == RESP, err
    m = agent.settle()
    # nothing lost: bytes before the names arrived stay on "external", later ones are on "late"
    sent = {dict(lab)["dst_workload"]: v for (n, lab), v in m.items()
            if n == "flowlens_edge_sent_bytes_total" and WEB.items() <= dict(lab).items()
            and ("dst_port", "9003") in lab}
    assert set(sent) == {"external", "late"} and sum(sent.values()) == moved["sent"], sent
    assert took < 10


def test_deleted_pod_series_expire_after_grace(api: ApiServer, pods: Pods, agent: AgentProc) -> None:
    if ("shop", "late") in api.objects[PODS]:
        api.delete(PODS, "shop", "late")
    api.put(PODS, pod("shop", "gone-soon", node="node-b", ips=["10.99.0.5"], uid=LATE_UID))
    exchange(pods, "10.99.0.5", 9004, server="stranger")
    m = agent.settle()
    assert one(m, "flowlens_edge_sent_bytes_total", **WEB, dst_workload="gone-soon", dst_port="9004") == N * REQ
    api.delete(PODS, "shop", "gone-soon")
    # idle_polls (3 x 0.3 s) to retire the key, then series_grace (3 s)
    wait_until(lambda: not find(agent.samples(), "flowlens_edge_sent_bytes_total", dst_workload="gone-soon"),
               15, "series of the deleted pod expired")
    m = agent.samples()
    assert one(m, "flowlens_agent_series_expired_total") >= 1
    assert find(m, "flowlens_edge_sent_bytes_total", **WEB, dst_workload="pay")  # live pods keep theirs


def test_faults_mixed_no_crash_names_converge(api: ApiServer, pods: Pods, agent: AgentProc) -> None:
    """Malformed objects, 500s, a stream cut mid-line and a 410 Gone in a row: the agent keeps serving,
    counts the malformed objects and names a new pod within 10 s of the API behaving again."""
    api.put(PODS, {"metadata": "not an object"})
    api.put(PODS, {"metadata": {"namespace": "shop", "name": "broken"}, "status": {"podIPs": 7}})
    api.fail(6, 500)
    api.end_watches(mid_line=True)
    api.stop()
    api.put(PODS, pod("shop", "fresh", node="node-b", ips=["10.99.0.4"], uid=LATE_UID))  # beats the CIDR name
    api.compact()  # reconnecting watches get 410 Gone and must re-list (through the 500s)
    api.delay = 0.5
    api.start()
    took = wait_until(lambda: one(agent.samples(), "flowlens_agent_k8s_relists_gone_total", resource="pods") >= 1
                      and "kubernetes: synced" in agent.get("/readyz"), 20, "re-listed after 410, watches back")
    api.delay = 0.0
    agent.settle()  # a poll has taken the new names in
    exchange(pods, "10.99.0.4", 9005, server="partner")
    m = agent.settle()
    assert one(m, "flowlens_edge_sent_bytes_total", **WEB, dst_workload="fresh", dst_port="9005") == N * REQ
    assert one(m, "flowlens_agent_k8s_malformed_total", resource="pods") >= 2
    assert one(m, "flowlens_agent_k8s_relists_gone_total", resource="pods") >= 1
    assert agent.proc is not None and agent.proc.poll() is None and took < 10
