"""Poll stage and exporter with a fake kernel source: deltas stay monotonic,
retired keys keep their final counts, server rows are oriented client->server."""

from __future__ import annotations

import ipaddress

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from agent.collect.poll import Poller
from agent.collect.store import EdgeStore, scatter_add
from agent.ebpf import abi
from agent.export.edges import edge_text, joined
from agent.identity.base import EXTERNAL, Address, End


class FakeSource:
    def __init__(self) -> None:
        self.entries: dict[bytes, np.ndarray] = {}
        self.retired: list[bytes] = []
        self.late: dict[bytes, np.ndarray] = {}  # counts landing between read and delete

    def put(self, key: np.ndarray, **words: int) -> None:
        row = np.zeros(abi.VAL_WORDS, np.uint64)
        for w, v in words.items():
            row[getattr(abi, w)] = v
        self.entries[key.tobytes()] = row

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        keys = np.frombuffer(b"".join(self.entries), abi.KEY_DTYPE).copy()
        vals = np.array(list(self.entries.values()), np.uint64).reshape(-1, abi.VAL_WORDS)
        return keys, vals

    def retire(self, keys: np.ndarray) -> np.ndarray:
        for k, row in self.late.items():
            self.entries[k] = row
        out = [self.entries.pop(k.tobytes()) for k in keys]
        self.retired += [k.tobytes() for k in keys]
        return np.array(out, np.uint64).reshape(-1, abi.VAL_WORDS)

    def stats(self) -> list[int]:
        return [0] * abi.STATS_SLOTS


class FakeResolver:
    def local(self, cgroup: int, addr: Address | None) -> End:
        return End("ns", f"app{cgroup}", "host")

    def remote(self, addr: Address | None) -> End:
        return EXTERNAL

    def backend(self, proto: str, local: Address | None, remote: Address | None, port: int) -> End | None:
        return None

    def exists(self, end: End) -> bool:
        return True

    def refresh(self) -> bool:
        return False


def key(cgroup: int, role: int, port: int = 80) -> np.ndarray:
    k = np.zeros(1, abi.KEY_DTYPE)
    k["cgroup"], k["role"], k["port"], k["proto"] = cgroup, role, port, abi.PROTO_TCP
    k["laddr"][0] = np.frombuffer(ipaddress.IPv6Address("::ffff:10.0.0.1").packed, np.uint8)
    return k


def totals(store: EdgeStore) -> dict[tuple[str, str], tuple[int, int]]:
    labels, _, tot, _ = store.snapshot()
    return {(lab.reporter, lab.src_workload): (int(t[abi.W_SENT]), int(t[abi.W_RECV])) for lab, t in zip(labels, tot)}


def test_deltas_retire_and_orientation() -> None:
    src, store = FakeSource(), EdgeStore()
    p = Poller(src, FakeResolver(), store, idle_polls=2)
    src.put(key(1, abi.ROLE_CLIENT), W_SENT=100, W_RECV=10)
    src.put(key(2, abi.ROLE_SERVER), W_SENT=7, W_RECV=70)  # server sent 7 = client received 7
    p.poll()
    src.put(key(1, abi.ROLE_CLIENT), W_SENT=150, W_RECV=10)
    p.poll()
    assert totals(store) == {("client", "app1"): (150, 10), ("server", "external"): (70, 7)}
    # key 2 idles for 2 polls and is retired; 2 bytes land between the last read and the delete
    late = np.zeros(abi.VAL_WORDS, np.uint64)
    late[abi.W_SENT], late[abi.W_RECV] = 9, 70
    src.late[key(2, abi.ROLE_SERVER).tobytes()] = late
    p.poll()
    assert src.retired == [key(2, abi.ROLE_SERVER).tobytes()]
    assert totals(store)[("server", "external")] == (70, 9)
    # the kernel recreates the key from zero: the series keeps growing monotonically
    src.late.clear()
    src.put(key(2, abi.ROLE_SERVER), W_SENT=1, W_RECV=5)
    p.poll()
    assert totals(store)[("server", "external")] == (75, 10)
    assert totals(store)[("client", "app1")] == (150, 10)
    # key 1 has idled two polls by now too: retired with its counts kept
    assert src.retired[1] == key(1, abi.ROLE_CLIENT).tobytes()
    assert p.state.retired == 2 and p.state.polls == 4


