"""The reflector with the real `kubernetes` client against the list/watch test
server: pages, resourceVersion, bookmarks, 410 Gone, cut streams, errors,
slow responses and malformed objects.  No root needed."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from agent.identity import k8s
from agent.identity.cluster import ClusterIndex
from agent.identity.watch import Reflector
from tests.k8s.apiserver import ApiServer
from tests.k8s.objects import PODS, pod, wait_until


@pytest.fixture()
def api() -> Iterator[ApiServer]:
    srv = ApiServer(bookmark_interval=0.2).start()
    yield srv
    srv.stop()


class Running:
    """One reflector on pods, in a thread, with a fresh index."""

    def __init__(self, api: ApiServer, tmp: str, **kw: float) -> None:
        path = f"{tmp}/kubeconfig"
        with open(path, "w") as f:
            f.write(api.kubeconfig())
        self.index = ClusterIndex()
        fn = k8s.lister(k8s.api_client(path, {}), k8s.PATHS["pods"][1])
        self.r = Reflector("pods", fn, self.index, page=50, timeout=kw.get("timeout", 2.0),
                           watch_seconds=int(kw.get("watch_seconds", 30)), backoff_max=kw.get("backoff_max", 0.5))
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.r.run, args=(self.stop,), daemon=True)
        self.t.start()

    def names(self) -> set[str]:
        self.index.sync()
        return {p.name for p in self.index.pods.values()}

    def close(self) -> None:
        self.stop.set()


def test_list_pages_then_watch_with_bookmarks(api: ApiServer, tmp_path) -> None:
    for i in range(120):
        api.put(PODS, pod("ns", f"p{i}", node="n1", ips=[f"10.1.0.{i}"]))
    w = Running(api, str(tmp_path))
    try:
        wait_until(lambda: len(w.names()) == 120, 10, "120 listed pods")
        lists = [r for r in api.requests if "watch" not in r]
        assert len(lists) == 3 and "limit=50" in lists[0] and "continue=50" in lists[1]
        api.put(PODS, pod("ns", "late", node="n1", ips=["10.1.1.1"]))
        api.delete(PODS, "ns", "p0")
        wait_until(lambda: "late" in w.names() and "p0" not in w.names(), 5, "watch events applied")
        watch = next(r for r in api.requests if "watch=True" in r or "watch=true" in r)
        assert "allowWatchBookmarks=true" in watch and "resourceVersion=" in watch
        assert w.r.state.synced and w.r.state.up and w.r.state.lists == 1
        assert set(api.auth) == {"Bearer test"}  # the kubeconfig's token, on lists and watches
    finally:
        w.close()


def test_410_gone_relists(api: ApiServer, tmp_path) -> None:
    api.put(PODS, pod("ns", "a", node="n1"))
    w = Running(api, str(tmp_path))
    try:
        wait_until(lambda: w.names() == {"a"}, 5, "first list")
        api.stop()
        api.put(PODS, pod("ns", "b", node="n1"))
        api.compact()  # the event adding b is gone: re-watching from before it must get 410
        api.start()
        wait_until(lambda: w.names() == {"a", "b"}, 5, "re-list after 410")
        assert w.r.state.relists_gone >= 1 and w.r.state.lists >= 2
    finally:
        w.close()


def test_cut_stream_rewatches_without_relist(api: ApiServer, tmp_path) -> None:
    w = Running(api, str(tmp_path))
    try:
        wait_until(lambda: w.r.state.synced, 5, "first list")
        api.put(PODS, pod("ns", "a", node="n1"))
        wait_until(lambda: w.names() == {"a"}, 5, "event before the cut")
        api.end_watches(mid_line=True)
        api.put(PODS, pod("ns", "b", node="n1"))
        wait_until(lambda: w.names() == {"a", "b"}, 5, "event after the cut")
        assert w.r.state.lists == 1, "a cut stream resumes from its resourceVersion, it does not re-list"
    finally:
        w.close()


def test_errors_slow_responses_and_malformed_objects(api: ApiServer, tmp_path) -> None:
    api.fail(3, 500)
    api.put(PODS, {"metadata": "garbage"})
    api.put(PODS, {"metadata": {"namespace": "ns", "name": "no-uid"}, "status": {"podIPs": 5}})
    api.put(PODS, pod("ns", "good", node="n1"))
    w = Running(api, str(tmp_path), timeout=0.5)
    try:
        wait_until(lambda: w.names() == {"good"}, 10, "list after three 500s")
        assert w.r.state.errors >= 3 and w.index.malformed["pods"] == 2
        errors = w.r.state.errors
        api.delay = 1.0  # slower than the client's list timeout (0.5 s)
        api.stop()
        api.put(PODS, pod("ns", "during", node="n1"))
        api.compact()
        api.start()  # the watch gets 410; every re-list now times out
        wait_until(lambda: not w.r.state.up and w.r.state.errors >= errors + 2, 10, "slow lists time out")
        api.delay = 0.0
        api.put(PODS, pod("ns", "after", node="n1"))
        wait_until(lambda: "after" in w.names(), 5, "caught up after slow responses")
    finally:
        w.close()


def test_down_then_back_converges(api: ApiServer, tmp_path) -> None:
    api.put(PODS, pod("ns", "a", node="n1"))
    w = Running(api, str(tmp_path))
    try:
        wait_until(lambda: w.names() == {"a"}, 5, "first list")
        api.stop()
        api.put(PODS, pod("ns", "b", node="n1"))  # changes while down
        wait_until(lambda: not w.r.state.up, 5, "outage noticed")
        api.start()
        took = wait_until(lambda: w.names() == {"a", "b"}, 10, "converged after the outage")
        assert took < 10
    finally:
        w.close()
