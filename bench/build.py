"""What a build of the programs is, for pooling readings: a hash of what the kernel runs, not of the text.

``bench.repeat`` pools only readings of the same programs.  A hash of the whole ``*.bpf.o`` files said
"other programs" after any edit in bpf/, a comment included: the objects carry line numbers twice, in
the DWARF sections (``-g``) and in the line info of ``.BTF.ext``, and ``.BTF``'s string table holds the
text of every line with code, between the names its types use, so an edited comment on such a line
moves the names' offsets.  So a build is the hash of each object's sections without line numbers or
text: the code and its relocations, maps, read-only data, license and symbols as they are; ``.BTF``'s
types (map definitions included) with every name offset replaced by the name; of ``.BTF.ext``, the
function info and CO-RE relocations, names resolved the same way.  Checked on lifecycle.bpf.o
(2026-12-02): a comment line added at the top, or a comment changed after code on one line, keeps the
hash; ``SYN_SLOTS_SHIFT`` 10 -> 11 changes it.

ELF64 and BTF little-endian (what clang writes for ``-target bpf`` on x86 and arm64), read with
``struct``: the objects are a few sections each, and no ELF library is a dependency of the agent.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

SHT_NOBITS = 8


def sections(data: bytes, name: str = "object") -> Iterator[tuple[str, bytes]]:
    """(name, contents) of every section of an ELF64 little-endian object, in file order."""
    if data[:6] != b"\x7fELF\x02\x01":
        raise ValueError(f"{name}: not an ELF64 little-endian object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    entsize, count, strndx = struct.unpack_from("<HHH", data, 0x3A)
    heads = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * entsize) for i in range(count)]
    names = heads[strndx][4]
    for h in heads:
        start = names + h[0]
        yield data[start:data.index(b"\0", start)].decode(), b"" if h[1] == SHT_NOBITS else data[h[4]:h[4] + h[5]]


# BTF kinds whose record is followed by vlen entries of this many words, the first of each a name offset
NAMED_ENTRIES = {4: 3, 5: 3, 6: 2, 13: 2, 19: 3}  # struct, union, enum, func_proto, enum64
# the others: words after the record (array 3, int/var/decl_tag 1, datasec vlen x 3 without names)
PLAIN_WORDS = {1: 1, 3: 3, 14: 1, 17: 1}
DATASEC = 15
LAST_KIND = 19  # BTF_KIND_ENUM64, kernel 6.0


def words(data: bytes, off: int, n: int) -> list[int]:
    return list(struct.unpack_from(f"<{n}I", data, off))


def string(strs: bytes, off: int) -> bytes:
    return strs[off:strs.index(b"\0", off)]


def btf_strings(btf: bytes) -> bytes:
    hdr_len, _, _, str_off, str_len = struct.unpack_from("<5I", btf, 4)
    return btf[hdr_len + str_off:hdr_len + str_off + str_len]


def btf_types(btf: bytes) -> bytes:
    """``.BTF``'s types, each name offset replaced by its name: the same bytes whatever else the string
    table holds."""
    hdr_len, type_off, type_len = struct.unpack_from("<3I", btf, 4)
    strs, out = btf_strings(btf), []
    off, end = hdr_len + type_off, hdr_len + type_off + type_len
    while off < end:
        name, info, size = words(btf, off, 3)
        kind, vlen = info >> 24 & 0x1F, info & 0xFFFF
        if not 1 <= kind <= LAST_KIND:
            raise ValueError(f"BTF kind {kind} at type offset {off - hdr_len - type_off}: unknown to bench.build")
        out.append(string(strs, name) + struct.pack("<2I", info, size))
        off += 12
        if kind in NAMED_ENTRIES:
            stride = NAMED_ENTRIES[kind]
            for _ in range(vlen):
                entry = words(btf, off, stride)
                out.append(string(strs, entry[0]) + struct.pack(f"<{stride - 1}I", *entry[1:]))
                off += 4 * stride
        else:
            n = 3 * vlen if kind == DATASEC else PLAIN_WORDS.get(kind, 0)
            out.append(btf[off:off + 4 * n])
            off += 4 * n
    return b"\0".join(out)


def ext_infos(ext: bytes, off: int, length: int, strs: bytes, named: int | None) -> bytes:
    """One info part of ``.BTF.ext`` (a record size, then per section: its name, a count, records), the
    section names and word ``named`` of each record (a string offset) resolved."""
    if not length:
        return b""
    rec, out, pos, end = words(ext, off, 1)[0], [], off + 4, off + length
    while pos < end:
        sec, count = words(ext, pos, 2)
        out.append(string(strs, sec) + struct.pack("<I", count))
        pos += 8
        for _ in range(count):
            r = words(ext, pos, rec // 4)
            if named is not None:
                out.append(string(strs, r[named]))
                r[named] = 0
            out.append(struct.pack(f"<{len(r)}I", *r))
            pos += rec
    return b"\0".join(out)


def btf_ext_kept(ext: bytes, strs: bytes) -> bytes:
    """Of ``.BTF.ext``, the function info and CO-RE relocations (their access strings resolved); not the
    line info."""
    hdr_len, func_off, func_len = struct.unpack_from("<3I", ext, 4)
    out = ext_infos(ext, hdr_len + func_off, func_len, strs, None)
    if hdr_len >= 32:  # core_relo_off/len, in the header since libbpf 0.0.9
        core_off, core_len = struct.unpack_from("<2I", ext, 24)
        out += b"\0" + ext_infos(ext, hdr_len + core_off, core_len, strs, 2)
    return out


def counted(name: str) -> bool:
    """Whether section ``name`` is part of what a build is: not debug info, nor the relocations of line
    info."""
    return not name.startswith((".debug", ".rel.debug")) and name != ".rel.BTF.ext"


def canonical(secs: dict[str, bytes]) -> Iterator[tuple[str, bytes]]:
    """The sections of one object that make its build, ``.BTF`` and ``.BTF.ext`` without line text."""
    strs = btf_strings(secs[".BTF"]) if ".BTF" in secs else b""
    for name, body in secs.items():
        if not counted(name):
            continue
        if name == ".BTF":
            body = btf_types(body)
        elif name == ".BTF.ext":
            body = btf_ext_kept(body, strs)
        yield name, body


def build_hash(objects: Iterable[Path]) -> str:
    """Hash of ``objects`` (sorted by name) as the kernel runs them: 12 hex digits."""
    h = hashlib.sha256()
    for obj in sorted(objects):
        h.update(obj.name.encode() + b"\0")
        for name, body in canonical(dict(sections(obj.read_bytes(), str(obj)))):
            h.update(name.encode() + b"\0" + len(body).to_bytes(8, "little") + body)
    return h.hexdigest()[:12]
