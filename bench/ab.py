"""A/B of two builds (or settings) of the agent's programs on one continuous load, for experiments.

On this VM's host the noise is larger than most changes to a program, so a change is compared with
the code it replaces on the same load, in windows alternated many times (as bench.throughput does):
both sides are loaded once by the agent's own loader and attached in turn, wrk never restarted.  Two
measures:

- ``ns`` (default): bpf_stats ns per run of one program (``--program``) in each window of A and of B,
  A then B, then B then A; the result is the median of the per-round differences B - A and in how
  many rounds B was the cheaper.  What the program's own code costs, cache misses included, but not
  what its hook costs to fire.  A/A (one build on both sides, 20 rounds of 2 s, churn on loopback,
  2026-12-01): median +5.1 ns, B cheaper in 8 of 20; differences of that size are noise.
- ``throughput``: windows off, A, B (then B, A, off) of ``--seconds``, each side's req/s over the
  ``off`` of its round; the median difference of B's and A's ratio, in points of throughput, with a
  95% bootstrap interval.  Sees everything, hook included, and needs far more rounds: one window's
  req/s moves by 10-40% on this host.

A side is a build directory (``bpf_dir``: ``make -C bpf OUT=DIR CFLAGS="... -DVARIANT"``) or agent
settings as JSON (``'{"bpf_dir": "/tmp/v", "conn_map_size": 512}'``).  bpf_stats is global: in
``ns`` mode it is on only during A and B windows, in ``throughput`` mode never.

Usage (root):  python -m bench.ab A B [--net loopback] [--shape churn] [--rounds 20] [--seconds 2]
               [--measure ns|throughput] [--program inet_sock_set_state]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from statistics import median
from typing import Any

from agent.config import Settings
from agent.ebpf.loader import Loader
from agent.run import load_options
from bench import load
from bench.throughput import Shape, attached, counted

SIDES = ("A", "B")


def side(spec: str) -> dict[str, Any]:
    """Agent settings of a side: JSON settings, or a build directory."""
    if spec.lstrip().startswith("{"):
        try:
            settings = json.loads(spec)
        except ValueError as e:
            raise SystemExit(f"bench.ab: side {spec!r}: not JSON ({e})") from e
        if not isinstance(settings, dict):
            raise SystemExit(f"bench.ab: side {spec!r}: JSON settings must be an object")
        return settings
    if not (Path(spec) / "lifecycle.bpf.o").is_file():
        raise SystemExit(f"bench.ab: side {spec!r}: no lifecycle.bpf.o there (a bpf_dir, or JSON settings)")
    return {"bpf_dir": spec}


@contextmanager
def loaded(specs: dict[str, str], stats: bool) -> Iterator[dict[str, Loader]]:
    """Both sides loaded, detached, closed at the end."""
    lds: dict[str, Loader] = {}
    try:
        for name, spec in specs.items():
            ld = lds[name] = Loader(replace(load_options(Settings(**side(spec))), bpf_stats=stats))
            ld.load()
            ld.detach()
            ld.sample_stats(False)  # load() turns bpf_stats on; ns_per_run turns it on for its window only
        yield lds
    finally:
        for ld in lds.values():
            ld.close()


def ns_per_run(ld: Loader, program: str, seconds: float) -> float:
    """ns per run of ``program`` over ``seconds`` with bpf_stats on (``ld`` attached: see :func:`attached`)."""
    if not ld.sample_stats(True):
        raise SystemExit("bench.ab: bpf_stats cannot be enabled here")
    try:
        runs = ld.run_stats()
        if program not in runs:
            raise SystemExit(f"bench.ab: --program {program!r} not loaded (have: {', '.join(sorted(runs))})")
        r0 = runs[program][1]
        time.sleep(seconds)
        r1 = ld.run_stats()[program][1]
    finally:
        ld.sample_stats(False)
    return (r1.run_ns - r0.run_ns) / max(r1.runs - r0.runs, 1)


def run(a: argparse.Namespace) -> str:
    load.need("nginx", "wrk", "curl")
    specs = dict(zip(SIDES, (a.a, a.b)))
    got: dict[str, list[float]] = {"off": [], "A": [], "B": []}
    with loaded(specs, a.measure == "ns") as lds, tempfile.TemporaryDirectory(prefix="flowlens-ab-") as d, \
            load.network(a.net) as net, load.nginx(net, Path(d)) as port, load.running(net, port, a.shape):
        served = partial(load.served, Path(d))
        order = SIDES if a.measure == "ns" else ("off", *SIDES)
        for i in range(a.rounds):
            for m in order if i % 2 == 0 else order[::-1]:
                if m == "off":
                    got[m].append(counted(served, a.seconds))
                elif a.measure == "ns":
                    got[m].append(attached(lds[m], partial(ns_per_run, lds[m], a.program, a.seconds)))
                else:
                    got[m].append(attached(lds[m], partial(counted, served, a.seconds)))
    load_name = f"{a.shape}/{a.net}, {a.rounds} rounds of {a.seconds:g} s"
    if a.measure == "ns":
        diff = [b - x for x, b in zip(got["A"], got["B"])]
        return (f"{load_name}: {a.program} A {median(got['A']):.1f} ns/run, B {median(got['B']):.1f}; "
                f"B - A median {median(diff):+.1f} ns/run, B cheaper in {sum(x < 0 for x in diff)} of {len(diff)}")
    res = Shape(rps={"off": got["off"], "agent": got["A"], "again": got["B"]})
    ra, rb = res.ratios("agent"), res.ratios("again")
    lo, hi = res.ci(lambda idx: 100 * median(rb[i] - ra[i] for i in idx))
    return (f"{load_name}: off {median(got['off']):,.0f} req/s (IQR {100 * res.noise():.1f}%); A costs "
            f"{100 * (1 - res.ratio('agent')):.2f}%, B {100 * (1 - res.ratio('again')):.2f}%; B - A "
            f"{100 * median(b - x for x, b in zip(ra, rb)):+.2f} points of throughput (95% CI {lo:+.2f} to {hi:+.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", metavar="A", help="build directory or JSON agent settings")
    ap.add_argument("b", metavar="B", help="build directory or JSON agent settings")
    ap.add_argument("--net", choices=load.NETS, default="loopback")
    ap.add_argument("--shape", choices=load.SHAPES, default="churn")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--measure", choices=("ns", "throughput"), default="ns")
    ap.add_argument("--program", default="inet_sock_set_state")
    a = ap.parse_args()
    load.exit_on_sigterm()
    if a.rounds < 2 or a.seconds <= 0:
        raise SystemExit("bench.ab: --rounds must be >= 2 and --seconds > 0")
    print(run(a), flush=True)


if __name__ == "__main__":
    main()
