from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.ebpf.loader import Loader, LoadOptions
from agent.identity.cgroups import find_cgroup2_root
from tests.conftest import need_root
from tests.pods.agent import ROOT, AgentProc
from tests.pods.net import Pods


@pytest.fixture(scope="package")
def pods() -> Iterator[Pods]:
    need_root()
    p = Pods(["client", "server"]).up()
    yield p
    p.down()


@pytest.fixture(scope="package")
def agent(pods: Pods, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    tmp: Path = tmp_path_factory.mktemp("agent")
    # stride 1: the histogram tests compare at the kernel's own factor-2 resolution
    a = AgentProc(tmp, {"poll_interval": 0.3, "edge_bucket_stride": 1, "enable": ["udp", "udp_peer"],
                        "names": pods.names_config()}).start()
    yield a
    assert a.stop() == 0, a.log.read_text()


@pytest.fixture
def load_here() -> Iterator[Callable[..., Loader]]:
    """Loads the agent's programs in the test's own process (LoadOptions fields as keywords over the
    defaults), for tests that drive the loader directly; every loader is closed after the test."""
    need_root()
    loaded: list[Loader] = []

    def load(**opts: Any) -> Loader:
        ld = Loader(LoadOptions(bpf_dir=ROOT / "build", cgroup_root=find_cgroup2_root(Path("/proc")), **opts))
        loaded.append(ld)
        ld.load()
        return ld

    yield load
    for ld in loaded:
        ld.close()
