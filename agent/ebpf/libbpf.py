"""ctypes binding to libbpf.so.1: the only module in flowlens that calls libbpf.

Only the ~25 functions the agent needs are declared.  libbpf 1.x conventions:
functions returning ``int`` return ``-errno`` on failure, functions returning a
pointer return NULL and set ``errno``.  Both are turned into :class:`BpfError`
carrying the errno and the last warnings libbpf printed (verifier log
included), so a failed load says why.

Nothing is loaded at import time: :func:`lib` opens the library on first use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

BTF_KIND_STRUCT = 4
BTF_KIND_DATASEC = 15
BPF_STATS_RUN_TIME = 0

# struct bpf_prog_info is UAPI (stable ABI): these offsets never move.
_PROG_INFO_SIZE = 232
_PROG_INFO_RUN_TIME_NS = 192
_PROG_INFO_RUN_CNT = 200
_PROG_INFO_RECURSION_MISSES = 208


class BpfError(OSError):
    """A libbpf call failed; ``str()`` names the call and the kernel's reason."""

    def __init__(self, what: str, err: int, detail: str = "") -> None:
        msg = f"{what}: {os.strerror(err)} (errno {err})"
        if detail:
            msg += "\n" + detail
        super().__init__(err, msg)
        self.what = what

    def __str__(self) -> str:
        return str(self.args[1])


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class _BtfMember(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32), ("offset", ctypes.c_uint32)]


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class OpenOpts(ctypes.Structure):
    """``struct bpf_object_open_opts`` up to ``btf_custom_path`` (libbpf 0.6+); ``sz`` says how far."""

    _fields_ = [("sz", ctypes.c_size_t), ("object_name", ctypes.c_char_p), ("relaxed_maps", ctypes.c_bool),
                ("pin_root_path", ctypes.c_char_p), ("_stub", ctypes.c_uint32), ("kconfig", ctypes.c_char_p),
                ("btf_custom_path", ctypes.c_char_p)]


def open_opts(btf: Path | None) -> OpenOpts | None:
    """Open options naming the kernel BTF file (a host path mounted into a pod), or None for libbpf's own."""
    if btf is None:
        return None
    return OpenOpts(sz=ctypes.sizeof(OpenOpts), btf_custom_path=str(btf).encode())


class TestRunOpts(ctypes.Structure):
    """``struct bpf_test_run_opts`` (libbpf 0.7+); a raw_tp program takes no data, only its retval comes back."""

    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


