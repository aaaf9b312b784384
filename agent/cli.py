"""`flowlens run | doctor | top`.

Exit status: 0 clean stop, 1 doctor found the agent cannot run, 2 bad
settings or a start-up failure (the message says which setting or what).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.config import ConfigError, Settings, load


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowlens", description="Network flow metrics from eBPF.")
    p.add_argument("--version", action="version", version=f"flowlens {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, text in (("run", "run the agent"), ("doctor", "check this host and say what will work"),
                       ("top", "live table of the busiest edges")):
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument("--config", type=Path, help="YAML settings file")
        c.add_argument("--listen", help="host:port for /metrics (default 0.0.0.0:9464)")
        c.add_argument("--poll-interval", type=float, dest="poll_interval", help="seconds between polls")
        c.add_argument("--cgroup-root", dest="cgroup_root", help="cgroup v2 mount ('auto')")
        c.add_argument("--bpf-dir", dest="bpf_dir", help="directory of the *.bpf.o objects")
        c.add_argument("--log-level", dest="log_level", help="debug|info|warning|error")
        if name == "top":
            c.add_argument("--url", default="", help="scrape a running agent (default: http://<listen>/metrics)")
            c.add_argument("--rows", type=int, default=20, help="edges to show")
            c.add_argument("--iterations", type=int, default=0, help="stop after N refreshes (0 = forever)")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {k: getattr(args, k, None) for k in ("listen", "poll_interval", "cgroup_root", "bpf_dir", "log_level")}
    return load(args.config, flags=flags)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        s = settings_from(args)
    except ConfigError as e:
        print(f"flowlens: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=s.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if args.cmd == "doctor":
        from agent.doctor import doctor
        return doctor(s, sys.stdout)
    if args.cmd == "top":
        from agent.top import top
        return top(s, args.url, args.rows, args.iterations, sys.stdout)
    from agent.run import StartError, run
    try:
        return run(s)
    except StartError as e:
        print(f"flowlens: cannot start: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
