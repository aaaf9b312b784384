"""The agent process: wire the stages, poll on a timer, stop cleanly.

kernel maps -> collect.Poller -> identity.Resolver -> export collectors.
Start-up fails with :class:`StartError` (the CLI prints it and exits 2)
before anything is attached, or after detaching whatever was: the agent never
leaves programs behind.  SIGINT/SIGTERM: one last poll (flush), detach, exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry

from agent import __version__, preflight
from agent.collect.poll import Poller
from agent.collect.store import EdgeStore
from agent.config import Settings
from agent.ebpf.loader import Loader, LoadOptions
from agent.ebpf.maps import EdgeMaps
from agent.export.edges import EdgeCollector
from agent.export.health import Health, HealthCollector
from agent.export.server import MetricsServer
from agent.identity.cgroups import CgroupIndex
from agent.identity.standalone import Standalone

log = logging.getLogger("flowlens")


class StartError(Exception):
    """The agent cannot start; the message says why in plain words."""


def load_options(s: Settings) -> LoadOptions:
    cgroup_root = preflight.cgroup_root(s)
    return LoadOptions(
        bpf_dir=Path(s.bpf_dir) if s.bpf_dir else preflight.default_bpf_dir(),
        cgroup_root=cgroup_root,
        edge_map_size=s.edge_map_size,
        rtt_interval_ns=int(s.rtt_sample_interval * 1e9),
        ephemeral=preflight.ephemeral_range(Path(s.proc_root)),
        disabled=frozenset(s.disable),
        bpf_stats=s.bpf_stats,
    )


class Agent:
    """Loaded programs plus the poll pipeline; usable without the HTTP server."""

    def __init__(self, s: Settings) -> None:
        problems = preflight.blocking_problems(s)
        if problems:
            raise StartError("; ".join(problems))
        self.settings = s
        self.opts = load_options(s)
        self.loader = Loader(self.opts)
        features = self.loader.load()
        for f in features:
            log.info("feature %-9s %s%s", f.name, "on " if f.enabled else "OFF",
                     f" ({f.summary})" if f.enabled else f": {f.reason}")
        if not any(f.enabled for f in features):
            self.loader.close()
            raise StartError("no feature could be loaded: " + "; ".join(f"{f.name}: {f.reason}" for f in features))
        self.store = EdgeStore()
        maps = EdgeMaps(self.loader.map_fd("edges"), self.loader.map_fd("stats"), s.edge_map_size,
                        os.cpu_count() or 1)
        resolver = Standalone(s.names, CgroupIndex(self.opts.cgroup_root))
        self.poller = Poller(maps, resolver, self.store, s.idle_polls)
        self.health = Health(__version__, features, self.poller.state, s.edge_map_size,
                             self.store.__len__, self.loader.run_stats)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(EdgeCollector(self.store))
        self.registry.register(HealthCollector(self.health))

    def poll(self) -> None:
        try:
            self.poller.poll()
        except Exception:  # keep counting; the error is exported and logged
            self.poller.state.poll_errors += 1
            log.exception("poll failed")

    def close(self) -> None:
        self.loader.close()

    def healthy(self) -> tuple[bool, str]:
        st, limit = self.poller.state, 3 * self.settings.poll_interval + 10
        age = time.monotonic() - st.last_poll if st.polls else 0.0
        return (age < limit, f"last poll {age:.1f}s ago" if st.polls else "starting")

    def ready(self) -> tuple[bool, str]:
        on = [f.name for f in self.health.features if f.enabled]
        if not self.poller.state.polls:
            return False, "waiting for the first poll"
        return True, "ready: " + ", ".join(on)


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
            server = MetricsServer(host, port, agent.registry, agent.healthy, agent.ready)
        except OSError as e:
            raise StartError(f"listen {s.listen}: {e.strerror}") from e
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        server.start()
        log.info("serving metrics on http://%s:%d/metrics", host or "0.0.0.0", server.port)
        while not stop.is_set():
            agent.poll()
            stop.wait(s.poll_interval)
        agent.poll()  # flush what the kernel counted since the last poll
        server.stop()
    finally:
        agent.close()
    log.info("detached; bye")
    return 0
