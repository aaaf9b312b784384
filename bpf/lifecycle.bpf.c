// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * lifecycle.bpf.c - TCP connections from sock:inet_sock_set_state, and their
 * bytes, retransmits and RTT from the socket's own counters.
 *
 *   CLOSE       -> SYN_SENT     client starts a connect: nothing to do
 *   SYN_SENT    -> ESTABLISHED  connect success: claim a `conns` slot, write
 *                               the edge key and the connect duration (the
 *                               socket's own SYN-ACK RTT sample) into it
 *   SYN_RECV    -> ESTABLISHED  accepted connection: claim a slot (server)
 *   SYN_SENT    -> CLOSE        failed connect, reason from sk->sk_err
 *   *           -> CLOSE        last flush (into a memo), slot freed
 *
 * A flush (flush.h; at CLOSE, and for live connections by the poll-time walk)
 * counts the handshake on the edge the first time it sees the slot, adds
 * the counters' growth and keeps the `active` gauge: a connection alive at
 * a poll is added to it once and taken out at its CLOSE.  So `active` is
 * "open at the last poll" and a connection that opens and closes between
 * two polls costs at most one edge lookup, at CLOSE, and none when its edge
 * holds a per-CPU memo (`memos`).  `conns` is an array whose slots are
 * claimed and freed with atomics: no hash-map operation is left on the way
 * of a connection but that edge lookup (bench/changes.md).
 * Leaving ESTABLISHED for FIN_WAIT*, CLOSE_WAIT or LAST_ACK does no map
 * access.
 *
 * No program runs per send or receive: tcp_sock already counts every byte,
 * so the connection's counters are read at CLOSE and, for live connections,
 * by flush_conns, a walk of `conns` that the agent runs before every poll.
 * A program on sock_send_length/sock_recv_length, even an empty one, cost
 * 2.4% of persistent-connection throughput here
 * (bench/results); this costs nothing between handshake and close.
 *
 * Runs in process context for the client and in softirq for the server side;
 * the cgroup comes from the socket, never from `current`.
 */
#include "common.h"
#include "memo.h"
#include "flush.h"

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7

#define MAX_CPUS 8192 /* bound of the walk's loop over CPUs; it stops at the last one */

#define ECONNRESET 104
#define ETIMEDOUT 110
#define ECONNREFUSED 111

static __always_inline __u32 failure(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return FL_CONN_REFUSED;
	case ETIMEDOUT:
	case 0: /* aborted by the caller before any answer: its own timeout */
		return FL_CONN_TIMEOUT;
	case ECONNRESET:
		return FL_CONN_RESET;
	default:
		return FL_CONN_ERROR;
	}
}

/*
 * First-SYN time of the connects whose SYN was retransmitted, one word per
 * slot, direct-mapped by socket cookie (cookies come from a per-CPU
 * sequence, so slots spread evenly): the cookie's next 32 bits as a tag over
 * retrans_stamp, the first SYN's time on the TCP clock that tcp_connect()
 * set (ms; us with tcp_usec_ts).  Written by tcp_retransmit_skb below, only
 * for SYNs, read at ESTABLISHED: tcp_ack() zeroes retrans_stamp once the
 * SYN is acked, before ESTABLISHED.  One 64-bit store writes a whole slot,
 * so a reader never pairs a tag with another connect's time; two such
 * connects in flight on one slot: the earlier is counted without a duration
 * (FL_STAT_CONNECT_UNTIMED).
 */
#define SYN_SLOTS_SHIFT 10

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << SYN_SLOTS_SHIFT);
	__type(key, __u32);
	__type(value, __u64);
} syn_retrans SEC(".maps");

/* Slot of a socket: low bits of its cookie index, the next 32 tag. */
static __always_inline __u64 *syn_slot(__u64 cookie, __u64 *tag)
{
	__u32 idx = cookie & ((1U << SYN_SLOTS_SHIFT) - 1);

	*tag = (__u32)(cookie >> SYN_SLOTS_SHIFT);
	return bpf_map_lookup_elem(&syn_retrans, &idx);
}

/* Microseconds since the first SYN, by the TCP clock of the packet being
 * processed; 0 if its time was not kept. */
static __always_inline __u64 since_first_syn(const struct tcp_sock *tp, __u64 cookie)
{
	__u64 tag, w, *slot = syn_slot(cookie, &tag);
	__u64 now = tp->tcp_mstamp;
	__u32 start;

	w = slot ? *slot : 0;
	if (!w || w >> 32 != tag)
		return 0;
	start = (__u32)w;
	/* usec TCP timestamps (a route feature, 6.7+): the stamp is in us */
	if (bpf_core_field_exists(tp->tcp_usec_ts) && BPF_CORE_READ_BITFIELD(tp, tcp_usec_ts))
		return (__u32)((__u32)now - start);
	return (__u64)((__u32)(now / 1000) - start) * 1000;
}

