/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flush.h - a connection's flush: what its counters grew since the last
 * one, added to its edge (lifecycle's CLOSE, and the poll-time walk for
 * live connections), or at CLOSE into this CPU's memo of the edge (memo.h).
 * Kernel side only; included by lifecycle.bpf.c alone.
 *
 * The CLOSE and the walk may flush one connection at once: every word of
 * the slot they both change is swapped, so each byte, the handshake and the
 * gauge go to exactly one of them - unless the caller owns the slot (`own`,
 * see lifecycle's closed()), when plain loads do.
 */
#ifndef FLOWLENS_FLUSH_H
#define FLOWLENS_FLUSH_H

#include "common.h"
#include "memo.h"

#define SOCK_DONE 1 /* enum sock_flags: tcp_fin() set it, rcv_nxt counted the FIN */

/*
 * Release store: the stores before it are seen before it.  x86 keeps stores
 * in order, so there a plain store does, behind a compiler barrier; an
 * atomic exchange, what other architectures need (clang 14 has no BPF
 * store-release), is a locked instruction that waits for the store buffer
 * to drain.  With a CLOSE that owns its slot (closed()), this took 6 locked
 * instructions off each CLOSE and 1 off each ESTABLISHED: 6-13 ns per run
 * between pods (bench/changes.md item 19).
 */
#if defined(__TARGET_ARCH_x86)
#define release(p, v) ({ barrier(); *(volatile typeof(*(p)) *)(p) = (v); })
#else
#define release(p, v) __sync_lock_test_and_set((p), (v))
#endif

/* Swap `v` into a slot's word and return the old value; a plain read when
 * the caller owns the slot (`own`: the walk cannot be flushing it too, and
 * nothing reads the word before the slot is claimed and written again). */
#define take(p, v, own) ((own) ? *(p) : __sync_lock_test_and_set((p), (v)))

/* Swap in the counter's new value; what it grew by since the last swap.
 * Both the CLOSE transition and the walk may flush one connection at once:
 * the atomic swap gives every byte to exactly one of them. */
static __always_inline __u64 growth(__u64 *seen, __u64 now, int own)
{
	__u64 old = take(seen, now, own);

	return (__s64)(now - old) > 0 ? now - old : 0;
}

/* The same, with the growth added to the edge word (memo.h add_if). */
static __always_inline void advance(__u64 *seen, __u64 now, __u64 *word, int own)
{
	add_if(word, growth(seen, now, own));
}

/* Count a handshake (FL_HANDSHAKE_*) on the edge `v`. */
static __always_inline void count_handshake(struct fl_edge_val *v, __u64 hs)
{
	__sync_fetch_and_add(&v->conns[FL_CONN_SUCCESS], 1);
	if (hs > FL_HANDSHAKE_UNTIMED) {
		__sync_fetch_and_add(&v->connect_sum_us, hs - FL_HANDSHAKE_TIMED);
		hist_add(v->connect_hist, hs - FL_HANDSHAKE_TIMED);
	}
}

/* A connection's counters as one flush adds them (payload bytes, segments). */
struct counters {
	__u64 sent, recv, retrans, srtt_us;
};

/*
 * The final counters, at CLOSE, which runs under the socket lock.  Payload
 * sent is bytes_sent minus bytes_retrans (bytes_sent counts every
 * transmission); bytes_received counts the FIN's sequence number too.
 */
static __always_inline void final_counters(const struct tcp_sock *tp, struct counters *n)
{
	n->sent = tp->bytes_sent - tp->bytes_retrans;
	n->recv = tp->bytes_received;
	if (n->recv && (tp->inet_conn.icsk_inet.sk.__sk_common.skc_flags & (1UL << SOCK_DONE)))
		n->recv -= 1;
	n->retrans = tp->total_retrans;
	n->srtt_us = tp->srtt_us >> 3;
}

/*
 * Lower bounds of the counters, for the walk, which reads a live socket
 * without its lock.  Every flush adds only growth over what it swapped out,
 * so a value read too high would stay counted; one read too low is made
 * up by the next flush, at the latest CLOSE's final one.  Two races give a
 * high read, both seen by a test that walks in a tight loop:
 * - bytes_received takes the FIN's 1 before tcp_fin() sets SOCK_DONE, so
 *   the walk counts one byte less than bytes_received, FIN or not;
 * - a retransmit adds to bytes_sent before bytes_retrans (the whole
 *   transmit lies between), so the walk also caps sent at bytes_acked less
 *   the SYN: the segment being sent again is not acked yet, and once our
 *   FIN is acked nothing is in flight and sent is exact.
 * Both bounds only grow, so successive walks never swap in a lower value.
 */
static __always_inline void live_counters(const struct tcp_sock *tp, __u8 role, struct counters *n)
{
	__u64 acked = tp->bytes_acked, syn = role == FL_ROLE_CLIENT;

	n->sent = tp->bytes_sent - tp->bytes_retrans;
	acked = acked > syn ? acked - syn : 0;
	if (n->sent > acked)
		n->sent = acked;
	n->recv = tp->bytes_received;
	if (n->recv)
		n->recv -= 1;
	n->retrans = tp->total_retrans;
	n->srtt_us = tp->srtt_us >> 3;
}

/*
 * Add what `n` grew since the last flush of `c` to its edge.  The CLOSE and
 * a walk may flush one connection at once: the swaps give every byte, the
 * handshake and the gauge to exactly one of them (plain reads if `own`).
 */
static __always_inline void flush(struct fl_conn *c, const struct counters *n, int closing, int own)
{
	struct fl_edge_val *v;
	__u64 hs;

	v = edge_val(&c->edge);
	if (!v)
		return;
	hs = take(&c->handshake, 0, own);
	if (hs)
		count_handshake(v, hs);
	if (closing) {
		if (take(&c->live, FL_LIVE_CLOSED, own) == FL_LIVE_COUNTED)
			__sync_fetch_and_sub(&v->active, 1);
	} else if (__sync_val_compare_and_swap(&c->live, FL_LIVE_NEW, FL_LIVE_COUNTED) == FL_LIVE_NEW) {
		__sync_fetch_and_add(&v->active, 1);
	}
	advance(&c->sent, n->sent, &v->sent_bytes, own);
	advance(&c->recv, n->recv, &v->recv_bytes, own);
	advance(&c->retrans, n->retrans, &v->retrans, own);
	if (n->srtt_us) { /* 0: no RTT sample yet */
		__sync_fetch_and_add(&v->rtt_sum_us, n->srtt_us);
		hist_add(v->rtt_hist, n->srtt_us);
	}
}

/*
 * The last flush of a closing connection, into this CPU's memo: the same
 * swaps on the slot as flush() (the walk may be flushing it) unless `own`,
 * plain adds on the memo.  0 if the walk holds the memo: the caller then
 * flushes.
 */
static __always_inline int memo_close(struct fl_conn *c, const struct counters *n, int own)
{
	__u32 idx = memo_index(&c->edge);
	struct memo *m = bpf_map_lookup_elem(&memos, &idx);
	__u64 hs;

	if (!m)
		return 0;
	/* Held by another edge: flush into the edge as without memos, unless
	 * this memo's edge closes so much less often that it should give way.
	 * Read without the lock: only this CPU writes the key and misses, and
	 * our program does not nest on one CPU; the walk only empties it. */
	if (m->n && !same_edge(&m->key, &c->edge) && ++m->misses < 2 * m->n + MEMO_PATIENCE)
		return 0;
	if (__sync_val_compare_and_swap(&m->lock, MEMO_FREE, MEMO_BUSY) != MEMO_FREE)
		return 0;
	if (m->n && !same_edge(&m->key, &c->edge))
		fold(m); /* give way */
	if (!m->n)
		m->key = c->edge;
	m->n += 1;
	hs = take(&c->handshake, 0, own);
	if (hs) {
		m->conns += 1;
		if (hs > FL_HANDSHAKE_UNTIMED) {
			m->connect_sum_us += hs - FL_HANDSHAKE_TIMED;
			memo_hist(m, m->connect_hist, 0, hs - FL_HANDSHAKE_TIMED);
		}
	}
	if (take(&c->live, FL_LIVE_CLOSED, own) == FL_LIVE_COUNTED)
		m->active -= 1;
	m->sent += growth(&c->sent, n->sent, own);
	m->recv += growth(&c->recv, n->recv, own);
	m->retrans += growth(&c->retrans, n->retrans, own);
	if (n->srtt_us) {
		m->rtt_sum_us += n->srtt_us;
		memo_hist(m, m->rtt_hist, 32, n->srtt_us);
	}
	release(&m->lock, MEMO_FREE); /* the walk reads the adds once it sees FREE */
	return 1;
}

#endif /* FLOWLENS_FLUSH_H */
