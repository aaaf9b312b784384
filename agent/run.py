"""The agent process: wire the stages, poll on a timer, stop cleanly.

kernel maps -> collect.Poller -> identity.Resolver -> export collectors.
Start-up fails with :class:`StartError` (the CLI prints it and exits 2)
before anything is attached, or after detaching whatever was: the agent never
leaves programs behind.  SIGINT/SIGTERM: one last poll (flush), detach, exit 0.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from agent import __version__, preflight
from agent.collect.poll import Poller
from agent.collect.store import EdgeLabels, PodLabels, Table
from agent.config import Settings
from agent.ebpf.loader import Loader, LoadOptions
from agent.ebpf.maps import EdgeMaps
from agent.export.edges import Batch, edge_text, pod_text
from agent.export.health import Health, HealthCollector
from agent.export.server import MetricsServer
from agent.export.zones import ZoneCollector
from agent.identity import k8s
from agent.identity.base import Resolver
from agent.identity.cgroups import CgroupIndex
from agent.identity.cluster import ClusterIndex
from agent.identity.conntrack import Conntrack
from agent.identity.kube import KubeResolver
from agent.identity.standalone import CidrNames, Standalone

log = logging.getLogger("flowlens")
_libc = ctypes.CDLL(None)  # the process's own C library: already loaded


def trim() -> None:
    """Hand freed heap back to the kernel.  glibc keeps it otherwise: naming 10k new edges in one poll
    left ~40 MB of freed arenas resident (bench/results); on other C libraries this does nothing."""
    if hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt parameters (malloc.h)


def tune_malloc() -> None:
    """glibc settings for a process that allocates 5 MB numpy arrays every poll and ~1 MB batches every
    scrape, measured at 10k edges (bench/changes.md item 14); other C libraries: no-op.

    - One arena for all threads: glibc gives each new thread its own, and what is freed in one is not
      reused by another, so the HTTP thread's scrape buffers stayed resident beside the poll thread's
      heap (peak 108 -> 88 MB).  The GIL runs one thread at a time anyway.
    - Fixed mmap and trim thresholds (1 MB): by default freeing a large block raises both (the trim
      threshold to as much as 64 MB), after which freed arrays stay in the heap: RSS after a scrape
      109 -> 101 MB in Kubernetes mode.  Costs a few page faults per large array per poll.

    Call before threads start."""
    if hasattr(_libc, "mallopt"):
        _libc.mallopt(M_ARENA_MAX, 1)
        _libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
        _libc.mallopt(M_TRIM_THRESHOLD, 1 << 20)


class StartError(Exception):
    """The agent cannot start; the message says why in plain words."""


def load_options(s: Settings) -> LoadOptions:
    cgroup_root = preflight.cgroup_root(s)
    return LoadOptions(
        bpf_dir=Path(s.bpf_dir) if s.bpf_dir else preflight.default_bpf_dir(),
        cgroup_root=cgroup_root,
        edge_map_size=s.edge_map_size,
        conn_map_size=s.conn_map_size,
        ephemeral=preflight.ephemeral_range(Path(s.proc_root)),
        disabled=frozenset(s.disable),
        enabled=frozenset(s.enable),
        bpf_stats=s.bpf_stats,
        # libbpf reads /sys/kernel/btf/vmlinux itself; name the file only when sys_root moves it.
        btf=preflight.btf_path(s) if Path(s.sys_root) != Path("/sys") else None,
    )


class Agent:
    """Loaded programs plus the poll pipeline; usable without the HTTP server."""

    def __init__(self, s: Settings) -> None:
        problems = preflight.blocking_problems(s)
        if problems:
            raise StartError("; ".join(problems))
        self.settings = s
        tune_malloc()  # before any thread of ours (watches, poll loop, HTTP) starts
        self.opts = load_options(s)
        self.loader = Loader(self.opts)
        features = self.loader.load()
        for f in features:
            log.info("feature %-9s %s%s", f.name, "on " if f.enabled else "OFF",
                     f" ({f.summary})" if f.enabled else f": {f.reason}")
        if not any(f.enabled for f in features):
            self.loader.close()
            raise StartError("no feature could be loaded: " + "; ".join(f"{f.name}: {f.reason}" for f in features))
        self.store: Table[EdgeLabels] = Table(s.series_budget)
        self.pods: Table[PodLabels] = Table()
        maps = EdgeMaps(self.loader.map_fd("edges"), self.loader.map_fd("stats"), s.edge_map_size,
                        os.cpu_count() or 1, flush=self.loader.flush)
        self.watches: k8s.Watches | None = None
        try:
            resolver = self._resolver(s)
        except Exception as e:
            self.loader.close()
            raise StartError(f"kubernetes: {e}") from e
        self.poller = Poller(maps, resolver, self.store, s.idle_polls, pods=self.pods,
                             pod_labels=s.granularity == "pod", grace=s.series_grace)
        w = self.watches
        self.health = Health(__version__, features, self.poller.state, s.edge_map_size,
                             self.store.__len__, self.loader.run_stats, self.loader.sampled_seconds,
                             budget=s.series_budget,
                             expired=lambda: self.store.expired + self.pods.expired,
                             watches=w.states if w else list,
                             malformed=(lambda: dict(w.index.malformed)) if w else dict,
                             identity="kubernetes" if w else "standalone")
        # flow families are rendered by agent.export.edges (streamed text), the rest by client_python
        self.flows = [edge_text(self.store, s.granularity == "pod", s.edge_bucket_stride), pod_text(self.pods)]
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ZoneCollector(self.poller.zones, s.zone_price_per_gb))
        self.registry.register(HealthCollector(self.health))
        # process_cpu_seconds_total, process_resident_memory_bytes, ...: the agent's own cost
        ProcessCollector(proc=s.proc_root, registry=self.registry)

    def exposition(self) -> Iterator[Batch]:
        """The /metrics body (Prometheus text 0.0.4) in batches: agent, zone and process families, then flows."""
        yield [generate_latest(self.registry)]
        for flows in self.flows:
            yield from flows.render()

    def _resolver(self, s: Settings) -> Resolver:
        cgroups = CgroupIndex(self.opts.cgroup_root)
        if not k8s.wanted(s.identity, s.kubeconfig, os.environ):
            return Standalone(s.names, cgroups)
        index = ClusterIndex()
        node = k8s.node_name(s.node_name)
        client = k8s.api_client(s.kubeconfig, os.environ)
        self.watches = k8s.Watches(client, index, s.scope, node, s.k8s_timeout, s.k8s_backoff_max)
        path = Path(s.proc_root) / "net" / "nf_conntrack" if s.conntrack_path == "auto" else Path(s.conntrack_path)
        log.info("kubernetes identity: node %s, scope %s, conntrack %s", node, s.scope, path)
        self.watches.start()
        return KubeResolver(index, cgroups, CidrNames(s.names), Conntrack(path), node)

    def poll(self) -> None:
        try:
            self.poller.poll()
        except Exception:  # keep counting; the error is exported and logged
            self.poller.state.poll_errors += 1
            log.exception("poll failed")
        trim()

    def close(self) -> None:
        if self.watches:
            self.watches.stop()
        self.loader.close()

    def healthy(self) -> tuple[bool, str]:
        st, limit = self.poller.state, 3 * self.settings.poll_interval + 10
        age = time.monotonic() - st.last_poll if st.polls else 0.0
        return (age < limit, f"last poll {age:.1f}s ago" if st.polls else "starting")

    def ready(self) -> tuple[bool, str]:
        on = [f.name for f in self.health.features if f.enabled]
        if not self.poller.state.polls:
            return False, "waiting for the first poll"
        names = f"; {self.watches.summary()}" if self.watches else ""
        return True, "ready: " + ", ".join(on) + names


def run(s: Settings) -> int:
    """`flowlens run`: serve until SIGINT/SIGTERM; returns the exit status."""
    log.info("flowlens %s starting; effective settings: %s", __version__, s.model_dump_json())
    agent = Agent(s)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: flushing and detaching", signal.Signals(signum).name)
        stop.set()

    try:
        host, port = s.listen_addr()
        try:
            server = MetricsServer(host, port, agent.exposition, agent.healthy, agent.ready)
        except OSError as e:
            raise StartError(f"listen {s.listen}: {e.strerror}") from e
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        server.start()
        log.info("serving metrics on http://%s:%d/metrics", host or "0.0.0.0", server.port)
        # bpf_stats: measured from just before each poll (so the poll's walk of conns is) for a fraction
        # of the interval; the kernel's clock reads around every program run cost 3% of churn.
        sample = 1.0 if preflight.stats_always_on(Path(s.proc_root)) else s.bpf_stats_sample
        while not stop.is_set():
            agent.loader.sample_stats(True)
            agent.poll()
            if sample < 1:
                stop.wait(s.poll_interval * sample)
                agent.loader.sample_stats(False)
                stop.wait(s.poll_interval * (1 - sample))
            else:
                stop.wait(s.poll_interval)
        agent.poll()  # flush what the kernel counted since the last poll
        server.stop()
    finally:
        agent.close()
    log.info("detached; bye")
    return 0
