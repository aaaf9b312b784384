// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * udp_peer.bpf.c - the peer of unconnected UDP sockets.
 *
 * sock_send_length/sock_recv_length only give the socket; an unconnected UDP
 * socket (a DNS server, a statsd client using sendto) has no peer on it.  The
 * cgroup sendmsg/recvmsg hooks see the address of each call: they stash it in
 * the socket's storage, and traffic.bpf.c consumes it in the same call.
 * Attached to the cgroup v2 root with BPF_F_ALLOW_MULTI semantics (links), so
 * they coexist with CNIs (Cilium) that use the same hooks; they never deny.
 *
 * Limit: two threads calling sendto on one socket at the same instant can
 * swap peers between their two datagrams.  recvmsg is only hooked when the
 * caller asks for the source address (recvfrom/recvmsg with msg_name).
 */
#include "common.h"

static __always_inline void stash(struct bpf_sock_addr *ctx, int v6)
{
	struct bpf_sock *sk = ctx->sk;
	struct fl_sock *s;

	if (!sk || ctx->protocol != IPPROTO_UDP)
		return;
	s = bpf_sk_storage_get(&socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s) {
		stat_inc(FL_STAT_SK_NOSTORAGE);
		return;
	}
	if (v6) {
		__u32 *d = (__u32 *)s->peer;

		d[0] = ctx->user_ip6[0];
		d[1] = ctx->user_ip6[1];
		d[2] = ctx->user_ip6[2];
		d[3] = ctx->user_ip6[3];
	} else {
		v4_mapped(s->peer, ctx->user_ip4);
	}
	s->peer_port = bpf_ntohs((__u16)ctx->user_port);
}

SEC("cgroup/sendmsg4")
int udp_sendmsg4(struct bpf_sock_addr *ctx)
{
	stash(ctx, 0);
	return 1;
}

SEC("cgroup/recvmsg4")
int udp_recvmsg4(struct bpf_sock_addr *ctx)
{
	stash(ctx, 0);
	return 1;
}

SEC("cgroup/sendmsg6")
int udp_sendmsg6(struct bpf_sock_addr *ctx)
{
	stash(ctx, 1);
	return 1;
}

SEC("cgroup/recvmsg6")
int udp_recvmsg6(struct bpf_sock_addr *ctx)
{
	stash(ctx, 1);
	return 1;
}
