"""`flowlens doctor`: check this host and say, in plain words, what will work.

It really loads and attaches every feature (then detaches), and probes the
hooks flowlens does not use but peers rely on (kprobes, fentry), so what it
prints is what `flowlens run` will get.  Exit 1 when the agent cannot run.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import TextIO

from agent import preflight
from agent.config import Settings
from agent.ebpf.loader import FEATURES, Loader
from agent.ebpf.probes import probe_hook


def doctor(s: Settings, out: TextIO) -> int:
    def say(ok: bool | None, what: str, detail: str) -> None:
        mark = {True: "ok  ", False: "FAIL", None: "info"}[ok]
        out.write(f"[{mark}] {what:<22} {detail}\n")

    say(None, "kernel", f"{platform.release()} {platform.machine()}")
    btf = preflight.btf_path(s)
    say(btf.is_file(), "BTF", str(btf) if btf.is_file() else f"{btf} missing: CO-RE needs CONFIG_DEBUG_INFO_BTF")
    why = preflight.privilege_problem(Path(s.proc_root))
    say(why is None, "privileges", why or "CAP_BPF/CAP_PERFMON or CAP_SYS_ADMIN present")
    try:
        root = preflight.cgroup_root(s)
        say(True, "cgroup v2", f"{root}")
    except FileNotFoundError as e:
        say(False, "cgroup v2", str(e))
    tracefs = any(os.path.isfile(p) for p in ("/sys/kernel/tracing/available_events",
                                             "/sys/kernel/debug/tracing/available_events"))
    say(None, "tracefs", "mounted" if tracefs else "not mounted (not needed: flowlens uses BTF tracepoints)")
    problems = preflight.blocking_problems(s)
    if problems:
        out.write("\nflowlens cannot run here:\n" + "".join(f"  - {p}\n" for p in problems))
        return 1

    from agent.run import load_options  # after preflight: may read /proc

    opts = load_options(s)
    for kind in ("kprobe", "fentry"):
        err = probe_hook(opts.bpf_dir, kind)
        say(None, kind, "available (not used)" if err is None else f"unavailable: {err} (not needed)")
    # every feature is tried, opt-in ones too: the question is what this kernel can do
    loader = Loader(dataclasses.replace(opts, enabled=frozenset(f.name for f in FEATURES)))
    try:
        status = loader.load()
    finally:
        loader.close()
    hooks = {f.name: f.hooks for f in FEATURES}
    for f in status:
        detail = f"{f.summary} [{', '.join(hooks[f.name])}]"
        say(f.enabled, f"feature {f.name}", detail if f.enabled else f"{f.reason} -> {f.summary} unavailable")
    if not any(f.enabled for f in status):
        out.write("\nno feature can be loaded: flowlens cannot run here\n")
        return 1
    out.write("\nflowlens can run here: " + ", ".join(f.name for f in status if f.enabled) + "\n")
    optin = [f.name for f in FEATURES if not f.default and f.name not in s.enable]
    if optin:
        out.write("off by default, load with the `enable` setting: " + ", ".join(optin) + "\n")
    return 0
