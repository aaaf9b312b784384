from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_root
from tests.pods.agent import AgentProc
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