_P = ctypes.c_void_p
_I = ctypes.c_int
_U32 = ctypes.c_uint32
_S = ctypes.c_char_p
_SIGS: dict[str, tuple[Any, list[Any]]] = {
    "bpf_object__open_file": (_P, [_S, _P]),
    "bpf_object__load": (_I, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__btf": (_P, [_P]),
    "bpf_object__find_map_by_name": (_P, [_P, _S]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_map__name": (_S, [_P]),
    "bpf_map__fd": (_I, [_P]),
    "bpf_map__set_max_entries": (_I, [_P, _U32]),
    "bpf_map__reuse_fd": (_I, [_P, _I]),
    "bpf_map__initial_value": (_P, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "bpf_program__name": (_S, [_P]),
    "bpf_program__set_autoload": (_I, [_P, ctypes.c_bool]),
    "bpf_object__find_program_by_name": (_P, [_P, _S]),
    "bpf_program__section_name": (_S, [_P]),
    "bpf_program__fd": (_I, [_P]),
    "bpf_program__attach": (_P, [_P]),
    "bpf_program__attach_cgroup": (_P, [_P, _I]),
    "bpf_prog_test_run_opts": (_I, [_I, _P]),
    "bpf_link__destroy": (_I, [_P]),
    "bpf_map_lookup_batch": (_I, [_I, _P, _P, _P, _P, ctypes.POINTER(_U32), _P]),
    "bpf_map_update_batch": (_I, [_I, _P, _P, ctypes.POINTER(_U32), _P]),
    "bpf_map_lookup_elem": (_I, [_I, _P, _P]),
    "bpf_map_lookup_and_delete_elem": (_I, [_I, _P, _P]),
    "bpf_obj_get_info_by_fd": (_I, [_I, _P, ctypes.POINTER(_U32)]),
    "bpf_enable_stats": (_I, [_I]),
    "btf__parse": (_P, [_S, _P]),
    "btf__free": (None, [_P]),
    "btf__find_by_name_kind": (_I, [_P, _S, _U32]),
    "btf__type_by_id": (ctypes.POINTER(_BtfType), [_P, _U32]),
    "btf__name_by_offset": (_S, [_P, _U32]),
    "btf__resolve_size": (ctypes.c_long, [_P, _U32]),
    "libbpf_set_print": (_P, [_P]),
}

_PRINT_FN = ctypes.CFUNCTYPE(_I, _I, _S, _P)
_recent: deque[str] = deque(maxlen=40)
_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL(None)  # the process's own libc: already loaded, no I/O
_print_cb: Any = None


def _on_print(level: int, fmt: bytes, args: int) -> int:
    """libbpf's print callback: format with vsnprintf, keep warnings for errors."""
    buf = ctypes.create_string_buffer(2048)
    _libc.vsnprintf(buf, len(buf), fmt, ctypes.c_void_p(args))
    text = buf.value.decode(errors="replace").rstrip()
    if level <= 1:  # LIBBPF_WARN, LIBBPF_INFO
        _recent.append(text)
    log.debug("libbpf: %s", text)
    return 0


def lib() -> ctypes.CDLL:
    """Open libbpf.so.1 once, declare signatures, route its log to logging."""
    global _lib, _print_cb
    if _lib is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        handle = ctypes.CDLL(name, use_errno=True)
        for fn, (res, args) in _SIGS.items():
            f = getattr(handle, fn)
            f.restype, f.argtypes = res, args
        _print_cb = _PRINT_FN(_on_print)
        handle.libbpf_set_print(ctypes.cast(_print_cb, _P))
        _lib = handle
    return _lib


def _detail() -> str:
    text = "\n".join(_recent)
    _recent.clear()
    return text[-4000:]


def check(what: str, rc: int) -> int:
    """Raise BpfError for a negative libbpf int return, else return it."""
    if rc < 0:
        raise BpfError(what, -rc, _detail())
    return rc


def check_ptr(what: str, ptr: int | None) -> int:
    """Raise BpfError for a NULL pointer return (errno set by libbpf)."""
    if not ptr:
        raise BpfError(what, ctypes.get_errno() or errno.EINVAL, _detail())
    return ptr


class ProgRuns(NamedTuple):
    """A loaded program's counters from ``bpf_prog_info``, cumulative since load."""

    run_ns: int  # time in the program while bpf_stats was on
    runs: int  # runs while bpf_stats was on
    misses: int  # runs the kernel skipped: a BPF program was already running on that CPU (always counted)


def prog_runs(prog_fd: int) -> ProgRuns:
    """Run time, run count (zero unless stats are enabled) and recursion misses of a loaded program."""
    buf = ctypes.create_string_buffer(_PROG_INFO_SIZE)
    size = _U32(_PROG_INFO_SIZE)
    check("bpf_obj_get_info_by_fd", lib().bpf_obj_get_info_by_fd(prog_fd, buf, ctypes.byref(size)))

    def u64(off: int) -> int:
        return int.from_bytes(buf.raw[off:off + 8], "little")

    return ProgRuns(u64(_PROG_INFO_RUN_TIME_NS), u64(_PROG_INFO_RUN_CNT), u64(_PROG_INFO_RECURSION_MISSES))


def _btf_type(btf: int, name: str, kind: int, entry: type[ctypes.Structure]) -> tuple[_BtfType, list[Any]]:
    """A named BTF type and the ``vlen`` entries (members, var infos) that follow it."""
    tid = check(f"BTF type {name}", lib().btf__find_by_name_kind(btf, name.encode(), kind))
    t = lib().btf__type_by_id(btf, tid).contents
    vlen = t.info & 0xFFFF
    return t, list((entry * vlen).from_address(ctypes.addressof(t) + ctypes.sizeof(_BtfType)))


def struct_layout(btf: int, name: str) -> tuple[int, dict[str, int]]:
    """Size and member byte offsets of struct ``name`` in a BTF handle."""
    bpf = lib()
    t, members = _btf_type(btf, name, BTF_KIND_STRUCT, _BtfMember)
    offsets = {bpf.btf__name_by_offset(btf, m.name_off).decode(): (m.offset & 0xFFFFFF) // 8 for m in members}
    return t.size, offsets


def datasec_offsets(btf: int, section: str) -> dict[str, int]:
    """Byte offset of each variable in a data section (``.rodata``) of an opened object."""
    bpf = lib()
    _, infos = _btf_type(btf, section, BTF_KIND_DATASEC, _BtfVarSecinfo)
    out = {}
    for vi in infos:
        var = bpf.btf__type_by_id(btf, vi.type).contents
        out[bpf.btf__name_by_offset(btf, var.name_off).decode()] = vi.offset
    return out


def parse_btf(path: str) -> int:
    """Open the BTF of an ELF object or raw BTF file; free with ``lib().btf__free``."""
    return check_ptr(f"btf__parse {path}", lib().btf__parse(path.encode(), None))
