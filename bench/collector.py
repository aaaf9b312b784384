"""Collector cost: one poll (batch read, deltas, naming, series) of 1k and 10k live edges, and the
/metrics render of the series they make, against DESIGN.md section 6's budgets.

The real agent (programs attached, Kubernetes identity against tests/k8s/apiserver.py with one pod per
remote end, so every edge is its own series) runs in this process; the kernel edge map is filled through
bpf_map_update_batch with N client edges from this host's root cgroup to N pod IPs, every counter and
histogram word non-zero. Between polls every value grows, as under traffic, so the steady poll does the
full delta work. CPU is this process's CPU time (time.process_time) around one call; RSS from
/proc/self/status. Usage (root):  python -m bench.collector [--sizes 1000,10000,100000] [--out FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client import generate_latest

from agent.config import Settings
from agent.ebpf import abi
from agent.ebpf.libbpf import check, lib
from agent.run import Agent
from tests.k8s.apiserver import ApiServer
from tests.k8s.objects import NODES, PODS, node, pod, wait_until

BUDGET_POLL_MS, BUDGET_RENDER_MS, BUDGET_RSS_MB = 50.0, 100.0, 100.0
CAPACITY = 131072


def pod_ip(i: int) -> str:
    return str(ipaddress.ip_address("10.128.0.0") + i + 1)


def mapped(ip: str) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + ipaddress.ip_address(ip).packed


def edges(n: int, cgroup: int) -> tuple[np.ndarray, np.ndarray]:
    keys = np.zeros(n, abi.KEY_DTYPE)
    keys["cgroup"] = cgroup
    keys["laddr"] = np.frombuffer(mapped("10.127.0.1"), np.uint8)
    keys["raddr"] = np.frombuffer(b"".join(mapped(pod_ip(i)) for i in range(n)), np.uint8).reshape(n, 16)
    keys["port"], keys["role"], keys["proto"] = 8080, abi.ROLE_CLIENT, abi.PROTO_TCP
    vals = np.ones((n, abi.VAL_WORDS), np.uint64)
    vals[:, abi.W_ACTIVE] = 1
    return keys, vals


def update(fd: int, keys: np.ndarray, vals: np.ndarray) -> None:
    count = ctypes.c_uint32(len(keys))
    check("edges update batch", lib().bpf_map_update_batch(fd, keys.ctypes.data, np.ascontiguousarray(vals).ctypes.data,
                                                            ctypes.byref(count), None))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_ms(fn: object) -> float:
    t = time.process_time()
    fn()  # type: ignore[operator]
    return (time.process_time() - t) * 1000


def measure(n: int, tmp: Path) -> dict[str, float]:
    """Serve n pods from a test API server here; measure the agent in a child process (its RSS alone)."""
    srv = ApiServer(bookmark_interval=5.0).start()
    try:
        srv.put(NODES, node("bench-node", "az-a", ["10.127.0.1"]))
        for i in range(n):
            srv.put(PODS, pod(f"ns{i % 50}", f"w{i}-5c9d8-x{i}", node="other", ips=[pod_ip(i)],
                              owner=("ReplicaSet", f"w{i}-5c9d8"), template_hash="5c9d8"))
        (tmp / "kubeconfig").write_text(srv.kubeconfig())
        out = subprocess.run([sys.executable, "-m", "bench.collector", "--one", str(n), "--kubeconfig",
                              str(tmp / "kubeconfig")], capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        row: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
        return row
    finally:
        srv.stop()


def one(n: int, kubeconfig: str) -> dict[str, float]:
    s = Settings.model_validate({"listen": "127.0.0.1:0", "kubeconfig": kubeconfig, "node_name": "bench-node",
                                 "edge_map_size": CAPACITY, "series_budget": n + 10_000, "idle_polls": 1000})
    agent = Agent(s)
    try:
        assert agent.watches
        wait_until(lambda: agent.watches is not None and "synced" in agent.watches.summary(), 300, "API synced")
        fd = agent.loader.map_fd("edges")
        cgroup = os.stat(agent.opts.cgroup_root).st_ino
        keys, vals = edges(n, cgroup)
        update(fd, keys, vals)
        gc.collect()
        first = cpu_ms(agent.poller.poll)
        steady = []
        for k in range(2, 7):
            update(fd, keys, vals * k)  # every word grows: full delta work
            steady.append(cpu_ms(agent.poller.poll))
        render = [cpu_ms(lambda: generate_latest(agent.registry)) for _ in range(3)]
        series = len(agent.store)
        return {"edges": n, "series": series, "first_ms": first, "poll_ms": float(np.median(steady)),
                "render_ms": float(np.median(render)), "rss_mb": rss_mb(),
                "bytes": float(len(generate_latest(agent.registry)))}
    finally:
        agent.close()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(rows: list[dict[str, float]]) -> str:
    out = ["| edges | series | first poll CPU ms | steady poll CPU ms | /metrics render ms | /metrics MB | RSS MB |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['edges']:,.0f} | {r['series']:,.0f} | {r['first_ms']:.0f} | {r['poll_ms']:.1f} | "
                   f"{r['render_ms']:.0f} | {r['bytes'] / 1e6:.1f} | {r['rss_mb']:.0f} |")
    at10k = [r for r in rows if r["edges"] == 10_000]
    if at10k:
        r = at10k[0]
        out += ["", "| budget (DESIGN.md section 6) | measured at 10k | verdict |", "|---|---:|---|",
                f"| one poll of 10k edges <= {BUDGET_POLL_MS:.0f} ms CPU | {r['poll_ms']:.1f} ms | "
                f"{verdict(r['poll_ms'] <= BUDGET_POLL_MS)} |",
                f"| /metrics with 10k series <= {BUDGET_RENDER_MS:.0f} ms | {r['render_ms']:.0f} ms | "
                f"{verdict(r['render_ms'] <= BUDGET_RENDER_MS)} |",
                f"| RSS <= {BUDGET_RSS_MB:.0f} MB at 10k edges | {r['rss_mb']:.0f} MB | "
                f"{verdict(r['rss_mb'] <= BUDGET_RSS_MB)} |"]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 100k: ~1.7 GB of exposition text at today's ~17 KB per edge series; add it when that is fixed
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: measure one size
    ap.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.kubeconfig)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in (int(x) for x in a.sizes.split(",")):
            rows.append(measure(n, Path(d)))
            print(f"{n} edges: {rows[-1]}", flush=True)
    head = (f"Collector cost, {time.strftime('%Y-%m-%d')}, {os.uname().nodename} ({os.cpu_count()} CPUs), "
            f"kernel {os.uname().release}; `python -m bench.collector` (root).\n\n")
    text = head + table(rows)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
