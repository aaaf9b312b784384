"""Flow metric families, rendered straight to Prometheus text (format 0.0.4) at every scrape:
``flowlens_edge_*`` per edge series and ``flowlens_pod_*`` (the same families) per local pod.

Why not client_python's metric families: they format every sample on its own (label dict, escaping,
float formatting), ~20 us per sample with our 11-13 labels.  An edge has up to 63 samples, so 10k edges
took 14 s and 177 MB per scrape (bench/results).  Here each series' label text is escaped and encoded
once and cached, the values of a family come out of the table as one numpy column, histograms are
accumulated for all rows at once, and the values of a batch of series are formatted in one ``bytes %``
(:func:`lines`).  The text is produced in batches of a few hundred series, a :data:`Batch` being the
list of those pieces: the server writes a batch with one scatter/gather ``sendmsg``, so the pieces are
never joined, and no more than one batch is held at a time.

Why bytes and batches: the label text is ~90% of every line (a 10k-edge scrape is ~110 MB), so the
cost is copying it.  ``str.format`` per series, joining a chunk and encoding it copied every byte three
times (148 ms for 10k edges on a quiet host); now each byte is written once (bench/changes.md item 14).

Reads snapshots of an :class:`agent.collect.store.Table`; knows nothing of the kernel.  Units: bytes,
seconds (the kernel's microseconds are converted here), counts.  Histograms use the kernel's fixed log2
buckets, upper bounds 16 us * 2^i (i = 0..22) and +Inf (README.md); ``stride`` exports every stride-th
bound only (cumulative counts at the bounds kept are exact, quantiles get coarser): edge series use the
``edge_bucket_stride`` setting, pod series (bounded by pods per node) all bounds.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any

import numpy as np

from agent.collect.store import EdgeLabels, PodLabels, Table
from agent.ebpf import abi

EDGE = list(EdgeLabels._fields)
POD = list(PodLabels._fields)
CHUNK = 256  # series per batch
Batch = list[bytes]


def bound_text(seconds: float) -> str:
    return f"{seconds:.6f}".rstrip("0")


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def joined(batches: Iterable[Batch]) -> bytes:
    """The whole text of some batches (for tests and tools: a scrape never joins them)."""
    return b"".join(b"".join(batch) for batch in batches)


def lines(name: str, kind: str, text: str, tmpl: str, labs: list[bytes], vals: np.ndarray,
          rows: np.ndarray) -> Iterator[Batch]:
    """HELP and TYPE, then one series per row in ``rows``: ``tmpl`` with the row's label text at every
    ``%s`` and the row's integers ``vals[row]`` at its ``%d`` fields, in order.

    A batch's values are formatted in one ``%`` of the template repeated per row, with a NUL byte where
    label text goes (numbers and metric names never contain one) and a 0x01 byte ending each row; then
    each row's ``bytes.replace`` copies its label text in.  So a line costs one scan and one copy, and a
    batch one ``%`` call: ~2.5x faster than one ``%`` with the label as an argument per row."""
    yield [f"# HELP {name} {text}\n# TYPE {name} {kind}\n".encode()]
    t = tmpl.encode().replace(b"%s", b"\0") + b"\1"
    for start in range(0, len(rows), CHUNK):
        part = rows[start:start + CHUNK]
        body = (t * len(part)) % tuple(vals[part].ravel().tolist())
        yield [b.replace(b"\0", labs[i]) for b, i in zip(body.split(b"\1"), part.tolist())]


class FlowText:
    """``<prefix>_*`` families from a table whose label tuples have the fields ``fields``.

    ``export`` lists the fields exported as labels, in order (a subset of the tuple's)."""

    def __init__(self, store: Table[Any], fields: list[str], export: list[str], prefix: str, what: str,
                 stride: int = 1) -> None:
        self.store, self.prefix, self.what = store, prefix, what
        self.names = export
        self._pick = [fields.index(f) for f in export]
        self._proto = fields.index("protocol") if "protocol" in fields else -1
        finite = abi.HIST_BUCKETS - 1
        kept = [i for i in range(finite) if i % stride == 0 or i == finite - 1]
        self._cols = np.array([*kept, finite, finite])  # cumulative columns exported, +Inf, then +Inf as _count
        self._le = [bound_text(b) for b in np.array(abi.bucket_bounds_seconds())[kept]] + ["+Inf"]
        self._text: dict[Hashable, bytes] = {}

    def _labels(self, labels: list[Any]) -> list[bytes]:
        """Label text of each series, cached by label tuple (pruned when it outgrows the table)."""
        cache = self._text
        if len(cache) > 2 * len(labels) + 1024:
            live = set(labels)
            self._text = cache = {k: v for k, v in cache.items() if k in live}
        out = []
        for lab in labels:
            text = cache.get(lab)
            if text is None:
                text = cache[lab] = ",".join(f'{n}="{escape(lab[j])}"'
                                             for n, j in zip(self.names, self._pick)).encode()
            out.append(text)
        return out

    def render(self) -> Iterator[Batch]:
        labels, _ends, tot, active = self.store.snapshot()
        labs = self._labels(labels)
        every = np.arange(len(labs))
        tcp = every[[self._proto < 0 or lab[self._proto] == "tcp" for lab in labels]]
        p, what = self.prefix, self.what

        def counter(name: str, text: str, words: list[int], rows: np.ndarray = every) -> Iterator[Batch]:
            yield from lines(f"{name}_total", "counter", text, f"{name}_total{{%s}} %d\n", labs, tot[:, words], rows)

        yield from counter(f"{p}_sent_bytes", f"Bytes sent client to server, per {what}.", [abi.W_SENT])
        yield from counter(f"{p}_received_bytes", f"Bytes the client received from the server, per {what}.",
                           [abi.W_RECV])
        name = f"{p}_connections_total"
        yield from lines(name, "counter", f"TCP connect attempts by result, per {what}.",
                         "".join(f'{name}{{%s,result="{r}"}} %d\n' for r in abi.RESULTS), labs,
                         tot[:, abi.W_CONNS:abi.W_CONNS + len(abi.RESULTS)], tcp)
        yield from self._histogram(f"{p}_connect_duration_seconds",
                                   f"TCP SYN sent to established, client side, per {what}.",
                                   tot, abi.W_CONNECT_HIST, abi.W_CONNECT_SUM, labs, tcp)
        yield from self._histogram(f"{p}_rtt_seconds", f"Sampled smoothed RTT of TCP sockets, per {what}.",
                                   tot, abi.W_RTT_HIST, abi.W_RTT_SUM, labs, tcp)
        yield from counter(f"{p}_retransmits", f"TCP segments retransmitted, per {what}.", [abi.W_RETRANS], tcp)
        name = f"{p}_resets_total"
        yield from lines(name, "counter", f"TCP RSTs sent/received by the reporter, per {what}.",
                         f'{name}{{%s,direction="sent"}} %d\n{name}{{%s,direction="received"}} %d\n', labs,
                         tot[:, [abi.W_RST_SENT, abi.W_RST_RECV]], tcp)
        name = f"{p}_active_connections"
        yield from lines(name, "gauge", f"TCP connections open at the last poll, handshake to close (half-closed "
                         f"included), per {what}.", f"{name}{{%s}} %d\n", labs, np.maximum(active, 0)[:, None], tcp)

    def _histogram(self, name: str, text: str, tot: np.ndarray, first: int, sum_word: int,
                   labs: list[bytes], rows: np.ndarray) -> Iterator[Batch]:
        """Rows whose histogram is empty are left out (a series is born with its first sample).  The sum
        is written from the kernel's integer microseconds as seconds.micros: exact, no float rounding."""
        cum = np.cumsum(tot[:, first:first + abi.HIST_BUCKETS], axis=1)[:, self._cols]
        us = tot[:, sum_word]
        vals = np.column_stack([cum, us // 1_000_000, us % 1_000_000])
        tmpl = "".join(f'{name}_bucket{{%s,le="{b}"}} %d\n' for b in self._le)
        tmpl += f"{name}_count{{%s}} %d\n{name}_sum{{%s}} %d.%06d\n"
        yield from lines(name, "histogram", text, tmpl, labs, vals, rows[cum[rows, -1] > 0])


def edge_text(store: Table[EdgeLabels], pods: bool, stride: int = 1) -> FlowText:
    export = EDGE if pods else [f for f in EDGE if f not in ("src_pod", "dst_pod")]
    return FlowText(store, EDGE, export, "flowlens_edge", "edge", stride)


def pod_text(store: Table[PodLabels]) -> FlowText:
    return FlowText(store, POD, POD, "flowlens_pod", "local pod")
