"""The poll stage: kernel aggregates -> deltas -> monotonic per-series totals.

The kernel keeps cumulative values per edge key.  Each poll reads them all,
subtracts what the previous poll saw for the same key, and adds the delta to
the series (label set) the key resolves to, so series stay monotonic for the
life of the process whatever happens to kernel entries.  A key whose
counters did not move for ``idle_polls`` polls and has no active connection
is retired: deleted from the kernel map with its final value accounted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from agent.collect.store import EdgeLabels, EdgeStore, grown
from agent.ebpf import abi
from agent.identity.base import Resolver, parse_addr


class EdgeSource(Protocol):
    def read(self) -> tuple[np.ndarray, np.ndarray]: ...
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
    kernel: list[int] = field(default_factory=lambda: [0] * abi.STATS_SLOTS)


class Poller:
    def __init__(self, source: EdgeSource, resolver: Resolver, store: EdgeStore,
                 idle_polls: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.source, self.resolver, self.store = source, resolver, store
        self.idle_polls = idle_polls
        self.clock = clock
        self.state = PollState()
        self._slot: dict[bytes, int] = {}
        self._free: list[int] = []
        self._prev = np.zeros((0, abi.VAL_WORDS), np.uint64)
        self._series = np.zeros(0, np.int64)
        self._idle = np.zeros(0, np.int32)

    def poll(self) -> None:
        start = self.clock()
        self.resolver.refresh()
        keys, vals = self.source.read()
        _orient(keys, vals)
        slots = self._slots_of(keys)
        delta = vals - self._prev[slots]
        delta[:, abi.W_ACTIVE] = 0  # a gauge, not a counter
        self._prev[slots] = vals
        series = self._series[slots]
        self.store.add(series, delta)
        active = vals[:, abi.W_ACTIVE].view(np.int64)
        self.store.set_active(series, active)

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

    def _retire(self, keys: np.ndarray, slots: np.ndarray) -> None:
        final = self.source.retire(keys)
        _orient(keys, final)
        gone: np.ndarray = ~np.asarray(final.any(axis=1))
        delta = np.where(gone[:, None], 0, final - self._prev[slots])
        delta[:, abi.W_ACTIVE] = 0
        self.store.add(self._series[slots], delta)
        for k, s in zip(_rows(keys), slots):
            del self._slot[k]
            self._free.append(int(s))
        self.state.retired += len(slots)

    def _slots_of(self, keys: np.ndarray) -> np.ndarray:
        out = np.empty(len(keys), np.int64)
        get = self._slot.get
        for i, kb in enumerate(_rows(keys)):
            s = get(kb)
            if s is None:
                s = self._new_slot(kb, keys[i])
            out[i] = s
        return out

    def _new_slot(self, kb: bytes, key: np.void) -> int:
        if self._free:
            s = self._free.pop()
        else:
            s = len(self._slot)
            self._prev = grown(self._prev, s, 1024)
            self._series = grown(self._series, s, 1024)
            self._idle = grown(self._idle, s, 1024)
        self._slot[kb] = s
        self._prev[s] = 0
        self._idle[s] = 0
        self._series[s] = self.store.series_id(self._labels(key))
        return s

    def _labels(self, key: np.void) -> EdgeLabels:
        local = self.resolver.local(int(key["cgroup"]), parse_addr(key["laddr"].tobytes()))
        remote = self.resolver.remote(parse_addr(key["raddr"].tobytes()))
        client = int(key["role"]) != abi.ROLE_SERVER
        src, dst = (local, remote) if client else (remote, local)
        return EdgeLabels(
            reporter="client" if client else "server",
            src_namespace=src.namespace, src_workload=src.workload, src_workload_kind=src.kind,
            dst_namespace=dst.namespace, dst_workload=dst.workload, dst_workload_kind=dst.kind,
            dst_port=str(int(key["port"])),
            protocol="tcp" if int(key["proto"]) == abi.PROTO_TCP else "udp",
        )


def _orient(keys: np.ndarray, vals: np.ndarray) -> None:
    """Edges are client -> server: a server socket's sent bytes are the client's
    received bytes, so swap the two words on rows of role server, in place."""
    srv = keys["role"] == abi.ROLE_SERVER
    vals[srv, abi.W_SENT], vals[srv, abi.W_RECV] = vals[srv, abi.W_RECV], vals[srv, abi.W_SENT].copy()


def _rows(keys: np.ndarray) -> list[bytes]:
    """Each key's raw bytes (the dict key of its slot)."""
    raw = keys.tobytes()
    size = keys.dtype.itemsize
    return [raw[i:i + size] for i in range(0, len(raw), size)]
