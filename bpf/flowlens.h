/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flowlens.h - the ONE header shared by the kernel programs and Python.
 *
 * Plain __u* types only, no kernel headers, so agent/ebpf/abi.py can mirror it
 * field by field; tests/unit/test_abi.py checks every size and offset below
 * against the BTF of the compiled objects.  Change a struct here and the mirror
 * in the same commit.
 */
#ifndef FLOWLENS_H
#define FLOWLENS_H

#ifndef __BPF__
#include <linux/types.h>
#endif

/* Histogram buckets are log2 of microseconds: bucket 0 holds v <= 16 us,
 * bucket i (1..FL_HIST_BUCKETS-2) holds 16*2^(i-1) < v <= 16*2^i us, the last
 * bucket is +Inf.  16 us * 2^22 = 67.1 s is the largest finite bound. */
#define FL_HIST_BUCKETS 24
#define FL_HIST_MIN_SHIFT 4 /* 2^4 = 16 us */

enum fl_role {
	FL_ROLE_UNKNOWN = 0,
	FL_ROLE_CLIENT = 1,
	FL_ROLE_SERVER = 2,
};

/* Result of a connect attempt, index into fl_edge_val.conns. */
enum fl_result {
	FL_CONN_SUCCESS = 0,
	FL_CONN_REFUSED = 1,
	FL_CONN_TIMEOUT = 2,
	FL_CONN_RESET = 3,
	FL_CONN_ERROR = 4,
	FL_CONN_RESULTS = 5,
};

/* Agent-health counters, index into the per-CPU `stats` array. */
enum fl_stat {
	FL_STAT_EDGE_FULL = 0,     /* edge insert failed: map full, update lost */
	FL_STAT_SK_NOSTORAGE = 1,  /* per-socket storage unavailable, event lost */
	FL_STAT_RST_NOSOCK = 2,    /* RST sent with no socket (e.g. closed port) */
	FL_STAT_UDP_NOPEER = 3,    /* unconnected UDP call with unknown peer */
	FL_STAT_CONN_FULL = 4,     /* no free `conns` slot: the connect is counted,
				    * its bytes, RTT and retransmits are not */
	FL_STAT_CONNECT_UNTIMED = 5, /* connect counted without its duration: no
				      * RTT sample and no first-SYN time */
	FL_STAT_CLOSE_MISSED = 6,  /* a connection whose CLOSE no program saw
				    * (recursion miss, programs detached): the
				    * walk gave it its last flush */
	FL_STATS = 8,
};

/*
 * Aggregation key: one edge as seen by one local socket's cgroup.
 * Addresses are 16 bytes; IPv4 is stored v4-mapped (::ffff:a.b.c.d).
 * `port` is the server port in host byte order, never an ephemeral port.
 */
struct fl_edge_key {
	__u64 cgroup;      /* cgroup v2 id (inode) of the local socket */
	__u8 laddr[16];    /* local address */
	__u8 raddr[16];    /* remote address, all zero when unknown */
	__u16 port;        /* server port, host order */
	__u8 role;         /* enum fl_role of the local end */
	__u8 proto;        /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u32 _pad;
};

/*
 * Per-edge aggregate.  Every field is cumulative since the entry was created;
 * the collector turns it into deltas.  `active` is a gauge.  Sums and
 * histograms are in microseconds.
 */
struct fl_edge_val {
	__u64 sent_bytes;
	__u64 recv_bytes;
	__u64 conns[FL_CONN_RESULTS];
	__u64 retrans;           /* segments retransmitted */
	__u64 rst_sent;
	__u64 rst_recv;
	__s64 active;            /* connections open at the last poll-time flush */
	__u64 connect_sum_us;
	__u64 rtt_sum_us;
	__u64 connect_hist[FL_HIST_BUCKETS];
	__u64 rtt_hist[FL_HIST_BUCKETS];
};

/*
 * Load-time settings, written into .rodata before load (const volatile).
 * Runtime filters would go in maps, never here.
 */
struct fl_config {
	__u16 ephemeral_lo;      /* ip_local_port_range, to infer roles of */
	__u16 ephemeral_hi;      /* sockets that predate the agent */
	__u32 conn_slots;        /* max_entries of `conns` */
};

/* fl_conn.handshake once the handshake is done, until a flush counts it */
#define FL_HANDSHAKE_UNTIMED 1 /* connected, duration unknown (server side, or
				* no RTT sample) */
#define FL_HANDSHAKE_TIMED 2   /* + the connect duration in us */

/* fl_conn.live: whether the edge's `active` gauge holds this connection */
#define FL_LIVE_NEW 0      /* not yet seen by a poll-time flush */
#define FL_LIVE_COUNTED 1  /* added to `active` by a flush */
#define FL_LIVE_CLOSED 2   /* closed: `active` no longer holds it */

/* fl_conn.state: who may touch a `conns` slot */
#define FL_SLOT_FREE 0     /* claimable by an ESTABLISHED */
#define FL_SLOT_BUSY 1     /* claimed and being written (ESTABLISHED), or
			    * being flushed and freed by its CLOSE */
#define FL_SLOT_OPEN 2     /* a live connection: flushed by the poll-time walk,
			    * flushed and freed by its CLOSE */
#define FL_SLOT_WALK 3     /* OPEN, being flushed by the walk: its CLOSE still
			    * flushes it but leaves the freeing to the walk */
#define FL_SLOT_CLOSED 4   /* closed while the walk held it: the walk frees it */

/*
 * Per-TCP-connection state: a slot of the ARRAY `conns`, found from the
 * socket's address (its home slot or one of the next few) and told from an
 * earlier socket at that address by its identity (hash of the 4-tuple and
 * netns, common.h sock_ident).  Claimed
 * at ESTABLISHED, freed at CLOSE.  The handshake is only written into the
 * slot; the first flush (poll-time walk or CLOSE, whichever comes first)
 * counts it on the edge, so a connection costs one edge lookup (at CLOSE)
 * however short it lives.  The byte and retransmit words are what was
 * already added to the edge: every flush swaps in the socket's current
 * counter and adds the difference.
 */
struct fl_conn {
	struct fl_edge_key edge; /* aggregate this connection counts into */
	__u64 ident;             /* identity of the owner (sock_ident) */
	__u64 sk;                /* socket address, for the poll-time walk; the
				  * identity proves it still holds this owner */
	__u64 handshake;         /* FL_HANDSHAKE_* until a flush counts it, then 0 */
	__u64 sent;              /* payload bytes counted: bytes_sent - bytes_retrans */
	__u64 recv;              /* payload bytes counted: bytes_received - FIN */
	__u64 retrans;           /* tcp_sock.total_retrans counted */
	__u32 live;              /* FL_LIVE_* */
	__u32 state;             /* FL_SLOT_* */
};

/* Per-UDP-socket state kept in BPF_MAP_TYPE_SK_STORAGE (freed with the socket). */
struct fl_sock {
	__u8 peer[16];           /* last UDP peer address, v4-mapped */
	__u16 peer_port;         /* last UDP peer (unconnected sockets), host order */
	__u8 role;               /* enum fl_role */
	__u8 _pad[5];
};

#endif /* FLOWLENS_H */
