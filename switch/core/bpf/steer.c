// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
//
// xvs's steering program for an interface it shares with the host (the uplink): only frames
// for xvs's own MAC, and ARP about xvs's own IPv4 address, go to the AF_XDP socket of their
// queue; everything else passes to the host's stack untouched, so the host's own address on
// the same interface keeps working. Loaded by switch/core/src/port/steer.rs, which fills the
// config map (MAC, IP) and the socket map (queue -> AF_XDP socket).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct steer_config {
	unsigned char mac[6];
	unsigned char pad[2];
	__u32 ip; // network order; 0 = none
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_config);
} config SEC(".maps");

// ARP over Ethernet/IPv4: htype, ptype, hlen, plen, op, sha[6], spa[4], tha[6], tpa[4].
#define ARP_TPA_OFFSET 24
#define ARP_LEN 28

// Byte-wise compare (BPF has no memcmp to call).
static __always_inline int same(const unsigned char *a, const unsigned char *b, int n)
{
	int i;
#pragma unroll
	for (i = 0; i < n; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

SEC("xdp")
int xvs_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 key = 0;
	struct steer_config *cfg;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&config, &key);
	if (!cfg)
		return XDP_PASS;
	if (same(eth->h_dest, cfg->mac, 6))
		goto ours;
	if (eth->h_proto == bpf_htons(ETH_P_ARP) && cfg->ip) {
		unsigned char *arp = (unsigned char *)(eth + 1);
		if ((void *)(arp + ARP_LEN) > data_end)
			return XDP_PASS;
		// Requests for xvs's address, and answers to xvs's own requests (sent to its MAC,
		// matched above) or gratuitous ones about it.
		if (same(arp + ARP_TPA_OFFSET, (const unsigned char *)&cfg->ip, 4))
			goto ours;
	}
	return XDP_PASS;
ours:
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
