// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcpevents.bpf.c - resets sent and received.
 *
 * Retransmits are not counted here: lifecycle.bpf.c reads
 * tcp_sock.total_retrans (segments, as the kernel's TcpRetransSegs) at close
 * and at every poll, which costs nothing per retransmission.
 *
 * The edge of a reset is the connection's own (`conns` slot, exact role)
 * while it lives; an RST sent on close comes after the CLOSE transition
 * freed the slot, and timewait/request sockets never had one: their role
 * is then guessed from the ports.
 */
#include "common.h"

static __always_inline void reset(const struct sock *sk, int sent)
{
	struct fl_edge_key key;
	struct fl_edge_val *v;
	struct fl_conn *c;

	if (!sk) {
		stat_inc(FL_STAT_RST_NOSOCK);
		return;
	}
	if (sock_proto(sk) != IPPROTO_TCP)
		return;
	c = conn_find(sk, sock_ident(sk));
	if (c) { /* a slot exists from the handshake on: its edge is exact */
		v = edge_val(&c->edge);
	} else {
		tcp_key(&key, sk, FL_ROLE_UNKNOWN);
		v = edge_val(&key);
	}
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
