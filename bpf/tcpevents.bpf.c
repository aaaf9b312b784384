// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcpevents.bpf.c - retransmits and resets.
 *
 * Retransmits are counted from tcp_sock.total_retrans, not from the number of
 * tracepoint hits: one hit can carry a TSO skb of several segments, and the
 * kernel's own TcpRetransSegs counts segments.  The per-socket storage keeps
 * what was already counted.  A socket that predates the agent has an unknown
 * history: its first hit counts 1 and syncs the baseline.
 */
#include "common.h"

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_skb, const struct sock *sk)
{
	struct fl_edge_val *v;
	struct tcp_sock *tp;
	struct fl_sock *s;
	__u32 total, delta;

	if (sock_proto(sk) != IPPROTO_TCP)
		return 0;
	tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return 0;
	s = sock_state(sk, 1);
	if (!s)
		return 0;
	total = tp->total_retrans;
	delta = s->flags & FL_SK_SYNCED ? total - s->retrans_seen : 1;
	s->retrans_seen = total;
	s->flags |= FL_SK_SYNCED;
	if (!delta)
		return 0;
	v = tcp_edge(sk, s, FL_ROLE_UNKNOWN);
	if (v)
		__sync_fetch_and_add(&v->retrans, delta);
	return 0;
}

static __always_inline void reset(const struct sock *sk, int sent)
{
	struct fl_edge_val *v;

	if (!sk) {
		stat_inc(FL_STAT_RST_NOSOCK);
		return;
	}
	/* sk may be a timewait or request socket: storage lookup then fails
	 * and the role is guessed from the ports. */
	if (sock_proto(sk) != IPPROTO_TCP)
		return;
	v = tcp_edge(sk, sock_state(sk, 0), FL_ROLE_UNKNOWN);
	if (!v)
		return;
	if (sent)
		__sync_fetch_and_add(&v->rst_sent, 1);
	else
		__sync_fetch_and_add(&v->rst_recv, 1);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset, const struct sock *sk)
{
	reset(sk, 1);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset, struct sock *sk)
{
	reset(sk, 0);
	return 0;
}
