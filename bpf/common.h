/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * common.h - maps and helpers every feature object shares.
 *
 * Each bpf/<feature>.bpf.c is its own object so that a hook the kernel lacks
 * disables one feature, not the agent.  They all declare the maps below; the
 * loader creates them once and hands the same fds to every later object
 * (bpf_map__reuse_fd), so all features aggregate into one `edges` map.
 */
#ifndef FLOWLENS_COMMON_H
#define FLOWLENS_COMMON_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "core.h"
#include "flowlens.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SOCK_STREAM 1
#define SOCK_DGRAM 2

/* Max entries is a setting: the loader resizes it before load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fl_edge_key);
	__type(value, struct fl_edge_val);
} edges SEC(".maps");

/*
 * One slot per TCP connection (struct fl_conn), from its handshake to its
 * close.  An ARRAY, not a hash: a lookup compiles to an address computation,
 * and a slot is claimed and freed with atomics on its `state`, so the hot
 * path takes no lock and allocates nothing.  The preallocated hash this
 * replaced (insert, lookup, delete per socket) cost 60 ns more per event,
 * an SK_STORAGE per socket ~6% of churn throughput (bench/changes.md).
 * Max entries is a setting (conn_map_size).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fl_conn);
} conns SEC(".maps");

/* UDP sockets only (role, last peer); TCP state lives in `conns`. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fl_sock);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_STATS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

const volatile struct fl_config cfg = {};

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1; /* per-CPU slot: no atomic needed */
}

/* floor(log2(v)) for v > 0, branch-free so the verifier sees no loop. */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5; v >>= r;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	return r | (__u32)(v >> 1);
}

/* Bucket of a duration in microseconds, see FL_HIST_BUCKETS in flowlens.h. */
static __always_inline __u32 hist_bucket(__u64 us)
{
	__u32 b;

	if (us <= (1ULL << FL_HIST_MIN_SHIFT))
		return 0;
	b = log2_u64(us - 1) + 1 - FL_HIST_MIN_SHIFT;
	return b < FL_HIST_BUCKETS - 1 ? b : FL_HIST_BUCKETS - 1;
}

static __always_inline int is_ephemeral(__u16 port)
{
	return port >= cfg.ephemeral_lo && port <= cfg.ephemeral_hi;
}

/*
 * Role of a socket we saw no handshake for (it predates the agent, or UDP
 * with no first event yet): the end whose port is ephemeral is the client;
 * if both or neither are, the lower port is taken as the server's.
 */
static __always_inline __u8 guess_role(__u16 lport, __u16 rport)
{
	int le = is_ephemeral(lport), re = is_ephemeral(rport);

	if (le != re)
		return le ? FL_ROLE_CLIENT : FL_ROLE_SERVER;
	return lport > rport ? FL_ROLE_CLIENT : FL_ROLE_SERVER;
}

static __always_inline void v4_mapped(__u8 *dst, __u32 addr)
{
	__u32 *d = (__u32 *)dst;

	d[0] = 0;
	d[1] = 0;
	d[2] = bpf_htonl(0x0000ffff);
	d[3] = addr;
}

/* IPv6 as is; a dual-stack socket talking IPv4 already holds ::ffff:a.b.c.d,
 * so it aggregates with its IPv4 twins. */
static __always_inline void copy_v6(__u8 *dst, const struct in6_addr *src)
{
	__u32 *d = (__u32 *)dst;

	d[0] = src->in6_u.u6_addr32[0];
	d[1] = src->in6_u.u6_addr32[1];
	d[2] = src->in6_u.u6_addr32[2];
	d[3] = src->in6_u.u6_addr32[3];
}

/* Socket we count: an AF_INET/AF_INET6 TCP stream or UDP datagram socket. */
static __always_inline __u8 sock_proto(const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	__u16 proto = sk->sk_protocol;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (proto == IPPROTO_TCP && sk->sk_type == SOCK_STREAM)
		return IPPROTO_TCP;
	if (proto == IPPROTO_UDP && sk->sk_type == SOCK_DGRAM)
		return IPPROTO_UDP;
	return 0;
}

