"""Cross-zone traffic and its price (``flowlens_zone_*``), fresh at every scrape.

Bytes are counted once, by the client's reporter: what the client sent goes
``src_zone -> dst_zone``, what it received ``dst_zone -> src_zone``.  A zone
that is not known (no node label, or an end outside the cluster) is
``unknown``.  Cost is ``bytes / 1e9 * price_per_gb`` for pairs of two known,
different zones (AWS inter-AZ: $0.01/GB charged in each direction); traffic
within a zone or to an unknown zone is not priced.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.collect.store import ZoneStore
from agent.ebpf import abi


class ZoneCollector(Collector):
    def __init__(self, store: ZoneStore, price_per_gb: float) -> None:
        self.store, self.price = store, price_per_gb

    def collect(self) -> Iterator[Metric]:
        labels, _ends, tot, _active = self.store.snapshot()
        names = ["src_zone", "dst_zone"]
        bytes_ = CounterMetricFamily("flowlens_zone_bytes", "Bytes from src_zone to dst_zone (client's view).",
                                     labels=names)
        cost = CounterMetricFamily("flowlens_zone_cost_dollars",
                                   "Price of the bytes that crossed zones, at the configured $/GB.", labels=names)
        for lab, row in zip(labels, tot):
            n = float(row[abi.W_SENT])
            bytes_.add_metric(list(lab), n)
            if "unknown" not in lab and lab.src_zone != lab.dst_zone:
                cost.add_metric(list(lab), n / 1e9 * self.price)
        yield from (bytes_, cost)
