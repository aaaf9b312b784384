"""Readings of one load taken again and again and pooled: for a budget one run cannot settle.

One reading is what ``make bench`` measures for a load: a fresh nginx and wrk, 120 triples (churn) of
0.5 s windows off / agent / tcpdump, the median ratio of each mode over ``off``.  Its *margin* is the
points by which the agent's overhead is under a fifth of tcpdump's (negative: over), the budget "agent
overhead <= tcpdump's / 5".  On a quiet host one reading settles it to a few tenths of a point (the
committed churn/pods load: 95% interval -0.8 to +0.1).  On this VM's host, most hours, the per-triple
ratios spread over 0.7-1.4 and one reading's margin lands anywhere within about two points of another's
(churn between pods, 2026-12-02: readings from -3.5 to +1.4), so a budget a few tenths from its line
needs many readings.  They are independent (each its own load, minutes apart), so their mean margin has
a standard error of their spread over sqrt(n) and a Student t 95% interval: the verdict is "over" or
"under" only when that interval is.

Every reading is appended to ``--out`` as one JSON line (its windows' req/s included), so an
interrupted series loses nothing and ``--readings 0`` pools a file again, e.g. readings of several
sessions.  A reading names what it measured, and pools only with readings of the same:
- ``effective``: the agent's settings, ``--settings`` over the defaults of its checkout, so a changed
  default (``bpf_stats_sample`` 0.1 -> 0.02) starts a new pool;
- ``build``: the programs (bench.build: what the kernel runs, so an edit of comments keeps the build;
  bpf/Makefile maps the checkout's path out of BTF and DWARF, so every clone builds the same bytes);
- ``method``: the window method (``throughput.METHOD``; readings without it are of method 1).

Usage (root):  python -m bench.repeat [--net pods] [--shape churn] [--readings 10] [--pairs 60]
               [--settings JSON] [--out bench/results/readings.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, median, stdev
from typing import Any

from agent.config import Settings
from agent.run import load_options
from bench import load, throughput
from bench.build import build_hash

# Student t, two-sided 95%, by degrees of freedom 1-30; past 30 the bench uses 2.0 (a little wide).
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
       2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
       2.045, 2.042)
OUT = Path("bench/results/readings.jsonl")


@dataclass(frozen=True)
class Pooled:
    """Margins of ``n`` readings, in points: mean, its standard error and 95% interval, median, how many over."""

    n: int
    mean: float
    se: float
    lo: float
    hi: float
    median: float
    over: int

    def verdict(self) -> str:
        if self.hi < 0:
            return "over the line"
        if self.lo > 0:
            return "under the line"
        return "not settled"

    def __str__(self) -> str:
        return (f"{self.n} readings: mean margin {self.mean:+.2f} points (standard error {self.se:.2f}, 95% "
                f"{self.lo:+.2f} to {self.hi:+.2f}), median {self.median:+.2f}, over in {self.over} of {self.n}: "
                f"{self.verdict()}")


def pool(margins: list[float]) -> Pooled:
    """Pool the margins of independent readings (at least two)."""
    n = len(margins)
    if n < 2:
        raise ValueError(f"bench.repeat: {n} reading(s): pooling needs at least two")
    m, se = mean(margins), stdev(margins) / n ** 0.5
    t = T95[n - 2] if n - 1 <= len(T95) else 2.0
    return Pooled(n, m, se, m - t * se, m + t * se, median(margins), sum(x < 0 for x in margins))


def reading(res: throughput.Shape) -> dict[str, Any]:
    """One load's numbers as a JSON-able record: ratios, margin (points), drift, steal and every window."""
    agent, capture = res.ratio("agent"), res.ratio("capture")
    return {"agent": round(agent, 4), "capture": round(capture, 4),
            "margin": round(throughput.margin(agent, capture), 3), "noise": round(res.noise(), 4),
            "steal": round(mean(res.steal), 4) if res.steal else None,
            "rps": {m: [round(x) for x in res.rps[m]] for m in throughput.MODES}}


