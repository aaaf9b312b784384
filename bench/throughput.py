"""Throughput overhead: nginx + wrk with the agent's programs off, on, and packet capture on.

This VM's host is noisy: wrk's req/s moves by 10-40% between 5 s windows a minute apart, so five
rounds of "start the agent, run wrk, stop it" could not tell 0.95 from 1.0.  So the ratio comes from
short windows alternated many times on one continuous load: wrk runs through the whole of a load (never
restarted, so no start-up or ramp inside a window), and a window is the count of requests nginx served
(stub_status) over ``--seconds`` (0.5 by default) once its mode is set up.  ``--pairs`` triples (60 by
default), each one window per mode back to back, forward then backward so that a drift across a triple
cancels over two.  Against the design before (one 2 s wrk run per window), alternated three times on
this host at its noisiest (A/A: off against off, ~1 minute each, 2026-12-01): the interquartile range
of the per-triple ratios over sqrt(triples), which a median's interval scales with, went from
0.030-0.080 to 0.024-0.035, half the interval for the same time.  Churn gets twice the triples: its
ratios sit within a point of their budgets (an interval shrinks as 1/sqrt(n)).

- ``off``: nothing attached;
- ``agent``: the agent's programs attached.  They are loaded once by the agent's own loader
  (agent.ebpf.loader, the agent's default settings) in this process and only attached for these
  windows (:meth:`Loader.attach` / :meth:`Loader.detach`, a few milliseconds), the poll-time walk run
  after each window; the agent's user space costs about one millicore (measured below) and is left out.
  bpf_stats is on for the first ``bpf_stats_sample`` of each window (0.02: 10 ms of 0.5 s), as the agent
  holds it for that fraction of each poll interval: while on, the kernel reads the clock twice around
  every program run (2-3 points of churn throughput always on, bench/changes.md items 6 and 23).  Until item 22
  these windows left it off, so their overhead lacked the agent's share of that (0.1 x then; 0.02 since item 23);
- ``capture``: ``tcpdump -w /dev/null`` on the interface the traffic crosses, the traditional way to
  see the same traffic.

The ratio of a mode is its requests/s over ``off`` in the same triple, so drift cancels; the result is
the median over triples.  Then the agent itself runs once per load (one 5 s window, on the same
continuous load: a wrk started for the window opened 16 connections at its start and reset them at its
end, and when the agent's bpf_stats sample fell on those, a persistent load read ~1,200 transitions/s
at ~300 ns, a per-event verdict on a load that makes none): its CPU (on-CPU
time of all its threads, /proc/<pid>/task/*/schedstat, in millicores), its peak RSS (VmHWM) and the
per-program ``run_time_ns / run_cnt`` from its own ``flowlens_agent_bpf_*`` metrics (events/s over
``flowlens_agent_bpf_sampled_seconds_total``, the time bpf_stats was on).  wrk's one thread is the
bottleneck: it is on-CPU the whole window while the other core idles 10-25%, and the softirq work of
both ends of a connection (handshake, close) runs on its CPU, so every nanosecond the kernel spends for
us on that path shows up in the ratio.

The VM's steal time (the ``cpu`` line of /proc/stat) is kept over each load's windows and over each agent
window: time the hypervisor ran something else while a vCPU had work, the one part of the host's noise a
guest can see.  bpf_stats times a run by the clock, so steal inside a run counts in its ns.  It explains
little of the spread of the ratios (bench/changes.md item 18), so nothing is corrected for it.

Experiments (root):  python -m bench.throughput [--nets loopback,pods] [--shapes churn] [--pairs 60]
[--seconds 0.5] [--modes off,agent,again] [--settings '{"bpf_dir": "/tmp/variant"}']; two builds against
each other on one load: python -m bench.ab (bench/ab.py).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from statistics import median, quantiles
from typing import Any

from agent.config import Settings
from agent.ebpf.loader import Loader
from agent.run import load_options
from bench import load
from bench.collector import rss_mb
from tests.pods.agent import AgentProc, Sample

MODES = ("off", "agent", "capture")
EXTRA = ("again",)  # off once more: an A/A ratio, the noise floor of an experiment (--modes off,again)
PAIRS = 60  # triples per load (twice on churn)
WINDOW_S = 0.5  # seconds per window
# What an agent window holds, for readings kept across runs (bench.repeat): 1 the programs alone, 2 with
# bpf_stats sampled as the agent does (bench/changes.md item 22).  Readings of two methods never pool.
METHOD = 2


def task_cpu(pid: int) -> dict[str, int]:
    """On-CPU nanoseconds of each thread of ``pid`` (/proc/<pid>/task/*/schedstat; /proc/<pid>/stat counts
    in 10 ms ticks, too coarse for an agent that polls a few milliseconds every 5 s)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[task.name] = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended
    return out


def cpu_seconds(before: dict[str, int], after: dict[str, int]) -> float:
    """CPU of the threads alive at both reads (the short-lived /metrics threads of the reads excluded)."""
    return sum(after[t] - before[t] for t in before.keys() & after.keys()) / 1e9


def cpu_ticks(stat: Path = Path("/proc/stat")) -> tuple[int, int]:
    """(stolen, all) clock ticks of the machine's CPUs since boot, from the ``cpu`` line of /proc/stat.
    Steal is time the hypervisor gave a vCPU that had work to something else: 0 on bare metal."""
    for line in stat.read_text().splitlines():
        f = line.split()
        if f and f[0] == "cpu":
            ticks = [int(x) for x in f[1:9]]  # user nice system idle iowait irq softirq steal
            return ticks[7], sum(ticks)
    raise ValueError(f"{stat}: no 'cpu' line")


@contextmanager
def stolen(into: list[float], stat: Path = Path("/proc/stat")) -> Iterator[None]:
    """Append to ``into`` the share of the machine's CPU time stolen by the hypervisor over the block."""
    s0, t0 = cpu_ticks(stat)
    try:
        yield
    finally:
        s1, t1 = cpu_ticks(stat)
        into.append((s1 - s0) / max(t1 - t0, 1))


def share(xs: list[float]) -> str:
    """Median of fractions as a percentage; n/a for runs from before they were kept."""
    return f"{100 * median(xs):.1f}%" if xs else "n/a"


def bpf_runs(s: Sample) -> dict[str, tuple[float, float]]:
    """program -> (ns, runs) from the agent's flowlens_agent_bpf_* counters."""
    out: dict[str, tuple[float, float]] = {}
    for (name, lab), v in s.items():
        if name == "flowlens_agent_bpf_runs_total":
            prog = dict(lab)["program"]
            ns = s[("flowlens_agent_bpf_run_seconds_total", lab)] * 1e9
            out[prog] = (ns, v)
    return out


def margin(agent: float, capture: float) -> float:
    """Points by which the overhead of ratio ``agent`` is under a fifth of that of ``capture`` (negative: over)."""
    return 100 * ((1 - capture) / 5 - (1 - agent))


@dataclass
class Shape:
    """Raw numbers of one load (shape and network), per round."""

    rps: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES + EXTRA})
    millicores: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    sampled: list[float] = field(default_factory=list)  # seconds bpf_stats was on in each agent window
    bpf: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # program -> [(ns, runs)]
    steal: list[float] = field(default_factory=list)  # VM steal over the load's windows (none before 2026-12-01 22:00)
    agent_steal: list[float] = field(default_factory=list)  # VM steal over each agent window

    def ratios(self, mode: str) -> list[float]:
        return [m / o for m, o in zip(self.rps[mode], self.rps["off"])]

    def ratio(self, mode: str) -> float:
        return median(self.ratios(mode))

    def noise(self) -> float:
        """Interquartile range of ``off`` req/s over windows, as a fraction of their median: the drift."""
        q = quantiles(self.rps["off"], n=4)
        return (q[2] - q[0]) / median(self.rps["off"])

    def ci(self, stat: Callable[[list[int]], float], n: int = 2000) -> tuple[float, float]:
        """95% bootstrap interval of ``stat`` (a function of the triples it is given, by index), resampling
        whole triples so that each mode's window stays paired with its own ``off``."""
        rng = random.Random(1)  # the same table from the same windows
        k = len(self.rps["off"])
        vals = sorted(stat([rng.randrange(k) for _ in range(k)]) for _ in range(n))
        return vals[int(0.025 * n)], vals[int(0.975 * n) - 1]

    def ratio_of(self, mode: str, idx: list[int]) -> float:
        """:meth:`ratio` over the triples ``idx`` (a bootstrap sample)."""
        ratios = self.ratios(mode)
        return median(ratios[i] for i in idx)

    def ratio_ci(self, mode: str) -> tuple[float, float]:
        return self.ci(lambda i: self.ratio_of(mode, i))

    def margin_ci(self) -> tuple[float, float]:
        """Points by which the agent's overhead is under a fifth of tcpdump's (negative: over), 95%."""
        return self.ci(lambda i: margin(self.ratio_of("agent", i), self.ratio_of("capture", i)))

    def spread(self, mode: str) -> tuple[float, float]:
        """First and third quartiles of the per-triple ratios of ``mode``."""
        q = quantiles(self.ratios(mode), n=4)
        return q[0], q[2]

    def ns_per_event(self, prog: str) -> float:
        runs = self.bpf[prog]
        return sum(ns for ns, _ in runs) / max(sum(n for _, n in runs), 1)

    def events_per_s(self, prog: str) -> float:
        """Runs per second while bpf_stats was on (the agent samples: runs outside are not counted)."""
        return sum(n for _, n in self.bpf[prog]) / max(sum(self.sampled), 1e-9)


def sampled(s: Sample) -> float:
    return s.get(("flowlens_agent_bpf_sampled_seconds_total", frozenset()), 0.0)


def run_agent(served: Callable[[], int], seconds: int, out: Shape, settings: dict[str, Any]) -> float:
    """The load's req/s with the agent (``settings`` over its defaults) running; its costs into ``out``."""
    with tempfile.TemporaryDirectory(prefix="flowlens-bench-agent-") as d:
        agent = AgentProc(Path(d), settings).start()
        try:
            return agent_window(agent, served, seconds, out)
        finally:
            agent.stop()


def agent_window(agent: AgentProc, served: Callable[[], int], seconds: int, out: Shape) -> float:
    assert agent.proc is not None
    pid = agent.proc.pid
    s0 = agent.samples()
    cpu0 = task_cpu(pid)
    t0 = time.monotonic()
    with stolen(out.agent_steal):
        rps = counted(served, seconds)
    cpu, wall = cpu_seconds(cpu0, task_cpu(pid)), time.monotonic() - t0
    s1 = agent.samples()
    out.millicores.append(1000 * cpu / wall)
    out.rss_mb.append(rss_mb(pid=pid))
    out.sampled.append(sampled(s1) - sampled(s0))
    before = bpf_runs(s0)
    for prog, (ns, n) in bpf_runs(s1).items():
        ns0, n0 = before.get(prog, (0.0, 0.0))
        if n > n0:
            out.bpf.setdefault(prog, []).append((ns - ns0, n - n0))
    return rps


def triples(pairs: int, shape: str) -> int:
    """Triples measured per load: churn, whose ratios sit within a point of their budgets, gets twice."""
    return pairs * (2 if shape == "churn" else 1)


def measure(pairs: int, seconds: float, nets: tuple[str, ...] = load.NETS, shapes: tuple[str, ...] = load.SHAPES,
            modes: tuple[str, ...] = MODES, settings: dict[str, Any] | None = None,
            log: Any = print, agent_process: bool = True) -> dict[str, Shape]:
    """Results per load, keyed ``shape/net``; ``modes`` must start with ``off``.  With ``agent_process``
    (and an ``agent`` mode) the agent itself then runs one window per load (:func:`run_agent`)."""
    load.need("nginx", "wrk", "tcpdump", "curl")
    settings = settings or {}
    results: dict[str, Shape] = {}
    # bpf_stats is global: on only for the agent windows' samples (window()) and in the agent's own window
    agent_settings = Settings(**settings)
    ld = Loader(replace(load_options(agent_settings), bpf_stats=True))
    ld.load()
    ld.detach()
    ld.sample_stats(False)  # load() turns it on
    try:
        for name in nets:
            with tempfile.TemporaryDirectory(prefix="flowlens-bench-") as d, load.network(name) as net, \
                    load.nginx(net, Path(d)) as port:
                served = partial(load.served, Path(d))
                for shape in shapes:
                    res = results[f"{shape}/{name}"] = Shape()
                    with load.running(net, port, shape):
                        with stolen(res.steal):
                            for i in range(triples(pairs, shape)):
                                # forward, then backward: a drift across a triple cancels over two
                                for mode in modes if i % 2 == 0 else modes[::-1]:
                                    res.rps[mode].append(window(ld, net, served, seconds, mode,
                                                                agent_settings.bpf_stats_sample))
                        log(f"  {shape}/{name}: " + ", ".join(f"{m}/off {res.ratio(m):.3f}" for m in modes[1:]))
                        if agent_process and "agent" in modes:
                            run_agent(served, 5, res, settings)
    finally:
        ld.close()
    return results


def window(ld: Loader, net: load.Net, served: Callable[[], int], seconds: float, mode: str,
           stats_sample: float = 0.0) -> float:
    """Requests/s nginx served over ``seconds`` of ``mode``, counted once the mode is set up (the load runs
    throughout: wrk is never restarted between windows); in ``agent`` windows bpf_stats is on for the
    first ``stats_sample`` of the window, as in the agent."""
    if mode == "agent":
        return attached(ld, partial(counted, served, seconds, partial(sampling, ld, stats_sample * seconds)))
    if mode == "capture":
        with load.capture(net):
            return counted(served, seconds)
    return counted(served, seconds)


def attached(ld: Loader, measure: Callable[[], float]) -> float:
    """``measure()`` with ``ld``'s programs attached; detached after, and the walk run (outside the measure)."""
    ld.attach()
    try:
        return measure()
    finally:
        ld.detach()
        ld.flush()


def sampling(ld: Loader, seconds: float) -> None:
    """bpf_stats on for ``seconds`` (the agent's duty cycle within a window), then off."""
    if seconds > 0:
        if not ld.sample_stats(True):
            raise RuntimeError("bpf_stats cannot be enabled here: the agent windows could not sample it")
        try:
            time.sleep(seconds)
        finally:
            ld.sample_stats(False)


def counted(served: Callable[[], int], seconds: float, first: Callable[[], None] | None = None) -> float:
    """Requests/s over ``seconds``; ``first()`` runs at the start of the window, inside it."""
    n0, t0 = served(), time.monotonic()
    if first is not None:
        first()
    time.sleep(max(seconds - (time.monotonic() - t0), 0.0))
    n1, t1 = served(), time.monotonic()
    if n1 == n0:
        raise RuntimeError(f"nginx served no request in a {seconds} s window: the load (wrk) stopped")
    return (n1 - n0) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description="bench.throughput: agent on/off (and tcpdump) ratios, for experiments")
    ap.add_argument("--nets", default=",".join(load.NETS))
    ap.add_argument("--shapes", default=",".join(load.SHAPES))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--pairs", type=int, default=PAIRS)
    ap.add_argument("--seconds", type=float, default=WINDOW_S)
    ap.add_argument("--settings", type=json.loads, default={}, help="agent settings (JSON) over its defaults")
    a = ap.parse_args()
    load.exit_on_sigterm()
    modes = tuple(a.modes.split(","))
    if modes[0] != "off":
        raise SystemExit("--modes: must start with off (ratios are over it)")
    res = measure(a.pairs, a.seconds, tuple(a.nets.split(",")), tuple(a.shapes.split(",")), modes, a.settings)
    for key, r in res.items():
        line = ", ".join(f"{m}/off {r.ratio(m):.3f} ({' '.join(f'{x:.3f}' for x in r.ratios(m))})" for m in modes[1:])
        bpf = ", ".join(f"{p} {r.ns_per_event(p):.0f} ns x {r.events_per_s(p):,.0f}/s" for p in sorted(r.bpf)
                        if r.events_per_s(p) >= 1000)
        print(f"{key}: {line}; off IQR {100 * r.noise():.1f}%; VM steal {share(r.steal)}"
              + (f"; {bpf}" if bpf else ""))


if __name__ == "__main__":
    main()
