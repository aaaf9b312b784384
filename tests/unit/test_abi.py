"""The Python mirror (agent/ebpf/abi.py) matches bpf/flowlens.h as compiled:
every struct's size and every field's offset, read from the objects' BTF."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from agent.ebpf import abi
from agent.ebpf.libbpf import lib, parse_btf, struct_layout
from agent.ebpf.loader import FEATURES
from agent.preflight import default_bpf_dir

OBJECTS = sorted(default_bpf_dir().glob("*.bpf.o"))


def test_objects_were_built() -> None:
    names = {p.name for p in OBJECTS}
    assert {f"{f.name}.bpf.o" for f in FEATURES} <= names, "run `make build` first"


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda p: Path(p).name)
def test_struct_layouts_match_btf(obj: Path) -> None:
    btf = parse_btf(str(obj))
    try:
        checked = 0
        for cname, mirror in abi.STRUCTS.items():
            try:
                size, offsets = struct_layout(btf, cname)
            except OSError:
                continue  # this object does not use the struct
            assert size == ctypes.sizeof(mirror), cname
            assert offsets == {f[0]: getattr(mirror, f[0]).offset for f in mirror._fields_}, cname
            checked += 1
        if obj.name != "probes.bpf.o":
            assert checked >= 3, f"{obj.name}: expected the shared structs in its BTF"
    finally:
        lib().btf__free(btf)


def test_bucket_bounds_are_powers_of_two_from_16us() -> None:
    b = abi.bucket_bounds_seconds()
    assert b[0] == 16e-6 and len(b) == abi.HIST_BUCKETS - 1
    assert all(b[i + 1] == 2 * b[i] for i in range(len(b) - 1))
    assert abi.VAL_WORDS * 8 == ctypes.sizeof(abi.EdgeVal)


def header_constants() -> dict[str, int]:
    """Every ``FL_*`` constant of bpf/flowlens.h (enumerators and #defines): name -> value.  Enum values
    never reach BTF (no variable has their type), so the header is their only source."""
    text = (Path(__file__).parents[2] / "bpf" / "flowlens.h").read_text()
    return {name: int(v) for name, v in re.findall(r"\b(FL_\w+)\s*=?\s*(\d+)\b", text)}


def named(consts: dict[str, int], prefix: str) -> dict[str, int]:
    """Of ``consts``, those named ``FL_<prefix>_*``: lower-cased suffix -> value."""
    return {k[len(prefix) + 4:].lower(): v for k, v in consts.items() if k.startswith(f"FL_{prefix}_")}


def by_value(consts: dict[str, int]) -> list[str]:
    assert sorted(consts.values()) == list(range(len(consts))), consts
    return sorted(consts, key=consts.__getitem__)


def test_constants_match_the_header() -> None:
    h = header_constants()
    assert h["FL_STATS"] == abi.STATS_SLOTS and by_value(named(h, "STAT")) == list(abi.STATS)
    results = named(h, "CONN")
    assert results.pop("results") == len(abi.RESULTS) and by_value(results) == list(abi.RESULTS)
    assert named(h, "ROLE") == {"unknown": abi.ROLE_UNKNOWN, "client": abi.ROLE_CLIENT, "server": abi.ROLE_SERVER}
    assert named(h, "LIVE") == {"new": abi.LIVE_NEW, "counted": abi.LIVE_COUNTED, "closed": abi.LIVE_CLOSED}
    assert named(h, "SLOT") == {"free": abi.SLOT_FREE, "busy": abi.SLOT_BUSY, "open": abi.SLOT_OPEN,
                             "walk": abi.SLOT_WALK, "closed": abi.SLOT_CLOSED}
    assert named(h, "HANDSHAKE") == {"untimed": abi.HANDSHAKE_UNTIMED, "timed": abi.HANDSHAKE_TIMED}
