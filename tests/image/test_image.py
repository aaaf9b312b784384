"""The container image, built without a container engine: the Dockerfile's two stages are one script
each (deploy/image/build.sh, install.sh), and this test runs them in debootstrap chroots of the
Dockerfile's Debian release, then runs the installed agent from the runtime root mounted read-only,
with only the capabilities the Helm chart grants, and checks it counts loopback traffic exactly.

A broken build step, a missing runtime package, a compiler leaking into the runtime stage, a write to
the root filesystem or a capability the chart forgot all fail here.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_root
from tests.deploy.chart import agent_caps
from tests.image.chroot import Rootfs, debootstrap
from tests.pods.agent import ROOT, AgentProc, find

SENT, ANSWER = 123_457, 7_001  # bytes: odd sizes so a match is not luck


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rootfs, Path]]:
    """(runtime rootfs with the agent installed, build stage output)."""
    need_root()
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap missing (make test installs it)")
    tmp = tmp_path_factory.mktemp("image")
    base = debootstrap(tmp / "base.tar")
    build = Rootfs.from_tar(base, tmp / "build")
    src = build.path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "build", ".git", "__pycache__",
                                                             "*.egg-info", ".pytest_cache", ".mypy_cache"))
    build.run("sh", "/src/deploy/image/build.sh", "/src", "/stage", timeout=1200)
    runtime = Rootfs.from_tar(base, tmp / "runtime")
    shutil.copytree(build.path / "stage", runtime.path / "stage")
    shutil.rmtree(build.path)
    runtime.run("sh", "/stage/install.sh", "/stage", timeout=900)
    shutil.rmtree(runtime.path / "stage")
    yield runtime, tmp


def test_runtime_stage_has_no_compiler(stages: tuple[Rootfs, Path]) -> None:
    runtime, _ = stages
    pkgs = runtime.run("dpkg-query", "-W", "-f", "${Package}\n").stdout.split()
    assert "libbpf1" in pkgs and "python3" in pkgs
    compilers = re.compile(r"(clang|llvm|libclang|libllvm|gcc(-\d+)?$|cpp(-\d+)?$|libbpf-dev|linux-libc-dev|libc6-dev)")
    leaked = [p for p in pkgs if compilers.match(p)]
    assert leaked == []
    assert not (runtime.path / "usr/include/bpf").exists()
    objs = sorted(p.name for p in (runtime.path / "opt/flowlens/share/flowlens/bpf").glob("*.bpf.o"))
    assert objs == sorted(p.name for p in (ROOT / "build").glob("*.bpf.o"))


def _exchange(port_holder: list[int], done: threading.Event) -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv.settimeout(30)  # a failed client must not leave this thread (and pytest) waiting forever
        port_holder.append(srv.getsockname()[1])
        done.set()
        conn, _ = srv.accept()
        with conn:
            got = 0
            while got < SENT:
                got += len(conn.recv(65536))
            conn.sendall(b"a" * ANSWER)


def test_agent_runs_read_only_with_chart_capabilities(stages: tuple[Rootfs, Path]) -> None:
    runtime, tmp = stages
    etc = runtime.path / "etc" / "flowlens"
    etc.mkdir(exist_ok=True)
    agent = AgentProc(etc, {"poll_interval": 0.5, "identity": "standalone", "enable": ["udp", "udp_peer"]})
    argv = runtime.read_only_argv(agent_caps(), "/opt/flowlens/bin/flowlens", "run", "--config",
                                  "/etc/flowlens/flowlens.yaml")
    agent.start(timeout=60, argv=argv)
    try:
        port: list[int] = []
        ready = threading.Event()
        server = threading.Thread(target=_exchange, args=(port, ready))
        server.start()
        ready.wait(10)
        with socket.create_connection(("127.0.0.1", port[0])) as c:
            c.sendall(b"q" * SENT)
            got = 0
            while got < ANSWER:
                got += len(c.recv(65536))
        server.join(10)
        s = agent.settle()
        enabled = {dict(lab)["feature"]: v for (n, lab), v in s.items() if n == "flowlens_agent_feature_enabled"}
        assert enabled and all(v == 1.0 for v in enabled.values()), enabled
        edge = dict(dst_port=str(port[0]), reporter="client")
        assert find(s, "flowlens_edge_sent_bytes_total", **edge) == [SENT]
        assert find(s, "flowlens_edge_received_bytes_total", **edge) == [ANSWER]
    finally:
        code = agent.stop()
    log = agent.log.read_text()
    assert code == 0, log
    assert "Read-only file system" not in log
    # nothing written into the image: the only new files are the ones this test put there
    changed = subprocess.run(["find", str(runtime.path), "-xdev", "-newer", str(agent.config), "-type", "f"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert [c for c in changed if not c.startswith(str(etc))] == []