def test_new_keys_fill_retired_slots_then_grow() -> None:
    """A poll with more new keys than retired slots: the free slots are reused and the per-slot arrays
    grow once to the highest slot (1,024 slots full, 4 retired, 8 new: slots 1,024-1,027 are new rows)."""
    src, store = FakeSource(), EdgeStore()
    p = Poller(src, FakeResolver(), store, idle_polls=1)
    for c in range(1, 1025):
        src.put(key(c, abi.ROLE_CLIENT), W_SENT=c)
    p.poll()
    for c in range(5, 1025):  # all but cgroups 1-4 move: those four idle out and are retired
        src.put(key(c, abi.ROLE_CLIENT), W_SENT=2 * c)
    p.poll()
    assert len(src.retired) == 4
    for c in range(1025, 1033):
        src.put(key(c, abi.ROLE_CLIENT), W_SENT=c)
    p.poll()
    want = {("client", f"app{c}"): (c if c < 5 or c > 1024 else 2 * c, 0) for c in range(1, 1033)}
    assert totals(store) == want


def test_exposition() -> None:
    src, store = FakeSource(), EdgeStore()
    p = Poller(src, FakeResolver(), store, idle_polls=5)
    src.put(key(1, abi.ROLE_CLIENT, 443), W_SENT=5, W_RECV=6, W_CONNS=2, W_ACTIVE=1,
            W_CONNECT_SUM=3000, W_CONNECT_HIST=0)
    src.entries[key(1, abi.ROLE_CLIENT, 443).tobytes()][abi.W_CONNECT_HIST + 8] = 2  # 2 in (2.048, 4.096] ms
    p.poll()
    text = joined(edge_text(store, pods=False, stride=2).render()).decode()
    got = {(x.name, tuple(sorted(x.labels.items()))): x.value
           for fam in text_string_to_metric_families(text) for x in fam.samples}
    lab = (("dst_backend", ""), ("dst_backend_kind", ""), ("dst_namespace", ""), ("dst_port", "443"),
           ("dst_workload", "external"),
           ("dst_workload_kind", "external"), ("protocol", "tcp"), ("reporter", "client"),
           ("src_namespace", "ns"), ("src_workload", "app1"), ("src_workload_kind", "host"))

    def v(name: str, *extra: tuple[str, str]) -> float:
        return got[(name, tuple(sorted(lab + extra)))]

    assert v("flowlens_edge_sent_bytes_total") == 5 and v("flowlens_edge_received_bytes_total") == 6
    assert v("flowlens_edge_active_connections") == 1
    assert v("flowlens_edge_connections_total", ("result", "success")) == 2
    assert v("flowlens_edge_connections_total", ("result", "refused")) == 0
    # stride 2: bounds 16 us * 4^i; 2.048 ms (an odd power of two) is not exported
    assert v("flowlens_edge_connect_duration_seconds_bucket", ("le", "0.001024")) == 0
    assert ("flowlens_edge_connect_duration_seconds_bucket", tuple(sorted(lab + (("le", "0.002048"),)))) not in got
    assert v("flowlens_edge_connect_duration_seconds_bucket", ("le", "0.004096")) == 2
    assert v("flowlens_edge_connect_duration_seconds_bucket", ("le", "67.108864")) == 2
    assert v("flowlens_edge_connect_duration_seconds_bucket", ("le", "+Inf")) == 2
    assert v("flowlens_edge_connect_duration_seconds_count") == 2
    assert v("flowlens_edge_connect_duration_seconds_sum") == 0.003
    les = {dict(k[1])["le"] for k in got if k[0] == "flowlens_edge_connect_duration_seconds_bucket"}
    assert len(les) == 13
    # no RTT sample yet: the RTT histogram series is not born
    assert not any(k[0].startswith("flowlens_edge_rtt_seconds") for k in got)
    # all 23 bounds at stride 1, and the same cumulative counts where both export
    fine = {(x.name, tuple(sorted(x.labels.items()))): x.value
            for fam in text_string_to_metric_families(joined(edge_text(store, pods=False).render()).decode())
            for x in fam.samples}
    assert fine[("flowlens_edge_connect_duration_seconds_bucket", tuple(sorted(lab + (("le", "0.002048"),))))] == 0
    assert {k: x for k, x in fine.items() if k in got} == got
    assert not any(dict(k[1]).get("dst_port", "443") != "443" for k in got)


class NamedResolver(FakeResolver):
    """Names that change when told to (a watch catching up), pods that can vanish."""

    def __init__(self) -> None:
        self.names: dict[int, End] = {}
        self.remotes: dict[str, End] = {}
        self.gone: set[str] = set()
        self.changed = False

    def local(self, cgroup: int, addr: Address | None) -> End:
        return self.names.get(cgroup, End("", "unknown", "unknown"))

    def remote(self, addr: Address | None) -> End:
        return self.remotes.get(str(addr), EXTERNAL)

    def exists(self, end: End) -> bool:
        return end.pod not in self.gone

    def refresh(self) -> bool:
        changed, self.changed = self.changed, False
        return changed


def remote_key(cgroup: int, raddr: str, port: int = 80) -> np.ndarray:
    k = key(cgroup, abi.ROLE_CLIENT, port)
    k["raddr"][0] = np.frombuffer(ipaddress.IPv6Address("::ffff:" + raddr).packed, np.uint8)
    return k