/* Microseconds of a connect whose SYN was retransmitted (see handshake());
 * out of line: the common path does not carry its code. */
static __noinline __u64 retried_connect(struct sock *sk)
{
	const struct tcp_sock *tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));

	return since_first_syn(tp, bpf_get_socket_cookie(sk));
}

/*
 * FL_HANDSHAKE_TIMED + the connect duration in us, at SYN_SENT ->
 * ESTABLISHED, from the socket.  tcp_rcv_synsent_state_process() runs
 * tcp_ack() on the SYN-ACK before tcp_finish_connect() sets ESTABLISHED, so
 * the first RTT sample is in: srtt_us = 8 x (SYN-ACK arrival - SYN sent).
 * A retransmitted SYN gives no RTT sample (Karn), or one from the last SYN
 * (TCP timestamps), so then the first SYN's time comes from `syn_retrans`.
 * The first versions kept every SYN's time in an array at CLOSE -> SYN_SENT:
 * a clock read, a socket cookie and a store per connect, ~0.2 us per churn
 * request (bench/changes.md item 10).
 */
static __always_inline __u64 handshake(struct sock *sk, const struct tcp_sock *tp)
{
	/* before ESTABLISHED, the only segments retransmitted are SYNs; only
	 * then is the cookie made (a helper call), to find the first SYN's time */
	__u64 us = tp->total_retrans ? retried_connect(sk) : tp->srtt_us >> 3;

	if (!us) {
		stat_inc(FL_STAT_CONNECT_UNTIMED);
		return FL_HANDSHAKE_UNTIMED;
	}
	return FL_HANDSHAKE_TIMED + us;
}

/*
 * The first free slot among a socket's probes, taken (FL_SLOT_BUSY); NULL
 * if all are taken.  A loop the compiler must not unroll (nor conn_find's):
 * the hot path's code is what the CPU fetches on every run, and the
 * program competes for the instruction cache with the TCP stack it runs
 * in.  Unrolled, with the rare paths inline, inet_sock_set_state's main
 * function was 7.4 KB of machine code; now 2.9 KB, and 8.65 KB with the
 * subprograms of its rare paths (bench/changes.md item 22).
 */
static __always_inline struct fl_conn *claim(struct home home)
{
	struct fl_conn *c;

#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < CONN_PROBES; i++) {
		c = conn_slot(home, i);
		/* a plain read first: no locked instruction on a taken slot */
		if (c && c->state == FL_SLOT_FREE &&
		    __sync_val_compare_and_swap(&c->state, FL_SLOT_FREE, FL_SLOT_BUSY) == FL_SLOT_FREE)
			return c;
	}
	return NULL;
}

/* No free slot: the connect is counted on the edge at once, never its bytes. */
static __noinline void conn_full(struct sock *sk, __u8 role, __u64 hs)
{
	struct fl_edge_key key;
	struct fl_edge_val *v;

	stat_inc(FL_STAT_CONN_FULL);
	tcp_key(&key, sk, role);
	v = edge_val(&key);
	if (v)
		count_handshake(v, hs);
}

/*
 * Handshake done: claim a free slot (compare-and-swap on its state), write
 * the edge key, identity and connect duration, then publish it OPEN; the
 * walk never reads a slot that is not.  The edge itself is left to the
 * first flush.  No free slot among CONN_PROBES: the connect is counted on
 * the edge at once, never its bytes (FL_STAT_CONN_FULL).
 */
static __always_inline void established(struct sock *sk, __u8 role)
{
	const struct tcp_sock *tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
	__u64 hs = role == FL_ROLE_CLIENT ? handshake(sk, tp) : FL_HANDSHAKE_UNTIMED;
	struct fl_conn *c = claim(conn_home(sk));

	if (!c) {
		conn_full(sk, role, hs);
		return;
	}
	tcp_key(&c->edge, sk, role);
	c->ident = sock_ident(sk);
	c->sk = (__u64)sk;
	c->handshake = hs;
	c->sent = 0;
	c->recv = 0;
	c->retrans = 0;
	c->live = FL_LIVE_NEW;
	release(&c->state, FL_SLOT_OPEN); /* publish */
}

/* The last flush of a slot this CLOSE owns, when its memo is held by
 * another edge or by the walk: out of line, as are the paths below. */
static __noinline void flush_owned(struct fl_conn *c, const struct counters *n)
{
	flush(c, n, 1, 1);
}

