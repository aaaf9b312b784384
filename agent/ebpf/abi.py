"""Python mirror of bpf/flowlens.h, field by field.

tests/unit/test_abi.py compares every size and offset here with the BTF of the
compiled objects, so a change to the header that is not made here fails CI.
The numpy dtypes are derived from the ctypes structures (same layout), and
the collector reads batch-lookup buffers through them without copying.
"""

from __future__ import annotations

import ctypes

import numpy as np

HIST_BUCKETS = 24
HIST_MIN_SHIFT = 4  # first bound: 2**4 us = 16 us

ROLE_UNKNOWN, ROLE_CLIENT, ROLE_SERVER = 0, 1, 2
RESULTS = ("success", "refused", "timeout", "reset", "error")
STATS = ("edge_full", "sk_nostorage", "rst_nosock", "udp_nopeer", "conn_full", "connect_untimed", "close_missed")
STATS_SLOTS = 8
PROTO_TCP, PROTO_UDP = 6, 17

HANDSHAKE_UNTIMED, HANDSHAKE_TIMED = 1, 2
LIVE_NEW, LIVE_COUNTED, LIVE_CLOSED = 0, 1, 2
SLOT_FREE, SLOT_BUSY, SLOT_OPEN, SLOT_WALK, SLOT_CLOSED = 0, 1, 2, 3, 4


class EdgeKey(ctypes.Structure):
    _fields_ = [
        ("cgroup", ctypes.c_uint64),
        ("laddr", ctypes.c_uint8 * 16),
        ("raddr", ctypes.c_uint8 * 16),
        ("port", ctypes.c_uint16),
        ("role", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("_pad", ctypes.c_uint32),
    ]


class EdgeVal(ctypes.Structure):
    _fields_ = [
        ("sent_bytes", ctypes.c_uint64),
        ("recv_bytes", ctypes.c_uint64),
        ("conns", ctypes.c_uint64 * len(RESULTS)),
        ("retrans", ctypes.c_uint64),
        ("rst_sent", ctypes.c_uint64),
        ("rst_recv", ctypes.c_uint64),
        ("active", ctypes.c_int64),
        ("connect_sum_us", ctypes.c_uint64),
        ("rtt_sum_us", ctypes.c_uint64),
        ("connect_hist", ctypes.c_uint64 * HIST_BUCKETS),
        ("rtt_hist", ctypes.c_uint64 * HIST_BUCKETS),
    ]


class Config(ctypes.Structure):
    _fields_ = [
        ("ephemeral_lo", ctypes.c_uint16),
        ("ephemeral_hi", ctypes.c_uint16),
        ("conn_slots", ctypes.c_uint32),
    ]


class Conn(ctypes.Structure):
    _fields_ = [
        ("edge", EdgeKey),
        ("ident", ctypes.c_uint64),
        ("sk", ctypes.c_uint64),
        ("handshake", ctypes.c_uint64),
        ("sent", ctypes.c_uint64),
        ("recv", ctypes.c_uint64),
        ("retrans", ctypes.c_uint64),
        ("live", ctypes.c_uint32),
        ("state", ctypes.c_uint32),
    ]


class Sock(ctypes.Structure):
    _fields_ = [
        ("peer", ctypes.c_uint8 * 16),
        ("peer_port", ctypes.c_uint16),
        ("role", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 5),
    ]


# Every struct shared with the kernel, by its C name (checked against BTF).
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "fl_edge_key": EdgeKey,
    "fl_edge_val": EdgeVal,
    "fl_config": Config,
    "fl_conn": Conn,
    "fl_sock": Sock,
}

KEY_DTYPE = np.dtype(EdgeKey)
VAL_DTYPE = np.dtype(EdgeVal)

# EdgeVal is all 8-byte words: the collector views values as a u64 matrix.
VAL_WORDS = ctypes.sizeof(EdgeVal) // 8


def _word(name: str) -> int:
    return int(getattr(EdgeVal, name).offset) // 8


W_SENT = _word("sent_bytes")
W_RECV = _word("recv_bytes")
W_CONNS = _word("conns")
W_RETRANS = _word("retrans")
W_RST_SENT = _word("rst_sent")
W_RST_RECV = _word("rst_recv")
W_ACTIVE = _word("active")
W_CONNECT_SUM = _word("connect_sum_us")
W_RTT_SUM = _word("rtt_sum_us")
W_CONNECT_HIST = _word("connect_hist")
W_RTT_HIST = _word("rtt_hist")


def bucket_bounds_seconds() -> list[float]:
    """Upper bounds of the finite histogram buckets, in seconds (last is +Inf)."""
    return [(1 << (HIST_MIN_SHIFT + i)) / 1e6 for i in range(HIST_BUCKETS - 1)]
