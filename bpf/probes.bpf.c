// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * probes.bpf.c - not a feature: `flowlens doctor` loads and attaches these
 * one at a time to report whether kprobes and fentry work on this kernel.
 * flowlens itself never needs either (BTF tracepoints only).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("kprobe/tcp_close")
int probe_kprobe(void *ctx)
{
	return 0;
}

SEC("fentry/tcp_close")
int probe_fentry(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
