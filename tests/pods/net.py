"""Test "pods": network namespaces on one bridge, each with its own cgroup v2
directory, so the agent sees real sockets in distinct cgroups and netns.

Addresses: pod i gets 10.99.0.(i+2)/24 and fd99::(i+2)/64 (nodad).  Traffic
only ever goes between these namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from agent.identity.cgroups import find_cgroup2_root

TRAFFIC = Path(__file__).with_name("traffic.py")
BRIDGE = "flbr0"
GATEWAY = "10.99.0.1"


def sh(*args: str, check: bool = True, ns: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and res.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res.stdout


def open_sockets(port: int, ns: str | None = None) -> list[str]:
    """TCP sockets with `port` at either end that the kernel has not closed yet: every state but LISTEN
    and TIME-WAIT (what is left of a connection once its full socket went to CLOSE)."""
    return sh("ss", "-Htan", "exclude", "time-wait", "exclude", "listening",
              f"( sport = :{port} or dport = :{port} )", ns=ns).splitlines()


def wait_closed(port: int, ns: str | None = None, timeout: float = 20) -> None:
    """Until every connection on `port` reached CLOSE, so the programs ran each CLOSE.  A process's exit
    does not mean that: its last FIN and the peer's ACK are still to be processed, and on a loaded host
    that took longer than the agent's two polls after the traffic."""
    deadline = time.monotonic() + timeout
    while left := open_sockets(port, ns):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(left)} sockets on port {port} not closed after {timeout} s: {left[:3]}")
        time.sleep(0.02)


class Pod:
    def __init__(self, name: str, index: int, cgroup: Path) -> None:
        self.name, self.ns, self.cgroup = name, f"fl-{name}", cgroup
        self.ip4, self.ip6 = f"10.99.0.{index + 2}", f"fd99::{index + 2}"

    def cmd(self, *args: str) -> list[str]:
        """`args` as a command that runs in this pod's netns and cgroup (joined before any socket)."""
        # join the cgroup first: `ip netns exec` remounts /sys, hiding the cgroup tree
        inner = f'echo $$ > {self.cgroup}/cgroup.procs && exec "$0" "$@"'
        return ["sh", "-c", inner, "ip", "netns", "exec", self.ns, *args]

    def spawn(self, *args: str, cpus: str | None = None) -> subprocess.Popen[str]:
        """Run traffic.py in this pod, pinned to `cpus` (taskset list) when given."""
        pin = ["taskset", "-c", cpus] if cpus else []
        cmd = self.cmd(*pin, sys.executable, str(TRAFFIC), *args)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self, p: subprocess.Popen[str], timeout: float = 60) -> dict[str, int]:
        """The JSON line a traffic.py process ends with: what it moved."""
        out, err = p.communicate(timeout=timeout)
        if p.returncode:
            raise RuntimeError(f"{self.name} {p.args!r}: {err}")
        return dict(json.loads(out.strip().splitlines()[-1]))

    def run(self, *args: str, timeout: float = 60) -> dict[str, int]:
        return self.result(self.spawn(*args), timeout)

    def serve(self, *args: str, cpus: str | None = None) -> subprocess.Popen[str]:
        """Start a server and wait for its 'listening' line."""
        p = self.spawn(*args, cpus=cpus)
        assert p.stdout is not None
        line = p.stdout.readline()
        if "listening" not in line:
            p.kill()
            raise RuntimeError(f"server in {self.name} did not start: {p.stderr.read() if p.stderr else ''}")
        return p

    def sh(self, *args: str, check: bool = True) -> str:
        return sh(*args, check=check, ns=self.ns)

    def nstat(self, counter: str) -> int:
        """Absolute value of a kernel SNMP counter in this pod's netns."""
        out = self.sh("nstat", "-az", "--json")
        data = json.loads(out)
        return int(next(iter(data.values()))[counter])


class Pods:
    """``cgroups`` maps a pod name to its cgroup path under the test root (default: the name),
    e.g. the nested directories kubelet creates.  ``gateway`` makes the host the pods' router
    (10.99.0.1, forwarding on the bridge only), as a node is for kube-proxy's DNAT."""

    def __init__(self, names: list[str], cgroups: dict[str, str] | None = None, gateway: bool = False) -> None:
        self.root = find_cgroup2_root(Path("/proc")) / "flowlens-test"
        self.pods = {n: Pod(n, i, self.root / (cgroups or {}).get(n, n)) for i, n in enumerate(names)}
        self.gateway = gateway

    def __getitem__(self, name: str) -> Pod:
        return self.pods[name]

    def up(self) -> Pods:
        self.down()
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "link", "set", BRIDGE, "up")
        for i, p in enumerate(self.pods.values()):
            sh("ip", "netns", "add", p.ns)
            sh("ip", "link", "add", f"flv{i}", "type", "veth", "peer", "name", "eth0", "netns", p.ns)
            sh("ip", "link", "set", f"flv{i}", "master", BRIDGE, "up")
            p.sh("ip", "link", "set", "lo", "up")
            p.sh("ip", "addr", "add", f"{p.ip4}/24", "dev", "eth0")
            p.sh("ip", "addr", "add", f"{p.ip6}/64", "dev", "eth0", "nodad")
            p.sh("ip", "link", "set", "eth0", "up")
            p.cgroup.mkdir(parents=True, exist_ok=True)
            if self.gateway:
                p.sh("ip", "route", "add", "default", "via", GATEWAY)
                # the host would redirect us straight to a DNAT'd backend, which drops the ClusterIP
                p.sh("sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.eth0.accept_redirects=0")
        if self.gateway:
            sh("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
            sh("sysctl", "-qw", f"net.ipv4.conf.{BRIDGE}.forwarding=1")
        return self

    def down(self) -> None:
        for i, p in enumerate(self.pods.values()):
            sh("ip", "netns", "del", p.ns, check=False)
            sh("ip", "link", "del", f"flv{i}", check=False)
        sh("ip", "link", "del", BRIDGE, check=False)
        for p in self.pods.values():
            if p.cgroup.exists():
                for pid in (p.cgroup / "cgroup.procs").read_text().split():
                    os.kill(int(pid), 9)
        if self.root.exists():  # deepest first
            for d in sorted((d for d in self.root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                try:
                    d.rmdir()
                except OSError:
                    pass
            try:
                self.root.rmdir()
            except OSError:
                pass

    def names_config(self) -> list[dict[str, str]]:
        out = []
        for p in self.pods.values():
            out.append({"cidr": f"{p.ip4}/32", "name": p.name, "namespace": "test"})
            out.append({"cidr": f"{p.ip6}/128", "name": p.name, "namespace": "test"})
        return out
