// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * traffic.bpf.c - bytes per socket call from sock:sock_send_length and
 * sock:sock_recv_length (kernel 6.3+), TCP and UDP, IPv4 and IPv6, plus the
 * throttled RTT sample of TCP sockets.
 *
 * These fire once per send/recv call with the byte count the application saw,
 * so the totals equal what applications moved, exactly.  MSG_PEEK reads are
 * skipped (the bytes are read again later).
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
	if (!proto)
		return;
	s = sock_state(sk, 1);
	edge_key(&key, sk, proto, &lport, &rport);
	if (proto == IPPROTO_UDP && !rport) {
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
		s->role = proto == IPPROTO_UDP ? (send ? FL_ROLE_CLIENT : FL_ROLE_SERVER)
					       : guess_role(lport, rport);
	set_role(&key, s ? s->role : guess_role(lport, rport), lport, rport);
	v = edge_val(&key);
	if (!v)
		return;
	if (send)
		__sync_fetch_and_add(&v->sent_bytes, ret);
	else
		__sync_fetch_and_add(&v->recv_bytes, ret);
	if (proto == IPPROTO_TCP && s)
		rtt_sample(sk, s, v, bpf_ktime_get_ns());
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
