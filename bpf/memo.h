/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * memo.h - per-CPU memos of edges, for lifecycle's CLOSE (kernel side only).
 */
#ifndef FLOWLENS_MEMO_H
#define FLOWLENS_MEMO_H

#include "common.h"

/*
 * Per-CPU memos of the edges CLOSEs counted into: 8 per CPU, an edge's
 * memo picked by a hash of its key.  A CLOSE whose edge holds its memo adds
 * the connection there with plain adds on lines only this CPU writes: no
 * edge lookup, no atomic add on a shared line.  A CLOSE of another edge
 * flushes into `edges` as before (the cost of a miss is the hash and a key
 * compare), and takes the memo over, folding it into `edges`, only once it
 * has missed 2n + MEMO_PATIENCE times against the holder's n hits: a busy
 * edge keeps its memo, edges of a many-edge node do not evict each other at
 * every CLOSE.  The poll-time walk folds every CPU's memos
 * (bpf_map_lookup_percpu_elem) after its slots, so `edges` is exact at
 * every poll, as before.  Measured (bpf_stats, ns per run of
 * inet_sock_set_state, bench/changes.md item 12): churn on one edge
 * ~152 -> ~122; round-robin over 64 edges unchanged within the noise.
 *
 * `lock` keeps the walk and this CPU's CLOSE apart: each takes it with a
 * compare-and-swap and neither waits for the other.  A CLOSE that finds
 * the walk folding flushes straight into the edge; a walk that finds a
 * CLOSE adding tries again a few times, else leaves it to the next poll
 * (late by one poll, never lost).
 */
#define MEMO_FREE 0
#define MEMO_BUSY 1 /* a CLOSE on this CPU is adding */
#define MEMO_WALK 2 /* the walk is folding */
#define MEMO_PATIENCE 16 /* misses a memo's edge is allowed before it gives way */

struct memo {
	struct fl_edge_key key;         /* edge of what is below; valid when n > 0 */
	__u32 lock;                     /* MEMO_* */
	__u32 n;                        /* connections added since the last fold */
	__u32 misses;                   /* CLOSEs of other edges since then */
	__u32 _pad;
	__u64 conns;                    /* handshakes: conns[FL_CONN_SUCCESS] */
	__u64 connect_sum_us;
	__u64 sent, recv, retrans;
	__u64 rtt_sum_us;
	__s64 active;                   /* taken out of the gauge: <= 0 */
	__u64 mask;                     /* buckets that hold counts: connect b is
					 * bit b, rtt b bit 32 + b */
	__u64 connect_hist[FL_HIST_BUCKETS];
	__u64 rtt_hist[FL_HIST_BUCKETS];
};

#define MEMO_SHIFT 3 /* 8 memos per CPU, direct-mapped by a hash of the edge key */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << MEMO_SHIFT);
	__type(key, __u32);
	__type(value, struct memo);
} memos SEC(".maps");

/* Memo of edge `k`: its six words folded and Fibonacci-hashed. */
static __always_inline __u32 memo_index(const struct fl_edge_key *k)
{
	const __u64 *w = (const __u64 *)k;
	__u64 x = w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ w[5];

	return (x * 0x9E3779B97F4A7C15ULL) >> (64 - MEMO_SHIFT);
}

/* Atomic add of n to a shared word, skipped when there is nothing to add. */
static __always_inline void add_if(__u64 *word, __u64 n)
{
	if (n)
		__sync_fetch_and_add(word, n);
}

/* Index of the one bit set in `low`, without a branch (BPF has no set-on-
 * compare, so log2_u64 branches six times, and in the fold's loop that
 * multiplied the verifier's states past its limit): a de Bruijn sequence
 * times `low` puts a distinct 6-bit pattern in the top bits. */
static const __u8 debruijn_bit[64] = {
	0, 1, 48, 2, 57, 49, 28, 3, 61, 58, 50, 42, 38, 29, 17, 4,
	62, 55, 59, 36, 53, 51, 43, 22, 45, 39, 33, 30, 24, 18, 12, 5,
	63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11,
	46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9, 13, 8, 7, 6,
};

static __always_inline __u32 bit_index(__u64 low)
{
	return debruijn_bit[(low * 0x03f79d71b4cb0a89ULL) >> 58];
}

/* Everything the memo holds into its edge; the memo is empty after.  A
 * global function, so the verifier checks it once, not per caller. */
__noinline int fold(struct memo *m)
{
	struct fl_edge_val *v;
	__u64 mask, low;
	__u32 bit, b;

	if (!m)
		return 0;
	v = edge_val(&m->key);
	if (!v) { /* edges full: the counts are lost, as FL_STAT_EDGE_FULL says */
		__builtin_memset(m->connect_hist, 0, sizeof(m->connect_hist));
		__builtin_memset(m->rtt_hist, 0, sizeof(m->rtt_hist));
		goto out;
	}
	add_if(&v->conns[FL_CONN_SUCCESS], m->conns);
	add_if(&v->connect_sum_us, m->connect_sum_us);
	add_if(&v->sent_bytes, m->sent);
	add_if(&v->recv_bytes, m->recv);
	add_if(&v->retrans, m->retrans);
	add_if(&v->rtt_sum_us, m->rtt_sum_us);
	if (m->active)
		__sync_fetch_and_add(&v->active, m->active);
	/* one pass per bucket that holds counts: a churning edge has a few */
	mask = m->mask;
	for (int i = 0; i < 2 * FL_HIST_BUCKETS && mask; i++) {
		low = mask & -mask;
		mask ^= low;
		bit = bit_index(low);
		b = bit & 31;
		asm volatile("" : "+r"(b)); /* compare the register used as index (see hist_add) */
		if (b >= FL_HIST_BUCKETS)
			continue;
		if (bit < 32) {
			__sync_fetch_and_add(&v->connect_hist[b], m->connect_hist[b]);
			m->connect_hist[b] = 0;
		} else {
			__sync_fetch_and_add(&v->rtt_hist[b], m->rtt_hist[b]);
			m->rtt_hist[b] = 0;
		}
	}
out:
	m->n = 0;
	m->misses = 0;
	m->conns = 0;
	m->connect_sum_us = 0;
	m->sent = 0;
	m->recv = 0;
	m->retrans = 0;
	m->rtt_sum_us = 0;
	m->active = 0;
	m->mask = 0;
	return 0;
}

/* Keys equal: six word compares, no branch per word. */
static __always_inline int same_edge(const struct fl_edge_key *a, const struct fl_edge_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4]) |
		(x[5] ^ y[5])) == 0;
}

/* One sample of `us` into a memo histogram, its bucket marked for the fold;
 * `shift` 0 for connect, 32 for rtt (see memo.mask). */
static __always_inline void memo_hist(struct memo *m, __u64 *hist, __u32 shift, __u64 us)
{
	__u32 b = hist_bucket(us);

	asm volatile("" : "+r"(b));
	if (b < FL_HIST_BUCKETS) {
		hist[b] += 1;
		m->mask |= 1ULL << (b + shift);
	}
}

#endif /* FLOWLENS_MEMO_H */
