"""Edge metric families (``flowlens_edge_*``), built fresh at every scrape.

Reads a snapshot of :class:`agent.collect.store.EdgeStore`; knows nothing of
the kernel.  Units: bytes, seconds (the kernel's microseconds are converted
here), counts.  Histograms use the kernel's fixed log2 buckets, upper bounds
16 us * 2^i (i = 0..22) and +Inf, documented in README.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.collect.store import EdgeLabels, EdgeStore
from agent.ebpf import abi

LABELS = list(EdgeLabels._fields)
BOUNDS = [f"{b:.6f}".rstrip("0") for b in abi.bucket_bounds_seconds()] + ["+Inf"]


def _hist(fam: HistogramMetricFamily, labels: list[str], hist: np.ndarray, sum_us: int) -> None:
    cum = np.cumsum(hist)
    if not cum[-1]:
        return
    fam.add_metric(labels, list(zip(BOUNDS, (float(c) for c in cum))), sum_us / 1e6)


class EdgeCollector(Collector):
    def __init__(self, store: EdgeStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        labels, tot, active = self.store.snapshot()
        sent = CounterMetricFamily("flowlens_edge_sent_bytes", "Bytes the client sent to the server.",
                                   labels=LABELS)
        recv = CounterMetricFamily("flowlens_edge_received_bytes",
                                   "Bytes the client received from the server.", labels=LABELS)
        conns = CounterMetricFamily("flowlens_edge_connections", "TCP connect attempts by result.",
                                    labels=[*LABELS, "result"])
        dur = HistogramMetricFamily("flowlens_edge_connect_duration_seconds",
                                    "TCP SYN sent to established, client side.", labels=LABELS)
        rtt = HistogramMetricFamily("flowlens_edge_rtt_seconds",
                                    "Sampled smoothed RTT of the edge's TCP sockets.", labels=LABELS)
        retr = CounterMetricFamily("flowlens_edge_retransmits", "TCP segments retransmitted.",
                                   labels=LABELS)
        rst = CounterMetricFamily("flowlens_edge_resets", "TCP RSTs sent/received by the reporter.",
                                  labels=[*LABELS, "direction"])
        act = GaugeMetricFamily("flowlens_edge_active_connections", "Established TCP connections now.",
                                labels=LABELS)
        for i, lab in enumerate(labels):
            row = tot[i]
            values = list(lab)
            sent.add_metric(values, float(row[abi.W_SENT]))
            recv.add_metric(values, float(row[abi.W_RECV]))
            if lab.protocol != "tcp":
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
