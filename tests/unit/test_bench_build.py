"""bench.build names the programs, not their text: comments never change a build, code does.

Compiles bpf/lifecycle.bpf.c with bpf/Makefile (clang is what `make test` builds with) as shipped and
edited three ways, each in a copy of bpf/ somewhere else, so the checkout's path is not in it either."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.build import btf_types, build_hash, sections

BPF = Path(__file__).parents[2] / "bpf"
SOURCE = "lifecycle.bpf.c"


def built(tmp: Path, name: str, old: str = "", new: str = "") -> Path:
    """lifecycle.bpf.o from a copy of bpf/ under ``tmp/name`` with ``old`` replaced by ``new`` once."""
    src, out = tmp / name.replace(" ", "-") / "bpf", tmp / name.replace(" ", "-") / "out"  # make: no spaces
    shutil.copytree(BPF, src)
    text = (src / SOURCE).read_text()
    if old:
        assert text.count(old) == 1, f"{SOURCE}: expected {old!r} once"
        (src / SOURCE).write_text(text.replace(old, new))
    subprocess.run(["make", "-s", "-C", str(src), f"OUT={out}", str(out / "lifecycle.bpf.o")], check=True)
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("builds")
    return {"shipped": built(tmp, "shipped"),
            "comment line": built(tmp, "comment line", "#include \"common.h\"\n",
                                  "/* a new line: every line below moves */\n#include \"common.h\"\n"),
            "comment after code": built(tmp, "comment after code", "FL_SLOT_OPEN); /* publish */",
                                        "FL_SLOT_OPEN); /* published: the walk may read it */"),
            "code": built(tmp, "code", "#define SYN_SLOTS_SHIFT 10", "#define SYN_SLOTS_SHIFT 11")}


def hash_of(d: Path) -> str:
    return build_hash(d.glob("*.bpf.o"))


def test_comments_keep_the_build(builds: dict[str, Path]) -> None:
    objs = {k: (d / "lifecycle.bpf.o").read_bytes() for k, d in builds.items()}
    # the bytes differ (line numbers, line text), so a plain file hash would call these other programs
    assert objs["comment line"] != objs["shipped"] != objs["comment after code"]
    assert hash_of(builds["comment line"]) == hash_of(builds["shipped"]) == hash_of(builds["comment after code"])


def test_code_changes_the_build(builds: dict[str, Path]) -> None:
    assert hash_of(builds["code"]) != hash_of(builds["shipped"])


def test_objects_keep_their_line_text(builds: dict[str, Path]) -> None:
    # the verifier's log and bpftool print each instruction's source line from BTF
    btf = dict(sections((builds["shipped"] / "lifecycle.bpf.o").read_bytes()))[".BTF"]
    assert b"FL_SLOT_OPEN); /* publish */" in btf
    assert b"publish" not in btf_types(btf)  # ... which is not part of the build


def test_not_an_object_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "x.bpf.o"
    bad.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ValueError, match="x.bpf.o: not an ELF64"):
        build_hash([bad])
