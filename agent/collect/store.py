"""Per-series accumulators the exporter reads: one row per edge label set.

Rows hold the summed deltas of every kernel key that resolved to the label
set (all the words of ``fl_edge_val``, u64), and ``active`` holds the gauge
recomputed at each poll.  Rows are never reused while the process lives, so
counters are monotonic; dropping the series of vanished pods comes with the
Kubernetes identity.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from agent.ebpf import abi


def grown(a: np.ndarray, need: int, step: int) -> np.ndarray:
    """``a`` with zero rows appended so row ``need`` exists (doubling, at least ``step``)."""
    if need < len(a):
        return a
    extra = max(step, len(a))
    return np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)])


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


class EdgeStore:
    """Thread-safe: the poll thread writes, scrape threads take snapshots."""

    def __init__(self) -> None:
        self._ids: dict[EdgeLabels, int] = {}
        self._labels: list[EdgeLabels] = []
        self._totals = np.zeros((0, abi.VAL_WORDS), np.uint64)
        self._active = np.zeros(0, np.int64)
        self._lock = threading.Lock()

    def series_id(self, labels: EdgeLabels) -> int:
        with self._lock:
            sid = self._ids.get(labels)
            if sid is None:
                sid = self._ids[labels] = len(self._labels)
                self._labels.append(labels)
                self._totals = grown(self._totals, sid, 256)
                self._active = grown(self._active, sid, 256)
            return sid

    def add(self, series: np.ndarray, delta: np.ndarray) -> None:
        """Add per-key deltas (n, VAL_WORDS) to their series (n,)."""
        with self._lock:
            np.add.at(self._totals, series, delta)

    def set_active(self, series: np.ndarray, active: np.ndarray) -> None:
        """Replace the active-connections gauge with the sum over live keys."""
        with self._lock:
            self._active[:] = 0
            np.add.at(self._active, series, active)

    def __len__(self) -> int:
        """Number of series (label sets) seen so far."""
        with self._lock:
            return len(self._labels)

    def snapshot(self) -> tuple[list[EdgeLabels], np.ndarray, np.ndarray]:
        """(labels, totals, active) copies, consistent with each other."""
        with self._lock:
            n = len(self._labels)
            return list(self._labels), self._totals[:n].copy(), self._active[:n].copy()
