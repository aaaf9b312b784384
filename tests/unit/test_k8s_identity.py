"""Kubernetes naming without a cluster: cgroup layouts, owners, conntrack, the resolver.

cgroup fixtures are real directories (a cgroup id is a directory inode)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from agent.config import NameRule
from agent.identity.cgroups import CgroupIndex
from agent.identity.cluster import ClusterIndex, parse_pod, workload_from_pod_name
from agent.identity.conntrack import Conntrack, parse
from agent.identity.containers import parse as parse_cgroup
from agent.identity.kube import KubeResolver
from agent.identity.standalone import CidrNames
from tests.k8s.objects import container_id, endpoint_slice, job, node, pod, service

CID = "0123456789abcdef" * 4
UID = "5f8a1c2e-3b4d-4e6f-8a9b-0c1d2e3f4a5b"
U_ = UID.replace("-", "_")


def test_cgroup_layouts() -> None:
    cases = {
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/cri-containerd-{CID}.scope":
            (CID, UID),
        f"kubepods.slice/kubepods-pod{U_}.slice/crio-{CID}.scope": (CID, UID),
        f"kubepods.slice/kubepods-pod{U_}.slice/crio-conmon-{CID}.scope": ("", UID),
        f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/docker-{CID}.scope": (CID, UID),
        f"kubepods/burstable/pod{UID}/{CID}": (CID, UID),
        f"kubepods/besteffort/pod{UID}/crio-{CID}": (CID, UID),
        f"kubepods/pod{UID}": ("", UID),
        f"system.slice/docker-{CID}.scope": (CID, ""),
        "system.slice/sshd.service": ("", ""),
        "": ("", ""),
    }
    for path, want in cases.items():
        assert tuple(parse_cgroup(path)) == want, path


def test_owners() -> None:
    def owner(**kw: object) -> tuple[str, str]:
        p = parse_pod(pod("ns", "x-1", node="n1", **kw))  # type: ignore[arg-type]
        return p.workload, p.kind

    assert owner(owner=("ReplicaSet", "web-7d9f8b6c5d"), template_hash="7d9f8b6c5d") == ("web", "Deployment")
    assert owner(owner=("ReplicaSet", "bare-rs")) == ("bare-rs", "ReplicaSet")
    assert owner(owner=("StatefulSet", "db")) == ("db", "StatefulSet")
    assert owner(owner=("DaemonSet", "agent")) == ("agent", "DaemonSet")
    assert owner() == ("x-1", "Pod")
    idx = ClusterIndex()
    idx.replace("jobs", [job("ns", "backup-29000000", "backup")])
    idx.replace("pods", [pod("ns", "backup-29000000-abcde", node="n1", owner=("Job", "backup-29000000")),
                         pod("ns", "once-xyz12", node="n1", owner=("Job", "once"))])
    idx.sync()
    assert sorted(idx.owner(p) for p in idx.pods.values()) == [("backup", "CronJob"), ("once", "Job")]
    assert workload_from_pod_name("web-7d9f8b6c5d-x2k4p") == ("web", "Deployment")
    assert workload_from_pod_name("db-0") == ("db", "StatefulSet")
    assert workload_from_pod_name("weird") == ("weird", "Pod")


def test_conntrack_dnat_entries(tmp_path: Path) -> None:
    text = (
        "ipv4     2 tcp      6 117 TIME_WAIT src=10.99.0.2 dst=10.96.0.10 sport=40000 dport=80 "
        "src=10.99.0.4 dst=10.99.0.1 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2\n"
        "ipv4     2 tcp      6 431999 ESTABLISHED src=10.99.0.2 dst=10.99.0.3 sport=1 dport=22 "
        "src=10.99.0.3 dst=10.99.0.2 sport=22 dport=1 [ASSURED] mark=0 zone=0 use=2\n"
        "ipv6     10 udp      17 29 src=fd99:0000:0000:0000:0000:0000:0000:0002 dst=fd96::a sport=5 dport=53 "
        "src=fd99::4 dst=fd99::2 sport=53 dport=5 mark=0 zone=0 use=2\n"
        "garbage line\n")
    got = parse(text)
    assert got == {("tcp", "10.99.0.2", "10.96.0.10", 80): {"10.99.0.4": 1},
                   ("udp", "fd99::2", "fd96::a", 53): {"fd99::4": 1}}
    f = tmp_path / "nf_conntrack"
    f.write_text(text)
    assert Conntrack(f).backends("tcp", "10.99.0.2", "10.96.0.10", 80) == {"10.99.0.4": 1}
    missing = Conntrack(tmp_path / "nope")
    assert not missing.backends("tcp", "a", "b", 1) and "nope" in missing.error


def test_resolver(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    web = cg / f"kubepods/burstable/pod{UID}/{container_id('web')}"
    hostnet = cg / "kubepods.slice/kubepods-podaaaaaaaa_bbbb_cccc_dddd_eeeeeeeeeeee.slice" / \
        f"cri-containerd-{container_id('hostnet')}.scope"
    stranger = cg / f"kubepods/burstable/pod{UID.replace('5', '6')}/{container_id('late')}"
    sshd = cg / "system.slice/sshd.service"
    for d in (web, hostnet, stranger, sshd):
        d.mkdir(parents=True)
    conntrack = tmp_path / "nf_conntrack"
    conntrack.write_text("ipv4 2 tcp 6 117 TIME_WAIT src=10.1.0.5 dst=10.96.0.10 sport=4 dport=80 "
                         "src=10.2.0.7 dst=10.1.0.5 sport=8080 dport=4 [ASSURED] use=2\n")
    idx = ClusterIndex()
    idx.replace("nodes", [node("n1", "az-a", ["192.168.1.1"]), node("n2", "az-b", ["192.168.1.2"])])
    idx.replace("pods", [
        pod("shop", "web-5c-abcde", node="n1", ips=["10.1.0.5", "fd01::5"], owner=("ReplicaSet", "web-5c"),
            template_hash="5c", containers=[container_id("web")], uid=UID),
        pod("kube-system", "proxy", node="n1", ips=["192.168.1.1"], host_network=True,
            owner=("DaemonSet", "proxy"), uid="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
        pod("shop", "pay-0", node="n2", ips=["10.2.0.7"], owner=("StatefulSet", "pay")),
        pod("shop", "old-job", node="n2", ips=["10.2.0.7"], phase="Succeeded"),
    ])
    idx.replace("services", [service("shop", "pay", ["10.96.0.10", "fd96::a"])])
    idx.replace("endpointslices", [endpoint_slice("far", "api-x", [("10.3.0.9", "api-6f7d8c9b5f-q2w4x", "n9")],
                                                  zone="az-c")])
    cidrs = CidrNames([NameRule(cidr="203.0.113.0/24", name="partner")])
    r = KubeResolver(idx, CgroupIndex(cg, min_rescan=0), cidrs, Conntrack(conntrack), "n1")
    assert r.refresh() and not r.refresh()
    ip = ipaddress.ip_address

    def local(d: Path) -> tuple[str, str, str, str, str]:
        e = r.local(d.stat().st_ino, None)
        return e.namespace, e.workload, e.kind, e.pod, e.zone

    assert local(web) == ("shop", "web", "Deployment", "web-5c-abcde", "az-a")
    assert local(hostnet) == ("kube-system", "proxy", "DaemonSet", "proxy", "az-a")  # by cgroup, not IP
    assert local(stranger)[2] == "unknown"  # a pod the watch has not delivered yet
    assert local(sshd) == ("", "n1", "Node", "", "az-a")
    assert r.remote(ip("10.2.0.7")).workload == "pay"  # the running pod wins the IP
    assert r.remote(ip("fd01::5")).workload == "web"
    assert (r.remote(ip("fd96::a")).workload, r.remote(ip("fd96::a")).kind) == ("pay", "Service")
    assert (r.remote(ip("192.168.1.2")).kind, r.remote(ip("192.168.1.2")).zone) == ("Node", "az-b")
    assert r.remote(ip("10.3.0.9")).workload == "api" and r.remote(ip("10.3.0.9")).zone == "az-c"
    assert r.remote(ip("203.0.113.9")).workload == "partner"
    assert r.remote(ip("8.8.8.8")).kind == "external"
    backend = r.backend("tcp", ip("10.1.0.5"), ip("10.96.0.10"), 80)
    assert backend is not None and (backend.workload, backend.kind) == ("pay", "StatefulSet")
    assert r.backend("tcp", ip("10.1.0.5"), ip("10.2.0.7"), 80) is None  # not a Service
    pay = r.remote(ip("10.2.0.7"))
    assert r.exists(pay)
    idx.apply("pods", "DELETED", pod("shop", "pay-0", node="n2"))
    assert r.refresh() and not r.exists(pay)  # its only pod is gone: the workload's series may expire
    assert r.exists(r.remote(ip("10.96.0.10")))  # Services, Nodes, CIDRs, external never expire by name
