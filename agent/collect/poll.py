"""The poll stage: kernel aggregates -> deltas -> monotonic per-series totals.

The kernel keeps cumulative values per edge key.  Each poll reads them all,
subtracts what the previous poll saw for the same key, and adds the delta to
the series (label set) the key resolves to, so series stay monotonic for the
life of the process whatever happens to kernel entries.  A key whose
counters did not move for ``idle_polls`` polls and has no active connection
is retired: deleted from the kernel map with its final value accounted.

Each key maps to an edge series and, when its local end is a pod, a pod
series (``flowlens_pod_*``).  When the resolver says names may have changed
(a watch caught up), every live key is resolved again: deltas from then on
go to the new series, what was counted before stays where it was.  A new
edge series beyond the store's budget is folded: its remote end becomes
``other`` (kind ``other``), or, if that series is new too, both ends and the
port do, so the budget is exceeded by at most the four overflow series
(client/server x tcp/udp); ``folded`` counts the keys that were.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from agent.collect.store import CHUNK, EdgeLabels, EdgeStore, Ends, PodLabels, PodStore, ZoneLabels, ZoneStore, grown
from agent.ebpf import abi
from agent.identity.base import End, Resolver, parse_addr

OTHER = End("", "other", "other")


class EdgeSource(Protocol):
    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """All entries: keys (KEY_DTYPE) and an (n, VAL_WORDS) u64 matrix, fresh: the poll works in them."""
    def retire(self, keys: np.ndarray) -> np.ndarray: ...
    def stats(self) -> list[int]: ...


@dataclass
class PollState:
    """What the agent reports about itself (``flowlens_agent_*``)."""

    polls: int = 0
    poll_errors: int = 0
    last_poll: float = 0.0       # clock() of the last successful poll
    poll_seconds: float = 0.0    # wall time of the last poll
    poll_seconds_total: float = 0.0
    entries: int = 0             # live kernel edge entries
    retired: int = 0             # entries deleted after idling
    folded: int = 0              # keys whose remote end was folded into "other" (series budget)
    relabels: int = 0            # times live keys were resolved again after a names change
    kernel: list[int] = field(default_factory=lambda: [0] * abi.STATS_SLOTS)


class Poller:
    def __init__(self, source: EdgeSource, resolver: Resolver, store: EdgeStore, idle_polls: int,
                 clock: Callable[[], float] = time.monotonic, pods: PodStore | None = None,
                 pod_labels: bool = False, grace: float = 300.0) -> None:
        self.source, self.resolver, self.store = source, resolver, store
        self.pods = pods if pods is not None else PodStore()
        self.zones = ZoneStore()
        self.pod_labels, self.grace = pod_labels, grace
        self.idle_polls = idle_polls
        self.clock = clock
        self.state = PollState()
        self._slot: dict[bytes, int] = {}
        self._free: list[int] = []
        self._keys = np.zeros(0, abi.KEY_DTYPE)
        self._prev = np.zeros((0, abi.VAL_WORDS), np.uint64)
        self._series = np.zeros(0, np.int64)
        self._pod = np.zeros(0, np.int64)  # pod series of the slot, -1 if the local end is no pod
        self._zone = np.zeros((0, 2), np.int64)  # zone series (src->dst, dst->src), -1 if not counted
        self._idle = np.zeros(0, np.int32)

    def poll(self) -> None:
        start = self.clock()
        if self.resolver.refresh():
            self._relabel()
        keys, vals = self.source.read()
        _orient(keys, vals)
        slots = self._slots_of(keys)
        active = vals[:, abi.W_ACTIVE].view(np.int64).copy()
        delta = vals
        for a in range(0, len(slots), CHUNK):  # in place, by chunks (store.CHUNK)
            part = slots[a:a + CHUNK]
            prev = self._prev[part]
            self._prev[part] = vals[a:a + CHUNK]
            delta[a:a + CHUNK] -= prev
        delta[:, abi.W_ACTIVE] = 0  # a gauge, not a counter
        self._add(slots, delta)
        self.store.set_active(self._series[slots], active)
        pod = self._pod[slots]
        self.pods.set_active(pod[pod >= 0], active[pod >= 0])

        moved = delta.any(axis=1) | (active != 0)
        self._idle[slots] = np.where(moved, 0, self._idle[slots] + 1)
        done: np.ndarray = np.asarray(self._idle[slots] >= self.idle_polls)
        if done.any():
            self._retire(keys[done], slots[done])

        st = self.state
        st.kernel = self.source.stats()
        st.entries = len(keys) - int(done.sum())
        st.polls += 1
        st.last_poll = self.clock()
        st.poll_seconds = st.last_poll - start
        st.poll_seconds_total += st.poll_seconds
        live = slots[~done]
        now = self.clock()
        self.store.expire(self._series[live], self.resolver.exists, now, self.grace)
        pod = self._pod[live]
        self.pods.expire(pod[pod >= 0], self.resolver.exists, now, self.grace)

    def _retire(self, keys: np.ndarray, slots: np.ndarray) -> None:
        final = self.source.retire(keys)
        _orient(keys, final)
        gone: np.ndarray = ~np.asarray(final.any(axis=1))
        delta = np.where(gone[:, None], 0, final - self._prev[slots])
        delta[:, abi.W_ACTIVE] = 0
        self._add(slots, delta)
        for k, s in zip(_rows(keys), slots):
            del self._slot[k]
            self._free.append(int(s))
        self.state.retired += len(slots)

    def _slots_of(self, keys: np.ndarray) -> np.ndarray:
        rows = _rows(keys)
        get = self._slot.get
        found = list(map(get, rows))
        if None not in found:  # the steady state: one conversion, no loop (6 ms of a 10k-edge poll was that loop)
            return np.array(found, np.int64)
        new = [i for i, s in enumerate(found) if s is None]
        # grow every per-slot array once, not in steps: each step held the old and the new copy
        need = len(self._slot) + len(new) - 1  # the highest slot: free ones come first, then len(_slot) up
        self._keys, self._prev, self._series, self._pod, self._zone, self._idle = (
            grown(a, need, 1024) for a in (self._keys, self._prev, self._series, self._pod, self._zone, self._idle))
        self.store.reserve(len(new))
        for i in new:
            found[i] = self._new_slot(rows[i], keys[i])
        return np.array(found, np.int64)

    def _new_slot(self, kb: bytes, key: np.void) -> int:
        s = self._free.pop() if self._free else len(self._slot)
        self._slot[kb] = s
        self._keys[s] = key
        self._prev[s] = 0
        self._idle[s] = 0
        self._resolve(s)
        return s

    def _relabel(self) -> None:
        for s in self._slot.values():
            self._resolve(s)
        self.state.relabels += 1

    def _resolve(self, s: int) -> None:
        """Point slot ``s`` at the edge and pod series its key resolves to now."""
        key = self._keys[s]
        r = self.resolver
        laddr, raddr = parse_addr(key["laddr"].tobytes()), parse_addr(key["raddr"].tobytes())
        proto = "tcp" if int(key["proto"]) == abi.PROTO_TCP else "udp"
        port = int(key["port"])
        local, remote = r.local(int(key["cgroup"]), laddr), r.remote(raddr)
        client = int(key["role"]) != abi.ROLE_SERVER
        backend = r.backend(proto, laddr, raddr, port) if client else None
        labels = _labels(local, remote, client, backend, port, proto, self.pod_labels)
        if self.store.full(labels):  # budget: fold the remote end; if even that is new, fold the edge
            remote, backend = OTHER, None
            labels = _labels(local, remote, client, backend, port, proto, self.pod_labels)
            if self.store.full(labels):
                labels = _labels(OTHER, OTHER, client, None, 0, proto, False)
            self.state.folded += 1
        src, dst = (local, remote) if client else (remote, local)
        self._series[s] = self.store.series_id(labels, Ends(src, dst, "client" if client else "server"))
        self._pod[s] = self.pods.series_id(PodLabels(local.namespace, local.pod, local.workload, local.kind),
                                           Ends(local, local, "")) if local.pod else -1
        zdst = backend or dst  # a Service's bytes cross to the zone of the backend that served them
        counted = client and (src.zone or zdst.zone)
        sz, dz = src.zone or "unknown", zdst.zone or "unknown"
        self._zone[s] = (self.zones.series_id(ZoneLabels(sz, dz)), self.zones.series_id(ZoneLabels(dz, sz))) \
            if counted else (-1, -1)

    def _add(self, slots: np.ndarray, delta: np.ndarray) -> None:
        """Add per-slot deltas to the edge series, the pod series and the zone totals of the slots."""
        self.store.add(self._series[slots], delta)
        pod = self._pod[slots]
        self.pods.add(pod[pod >= 0], delta[pod >= 0])
        # bytes between zones, counted once: by the client's reporter (sent: src->dst, received: dst->src)
        zone = self._zone[slots]
        on = zone[:, 0] >= 0
        if not on.any():
            return
        # summed per zone pair first: a full (2n, VAL_WORDS) delta matrix for one word was 10 MB at 10k edges
        pairs, which = np.unique(np.concatenate([zone[on, 0], zone[on, 1]]), return_inverse=True)
        flow = np.zeros((len(pairs), abi.VAL_WORDS), np.uint64)
        np.add.at(flow[:, abi.W_SENT], which, np.concatenate([delta[on, abi.W_SENT], delta[on, abi.W_RECV]]))
        self.zones.add(pairs, flow)


def _labels(local: End, remote: End, client: bool, backend: End | None, port: int, proto: str,
            pods: bool) -> EdgeLabels:
    src, dst = (local, remote) if client else (remote, local)
    return EdgeLabels(
        reporter="client" if client else "server",
        src_namespace=src.namespace, src_workload=src.workload, src_workload_kind=src.kind,
        dst_namespace=dst.namespace, dst_workload=dst.workload, dst_workload_kind=dst.kind,
        dst_port=str(port), protocol=proto,
        dst_backend=backend.workload if backend else "", dst_backend_kind=backend.kind if backend else "",
        src_pod=src.pod if pods else "", dst_pod=dst.pod if pods else "",
    )


def _orient(keys: np.ndarray, vals: np.ndarray) -> None:
    """Edges are client -> server: a server socket's sent bytes are the client's
    received bytes, so swap the two words on rows of role server, in place."""
    srv = keys["role"] == abi.ROLE_SERVER
    vals[srv, abi.W_SENT], vals[srv, abi.W_RECV] = vals[srv, abi.W_RECV], vals[srv, abi.W_SENT].copy()


def _rows(keys: np.ndarray) -> list[bytes]:
    """Each key's bytes less its trailing NULs (the dict key of its slot).  Keys are all one size, so
    two that differ differ here too; numpy's fixed-size bytes type gives them in one call, 0.5 ms for
    10k keys against 3.0 ms slicing each out of ``tobytes()``."""
    return list(keys.view(f"S{keys.dtype.itemsize}").tolist())
