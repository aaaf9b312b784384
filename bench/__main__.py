"""``make bench``: every cost measurement, one results table with each budget's PASS/FAIL.

Runs bench.throughput (nginx + wrk with the agent off / on / tcpdump, which also yields the per-program
BPF cost and the agent's CPU and RSS under each load shape) and bench.collector (poll and /metrics at
1k/10k/100k edges), then writes ``bench/results/README.md`` (machine, kernel, date, tables) and
``bench/results/raw.json`` (every number behind them), then appends bench/changes.md (what was
changed for each missed budget).  Root only; ~10 minutes on the 2-core VM.

``--only throughput`` or ``--only collector`` measures one part and rewrites the table with the other
part's numbers from raw.json, each part stamped with its own date and commit: on a host whose noise
swamps the throughput ratios (see the throughput section), the collector can be brought up to date
without replacing a quiet throughput run, and the throughput re-run when the host is quiet.
``--only none`` measures nothing and rewrites the table from raw.json.
``--wait-quiet MINUTES`` first checks the host (off against off, churn on loopback, ~20 s) once a minute
until agent-off req/s varies by less than the table's noise threshold, for at most MINUTES, then measures
either way (the table flags a noisy run).
Usage:  python -m bench [--pairs 60] [--seconds 0.5] [--sizes 1000,10000,100000] [--only PART] [--out DIR]
                        [--wait-quiet MINUTES]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from statistics import median
from typing import Any

from bench import collector, load, repeat, throughput

BPF_NS = 300.0
RATIO = {"persistent": 0.99, "churn": 0.97}
HOT = 1000.0  # events/s from which a program counts as hot under a load shape
NOISY = 0.05  # interquartile range of off req/s (fraction of the median) above which the table warns


PARTS = ("throughput", "collector")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20

    def version(*cmd: str) -> str:
        out = subprocess.run(cmd, capture_output=True, text=True)
        return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr).strip() else "?"
    return (f"- machine: {platform.node()}, {os.cpu_count()} x {cpu}, {mem:.1f} GiB RAM\n"
            f"- kernel: {platform.release()} ({platform.version()})\n"
            f"- tools: {version('nginx', '-v')}; {version('wrk', '-v')}; {version('tcpdump', '--version')}; "
            f"Python {platform.python_version()}\n")


def stamp(seconds: float) -> dict[str, Any]:
    """When and on what code a part was measured.  "+changes": tracked files differ from the commit,
    bench/results aside (a run's own output, left changed by the run before)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
                           capture_output=True, text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": (head or "?") + ("+changes" if dirty else ""),
            "kernel": platform.release(), "seconds": round(seconds)}


def stamped(name: str, part: dict[str, Any]) -> str:
    took = f", {part['seconds']} s" if part.get("seconds") else ""
    return f"- {name}: measured {part['date']} at commit {part['commit']} (kernel {part['kernel']}{took})"


