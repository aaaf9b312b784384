"""Flow metric families, built fresh at every scrape: ``flowlens_edge_*`` per
edge series and ``flowlens_pod_*`` (the same families) per local pod.

Reads a snapshot of a :class:`agent.collect.store.Table`; knows nothing of
the kernel.  ``src_pod``/``dst_pod`` are exported only at pod granularity.
Units: bytes, seconds (the kernel's microseconds are converted
here), counts.  Histograms use the kernel's fixed log2 buckets, upper bounds
16 us * 2^i (i = 0..22) and +Inf, documented in README.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.collect.store import EdgeLabels, PodLabels, Table
from agent.ebpf import abi

EDGE = list(EdgeLabels._fields)
POD = list(PodLabels._fields)
BOUNDS = [f"{b:.6f}".rstrip("0") for b in abi.bucket_bounds_seconds()] + ["+Inf"]


def _hist(fam: HistogramMetricFamily, labels: list[str], hist: np.ndarray, sum_us: int) -> None:
    cum = np.cumsum(hist)
    if not cum[-1]:
        return
    fam.add_metric(labels, list(zip(BOUNDS, (float(c) for c in cum))), sum_us / 1e6)


class FlowCollector(Collector):
    """``<prefix>_*`` families from a table whose label tuples have the fields ``fields``.

    ``export`` lists the fields exported as labels, in order (a subset of the tuple's)."""

    def __init__(self, store: Table[Any], fields: list[str], export: list[str], prefix: str, what: str) -> None:
        self.store, self.prefix, self.what = store, prefix, what
        self.names = export
        self._pick = [fields.index(f) for f in export]
        self._proto = fields.index("protocol") if "protocol" in fields else -1

    def collect(self) -> Iterator[Metric]:
        labels, _ends, tot, active = self.store.snapshot()
        p, names, what = self.prefix, self.names, self.what
        sent = CounterMetricFamily(f"{p}_sent_bytes", f"Bytes sent client to server, per {what}.", labels=names)
        recv = CounterMetricFamily(f"{p}_received_bytes", f"Bytes the client received from the server, per {what}.",
                                   labels=names)
        conns = CounterMetricFamily(f"{p}_connections", f"TCP connect attempts by result, per {what}.",
                                    labels=[*names, "result"])
        dur = HistogramMetricFamily(f"{p}_connect_duration_seconds",
                                    f"TCP SYN sent to established, client side, per {what}.", labels=names)
        rtt = HistogramMetricFamily(f"{p}_rtt_seconds", f"Sampled smoothed RTT of TCP sockets, per {what}.",
                                    labels=names)
        retr = CounterMetricFamily(f"{p}_retransmits", f"TCP segments retransmitted, per {what}.", labels=names)
        rst = CounterMetricFamily(f"{p}_resets", f"TCP RSTs sent/received by the reporter, per {what}.",
                                  labels=[*names, "direction"])
        act = GaugeMetricFamily(f"{p}_active_connections", f"Established TCP connections now, per {what}.",
                                labels=names)
        for i, lab in enumerate(labels):
            row = tot[i]
            values = [lab[j] for j in self._pick]
            sent.add_metric(values, float(row[abi.W_SENT]))
            recv.add_metric(values, float(row[abi.W_RECV]))
            if self._proto >= 0 and lab[self._proto] != "tcp":
                continue
            for r, name in enumerate(abi.RESULTS):
                conns.add_metric([*values, name], float(row[abi.W_CONNS + r]))
            retr.add_metric(values, float(row[abi.W_RETRANS]))
            rst.add_metric([*values, "sent"], float(row[abi.W_RST_SENT]))
            rst.add_metric([*values, "received"], float(row[abi.W_RST_RECV]))
            act.add_metric(values, float(max(active[i], 0)))
            _hist(dur, values, row[abi.W_CONNECT_HIST:abi.W_CONNECT_HIST + abi.HIST_BUCKETS],
                  int(row[abi.W_CONNECT_SUM]))
            _hist(rtt, values, row[abi.W_RTT_HIST:abi.W_RTT_HIST + abi.HIST_BUCKETS], int(row[abi.W_RTT_SUM]))
        yield from (sent, recv, conns, dur, rtt, retr, rst, act)


def edge_collector(store: Table[EdgeLabels], pods: bool) -> FlowCollector:
    export = EDGE if pods else [f for f in EDGE if f not in ("src_pod", "dst_pod")]
    return FlowCollector(store, EDGE, export, "flowlens_edge", "edge")


def pod_collector(store: Table[PodLabels]) -> FlowCollector:
    return FlowCollector(store, POD, POD, "flowlens_pod", "local pod")