def test_relabel_grace_budget_zones_and_pods() -> None:
    src, store, clock = FakeSource(), EdgeStore(budget=3), [0.0]
    r = NamedResolver()
    p = Poller(src, r, store, idle_polls=1, clock=lambda: clock[0], grace=30.0)
    src.put(remote_key(1, "10.0.0.9"), W_SENT=100, W_RECV=1000)
    p.poll()
    assert totals(store) == {("client", "unknown"): (100, 1000)}
    # the watch delivers names: new deltas go to the named series, earlier counts stay put
    r.names[1] = End("shop", "web", "Deployment", "web-1", "az-a")
    r.remotes["10.0.0.9"] = End("shop", "db", "StatefulSet", "db-0", "az-b")
    r.changed = True
    src.put(remote_key(1, "10.0.0.9"), W_SENT=150, W_RECV=1200)
    p.poll()
    assert totals(store) == {("client", "unknown"): (100, 1000), ("client", "web"): (50, 200)}
    assert p.state.relabels == 1
    pods, _, ptot, _ = p.pods.snapshot()
    assert [(x.pod, int(t[abi.W_SENT])) for x, t in zip(pods, ptot)] == [("web-1", 50)]
    zlab, _, ztot, _ = p.zones.snapshot()
    zones = {tuple(z): int(t[abi.W_SENT]) for z, t in zip(zlab, ztot)}
    assert zones == {("az-a", "az-b"): 50, ("az-b", "az-a"): 200}
    # budget 3: of two more remote ends one fits, the other folds into the overflow series
    for i, ip in enumerate(("10.0.0.10", "10.0.0.11")):
        r.remotes[ip] = End("shop", f"peer{i}", "Deployment", f"peer{i}-x")
        src.put(remote_key(1, ip), W_SENT=7)
    p.poll()
    dst = {lab.dst_workload for lab in store.snapshot()[0]}
    assert len(store) == 4 and "other" in dst and "peer1" not in dst and p.state.folded == 1
    # the db key idled out and was retired; then the db pod is deleted: its series stays for the grace period
    assert remote_key(1, "10.0.0.9").tobytes() in src.retired
    r.gone.add("db-0")
    p.poll()
    assert "db" in {lab.dst_workload for lab in store.snapshot()[0]}
    clock[0] = 31.0
    p.poll()
    assert "db" not in {lab.dst_workload for lab in store.snapshot()[0]} and store.expired == 1
    assert ("client", "unknown") in totals(store)  # "unknown" is not a gone pod in this fake


def test_exposition_escapes_labels_and_keeps_udp_to_bytes() -> None:
    class Odd(FakeResolver):
        def local(self, cgroup: int, addr: Address | None) -> End:
            return End("ns", 'we"ird\\app\nx', "host")

    src, store = FakeSource(), EdgeStore()
    p = Poller(src, Odd(), store, idle_polls=5)
    src.put(key(1, abi.ROLE_CLIENT, 443), W_SENT=5, W_RECV=6, W_CONNS=1)
    udp = key(1, abi.ROLE_CLIENT, 53)
    udp["proto"] = abi.PROTO_UDP
    src.put(udp, W_SENT=40, W_RECV=90)
    p.poll()
    fams = list(text_string_to_metric_families(joined(edge_text(store, pods=False).render()).decode()))
    samples = [(x.name, x.labels, x.value) for fam in fams for x in fam.samples]
    assert {lab["src_workload"] for _, lab, _ in samples} == {'we"ird\\app\nx'}
    by_proto = {(n, lab["protocol"]): v for n, lab, v in samples if lab.get("result", "success") == "success"}
    assert by_proto[("flowlens_edge_sent_bytes_total", "udp")] == 40
    assert by_proto[("flowlens_edge_received_bytes_total", "udp")] == 90
    assert by_proto[("flowlens_edge_connections_total", "tcp")] == 1
    assert {n for n, proto in by_proto if proto == "udp"} == {"flowlens_edge_sent_bytes_total",
                                                             "flowlens_edge_received_bytes_total"}


def test_scatter_add_sums_repeated_rows_as_add_at() -> None:
    """Keys folded into one series add up; keys of their own series take the fast path: both as
    np.add.at would (uint64, wrapping)."""
    rng = np.random.default_rng(7)
    vals = rng.integers(0, 2**63, (3000, abi.VAL_WORDS), dtype=np.uint64)
    for index in (rng.permutation(5000)[:3000], rng.integers(0, 40, 3000)):
        want = rng.integers(0, 2**63, (5000, abi.VAL_WORDS), dtype=np.uint64)
        got = want.copy()
        np.add.at(want, index, vals)
        scatter_add(got, index, vals)
        assert (got == want).all()