/* A CLOSE whose slot the walk holds (see closed()). */
static __noinline void close_shared(struct fl_conn *c, const struct counters *n)
{
	if (!memo_close(c, n, 0))
		flush(c, n, 1, 0);
	for (int i = 0; i < 4; i++) {
		if (__sync_val_compare_and_swap(&c->state, FL_SLOT_OPEN, FL_SLOT_FREE) == FL_SLOT_OPEN ||
		    __sync_val_compare_and_swap(&c->state, FL_SLOT_WALK, FL_SLOT_CLOSED) == FL_SLOT_WALK)
			return;
	}
}

/*
 * Connection over: the last flush, then the slot is free again.  Usually
 * the slot is OPEN and the CLOSE takes it (BUSY): then the walk, which
 * takes only OPEN slots, cannot flush it meanwhile, and the flush reads the
 * slot with plain loads - one locked instruction on the slot instead of
 * six (bench/changes.md item 19).  If the walk holds it (FL_SLOT_WALK), the
 * flush swaps, and the walk frees the slot when done, so a slot is never
 * claimed by another connection under the walk's feet.
 * Each retry means the walk took and gave back the slot between our two
 * compare-and-swaps; it visits a slot once per poll, so one retry is
 * already unlikely and the bound is for the verifier.  Should all fail,
 * the slot stays OPEN with its gauge already given back, and a later walk
 * frees it once the socket's memory is reused (flush_slot).
 */
static __always_inline void closed(struct sock *sk)
{
	struct fl_conn *c = conn_find(sk, sock_ident(sk));
	const struct tcp_sock *tp;
	struct counters n;

	if (!c)
		return; /* established before we started, or conns was full */
	/* sock_proto() checked a TCP stream socket: a tcp_sock, no helper call */
	tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
	final_counters(tp, &n);
	if (__sync_val_compare_and_swap(&c->state, FL_SLOT_OPEN, FL_SLOT_BUSY) != FL_SLOT_OPEN) {
		close_shared(c, &n);
		return;
	}
	if (!memo_close(c, &n, 1))
		flush_owned(c, &n);
	release(&c->state, FL_SLOT_FREE);
}

/* A connect that failed: counted by its reason on the edge. */
static __noinline void connect_failed(struct sock *sk)
{
	struct fl_edge_key key;
	struct fl_edge_val *v;

	tcp_key(&key, sk, FL_ROLE_CLIENT);
	v = edge_val(&key);
	if (v)
		__sync_fetch_and_add(&v->conns[failure(sk->sk_err)], 1);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	/* Only a move into ESTABLISHED or CLOSE has work; the other 6 of a
	 * churning connection's 10 transitions return here, on the argument,
	 * before any load from the socket: ~6 ns less per run on average
	 * between pods (4 alternated bench.ab runs of 20 rounds, 3 of 4
	 * cheaper; noisy host, bench/changes.md item 20). */
	if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
		return 0;
	if (sock_proto(sk) != IPPROTO_TCP)
		return 0;

	if (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV) {
		__u8 role = oldstate == TCP_SYN_SENT ? FL_ROLE_CLIENT : FL_ROLE_SERVER;

		if (newstate == TCP_ESTABLISHED)
			established(sk, role);
		else if (role == FL_ROLE_CLIENT)
			connect_failed(sk);
		/* a half-open server child dropped: not a connect attempt we saw */
		return 0;
	}

	if (newstate == TCP_CLOSE)
		closed(sk);
	return 0;
}

/*
 * A retransmission: if of a SYN, keep the first SYN's time for its
 * ESTABLISHED (see `syn_retrans`).  Runs once per retransmitted segment, a
 * small share of all segments; nothing runs for the others.
 */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_skb, struct sock *sk)
{
	const struct tcp_sock *tp;
	__u64 tag, *slot;

	if (sk->__sk_common.skc_state != TCP_SYN_SENT)
		return 0;
	tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
	slot = syn_slot(bpf_get_socket_cookie(sk), &tag);
	if (slot && tp->retrans_stamp)
		*slot = tag << 32 | tp->retrans_stamp;
	return 0;
}

