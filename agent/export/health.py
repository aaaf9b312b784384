"""Self metrics (``flowlens_agent_*``): features, maps, lost updates, polls, BPF cost.

Everything here comes from a :class:`Health` source passed in, so the
exporter never touches the kernel or the loader directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.collect.poll import PollState
from agent.ebpf import abi
from agent.ebpf.libbpf import ProgRuns
from agent.ebpf.loader import FeatureStatus
from agent.identity.watch import WatchState

LOST = {"edge_full": "edge map full", "sk_nostorage": "no per-socket storage",
        "conn_full": "no free connection slot"}
EVENTS = {"rst_nosock": "RST sent with no socket (closed port)",
          "udp_nopeer": "unconnected UDP call with unknown peer",
          "connect_untimed": "connect counted without its duration (no RTT sample from the handshake)",
          "close_missed": "connection whose CLOSE no program saw (recursion miss, programs detached), "
                          "closed by the poll-time walk"}


@dataclass
class Health:
    version: str
    features: list[FeatureStatus]
    poll: PollState
    capacity: int
    series: Callable[[], int]
    bpf_runs: Callable[[], dict[str, tuple[str, ProgRuns]]]  # prog -> (feature, counters)
    bpf_sampled: Callable[[], float]  # seconds bpf_runs was measuring
    budget: int = 0
    expired: Callable[[], int] = lambda: 0
    watches: Callable[[], list[WatchState]] = list
    malformed: Callable[[], dict[str, int]] = dict
    identity: str = "standalone"


class HealthCollector(Collector):
    def __init__(self, health: Health) -> None:
        self.h = health

    def collect(self) -> Iterator[Metric]:
        h, st = self.h, self.h.poll
        info = InfoMetricFamily("flowlens_agent_build", "Agent version.")
        info.add_metric([], {"version": h.version})
        feat = GaugeMetricFamily("flowlens_agent_feature_enabled",
                                 "1 if the feature's programs are attached, 0 if not (see reason).",
                                 labels=["feature", "reason"])
        for f in h.features:
            feat.add_metric([f.name, f.reason], 1.0 if f.enabled else 0.0)
        entries = GaugeMetricFamily("flowlens_agent_map_entries", "Live entries in a kernel map.",
                                    labels=["map"])
        entries.add_metric(["edges"], float(st.entries))
        cap = GaugeMetricFamily("flowlens_agent_map_capacity", "Max entries of a kernel map.", labels=["map"])
        cap.add_metric(["edges"], float(h.capacity))
        kstat = dict(zip(abi.STATS, st.kernel))
        lost = CounterMetricFamily("flowlens_agent_lost_updates", "Kernel updates that could not be counted.",
                                   labels=["reason"])
        for k in LOST:
            lost.add_metric([k], float(kstat.get(k, 0)))
        events = CounterMetricFamily("flowlens_agent_kernel_events",
                                     "Kernel events seen but not attributable to an edge.", labels=["event"])
        for k in EVENTS:
            events.add_metric([k], float(kstat.get(k, 0)))
        polls = CounterMetricFamily("flowlens_agent_polls", "Map polls done.")
        polls.add_metric([], float(st.polls))
        perr = CounterMetricFamily("flowlens_agent_poll_errors", "Map polls that failed.")
        perr.add_metric([], float(st.poll_errors))
        pdur = GaugeMetricFamily("flowlens_agent_poll_duration_seconds", "Wall time of the last poll.")
        pdur.add_metric([], st.poll_seconds)
        retired = CounterMetricFamily("flowlens_agent_edges_retired",
                                      "Idle edges read a last time and deleted from the kernel map.")
        retired.add_metric([], float(st.retired))
        series = GaugeMetricFamily("flowlens_agent_series", "Edge series exported (budget: series_budget).")
        series.add_metric([], float(h.series()))
        run_s = CounterMetricFamily("flowlens_agent_bpf_run_seconds",
                                    "CPU time spent in each BPF program while sampled (bpf_stats).",
                                    labels=["program", "feature"])
        runs = CounterMetricFamily("flowlens_agent_bpf_runs", "Runs of each BPF program while sampled (bpf_stats).",
                                   labels=["program", "feature"])
        misses = CounterMetricFamily(
            "flowlens_agent_bpf_recursion_misses",
            "Events a BPF program missed because a BPF program was already running on that CPU (the kernel "
            "skips it rather than nest): lost, not counted on any edge.  Always counted, bpf_stats or not.",
            labels=["program", "feature"])
        for prog, (feature, r) in sorted(h.bpf_runs().items()):
            run_s.add_metric([prog, feature], r.run_ns / 1e9)
            runs.add_metric([prog, feature], float(r.runs))
            misses.add_metric([prog, feature], float(r.misses))
        sampled = CounterMetricFamily("flowlens_agent_bpf_sampled_seconds",
                                      "Seconds bpf_run_seconds and bpf_runs were counting (bpf_stats_sample of "
                                      "the time): divide their rates by this one's for CPU share and runs/s.")
        sampled.add_metric([], h.bpf_sampled())
        yield from (info, feat, entries, cap, lost, events, polls, perr, pdur, retired, series, run_s, runs,
                    misses, sampled)
        yield from self._series_budget()
        yield from self._k8s()

    def _series_budget(self) -> Iterator[Metric]:
        h, st = self.h, self.h.poll
        budget = GaugeMetricFamily("flowlens_agent_series_budget", "Max edge series (setting series_budget).")
        budget.add_metric([], float(h.budget))
        folded = CounterMetricFamily("flowlens_agent_series_folded",
                                     "Edges whose remote end was folded into workload 'other' by the budget.")
        folded.add_metric([], float(st.folded))
        expired = CounterMetricFamily("flowlens_agent_series_expired",
                                      "Series dropped after their pod or workload was gone for the grace period.")
        expired.add_metric([], float(h.expired()))
        relabels = CounterMetricFamily("flowlens_agent_relabels", "Times live edges were named again.")
        relabels.add_metric([], float(st.relabels))
        yield from (budget, folded, expired, relabels)

    def _k8s(self) -> Iterator[Metric]:
        h = self.h
        mode = InfoMetricFamily("flowlens_agent_identity", "How ends are named (standalone or kubernetes).")
        mode.add_metric([], {"mode": h.identity})
        yield mode
        states = h.watches()
        if not states and h.identity != "kubernetes":
            return
        lab = ["resource"]
        up = GaugeMetricFamily("flowlens_agent_k8s_watch_up", "1 if the last list/watch call succeeded.", labels=lab)
        synced = GaugeMetricFamily("flowlens_agent_k8s_synced", "1 once a full list has completed.", labels=lab)
        lists = CounterMetricFamily("flowlens_agent_k8s_lists", "Full lists done (start, 410 Gone).", labels=lab)
        gone = CounterMetricFamily("flowlens_agent_k8s_relists_gone", "Re-lists forced by 410 Gone.", labels=lab)
        errors = CounterMetricFamily("flowlens_agent_k8s_errors", "Failed list/watch calls.", labels=lab)
        events = CounterMetricFamily("flowlens_agent_k8s_events", "Watch events applied.", labels=lab)
        bad = CounterMetricFamily("flowlens_agent_k8s_malformed", "Objects skipped because they did not parse.",
                                  labels=lab)
        malformed = h.malformed()
        for s in states:
            r = [s.resource]
            up.add_metric(r, float(s.up))
            synced.add_metric(r, float(s.synced))
            lists.add_metric(r, float(s.lists))
            gone.add_metric(r, float(s.relists_gone))
            errors.add_metric(r, float(s.errors))
            events.add_metric(r, float(s.events))
            bad.add_metric(r, float(malformed.get(s.resource, 0)))
        yield from (up, synced, lists, gone, errors, events, bad)
