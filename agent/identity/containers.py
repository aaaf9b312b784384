"""cgroup path -> (container id, pod uid), as kubelet and the runtimes lay them out.

kubelet puts every container of a pod under the pod's cgroup; the runtime
names the container's own cgroup after its id.  Layouts seen in the field
(paths relative to the cgroup v2 root, ``<id>`` = 64 hex chars):

- systemd driver, containerd: ``kubepods.slice/kubepods-burstable.slice/``
  ``kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope``
- systemd driver, CRI-O: ``.../kubepods-pod<uid_>.slice/crio-<id>.scope``
  (``crio-conmon-<id>.scope`` is conmon, not the container)
- systemd driver, Docker: ``.../kubepods-besteffort-pod<uid_>.slice/docker-<id>.scope``
- cgroupfs driver (any runtime): ``kubepods/burstable/pod<uid>/<id>`` (CRI-O: ``crio-<id>``)

The systemd driver writes the pod uid with ``_`` for ``-``.  The container
id is what ``status.containerStatuses[].containerID`` carries after
``<runtime>://``; the pod uid is ``metadata.uid``.  Both are returned when
present: the id is exact, the uid also works for a container that started
before the pod's status listed it (and for the pause container).
"""

from __future__ import annotations

import re
from typing import NamedTuple

_ID = r"[0-9a-f]{64}"
_CONTAINER = re.compile(rf"(?:^|[-:/])({_ID})(?:\.scope)?$")  # <runtime>-<id>.scope, .../<id>
_CONMON = re.compile(rf"crio-conmon-{_ID}\.scope$")
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD = re.compile(rf"(?:^|[/-])pod({_UID})(?:\.slice)?(?:/|$)")


class CgroupOwner(NamedTuple):
    container: str  # 64 hex chars, or "" when the path names none
    pod_uid: str    # dashed form, or "" when the path is not under a kubepods pod


def parse(rel: str) -> CgroupOwner:
    """Container id and pod uid named by a cgroup path (either may be empty)."""
    rel = rel.strip("/")
    m = _CONTAINER.search(rel)
    container = m.group(1) if m and not _CONMON.search(rel) else ""
    p = _POD.search(rel)
    uid = p.group(1).replace("_", "-") if p else ""
    return CgroupOwner(container, uid)


def container_id(status_id: str) -> str:
    """``containerd://<id>`` / ``cri-o://<id>`` / ``docker://<id>`` -> ``<id>``."""
    return status_id.rpartition("://")[2]
