"""Probe a hook type by loading and attaching one program of build/probes.bpf.o."""

from __future__ import annotations

from pathlib import Path

from agent.ebpf.libbpf import BpfError, check, check_ptr, lib


def probe_hook(bpf_dir: Path, kind: str) -> str | None:
    """None if a ``kind`` (kprobe, fentry) program loads and attaches, else why not."""
    bpf = lib()
    path = bpf_dir / "probes.bpf.o"
    try:
        obj = check_ptr(f"open {path}", bpf.bpf_object__open_file(str(path).encode(), None))
    except BpfError as e:
        return str(e).splitlines()[0]
    try:
        prog = bpf.bpf_object__next_program(obj, None)
        while prog:
            bpf.bpf_program__set_autoload(prog, bpf.bpf_program__name(prog).decode() == f"probe_{kind}")
            prog = bpf.bpf_object__next_program(obj, prog)
        check(f"load {kind}", bpf.bpf_object__load(obj))
        prog = bpf.bpf_object__find_program_by_name(obj, f"probe_{kind}".encode())
        link = check_ptr(f"attach {kind}", bpf.bpf_program__attach(prog))
        bpf.bpf_link__destroy(link)
        return None
    except BpfError as e:
        return str(e).splitlines()[0]
    finally:
        bpf.bpf_object__close(obj)