/*
 * Poll-time walk of the live connections.  The walk takes an OPEN slot
 * (FL_SLOT_WALK) so that, while it reads it, the slot cannot be freed and
 * claimed by another connection: it was once possible for a slot to be
 * freed and claimed again between the walk's read of its state and its
 * flush, which then counted the newcomer in the gauge of the old
 * connection's edge, for good.  The slot holds its socket's address; the
 * socket cannot be freed before its CLOSE has run, and TCP sockets are
 * SLAB_TYPESAFE_BY_RCU, so under RCU the address is a tcp_sock - but
 * possibly a new one if the connection closed since.  Its identity (hash
 * of the 4-tuple and netns, sock_ident), read after the counters, tells: a
 * reused socket has hash 0 until hashed (sk_alloc zeroes it, sk_clone_lock
 * copies the listener's) and then its own tuple's, and x86 does not reorder
 * loads, so counters read before a matching identity are the owner's.
 * bpf_rdonly_cast makes every read a fault-safe load.  An identity that does
 * not match means the owner is gone and its memory reused: if its CLOSE ran
 * meanwhile it left the slot CLOSED to us; if it was never seen (the
 * programs were detached, as the bench does) the slot is stale.  Either
 * way the walk gives it a last flush without new counters (it counts the
 * handshake and takes it out of the gauge if no flush did: no-ops when the
 * CLOSE ran) and frees it.
 *
 * A matching identity on a socket in TCP_CLOSE means its CLOSE is over:
 * tcp_set_state() runs the tracepoint before it stores the new state, so
 * our program had returned, or was skipped.  Skipped happens: a softirq
 * that interrupts the program on its CPU finds it running and the kernel
 * drops the nested run (recursion_misses), or the programs were detached
 * (the bench).  The walk then gives the connection the last flush its
 * CLOSE would have, from the final counters, counts FL_STAT_CLOSE_MISSED
 * and frees the slot; until it did, such a connection stayed in the gauge
 * until its socket's memory was reused (a CI run saw one left over).
 */
static long flush_slot(__u64 i, void *unused)
{
	__u32 idx = i;
	const struct tcp_sock *tp;
	struct counters n;
	struct fl_conn *c;
	int gone;

	c = bpf_map_lookup_elem(&conns, &idx);
	if (!c || c->state != FL_SLOT_OPEN || /* plain read first: most slots are free */
	    __sync_val_compare_and_swap(&c->state, FL_SLOT_OPEN, FL_SLOT_WALK) != FL_SLOT_OPEN)
		return 0;
	tp = bpf_rdonly_cast((void *)c->sk, bpf_core_type_id_kernel(struct tcp_sock));
	gone = tp->inet_conn.icsk_inet.sk.__sk_common.skc_state == TCP_CLOSE;
	barrier(); /* the state first: once CLOSE, the counters read next are final */
	if (gone)
		final_counters(tp, &n);
	else
		live_counters(tp, c->edge.role, &n);
	barrier();
	if (sock_ident(&tp->inet_conn.icsk_inet.sk) == c->ident) {
		if (!gone) {
			flush(c, &n, 0, 0);
			if (__sync_val_compare_and_swap(&c->state, FL_SLOT_WALK, FL_SLOT_OPEN) == FL_SLOT_WALK)
				return 0;
		} else if (c->live != FL_LIVE_CLOSED) { /* else its CLOSE ran and flushed */
			stat_inc(FL_STAT_CLOSE_MISSED);
			flush(c, &n, 1, 0);
		}
	} else {
		/* a last flush that adds no bytes and no RTT sample */
		n = (struct counters){ .sent = c->sent, .recv = c->recv, .retrans = c->retrans };
		flush(c, &n, 1, 0);
	}
	release(&c->state, FL_SLOT_FREE); /* CLOSED, or stale */
	return 0;
}

/*
 * The walk, one bpf_loop over every slot.  Attached to nothing: the agent
 * runs it before each poll with BPF_PROG_TEST_RUN, which runs a raw_tp
 * program under rcu_read_lock.  It was an iter/bpf_map_elem program until a
 * kernel build of this VM (6.18.44-fc-v857) refused map-element iterators
 * at load with EPERM, even empty ones (iter/tcp still loads; bench/changes.md).
 */
/* Fold memo `i` (CPU i >> MEMO_SHIFT) into `edges`; stops the loop past the last CPU. */
static long fold_cpu(__u64 i, void *unused)
{
	__u32 idx = i & ((1 << MEMO_SHIFT) - 1);
	struct memo *m = bpf_map_lookup_percpu_elem(&memos, &idx, i >> MEMO_SHIFT);

	if (!m)
		return 1;
	for (int i = 0; i < 64; i++) {
		if (__sync_val_compare_and_swap(&m->lock, MEMO_FREE, MEMO_WALK) == MEMO_FREE) {
			if (m->n)
				fold(m);
			release(&m->lock, MEMO_FREE);
			return 0;
		}
	}
	return 0; /* a CLOSE held it all along: the next walk folds it */
}

SEC("raw_tp")
int flush_conns(void *ctx)
{
	bpf_loop(cfg.conn_slots, flush_slot, NULL, 0);
	bpf_loop(MAX_CPUS << MEMO_SHIFT, fold_cpu, NULL, 0);
	return 0;
}