def effective(settings: dict[str, Any]) -> dict[str, Any]:
    """The agent's settings a reading measures: ``settings`` over this checkout's defaults (JSON-able)."""
    return Settings(**settings).model_dump(mode="json")


def build_of(settings: dict[str, Any]) -> str:
    """The build of the program objects the agent would load with ``settings`` (bench.build)."""
    return build_hash(load_options(Settings(**settings)).bpf_dir.glob("*.bpf.o"))


def matching(lines: Iterable[str], settings: dict[str, Any], load_name: str | None = None,
             build: str | None = None) -> list[dict[str, Any]]:
    """Records of ``lines`` (JSON, one per line) of the agent's effective ``settings`` and the current
    method, of one load or (None) any, of one build or (None) any; names a bad line."""
    want, out = effective(settings), []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if (rec.get("effective") == want and load_name in (None, rec["load"])
                    and rec.get("method", 1) == throughput.METHOD and build in (None, rec.get("build"))):
                rec["margin"] = float(rec["margin"])
                out.append(rec)
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"bench.repeat: line {i}: not a reading ({e!r})") from e
    return out


def pooled_lines(path: Path, build: str) -> list[str]:
    """Lines for the results table: the pooled verdict of each load read with the default settings, the
    programs of ``build`` and the current method."""
    lines = path.read_text().splitlines() if path.exists() else []
    recs = matching(lines, {}, build=build)
    out = []
    for name in sorted({r["load"] for r in recs}):
        mine = [r for r in recs if r["load"] == name]
        if len(mine) < 2:
            continue
        commits = ", ".join(sorted({str(r.get("commit", "?")) for r in mine}))
        out.append(f"- {name}, agent overhead <= tcpdump's / 5 ({mine[0].get('date', '?')} to "
                   f"{mine[-1].get('date', '?')}, commits {commits}): {pool([r['margin'] for r in mine])}")
    if out:
        others = sum(1 for line in lines if line.strip()) - len(recs)
        out.insert(0, f"Readings pooled across runs (`python -m bench.repeat`, the readings in {path.name} of "
                      f"these programs (build {build}) and window method {throughput.METHOD}, independent loads; "
                      f"margin = points under a fifth of tcpdump's overhead, negative = over; {others} other "
                      "readings there not pooled):")
    return out


def main() -> None:
    from bench.__main__ import stamp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=load.NETS, default="pods")
    ap.add_argument("--shape", choices=load.SHAPES, default="churn")
    ap.add_argument("--readings", type=int, default=10, help="new readings to take (0: pool --out only)")
    ap.add_argument("--pairs", type=int, default=throughput.PAIRS)
    ap.add_argument("--settings", type=json.loads, default={}, help="agent settings (JSON) over its defaults")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    load.exit_on_sigterm()
    name = f"{a.shape}/{a.net}"
    build = build_of(a.settings)
    for i in range(a.readings):
        t0 = time.monotonic()
        res = throughput.measure(a.pairs, throughput.WINDOW_S, (a.net,), (a.shape,), settings=a.settings,
                                 log=lambda *x: None, agent_process=False)[name]
        rec = {"load": name, "settings": a.settings, "effective": effective(a.settings), "build": build,
               "method": throughput.METHOD, "pairs": a.pairs, **stamp(time.monotonic() - t0), **reading(res)}
        with a.out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"reading {i + 1}/{a.readings}: agent {100 * (1 - rec['agent']):.1f}% vs tcpdump "
              f"{100 * (1 - rec['capture']):.1f}% / 5, margin {rec['margin']:+.1f} points; off IQR "
              f"{100 * rec['noise']:.1f}%", flush=True)
    recs = matching(a.out.read_text().splitlines(), a.settings, name, build) if a.out.exists() else []
    if len(recs) < 2:
        raise SystemExit(f"bench.repeat: {a.out}: {len(recs)} reading(s) of {name} with these settings, "
                         f"programs (build {build}) and method {throughput.METHOD}; pooling needs two")
    print(f"{name}, agent overhead <= tcpdump's / 5, {a.out}: {pool([r['margin'] for r in recs])}")


if __name__ == "__main__":
    main()
