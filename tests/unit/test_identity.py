from __future__ import annotations

import ipaddress
from pathlib import Path

from agent.config import NameRule
from agent.identity.base import EXTERNAL, UNKNOWN, parse_addr
from agent.identity.cgroups import CgroupIndex, find_cgroup2_root, name_of
from agent.identity.standalone import Standalone


def test_cgroup_names() -> None:
    cid = "a" * 64
    assert name_of("") == "host"
    assert name_of(f"system.slice/docker-{cid}.scope") == cid[:12]
    assert name_of(f"kubepods.slice/kubepods-pod1.slice/cri-containerd-{cid}.scope") == cid[:12]
    assert name_of(f"kubepods/besteffort/pod1234/{cid}") == cid[:12]
    assert name_of("system.slice/nginx.service") == "nginx.service"
    assert name_of("test/leaf") == "leaf"


def test_longest_prefix_then_cgroup_then_external(tmp_path: Path) -> None:
    (tmp_path / "app" / "web").mkdir(parents=True)
    idx = CgroupIndex(tmp_path, min_rescan=0)
    r = Standalone([NameRule(cidr="10.0.0.0/8", name="corp"),
                    NameRule(cidr="10.1.0.0/16", name="lab", namespace="ops")], idx)
    a = ipaddress.ip_address
    assert r.remote(a("10.1.2.3")).workload == "lab" and r.remote(a("10.1.2.3")).namespace == "ops"
    assert r.remote(a("10.9.2.3")).workload == "corp"
    assert r.remote(a("192.0.2.1")) == EXTERNAL
    assert r.remote(None) == UNKNOWN
    ino = (tmp_path / "app" / "web").stat().st_ino
    assert r.local(ino, a("192.0.2.9")).workload == "web"
    assert r.local(ino, a("10.1.0.1")).workload == "lab"
    assert r.local(123456789, None) == UNKNOWN


def test_parse_addr_and_cgroup2_mount(tmp_path: Path) -> None:
    assert parse_addr(bytes(16)) is None
    assert str(parse_addr(bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1]))) == "10.0.0.1"
    (tmp_path / "mounts").write_text("proc /proc proc rw 0 0\ncgroup2 /x/cg cgroup2 rw 0 0\n")
    assert find_cgroup2_root(tmp_path) == Path("/x/cg")
