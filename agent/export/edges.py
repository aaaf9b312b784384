"""Flow metric families, rendered straight to Prometheus text (format 0.0.4) at every scrape:
``flowlens_edge_*`` per edge series and ``flowlens_pod_*`` (the same families) per local pod.

Why not client_python's metric families: they format every sample on its own (label dict, escaping,
float formatting), ~20 us per sample with our 11-13 labels.  An edge has up to 63 samples, so 10k edges
took 14 s and 177 MB per scrape (bench/results).  Here each series' label text is built once and cached,
the values of a family come out of the table as one numpy column, histograms are accumulated for all
rows at once, and the text is yielded in chunks of a few hundred rows so the server can stream it
without ever holding the whole body.

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
CHUNK = 256  # rows per yielded chunk


def bound_text(seconds: float) -> str:
    return f"{seconds:.6f}".rstrip("0")


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def family(name: str, kind: str, text: str, rows: Iterable[str]) -> Iterator[str]:
    """HELP and TYPE lines, then the rows' lines joined in chunks."""
    yield f"# HELP {name} {text}\n# TYPE {name} {kind}\n"
    buf: list[str] = []
    for row in rows:
        buf.append(row)
        if len(buf) >= CHUNK:
            yield "".join(buf)
            buf.clear()
    if buf:
        yield "".join(buf)


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
        self._cols = np.array([*kept, finite])  # cumulative columns exported, +Inf last
        self._le = [bound_text(b) for b in np.array(abi.bucket_bounds_seconds())[kept]] + ["+Inf"]
        self._text: dict[Hashable, str] = {}

    def _labels(self, labels: list[Any]) -> list[str]:
        """Label text of each series, cached by label tuple (pruned when it outgrows the table)."""
        cache = self._text
        if len(cache) > 2 * len(labels) + 1024:
            live = set(labels)
            self._text = cache = {k: v for k, v in cache.items() if k in live}
        out = []
        for lab in labels:
            text = cache.get(lab)
            if text is None:
                text = cache[lab] = ",".join(f'{n}="{escape(lab[j])}"' for n, j in zip(self.names, self._pick))
            out.append(text)
        return out

    def render(self) -> Iterator[str]:
        labels, _ends, tot, active = self.store.snapshot()
        labs = self._labels(labels)
        tcp = [i for i, lab in enumerate(labels) if self._proto < 0 or lab[self._proto] == "tcp"]
        p, what = self.prefix, self.what

        def counter(name: str, text: str, word: int, rows: list[int] | None = None) -> Iterator[str]:
            col = tot[:, word].tolist()
            idx = range(len(labs)) if rows is None else rows
            yield from family(f"{name}_total", "counter", text, (f"{name}_total{{{labs[i]}}} {col[i]}\n" for i in idx))

        yield from counter(f"{p}_sent_bytes", f"Bytes sent client to server, per {what}.", abi.W_SENT)
        yield from counter(f"{p}_received_bytes", f"Bytes the client received from the server, per {what}.",
                           abi.W_RECV)
        conns = tot[:, abi.W_CONNS:abi.W_CONNS + len(abi.RESULTS)].tolist()
        name = f"{p}_connections_total"
        fmt = "".join(f'{name}{{{{{{0}},result="{r}"}}}} {{{k + 1}}}\n' for k, r in enumerate(abi.RESULTS)).format
        yield from family(name, "counter", f"TCP connect attempts by result, per {what}.",
                          (fmt(labs[i], *conns[i]) for i in tcp))
        yield from self._histogram(f"{p}_connect_duration_seconds",
                                   f"TCP SYN sent to established, client side, per {what}.",
                                   tot, abi.W_CONNECT_HIST, abi.W_CONNECT_SUM, labs, tcp)
        yield from self._histogram(f"{p}_rtt_seconds", f"Sampled smoothed RTT of TCP sockets, per {what}.",
                                   tot, abi.W_RTT_HIST, abi.W_RTT_SUM, labs, tcp)
        yield from counter(f"{p}_retransmits", f"TCP segments retransmitted, per {what}.", abi.W_RETRANS, tcp)
        rst = tot[:, [abi.W_RST_SENT, abi.W_RST_RECV]].tolist()
        name = f"{p}_resets_total"
        yield from family(name, "counter", f"TCP RSTs sent/received by the reporter, per {what}.", (
            f'{name}{{{labs[i]},direction="sent"}} {rst[i][0]}\n{name}{{{labs[i]},direction="received"}} {rst[i][1]}\n'
            for i in tcp))
        act = np.maximum(active, 0).tolist()
        name = f"{p}_active_connections"
        yield from family(name, "gauge", f"TCP connections open at the last poll, handshake to close (half-closed "
                          f"included), per {what}.",
                          (f"{name}{{{labs[i]}}} {act[i]}\n" for i in tcp))

    def _histogram(self, name: str, text: str, tot: np.ndarray, first: int, sum_word: int,
                   labs: list[str], rows: list[int]) -> Iterator[str]:
        """Rows whose histogram is empty are left out (a series is born with its first sample)."""
        cum = np.cumsum(tot[:, first:first + abi.HIST_BUCKETS], axis=1)[:, self._cols].tolist()
        sums = (tot[:, sum_word] / 1e6).tolist()
        # one str.format call per series: {0} is the label text, {1}.. the cumulative counts, then the sum
        tmpl = "".join(f'{name}_bucket{{{{{{0}},le="{b}"}}}} {{{k + 1}}}\n' for k, b in enumerate(self._le))
        n = len(self._le)
        tmpl += f"{name}_count{{{{{{0}}}}}} {{{n}}}\n{name}_sum{{{{{{0}}}}}} {{{n + 1}}}\n"
        fmt = tmpl.format
        yield from family(name, "histogram", text, (fmt(labs[i], *cum[i], sums[i]) for i in rows if cum[i][-1]))


def edge_text(store: Table[EdgeLabels], pods: bool, stride: int = 1) -> FlowText:
    export = EDGE if pods else [f for f in EDGE if f not in ("src_pod", "dst_pod")]
    return FlowText(store, EDGE, export, "flowlens_edge", "edge", stride)


def pod_text(store: Table[PodLabels]) -> FlowText:
    return FlowText(store, POD, POD, "flowlens_pod", "local pod")