def mark(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def wait_quiet(minutes: float) -> bool:
    """Check the host once a minute until it is quiet or ``minutes`` have passed; whether it was."""
    deadline = time.monotonic() + 60 * minutes
    while True:
        aa = throughput.measure(10, throughput.WINDOW_S, ("loopback",), ("churn",), ("off", "again"),
                                log=lambda *a: None)["churn/loopback"]
        print(f"host check: agent-off req/s interquartile range {100 * aa.noise():.1f}% "
              f"(quiet below {100 * NOISY:.0f}%), VM steal {throughput.share(aa.steal)}", flush=True)
        if aa.noise() <= NOISY:
            return True
        if time.monotonic() + 60 > deadline:
            return False
        time.sleep(60)


def unsettled(straddles: bool) -> str:
    """Said of a verdict whose 95% interval reaches both sides of its budget."""
    return ": not settled by this run" if straddles else ""


def throughput_tables(res: dict[str, throughput.Shape]) -> tuple[str, list[tuple[str, str, bool]]]:
    out, verdicts = [], []
    out += ["| load | off req/s | agent req/s | tcpdump req/s | agent / off | tcpdump / off | agent overhead "
            "| tcpdump overhead | agent / off p25-p75 | off p25-p75 | VM steal |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for shape, r in res.items():
        med = {m: median(r.rps[m]) for m in throughput.MODES}
        ra, rc = r.ratio("agent"), r.ratio("capture")
        rounds = "{:.3f}-{:.3f}".format(*r.spread("agent"))
        out.append(f"| {shape} | {med['off']:,.0f} | {med['agent']:,.0f} | {med['capture']:,.0f} | {ra:.3f} | "
                   f"{rc:.3f} | {100 * (1 - ra):.1f}% | {100 * (1 - rc):.1f}% | {rounds} | {100 * r.noise():.1f}% | "
                   f"{throughput.share(r.steal)} |")
        want = RATIO[shape.split("/")[0]]
        lo, hi = r.ratio_ci("agent")
        verdicts.append((f"{shape}: agent-on / agent-off >= {want}", f"{ra:.3f} (95% CI {lo:.3f}-{hi:.3f}"
                         f"{unsettled(lo < want <= hi)})", ra >= want))
        mlo, mhi = r.margin_ci()
        verdicts.append((f"{shape}: agent overhead <= 1/5 of tcpdump's", f"{100 * (1 - ra):.1f}% vs "
                         f"{100 * (1 - rc):.1f}% / 5 = {20 * (1 - rc):.1f}% (margin 95% CI {mlo:+.1f} to "
                         f"{mhi:+.1f} points{unsettled(mlo < 0 <= mhi)})", throughput.margin(ra, rc) >= 0))
    noisy = [f"{shape} {100 * r.noise():.0f}%" for shape, r in res.items() if r.noise() > NOISY]
    if noisy:
        out += ["", f"**Noisy machine**: agent-off req/s varied by {', '.join(noisy)} between windows "
                f"(interquartile range above {100 * NOISY:.0f}%); a ratio closer to its budget than that says "
                "little. Re-run on a quiet machine."]
        steal = [f"{shape} {throughput.share(r.steal)}" for shape, r in res.items() if r.steal]
        if steal:
            out[-1] += f" The hypervisor took this share of the VM's CPU time meanwhile: {', '.join(steal)}."
    out += ["", "Agent process under each load (one 5 s window; CPU = on-CPU time of all its threads over "
            "the wrk window, from schedstat; VM steal over the same window):", "",
            "| load | agent CPU millicores | agent peak RSS MB | VM steal |", "|---|---:|---:|---:|"]
    for shape, r in res.items():
        out.append(f"| {shape} | {median(r.millicores):.1f} | {max(r.rss_mb):.0f} | "
                   f"{throughput.share(r.agent_steal)} |")
    out += ["", "Kernel cost per program (bpf_stats run_time_ns / run_cnt over all agent windows, timed by the "
            "clock: VM steal inside a run counts; the budget "
            f"applies to programs above {HOT:,.0f} events/s):", "",
            "| load | program | events/s | ns/event | verdict |", "|---|---|---:|---:|---|"]
    for shape, r in res.items():
        for prog in sorted(r.bpf):
            rate, ns = r.events_per_s(prog), r.ns_per_event(prog)
            hot = rate >= HOT
            out.append(f"| {shape} | {prog} | {rate:,.0f} | {ns:.0f} | {mark(ns <= BPF_NS) if hot else 'not hot'} |")
            if hot:
                verdicts.append((f"{shape}: {prog} <= {BPF_NS:.0f} ns/event", f"{ns:.0f} ns", ns <= BPF_NS))
    return "\n".join(out), verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=throughput.PAIRS)
    ap.add_argument("--seconds", type=float, default=throughput.WINDOW_S)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--k8s-sizes", default="10000")
    ap.add_argument("--only", choices=[*PARTS, "none"],
                    help="measure one part (or none: rewrite the table) and keep the rest from raw.json")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="MINUTES",
                    help="wait up to MINUTES for a quiet host before the throughput part")
    a = ap.parse_args()
    load.exit_on_sigterm()
    if os.geteuid() != 0 and a.only != "none":
        raise SystemExit("bench: run as root (BPF programs, tcpdump)")
    parts: dict[str, dict[str, Any]] = {}
    if a.only:
        try:
            parts = json.loads((a.out / "raw.json").read_text())["parts"]
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"bench --only {a.only}: no earlier results in {a.out / 'raw.json'} ({e}): run all") from e
    if a.only in (None, "throughput"):
        if a.wait_quiet > 0 and not wait_quiet(a.wait_quiet):
            print(f"host still noisy after {a.wait_quiet:g} min: measuring anyway", flush=True)
        start = time.monotonic()
        print(f"throughput: {a.pairs} alternations of {a.seconds} s windows per load "
              f"({throughput.triples(a.pairs, 'churn')} on churn)", flush=True)
        tp = throughput.measure(a.pairs, a.seconds)
        parts["throughput"] = {**stamp(time.monotonic() - start), "pairs": a.pairs, "window_s": a.seconds,
                               "loads": {s: asdict(r) for s, r in tp.items()}}
    if a.only in (None, "collector"):
        start = time.monotonic()
        print("collector: poll and /metrics", flush=True)
        rows = collector.measure([int(x) for x in a.sizes.split(",")],
                                 [int(x) for x in a.k8s_sizes.split(",") if x])
        parts["collector"] = {**stamp(time.monotonic() - start), "rows": rows}
    missing = [p for p in PARTS if p not in parts]
    if missing:
        raise SystemExit(f"bench: {a.out / 'raw.json'} has no {', '.join(missing)} part: run all")
    tpart, cpart = parts["throughput"], parts["collector"]
    tp = {s: throughput.Shape(**r) for s, r in tpart["loads"].items()}
    tp_text, verdicts = throughput_tables(tp)
    verdicts += collector.budgets(cpart["rows"])
    summary = ["| budget (DESIGN.md section 6) | measured | verdict |", "|---|---:|---|"]
    summary += [f"| {b} | {got} | {mark(ok)} |" for b, got, ok in verdicts]
    if any(r.noise() > NOISY for r in tp.values()):
        summary += ["", "**Noisy machine** (interquartile range of agent-off req/s above "
                    f"{100 * NOISY:.0f}%, see the throughput table): the throughput verdicts are weak evidence."]
    summary += ["", *collector.k8s_rss(cpart["rows"])]
    summary += ["", "Throughput intervals: 95% bootstrap over the triples (resampled whole, 2,000 times); a "
                "verdict whose interval straddles its budget is not settled by this run."]
    pooled = repeat.pooled_lines(a.out / "readings.jsonl", repeat.build_of({}))
    summary += ["", *pooled] if pooled else []
    text = ("# flowlens cost\n\nWritten by `make bench` (`python -m bench`).\n\n" + machine() +
            f"{stamped('throughput', tpart)}\n{stamped('collector', cpart)}\n\n## Budgets\n\n" +
            "\n".join(summary) +
            f"\n\n## Throughput: nginx + wrk, agent off / on / tcpdump\n\n{load.__doc__}\n{throughput.__doc__}\n"
            f"Triples of {tpart['window_s']} s windows per load: "
            + ", ".join(f"{s} {len(r.rps['off'])}" for s, r in tp.items())
            + f"; ratios are medians of per-triple ratios.\n\n{tp_text}\n\n"
            f"## Collector: one poll and one /metrics render\n\n{collector.__doc__}\n{collector.table(cpart['rows'])}"
            "\n\n" + (Path(__file__).parent / "changes.md").read_text())
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "README.md").write_text(text)
    raw = {"parts": parts, "budgets": [{"budget": b, "measured": g, "ok": ok} for b, g, ok in verdicts]}
    (a.out / "raw.json").write_text(json.dumps(raw, indent=1) + "\n")
    print("\n".join(summary))
    print(f"wrote {a.out / 'README.md'} and {a.out / 'raw.json'}")


if __name__ == "__main__":
    main()
