"""Batch reads of the shared maps: the kernel side of the collector's source.

``edges`` is read with ``bpf_map_lookup_batch`` into fresh zeroed arrays of the
map's capacity (one syscall per ``chunk`` entries, ~0.3 us per entry) and viewed
through the numpy dtypes of :mod:`agent.ebpf.abi` without copying.  A zeroed
array that large is mapped lazily (calloc -> mmap), so only the pages of the
entries read become resident, and only for the poll: buffers kept between
polls plus copies out of them held ~11 MB more at 10k edges.  Idle edges are
retired with ``bpf_map_lookup_and_delete_elem``, which returns the final
value, so nothing counted between the last read and the delete is lost.
``flush`` runs first on every read: it brings live TCP connections' byte,
retransmit and RTT counters into ``edges`` (Loader.flush).
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable

import numpy as np

from agent.ebpf import abi
from agent.ebpf.libbpf import BpfError, check, lib


class EdgeMaps:
    """Implements agent.collect.poll.EdgeSource over the loader's map fds."""

    def __init__(self, edges_fd: int, stats_fd: int, capacity: int, ncpus: int,
                 flush: Callable[[], None] = lambda: None) -> None:
        self.edges_fd, self.stats_fd, self.flush = edges_fd, stats_fd, flush
        self.capacity, self.ncpus = capacity, ncpus

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """All entries: (keys as KEY_DTYPE, values as an (n, VAL_WORDS) u64 matrix)."""
        self.flush()
        bpf = lib()
        n = 0
        token = ctypes.c_uint64()
        in_batch = None
        keys = np.zeros(self.capacity, abi.KEY_DTYPE)
        vals = np.zeros(self.capacity, abi.VAL_DTYPE)
        while n < self.capacity:
            count = ctypes.c_uint32(self.capacity - n)
            rc = bpf.bpf_map_lookup_batch(
                self.edges_fd, in_batch, ctypes.byref(token),
                keys[n:].ctypes.data, vals[n:].ctypes.data, ctypes.byref(count), None)
            n += count.value
            if rc == -errno.ENOENT:
                break  # reached the end of the map
            check("edges lookup batch", rc)
            in_batch = ctypes.byref(token)
        return keys[:n], vals[:n].view(np.uint64).reshape(n, abi.VAL_WORDS)

    def retire(self, keys: np.ndarray) -> np.ndarray:
        """Delete ``keys``, returning each one's final value (zeros if already gone)."""
        bpf = lib()
        out = np.zeros((len(keys), abi.VAL_WORDS), np.uint64)
        for i in range(len(keys)):
            rc = bpf.bpf_map_lookup_and_delete_elem(self.edges_fd, keys[i:i + 1].ctypes.data,
                                                  out[i:i + 1].ctypes.data)
            if rc < 0 and rc != -errno.ENOENT:
                raise BpfError("edges lookup_and_delete", -rc)
        return out

    def stats(self) -> list[int]:
        """Per-CPU agent-health counters (enum fl_stat), summed over CPUs."""
        bpf = lib()
        buf = np.zeros(self.ncpus, np.uint64)
        out = []
        for i in range(abi.STATS_SLOTS):
            idx = ctypes.c_uint32(i)
            check("stats lookup", bpf.bpf_map_lookup_elem(self.stats_fd, ctypes.byref(idx), buf.ctypes.data))
            out.append(int(buf.sum()))
        return out
