"""Facts about the host the agent needs before loading anything.

Paths come from settings (``proc_root``, ``sys_root``, ``cgroup_root``) so a
pod reads the host's mounted directories and tests point at fixtures.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.config import Settings
from agent.identity.cgroups import find_cgroup2_root

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39


def default_bpf_dir() -> Path:
    """``build/`` beside the agent package (``make build`` writes it) in a source checkout, else
    ``<prefix>/share/flowlens/bpf`` where the image's install.sh puts the objects."""
    checkout = Path(__file__).resolve().parent.parent / "build"
    installed = Path(sys.prefix) / "share" / "flowlens" / "bpf"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


def capabilities(proc_root: Path) -> int:
    """Effective capability mask of this process."""
    for line in (proc_root / "self" / "status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def has_cap(mask: int, cap: int) -> bool:
    return bool(mask >> cap & 1)


def privilege_problem(proc_root: Path) -> str | None:
    """Why this process cannot load tracing programs, or None."""
    mask = capabilities(proc_root)
    if has_cap(mask, CAP_SYS_ADMIN) or (has_cap(mask, CAP_BPF) and has_cap(mask, CAP_PERFMON)):
        return None
    return "missing privileges: needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); run as root"


def btf_path(s: Settings) -> Path:
    return Path(s.sys_root) / "kernel" / "btf" / "vmlinux"


def cgroup_root(s: Settings) -> Path:
    if s.cgroup_root != "auto":
        return Path(s.cgroup_root)
    return find_cgroup2_root(Path(s.proc_root))


def stats_always_on(proc_root: Path) -> bool:
    """kernel.bpf_stats_enabled set by the node's admin: run time is measured all the time anyway."""
    try:
        return (proc_root / "sys/kernel/bpf_stats_enabled").read_text().strip() == "1"
    except OSError:
        return False


def ephemeral_range(proc_root: Path) -> tuple[int, int]:
    """ip_local_port_range, used to tell clients from servers for old sockets."""
    try:
        lo, hi = (proc_root / "sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def blocking_problems(s: Settings) -> list[str]:
    """Everything that stops the agent from running at all, in plain words."""
    out = []
    if not btf_path(s).is_file():
        out.append(f"kernel BTF not found at {btf_path(s)}: flowlens needs a kernel built with "
                   "CONFIG_DEBUG_INFO_BTF=y (5.10+ distributions have it)")
    why = privilege_problem(Path(s.proc_root))
    if why:
        out.append(why)
    try:
        root = cgroup_root(s)
        if not (root / "cgroup.controllers").exists():
            out.append(f"cgroup_root {root} is not a cgroup v2 mount")
    except FileNotFoundError as e:
        out.append(str(e))
    return out
