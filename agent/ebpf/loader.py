"""Load, attach and detach the feature objects; the agent's only libbpf user.

Each feature is one object file ``build/<feature>.bpf.o``.  Features are
loaded in order; the first one to load creates the shared maps (``edges``,
``conns``, ``socks``, ``stats``) and every later object reuses their fds, so
all features aggregate into one map.  Features marked ``default=False`` load
only when named in the ``enable`` setting (their cost is in the summary).
A feature whose hook the kernel lacks, or whose load or attach fails, is
closed again and reported in :class:`FeatureStatus`; it never takes the
agent down.

A program in section ``raw_tp`` (no tracepoint named) is attached to nothing:
:meth:`Loader.flush` runs it with BPF_PROG_TEST_RUN, which the kernel does
under rcu_read_lock (lifecycle's walk of ``conns``; the poller calls it before
each read of ``edges``).  It was a map-element iterator until a kernel build
refused those at load (EPERM, bpf/lifecycle.bpf.c).

Per-program run time (``bpf_stats``) is measured while the process holds a
BPF_ENABLE_STATS fd.  The kernel then reads the clock twice around every
program run, which cost 3 points of churn throughput here (bench/changes.md),
so the agent samples: :meth:`Loader.sample_stats` opens the fd for part of
each poll interval and ``sampled_seconds`` says for how long in all.

Every attachment is a BPF link owned by this process (nothing is pinned), so
the kernel detaches everything when the process exits, even on SIGKILL;
:meth:`Loader.close` detaches explicitly on a clean stop.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.ebpf import abi
from agent.ebpf.libbpf import (
    BPF_STATS_RUN_TIME,
    BpfError,
    ProgRuns,
    TestRunOpts,
    check,
    check_ptr,
    datasec_offsets,
    lib,
    open_opts,
    prog_runs,
)

log = logging.getLogger(__name__)

SHARED_MAPS = ("edges", "conns", "socks", "stats")


@dataclass(frozen=True)
class Feature:
    name: str
    summary: str
    hooks: tuple[str, ...]  # tp_btf names, cgroup attach types or test-run programs, for doctor
    cgroup: bool = False  # programs attach to the cgroup v2 root
    default: bool = True  # False: loaded only when named in the `enable` setting


FEATURES: tuple[Feature, ...] = (
    Feature("lifecycle", "TCP connects, failures, connect latency, active connections, bytes, "
            "retransmits, RTT", ("tp_btf/inet_sock_set_state", "tp_btf/tcp_retransmit_skb", "raw_tp (test run)")),
    Feature("tcpevents", "TCP resets sent and received",
            ("tp_btf/tcp_send_reset", "tp_btf/tcp_receive_reset")),
    Feature("udp", "UDP bytes sent and received; runs on every socket send/recv call, ~2-3% of a "
            "saturated TCP request/response load", ("tp_btf/sock_send_length", "tp_btf/sock_recv_length"),
            default=False),
    Feature("udp_peer", "peers of unconnected UDP sockets (sendto/recvfrom), for udp",
            ("cgroup/sendmsg4", "cgroup/recvmsg4", "cgroup/sendmsg6", "cgroup/recvmsg6"), cgroup=True,
            default=False),
)


@dataclass(frozen=True)
class LoadOptions:
    """Kernel-side settings; see agent.config.Settings for meaning and units."""

    bpf_dir: Path
    cgroup_root: Path
    edge_map_size: int = 16384
    conn_map_size: int = 65536
    ephemeral: tuple[int, int] = (32768, 60999)
    disabled: frozenset[str] = frozenset()
    enabled: frozenset[str] = frozenset()  # features off by default that are wanted
    bpf_stats: bool = True
    btf: Path | None = None  # kernel BTF; None = libbpf's default (/sys/kernel/btf/vmlinux)


@dataclass
class FeatureStatus:
    name: str
    summary: str
    enabled: bool
    reason: str = ""


@dataclass
class _Loaded:
    obj: int
    links: list[int] = field(default_factory=list)
    progs: dict[str, int] = field(default_factory=dict)  # program name -> fd
    runs: list[int] = field(default_factory=list)  # fds of the raw_tp programs flush() runs
    attach: list[int] = field(default_factory=list)  # libbpf programs that attach (links in `links`)
    cgroup: bool = False  # they attach to the cgroup v2 root


class Loader:
    """Owns every BPF object, link and map fd of the agent."""

    def __init__(self, opts: LoadOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self.opts = opts
        self.status: list[FeatureStatus] = []
        self._loaded: dict[str, _Loaded] = {}
        self._maps: dict[str, int] = {}
        self._stats_fd = -1
        self._clock = clock
        self._sampled = 0.0  # seconds run time was measured, up to _since
        self._since = 0.0  # when the open stats fd was opened
        self._stats_error = ""

    # -- public -------------------------------------------------------------
    def load(self) -> list[FeatureStatus]:
        """Load and attach every enabled feature; return what worked and why not."""
        if self.opts.bpf_stats and not self.sample_stats(True):
            log.warning("per-program run time unavailable: %s", self._stats_error)
        for feat in FEATURES:
            if feat.name in self.opts.disabled:
                self.status.append(FeatureStatus(feat.name, feat.summary, False, "disabled by settings"))
                continue
            if not feat.default and feat.name not in self.opts.enabled:
                self.status.append(FeatureStatus(feat.name, feat.summary, False, "off by default (setting enable)"))
                continue
            try:
                self._loaded[feat.name] = self._load_one(feat)
                self.status.append(FeatureStatus(feat.name, feat.summary, True))
            except OSError as e:  # BpfError included: its strerror is the whole message
                first = str(e.strerror or e).splitlines()[0]
                log.warning("feature %s disabled: %s", feat.name, e)
                self.status.append(FeatureStatus(feat.name, feat.summary, False, first))
        return self.status

    def map_fd(self, name: str) -> int:
        """fd of a shared map, or -1 when no feature loaded."""
        return self._maps.get(name, -1)

    def programs(self) -> dict[str, tuple[str, int]]:
        """program name -> (feature, fd) of every attached program."""
        return {p: (f, fd) for f, ld in self._loaded.items() for p, fd in ld.progs.items()}

    def run_stats(self) -> dict[str, tuple[str, ProgRuns]]:
        """program -> (feature, its run counters), cumulative since load."""
        return {prog: (feat, prog_runs(fd)) for prog, (feat, fd) in self.programs().items()}

    def sample_stats(self, on: bool) -> bool:
        """Start or stop measuring per-program run time; False if it cannot be measured."""
        if on and self._stats_fd < 0 and self.opts.bpf_stats:
            try:
                self._stats_fd = check("bpf_enable_stats", lib().bpf_enable_stats(BPF_STATS_RUN_TIME))
            except BpfError as e:
                self._stats_error = str(e)
                return False
            self._since = self._clock()
        elif not on and self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1
            self._sampled += self._clock() - self._since
        return self._stats_fd >= 0 or not on

    def sampled_seconds(self) -> float:
        """Seconds per-program run time has been measured since load (the window of run_stats)."""
        return self._sampled + (self._clock() - self._since if self._stats_fd >= 0 else 0.0)

    def flush(self) -> None:
        """Run every test-run program once (lifecycle's flush_conns: live connections' counters into
        ``edges``); raises BpfError if the kernel refuses the run."""
        bpf = lib()
        for ld in self._loaded.values():
            for fd in ld.runs:
                opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts))
                check("test run flush", bpf.bpf_prog_test_run_opts(fd, ctypes.byref(opts)))

    def detach(self) -> None:
        """Detach every program, keeping objects, maps and counts; :meth:`attach` undoes it.  For
        measuring what the attached programs cost against their absence in one process (bench)."""
        bpf = lib()
        for ld in self._loaded.values():
            for link in ld.links:
                bpf.bpf_link__destroy(link)
            ld.links.clear()

    def attach(self) -> None:
        """Attach again what :meth:`detach` detached."""
        for ld in self._loaded.values():
            if not ld.links:
                self._attach(ld)

    def close(self) -> None:
        """Detach every link and close every object; safe to call twice."""
        bpf = lib()
        for ld in self._loaded.values():
            for link in ld.links:
                bpf.bpf_link__destroy(link)
            bpf.bpf_object__close(ld.obj)
        self._loaded.clear()
        for fd in self._maps.values():
            os.close(fd)
        self._maps.clear()
        self.sample_stats(False)

    # -- internals ----------------------------------------------------------
    def _load_one(self, feat: Feature) -> _Loaded:
        bpf = lib()
        path = self.opts.bpf_dir / f"{feat.name}.bpf.o"
        if not path.is_file():
            raise OSError(2, f"object {path} not found (run `make build`)")
        opts = open_opts(self.opts.btf)
        obj = check_ptr(f"open {path}", bpf.bpf_object__open_file(str(path).encode(),
                                                                   ctypes.byref(opts) if opts else None))
        ld = _Loaded(obj, cgroup=feat.cgroup)
        try:
            self._configure(obj)
            try:
                check(f"load {feat.name}", bpf.bpf_object__load(obj))
            except BpfError as e:
                if e.errno == errno.ESRCH:  # libbpf: attach target not in vmlinux BTF
                    raise OSError(e.errno, f"hook not in this kernel ({', '.join(feat.hooks)})") from e
                raise
            for name in SHARED_MAPS:
                if name not in self._maps:
                    m = bpf.bpf_object__find_map_by_name(obj, name.encode())
                    self._maps[name] = os.dup(check(f"map {name} fd", bpf.bpf_map__fd(m)))
            prog = bpf.bpf_object__next_program(obj, None)
            while prog:
                fd = bpf.bpf_program__fd(prog)
                ld.progs[bpf.bpf_program__name(prog).decode()] = fd
                if bpf.bpf_program__section_name(prog) == b"raw_tp":
                    ld.runs.append(fd)  # attached to nothing: flush() runs it
                else:
                    ld.attach.append(prog)
                prog = bpf.bpf_object__next_program(obj, prog)
            self._attach(ld)
        except BaseException:
            for link in ld.links:
                bpf.bpf_link__destroy(link)
            bpf.bpf_object__close(obj)
            raise
        return ld

    def _attach(self, ld: _Loaded) -> None:
        bpf = lib()
        cg_fd = os.open(self.opts.cgroup_root, os.O_RDONLY | os.O_DIRECTORY) if ld.cgroup else -1
        try:
            for prog in ld.attach:
                pname = bpf.bpf_program__name(prog).decode()
                link = bpf.bpf_program__attach_cgroup(prog, cg_fd) if ld.cgroup else bpf.bpf_program__attach(prog)
                ld.links.append(check_ptr(f"attach {pname}", link))
        finally:
            if cg_fd >= 0:
                os.close(cg_fd)

    def _configure(self, obj: int) -> None:
        """Size and share the maps and write `cfg` into .rodata, before load."""
        bpf = lib()
        for name in SHARED_MAPS:
            m = check_ptr(f"map {name}", bpf.bpf_object__find_map_by_name(obj, name.encode()))
            if name in self._maps:
                check(f"reuse map {name}", bpf.bpf_map__reuse_fd(m, self._maps[name]))
            elif name == "edges":
                check("size edges", bpf.bpf_map__set_max_entries(m, self.opts.edge_map_size))
            elif name == "conns":
                check("size conns", bpf.bpf_map__set_max_entries(m, self.opts.conn_map_size))
        rodata = check_ptr(".rodata", bpf.bpf_object__find_map_by_name(obj, b".rodata"))
        size = ctypes.c_size_t()
        base = check_ptr(".rodata value", bpf.bpf_map__initial_value(rodata, ctypes.byref(size)))
        off = datasec_offsets(check_ptr("object BTF", bpf.bpf_object__btf(obj)), ".rodata")["cfg"]
        if off + ctypes.sizeof(abi.Config) > size.value:
            raise OSError(22, "cfg outside .rodata: object and agent/ebpf/abi.py disagree")
        cfg = abi.Config.from_address(base + off)
        cfg.ephemeral_lo, cfg.ephemeral_hi = self.opts.ephemeral
        cfg.conn_slots = self.opts.conn_map_size
