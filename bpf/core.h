/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * core.h - the few kernel types flowlens reads, declared for CO-RE.
 *
 * We do not ship vmlinux.h: these declarations carry only the fields we use,
 * and `preserve_access_index` makes clang emit BTF relocations so libbpf fixes
 * every offset against the running kernel's BTF at load time.  Nesting of
 * anonymous unions in the real structs does not matter: libbpf matches fields
 * by name through anonymous members.
 */
#ifndef FLOWLENS_CORE_H
#define FLOWLENS_CORE_H

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__u32 u6_addr32[4];
	} in6_u;
};

struct sock_common {
	__u32 skc_daddr;          /* __be32 */
	__u32 skc_rcv_saddr;      /* __be32 */
	__u16 skc_dport;          /* __be16 */
	__u16 skc_num;            /* host order */
	__u32 skc_hash;           /* of the 4-tuple and netns, set when the
				   * socket is hashed (connect, or accept's
				   * child), kept through CLOSE */
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	unsigned long skc_flags;  /* sk->sk_flags; bit SOCK_DONE (1): a FIN was received */
};

struct kernfs_node {
	__u64 id;                 /* = inode number of the cgroup directory */
};

struct cgroup {
	struct kernfs_node *kn;
};

struct sock_cgroup_data {
	struct cgroup *cgroup;    /* cgroup v2 (default hierarchy), 5.15+ layout */
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
	int sk_err;
	struct sock_cgroup_data sk_cgrp_data;
};

struct inet_sock {
	struct sock sk;
	__u16 inet_sport;         /* __be16; kept after close, unlike skc_num */
};

struct inet_connection_sock {
	struct inet_sock icsk_inet;
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u8 tcp_usec_ts:1;       /* TCP timestamps in us, not ms (6.7+) */
	__u32 srtt_us;            /* smoothed RTT << 3, microseconds */
	__u64 tcp_mstamp;         /* TCP clock (us) when the packet being
				   * processed arrived: the SYN-ACK's at ESTABLISHED */
	__u32 retrans_stamp;      /* client in SYN_SENT: first SYN sent, in TCP
				   * timestamp units (ms, or us with tcp_usec_ts) */
	__u32 total_retrans;      /* segments retransmitted, whole life */
	__u64 bytes_sent;         /* payload transmitted, retransmits included */
	__u64 bytes_retrans;      /* payload retransmitted */
	__u64 bytes_received;     /* rcv_nxt advance: payload, plus 1 for a FIN */
	__u64 bytes_acked;        /* snd_una advance: payload, plus 1 for our FIN
				   * and, on the connecting side, 1 for our SYN */
};

#pragma clang attribute pop

#endif /* FLOWLENS_CORE_H */
