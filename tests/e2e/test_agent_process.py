"""The agent as a process: refuses to start with a clear message and exit 2
when the host cannot run it, and leaves no BPF program behind when it stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.ebpf.loader import FEATURES
from tests.conftest import need_root
from tests.pods.agent import ROOT, AgentProc

# program names as bpftool shows them (from BTF)
OURS = {"inet_sock_set_state", "tcp_retransmit_skb", "flush_conns", "sock_send_length", "sock_recv_length",
        "tcp_send_reset", "tcp_receive_reset", "udp_sendmsg4", "udp_recvmsg4", "udp_sendmsg6", "udp_recvmsg6"}
EVERY_FEATURE = {"enable": ["udp", "udp_peer"]}


def our_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {p["id"] for p in json.loads(out) if p.get("name") in OURS}


def run_cli(*args: str, env: dict[str, str] | None = None,
            prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "agent.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture(autouse=True)
def _root() -> None:
    need_root()


def test_missing_btf_exits_2_and_attaches_nothing(tmp_path: Path) -> None:
    before = our_prog_ids()
    r = run_cli("run", "--listen", "127.0.0.1:0", env={"FLOWLENS_SYS_ROOT": str(tmp_path)})
    assert r.returncode == 2
    assert "BTF not found" in r.stderr and str(tmp_path) in r.stderr
    assert our_prog_ids() == before


def test_missing_privileges_exits_2_and_attaches_nothing() -> None:
    before = our_prog_ids()
    r = run_cli("run", "--listen", "127.0.0.1:0", prefix=("setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"))
    assert r.returncode == 2 and "missing privileges" in r.stderr, r.stderr
    assert our_prog_ids() == before


def test_doctor_on_this_kernel() -> None:
    r = run_cli("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("[info] kprobe") and "unavailable" in line for line in lines)
    assert any(line.startswith("[info] fentry") and "unavailable" in line for line in lines)
    for f in FEATURES:
        assert any(line.startswith(f"[ok  ] feature {f.name}") for line in lines), r.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_nothing_left_attached_after_exit(tmp_path: Path, sig: signal.Signals) -> None:
    before = our_prog_ids()
    a = AgentProc(tmp_path, {"poll_interval": 0.5, **EVERY_FEATURE}).start()
    assert a.proc is not None
    try:
        running = our_prog_ids() - before
        assert len(running) == len(OURS), "every program attached while running"
        a.proc.send_signal(sig)
        code = a.proc.wait(timeout=20)
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
    assert code == (-9 if sig == signal.SIGKILL else 0), a.log.read_text()
    if sig != signal.SIGKILL:
        assert "detached" in a.log.read_text()
    # the kernel frees a released program after an RCU grace period: wait for it, bounded
    deadline = time.monotonic() + 10
    while our_prog_ids() & running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (our_prog_ids() & running)


MISSING_HOOK = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "common.h"
SEC("tp_btf/flowlens_no_such_tracepoint")
int missing(void *ctx) { return 0; }
"""


def test_missing_hook_disables_one_feature(tmp_path: Path) -> None:
    """Stand-in for a pre-6.3 kernel: `udp` hooks a tracepoint this kernel lacks."""
    bpf_dir = tmp_path / "bpf"
    bpf_dir.mkdir()
    for f in FEATURES:
        if f.name != "udp":
            (bpf_dir / f"{f.name}.bpf.o").write_bytes((ROOT / "build" / f"{f.name}.bpf.o").read_bytes())
    src = tmp_path / "udp.bpf.c"
    src.write_text(MISSING_HOOK)
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86", f"-I{ROOT / 'bpf'}",
                    f"-I/usr/include/{multiarch or 'x86_64-linux-gnu'}", "-c", str(src), "-o",
                    str(bpf_dir / "udp.bpf.o")], check=True, timeout=60)
    a = AgentProc(tmp_path, {"poll_interval": 0.5, "bpf_dir": str(bpf_dir), **EVERY_FEATURE}).start()
    try:
        m = a.samples()
        enabled = {dict(lab)["feature"]: (v, dict(lab)["reason"]) for (n, lab), v in m.items()
                   if n == "flowlens_agent_feature_enabled"}
    finally:
        assert a.stop() == 0
    assert enabled["udp"][0] == 0
    assert enabled["udp"][1] == "hook not in this kernel (tp_btf/sock_send_length, tp_btf/sock_recv_length)"
    assert all(v == 1 for name, (v, _) in enabled.items() if name != "udp"), enabled
    assert "feature udp       OFF" in a.log.read_text()
