"""cgroup v2 id -> path -> a readable name, for the local end of an edge.

The kernel reports a socket's cgroup as the inode number of its cgroup v2
directory (``kernfs_node.id``).  We walk the cgroup root (a setting: the chart
mounts the host's) once, index directories by inode, and walk again only when
an unknown id shows up, at most once per ``min_rescan`` seconds.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from agent.identity.containers import parse

_UNIT = re.compile(r"([^/]+\.(?:service|scope|slice))$")


def find_cgroup2_root(proc_root: Path) -> Path:
    """First cgroup2 mount in ``<proc>/mounts`` (``/sys/fs/cgroup`` on most nodes)."""
    try:
        for line in (proc_root / "mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    except OSError as e:
        raise FileNotFoundError(f"{proc_root}/mounts: {e.strerror}") from e
    raise FileNotFoundError(f"no cgroup2 mount in {proc_root}/mounts (cgroup v2 is required)")


def name_of(rel: str) -> str:
    """Readable name of a cgroup path relative to the root.

    Container ids (docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>,
    cgroupfs .../<id>) become the 12-char short id; systemd units stay as
    ``foo.service``; anything else is the leaf directory; the root is ``host``.
    """
    rel = rel.strip("/")
    if not rel:
        return "host"
    container = parse(rel).container
    if container:
        return container[:12]
    m = _UNIT.search(rel)
    if m:
        return m.group(1)
    return rel.rsplit("/", 1)[-1]


class CgroupIndex:
    """Maps cgroup ids to paths relative to the root; rescans lazily."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic,
                 min_rescan: float = 2.0) -> None:
        self.root = root
        self._clock = clock
        self._min_rescan = min_rescan
        self._by_id: dict[int, str] = {}
        self._scanned = float("-inf")

    def scan(self) -> None:
        by_id: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self.root):
            try:
                by_id[os.stat(dirpath).st_ino] = os.path.relpath(dirpath, self.root)
            except OSError:
                continue  # removed while walking
        self._by_id = {k: ("" if v == "." else v) for k, v in by_id.items()}
        self._scanned = self._clock()

    def path(self, cgroup_id: int) -> str | None:
        """Relative path of a cgroup id, or None if it is (still) unknown."""
        rel = self._by_id.get(cgroup_id)
        if rel is None and self._clock() - self._scanned >= self._min_rescan:
            self.scan()
            rel = self._by_id.get(cgroup_id)
        return rel