static __always_inline struct fl_sock *sock_state(const struct sock *sk, int create)
{
	struct fl_sock *s;

	s = bpf_sk_storage_get(&socks, (void *)sk, 0,
			       create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
	if (!s && create)
		stat_inc(FL_STAT_SK_NOSTORAGE);
	return s;
}

/*
 * Fill `key` for socket `sk` whose local end plays `role`.  The remote end is
 * the socket's connected peer; callers override it for unconnected UDP.
 * Returns the local and remote ports through *lport / *rport.
 */
static __always_inline void edge_key(struct fl_edge_key *key, const struct sock *sk,
				     __u8 proto, __u16 *lport, __u16 *rport)
{
	const struct sock_common *c = &sk->__sk_common;
	struct cgroup *cg = sk->sk_cgrp_data.cgroup;

	__builtin_memset(key, 0, sizeof(*key));
	key->cgroup = cg ? cg->kn->id : 0;
	key->proto = proto;
	if (c->skc_family == AF_INET) {
		v4_mapped(key->laddr, c->skc_rcv_saddr);
		v4_mapped(key->raddr, c->skc_daddr);
	} else {
		copy_v6(key->laddr, &c->skc_v6_rcv_saddr);
		copy_v6(key->raddr, &c->skc_v6_daddr);
	}
	*lport = c->skc_num;
	*rport = bpf_ntohs(c->skc_dport);
}

static __always_inline void set_role(struct fl_edge_key *key, __u8 role,
				     __u16 lport, __u16 rport)
{
	key->role = role;
	key->port = role == FL_ROLE_SERVER ? lport : rport;
}

/* Find or create the aggregate of `key`; NULL (and counted) when full. */
static __always_inline struct fl_edge_val *edge_val(struct fl_edge_key *key)
{
	static const struct fl_edge_val zero = {};
	struct fl_edge_val *v;

	v = bpf_map_lookup_elem(&edges, key);
	if (v)
		return v;
	/* NOEXIST: a concurrent insert of the same key wins, we then look it up. */
	bpf_map_update_elem(&edges, key, &zero, BPF_NOEXIST);
	v = bpf_map_lookup_elem(&edges, key);
	if (!v)
		stat_inc(FL_STAT_EDGE_FULL);
	return v;
}

/*
 * Key of a TCP socket whose local end plays `role` (0: guessed from ports).
 * A socket past CLOSE has lost inet_num (its port went back to the bind
 * table) but keeps inet_sport, so an RST sent on close still names its port.
 */
static __always_inline void tcp_key(struct fl_edge_key *key, const struct sock *sk, __u8 role)
{
	struct tcp_sock *tp;
	__u16 lport, rport;

	edge_key(key, sk, IPPROTO_TCP, &lport, &rport);
	if (!lport) {
		tp = bpf_skc_to_tcp_sock((void *)sk);
		if (tp)
			lport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	}
	set_role(key, role ? role : guess_role(lport, rport), lport, rport);
}

static __always_inline void hist_add(__u64 *hist, __u64 us)
{
	__u32 b = hist_bucket(us);

	/* clang knows b < FL_HIST_BUCKETS and drops a plain re-check, but the
	 * verifier cannot follow the log2 arithmetic: hide b behind an empty asm
	 * so the compare is emitted on the register used as the index. */
	asm volatile("" : "+r"(b));
	if (b < FL_HIST_BUCKETS)
		__sync_fetch_and_add(&hist[b], 1);
}

/*
 * Slots a connection may take: CONN_NEAR slots from its near home, then
 * CONN_PROBES - CONN_NEAR from its far home, both from the socket's address.
 * By address, not by socket cookie: the slab hands a closed socket's memory
 * to the next socket of its CPU, so under churn the same few slots are
 * claimed and freed again.  Cookies, which only grow, walked the whole
 * 6.8 MB table (bench/changes.md item 11).
 *
 * The near home keeps the address's order: bits 11 and up (a tcp_sock
 * takes 2,368-2,496 B of its slab, so no two share them), modulo the table,
 * so sockets of one slab page land in neighbouring slots and the few
 * hundred slots of a node's live connections sit on a few pages of the
 * table.  A hash spread them one per 4 KB page (the table is vmalloc'd),
 * and each claim and each CLOSE most likely paid a TLB miss on top of the
 * cache miss (in a VM a two-level page walk): a table of 512-2048 slots was
 * ~15 ns per run cheaper than one of 65,536 with the same slots in use, and
 * near homes bought as much on the full table, 16-20 ns per run between
 * pods (bench/changes.md item 19).  The far home is a Fibonacci hash:
 * sockets of two slab pages 2^11 x n bytes apart share near homes, and
 * their runs of taken slots would otherwise push each other past the last
 * probe.
 */
#define CONN_NEAR 4
#define CONN_FAR_SHIFT 3 /* 8 far probes, an eighth of the table apart */
#define CONN_PROBES (CONN_NEAR + (1 << CONN_FAR_SHIFT))

struct home {
	__u32 near, far;
};

/* Homes of socket `sk` (see above), from the low 32 bits of its address
 * (the near home then spans 2^21 slots; larger tables get near homes in
 * their first 2^21 and far homes everywhere).  The verifier allows no shift
 * or multiply on a pointer, but a 32-bit move of one is a plain number to a
 * privileged (CAP_PERFMON) loader: the empty asm makes clang emit that move
 * (`w = w`).  Until bench/changes.md item 22 the pointer went through a
 * per-CPU map value and back.  The "w" constraint needs -mcpu=v3 (alu32),
 * which bpf/Makefile gives. */
static __always_inline struct home conn_home(const struct sock *sk)
{
	__u32 a;

	asm volatile("%[a] = %[sk]" : [a] "=w"(a) : [sk] "w"(sk));
	return (struct home){
		.near = a >> 11,
		.far = ((__u64)(a >> 6) * 0x9E3779B97F4A7C15ULL) >> 32, /* Fibonacci hashing */
	};
}

/* Probe `i` of home `h`.  The table is a power of two (the agent's settings
 * check conn_map_size), so probes wrap with a mask; the far home is scaled
 * onto it by a multiply and shift (`%` cost a 32-bit div per probe).  The
 * far probes are spread over the table, not side by side: sockets of one
 * slab page fill runs of neighbouring slots from their near homes, and 4
 * far probes side by side fell inside such a run about as often as one, so
 * a 512-slot table with a few dozen connections open lost some to
 * conn_full in a burst (tests/bpf/test_conn_table.py, 4 runs of 9,
 * 2026-12-02).  Spread a quarter apart, that test still lost 1-6
 * connections in 1 of 13-30 runs: each time the table was 60% full of
 * live connections (bpf_printk in conn_full: 310 of 512 slots held by
 * server sockets in LAST_ACK, waiting for the client's last ACK), and
 * near homes of consecutive sockets sit in runs, so all 4 near probes were
 * taken and then 4 far ones at 0.6^4 = 13%; 8 far probes make that 1.7%.
 * Only a connection whose near probes are all taken comes here, and a
 * CLOSE of a socket without a slot, so their number costs the common path
 * nothing. */
static __always_inline struct fl_conn *conn_slot(struct home h, __u32 i)
{
	__u32 n = cfg.conn_slots, idx;

	if (i < CONN_NEAR)
		idx = h.near + i;
	else
		idx = (((__u64)h.far * n) >> 32) + (i - CONN_NEAR) * (n >> CONN_FAR_SHIFT);
	idx &= n - 1;
	return bpf_map_lookup_elem(&conns, &idx);
}

/*
 * Identity of a connection, told apart from an earlier one whose socket
 * had the same address: the socket's hash of its 4-tuple and netns
 * (skc_hash, set when it is hashed before ESTABLISHED, zeroed when the
 * memory is allocated again), tagged so that it is never 0.  The socket
 * cookie did this until bench/changes.md item 13: bpf_get_socket_cookie is
 * a helper call and a locked compare-and-swap on the socket at every
 * ESTABLISHED, ~20 of ~140 ns per run.  What the hash cannot tell apart: a
 * socket reused at the same address for the same 4-tuple in the same netns,
 * which matters only if the first one's CLOSE was missed (programs
 * detached, or a recursion miss); both then count into the same edge.
 */
static __always_inline __u64 sock_ident(const struct sock *sk)
{
	return (1ULL << 32) | sk->__sk_common.skc_hash;
}

/* The slot of socket `sk` with identity `ident`, OPEN or held by the walk;
 * NULL if it never had one (it predates the agent, or `conns` was full) or
 * is past its CLOSE.  The identity tells the owner from an earlier socket at
 * the same address whose CLOSE we missed (programs detached). */
static __always_inline struct fl_conn *conn_find(const struct sock *sk, __u64 ident)
{
	struct home home = conn_home(sk);
	struct fl_conn *c;

#pragma clang loop unroll(disable) /* see claim() in lifecycle.bpf.c */
	for (__u32 i = 0; i < CONN_PROBES; i++) {
		c = conn_slot(home, i);
		if (c && c->ident == ident && (c->state == FL_SLOT_OPEN || c->state == FL_SLOT_WALK))
			return c;
	}
	return NULL;
}

#endif /* FLOWLENS_COMMON_H */
