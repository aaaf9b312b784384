// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * lifecycle.bpf.c - TCP connection lifecycle from sock:inet_sock_set_state.
 *
 *   CLOSE     -> SYN_SENT     client starts a connect: remember the time
 *   LISTEN    -> SYN_RECV     a server child socket is born: role server
 *   SYN_SENT  -> ESTABLISHED  connect success, duration into the histogram
 *   SYN_RECV  -> ESTABLISHED  accepted connection (server's view)
 *   SYN_SENT  -> CLOSE        failed connect, reason from sk->sk_err
 *   ESTABLISHED -> *          one fewer active connection
 *
 * Runs in process context for the client and in softirq for the server side;
 * the cgroup comes from the socket, never from `current`.
 */
#include "common.h"

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10

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

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, int oldstate, int newstate)
{
	struct fl_edge_val *v;
	struct fl_sock *s;
	__u64 now, us;

	if (sock_proto(sk) != IPPROTO_TCP)
		return 0;

	if (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV) {
		s = sock_state(sk, 1);
		if (!s)
			return 0;
		s->role = newstate == TCP_SYN_SENT ? FL_ROLE_CLIENT : FL_ROLE_SERVER;
		s->flags |= FL_SK_SYNCED; /* total_retrans starts at 0 with us */
		s->connect_ns = newstate == TCP_SYN_SENT ? bpf_ktime_get_ns() : 0;
		return 0;
	}

	if (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV) {
		__u8 role = oldstate == TCP_SYN_SENT ? FL_ROLE_CLIENT : FL_ROLE_SERVER;

		if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
			return 0;
		if (newstate == TCP_CLOSE && role == FL_ROLE_SERVER)
			return 0; /* half-open child dropped: not a connect attempt we saw */
		s = sock_state(sk, 0);
		v = tcp_edge(sk, s, role);
		if (!v)
			return 0;
		if (newstate == TCP_CLOSE) {
			__sync_fetch_and_add(&v->conns[failure(sk->sk_err)], 1);
			return 0;
		}
		__sync_fetch_and_add(&v->conns[FL_CONN_SUCCESS], 1);
		__sync_fetch_and_add(&v->active, 1);
		if (!s)
			return 0;
		s->flags |= FL_SK_ACTIVE;
		s->lport = sk->__sk_common.skc_num;
		s->rport = bpf_ntohs(sk->__sk_common.skc_dport);
		if (role == FL_ROLE_CLIENT && s->connect_ns) {
			now = bpf_ktime_get_ns();
			us = (now - s->connect_ns) / 1000;
			s->connect_ns = 0;
			__sync_fetch_and_add(&v->connect_sum_us, us);
			hist_add(v->connect_hist, us);
		}
		return 0;
	}

	if (oldstate == TCP_ESTABLISHED) {
		s = sock_state(sk, 0);
		if (!s || !(s->flags & FL_SK_ACTIVE))
			return 0; /* established before we started: never counted */
		s->flags &= ~FL_SK_ACTIVE;
		v = tcp_edge(sk, s, FL_ROLE_UNKNOWN);
		if (v)
			__sync_fetch_and_sub(&v->active, 1);
	}
	return 0;
}
