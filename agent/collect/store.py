"""Per-series accumulators the exporters read: one row per label set.

Rows hold the summed deltas of every kernel key that resolved to the label
set (all the words of ``fl_edge_val``, u64), and ``active`` holds the gauge
recomputed at each poll.  Counters are monotonic while a series lives.

A series lives while a kernel key maps to it; once none does, and an end
it names is gone (a deleted pod or workload, an ``unknown`` placeholder),
it is exported for ``grace`` more seconds and then dropped, its row reused.
A store may have a ``budget``: :meth:`Table.full` says when a new label set
would exceed it, and the collector folds instead (see ``collect.poll``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

import numpy as np

from agent.ebpf import abi
from agent.identity.base import End

L = TypeVar("L", bound=Hashable)
# Rows per step of a large array operation: 1,024 rows of fl_edge_val (488 KB) stay under the agent's
# 1 MB mmap threshold (agent.run.tune_malloc), so the heap reuses the temporaries.  In one step, 10k
# edges' rows were a fresh 5 MB mapping each time, ~1,200 page faults at ~3.8 us each on this VM.
CHUNK = 1024


def grown(a: np.ndarray, need: int, step: int) -> np.ndarray:
    """``a`` with zero rows appended so row ``need`` exists (+25%, at least ``step``: at 10k edges
    doubling left 6 MB of never-used rows in the two largest arrays)."""
    if need < len(a):
        return a
    out = np.zeros((len(a) + max(step, len(a) // 4, need + 1 - len(a)), *a.shape[1:]), a.dtype)
    out[:len(a)] = a  # the zero tail is calloc'd: large arrays leave it unmapped until rows are used
    return out


def scatter_add(target: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``target[index[i]] += values[i]`` for every i, repeated indices summed (``np.add.at``'s result).

    Most polls map every key to a series of its own (folding into one is the exception), and then
    fancy-indexed ``+=`` does it: 4.8 ms against ``np.add.at``'s 9.6 for 10k rows of 61 words here,
    by chunks of ``CHUNK`` rows so that the gathered rows come from the heap (bench/changes.md item 24).
    """
    seen = np.zeros(len(target), bool)
    seen[index] = True
    if np.count_nonzero(seen) != len(index):
        np.add.at(target, index, values)
        return
    for a in range(0, len(index), CHUNK):
        target[index[a:a + CHUNK]] += values[a:a + CHUNK]


class EdgeLabels(NamedTuple):
    reporter: str
    src_namespace: str
    src_workload: str
    src_workload_kind: str
    dst_namespace: str
    dst_workload: str
    dst_workload_kind: str
    dst_port: str
    protocol: str
    dst_backend: str       # workload behind a Service address ("" if not a Service or not known)
    dst_backend_kind: str
    src_pod: str           # "" unless granularity is pod
    dst_pod: str


class PodLabels(NamedTuple):
    namespace: str
    pod: str
    workload: str
    workload_kind: str


class ZoneLabels(NamedTuple):
    src_zone: str
    dst_zone: str


class Ends(NamedTuple):
    """What a series is about: its ends (with zones), and which one is local."""

    src: End
    dst: End
    reporter: str


class Table(Generic[L]):
    """Thread-safe: the poll thread writes, scrape threads take snapshots."""

    def __init__(self, budget: int = 0) -> None:
        self.budget = budget
        self._ids: dict[L, int] = {}
        self._labels: list[L | None] = []
        self._ends: list[Ends | None] = []
        self._free: list[int] = []
        self._gone_since: dict[int, float] = {}
        self._totals = np.zeros((0, abi.VAL_WORDS), np.uint64)
        self._active = np.zeros(0, np.int64)
        self._lock = threading.Lock()
        self.expired = 0

    def full(self, labels: L) -> bool:
        """True if ``labels`` is new and there is no room for it."""
        return bool(self.budget) and labels not in self._ids and len(self._ids) >= self.budget

    def series_id(self, labels: L, ends: Ends | None = None) -> int:
        with self._lock:
            sid = self._ids.get(labels)
            if sid is None:
                if self._free:
                    sid = self._free.pop()
                    self._labels[sid], self._ends[sid] = labels, ends
                    self._totals[sid] = 0
                else:
                    sid = len(self._labels)
                    self._labels.append(labels)
                    self._ends.append(ends)
                    self._totals = grown(self._totals, sid, 256)
                    self._active = grown(self._active, sid, 256)
                self._ids[labels] = sid
            self._gone_since.pop(sid, None)
            return sid

    def reserve(self, n: int) -> None:
        """Room for ``n`` more series, allocated at once (their rows stay unmapped until used)."""
        with self._lock:
            need = len(self._labels) + n - len(self._free) - 1
            self._totals = grown(self._totals, need, 256)
            self._active = grown(self._active, need, 256)

    def add(self, series: np.ndarray, delta: np.ndarray) -> None:
        """Add per-key deltas (n, VAL_WORDS) to their series (n,)."""
        with self._lock:
            scatter_add(self._totals, series, delta)

    def set_active(self, series: np.ndarray, active: np.ndarray) -> None:
        """Replace the active-connections gauge with the sum over live keys."""
        with self._lock:
            self._active[:] = 0
            scatter_add(self._active, series, active)

    def expire(self, live: np.ndarray, exists: Callable[[End], bool], now: float, grace: float) -> int:
        """Drop series with no live key whose ends are gone for ``grace`` seconds; returns how many."""
        unused = np.ones(len(self._labels), bool)
        unused[live] = False
        dropped = 0
        for sid in np.flatnonzero(unused).tolist():  # a series with a live key stays: most, not looked at
            ends = self._ends[sid]
            if ends is None or self._labels[sid] is None:
                continue
            if exists(ends.src) and exists(ends.dst):
                self._gone_since.pop(sid, None)
                continue
            since = self._gone_since.setdefault(sid, now)
            if now - since >= grace:
                with self._lock:
                    del self._ids[self._labels[sid]]  # type: ignore[arg-type]
                    self._labels[sid] = self._ends[sid] = None
                    self._totals[sid] = 0
                    self._active[sid] = 0
                    self._free.append(sid)
                    del self._gone_since[sid]
                dropped += 1
        self.expired += dropped
        return dropped

    def __len__(self) -> int:
        """Number of live series (label sets)."""
        with self._lock:
            return len(self._ids)

    def snapshot(self) -> tuple[list[L], list[Ends | None], np.ndarray, np.ndarray]:
        """(labels, ends, totals, active) of live series, consistent with each other."""
        with self._lock:
            rows = [i for i, lab in enumerate(self._labels) if lab is not None]
            labels: list[L] = [self._labels[i] for i in rows]  # type: ignore[misc]
            return labels, [self._ends[i] for i in rows], self._totals[rows], self._active[rows]


EdgeStore = Table[EdgeLabels]
PodStore = Table[PodLabels]
ZoneStore = Table[ZoneLabels]  # bytes from src_zone to dst_zone in the W_SENT word
