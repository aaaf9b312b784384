"""`flowlens top`: a live table of the busiest edges, from a running agent.

Scrapes the agent's /metrics every ``poll_interval`` seconds and shows, per
edge, bytes/s (both directions), connects/s and p50/p99 RTT computed from the
histogram's increase between two scrapes (Prometheus' histogram_quantile
interpolation).  Start the agent first (`make run`).
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

from agent.config import Settings

Edge = tuple[str, str, str, str, str]  # reporter, src, dst, port, proto


def _edge(lab: dict[str, str]) -> Edge:
    src = f"{lab['src_namespace']}/{lab['src_workload']}".lstrip("/")
    dst = f"{lab['dst_namespace']}/{lab['dst_workload']}".lstrip("/")
    return lab["reporter"], src, dst, lab["dst_port"], lab["protocol"]


def scrape(url: str) -> dict[str, dict[Edge, dict[str, float]]]:
    """metric -> edge -> sub-key (le or result or "") -> value."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[Edge, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("flowlens_edge_"):
            continue
        for s in fam.samples:
            sub = s.labels.get("le", s.labels.get("result", ""))
            out[s.name][_edge(s.labels)][sub] = s.value
    return out


def quantile(q: float, buckets: dict[str, float]) -> float | None:
    """histogram_quantile over cumulative bucket counts {le: count}; seconds."""
    pts = sorted((float(le), c) for le, c in buckets.items())
    if not pts or pts[-1][1] <= 0:
        return None
    rank, prev_b, prev_c = q * pts[-1][1], 0.0, 0.0
    for b, c in pts:
        if c >= rank:
            if b == float("inf"):
                return prev_b
            return prev_b + (b - prev_b) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_b, prev_c = b, c
    return None


def _fmt_rate(v: float) -> str:
    for unit in ("", "K", "M", "G"):
        if abs(v) < 1000:
            return f"{v:6.1f}{unit}"
        v /= 1000
    return f"{v:6.1f}T"


def render(a: dict[str, dict[Edge, dict[str, float]]], b: dict[str, dict[Edge, dict[str, float]]],
           dt: float, rows: int) -> str:
    def rate(metric: str, e: Edge) -> float:
        return sum(b[metric][e].values()) - sum(a[metric].get(e, {}).values())

    lines = [f"{'REPORTER':<8} {'SRC':<28} {'DST':<28} {'PORT':>5} {'PROTO':<5} {'TX B/s':>8} {'RX B/s':>8} "
             f"{'CONN/s':>7} {'RTT p50':>9} {'RTT p99':>9}"]
    stats = []
    for e in b["flowlens_edge_sent_bytes_total"]:
        tx, rx = rate("flowlens_edge_sent_bytes_total", e) / dt, rate("flowlens_edge_received_bytes_total", e) / dt
        conns = rate("flowlens_edge_connections_total", e) / dt
        hb = b["flowlens_edge_rtt_seconds_bucket"].get(e, {})
        ha = a["flowlens_edge_rtt_seconds_bucket"].get(e, {})
        inc = {le: c - ha.get(le, 0.0) for le, c in hb.items()}
        stats.append((tx + rx, e, tx, rx, conns, quantile(0.5, inc), quantile(0.99, inc)))
    for _, e, tx, rx, conns, p50, p99 in sorted(stats, reverse=True)[:rows]:
        ms = [f"{x * 1e3:7.2f}ms" if x is not None else f"{'-':>9}" for x in (p50, p99)]
        lines.append(f"{e[0]:<8} {e[1][:28]:<28} {e[2][:28]:<28} {e[3]:>5} {e[4]:<5} {_fmt_rate(tx):>8} "
                     f"{_fmt_rate(rx):>8} {conns:7.1f} {ms[0]} {ms[1]}")
    return "\n".join(lines)


def top(s: Settings, url: str, rows: int, iterations: int, out: TextIO) -> int:
    host, port = s.listen_addr()
    url = url or f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '::') else host}:{port}/metrics"
    try:
        prev, t0 = scrape(url), time.monotonic()
    except OSError as e:
        out.write(f"flowlens top: cannot scrape {url}: {e}\nstart the agent first (make run) or pass --url\n")
        return 2
    n = 0
    while iterations == 0 or n < iterations:
        time.sleep(s.poll_interval)
        cur, t1 = scrape(url), time.monotonic()
        out.write("\x1b[2J\x1b[H" if out.isatty() else "\n")
        out.write(f"flowlens top — {url} — every {s.poll_interval:g}s\n{render(prev, cur, t1 - t0, rows)}\n")
        out.flush()
        prev, t0, n = cur, t1, n + 1
    return 0
