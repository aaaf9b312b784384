// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * udp.bpf.c - UDP bytes per socket call from sock:sock_send_length and
 * sock:sock_recv_length (kernel 6.3+), IPv4 and IPv6.  Off by default.
 *
 * These fire once per send/recv call of EVERY socket with the byte count the
 * application saw, so the totals equal what applications moved, exactly.
 * MSG_PEEK reads are skipped (the bytes are read again later).  The cost is
 * the reason this is opt-in: the program runs on every TCP call too (it
 * returns at once for them; TCP bytes come from lifecycle.bpf.c), and on
 * this 2-core VM even an empty program here took 2.4% of a saturated
 * loopback request/response load (bench/results/README.md).
 *
 * UDP role: the end that speaks first is the client.  A connected UDP socket
 * has its peer on the socket; an unconnected one gets the peer of the current
 * call from the cgroup sendmsg/recvmsg hooks (udp_peer.bpf.c), which run just
 * before these tracepoints in the same call.
 */
#include "common.h"

#define MSG_PEEK 2

static __always_inline void count(struct sock *sk, int ret, int flags, int send)
{
	struct fl_edge_key key;
	struct fl_edge_val *v;
	struct fl_sock *s;
	__u16 lport, rport;
	__u8 proto;

	if (ret <= 0 || (flags & MSG_PEEK))
		return;
	proto = sock_proto(sk);
	if (proto != IPPROTO_UDP)
		return;
	s = sock_state(sk, 1);
	edge_key(&key, sk, proto, &lport, &rport);
	if (!rport) {
		/* unconnected: peer stashed by the cgroup hook for this call */
		if (!s || !s->peer_port) {
			stat_inc(FL_STAT_UDP_NOPEER);
			__builtin_memset(key.raddr, 0, sizeof(key.raddr));
		} else {
			__builtin_memcpy(key.raddr, s->peer, sizeof(key.raddr));
			rport = s->peer_port;
			s->peer_port = 0;
		}
	}
	if (s && !s->role)
		s->role = send ? FL_ROLE_CLIENT : FL_ROLE_SERVER;
	set_role(&key, s ? s->role : guess_role(lport, rport), lport, rport);
	v = edge_val(&key);
	if (!v)
		return;
	if (send)
		__sync_fetch_and_add(&v->sent_bytes, ret);
	else
		__sync_fetch_and_add(&v->recv_bytes, ret);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send_length, struct sock *sk, int ret, int flags)
{
	count(sk, ret, flags, 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length, struct sock *sk, int ret, int flags)
{
	count(sk, ret, flags, 0);
	return 0;
}
