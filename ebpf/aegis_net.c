// SPDX-License-Identifier: GPL-2.0
/*
 * aegis_net: TC (clsact, direct-action) classifier enforcing one Aegis policy.
 *
 * The policy's rules are compiled by ebpf/rules.ts into map contents; this
 * file only knows the layout (keep both in sync):
 *
 *   aegis_v4_dst, aegis_v4_src, aegis_v6_dst, aegis_v6_src  (LPM tries)
 *       key   = { u32 prefixlen, address bytes in network order }
 *       value = struct aegis_list: a slice of aegis_cands
 *   aegis_cands    (array of u32): rule indexes, each slice ascending
 *   aegis_rules    (array of struct aegis_rule), indexed by rule index
 *   aegis_counters (per-CPU array of u64): packets matched per rule
 *
 * A slice holds every rule whose address (or absence of one) covers the
 * prefix that owns it, so one longest-prefix lookup per trie yields all the
 * rules that can match a packet's addresses. The lowest rule index whose
 * protocol and port also match wins (policy order): drop -> TC_ACT_SHOT;
 * allow, or no rule -> TC_ACT_UNSPEC, so the next filter decides. An allow
 * thus exempts a packet from its own policy's later rules only: TC_ACT_OK
 * would end tc's classification, and another policy's drop at a later pref
 * (prefs come from a hash of the policy's name) would never see the packet.
 * Policies on one hook compose as "a drop anywhere wins".
 *
 * Map sizes come from the policy at compile time (-D macros below).
 * Ethernet devices only. Up to AEGIS_MAX_EXT_HEADERS IPv6 extension headers
 * are skipped; a packet with more is dropped (its transport header cannot be
 * found, and passing it would let it past every protocol and port rule).
 * Non-first fragments have no ports, so port rules miss them.
 * Needs Linux 5.17+ (bpf_loop walks candidate lists of any length).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef AEGIS_MAX_RULES
#define AEGIS_MAX_RULES 1
#endif
#ifndef AEGIS_MAX_CANDS
#define AEGIS_MAX_CANDS 1
#endif
#ifndef AEGIS_V4_DST_ENTRIES
#define AEGIS_V4_DST_ENTRIES 1
#endif
#ifndef AEGIS_V4_SRC_ENTRIES
#define AEGIS_V4_SRC_ENTRIES 1
#endif
#ifndef AEGIS_V6_DST_ENTRIES
#define AEGIS_V6_DST_ENTRIES 1
#endif
#ifndef AEGIS_V6_SRC_ENTRIES
#define AEGIS_V6_SRC_ENTRIES 1
#endif

/* Bounds the IPv6 extension-header walk so the verifier sees a finite loop. */
#define AEGIS_MAX_EXT_HEADERS 6

#define AEGIS_ACTION_DROP 0
#define AEGIS_ACTION_ALLOW 1

/* Rule protocols; ICMP means ICMPv6 for IPv6 packets. */
#define AEGIS_PROTO_ANY 0
#define AEGIS_PROTO_ICMP 1
#define AEGIS_PROTO_TCP 6
#define AEGIS_PROTO_UDP 17
/* A packet protocol no rule names (e.g. ICMPv4 inside IPv6). */
#define AEGIS_PROTO_OTHER 255

#define AEGIS_RULE_PORTS 1   /* port_lo..port_hi applies */
#define AEGIS_RULE_SRC 2     /* src/src_prefix applies (a rule naming dst and src) */

#define AEGIS_NO_RULE 0xffffffffu

struct aegis_rule {
	__u8 action;
	__u8 proto;
	__u8 flags;
	__u8 src_prefix;
	__u16 port_lo; /* host order, inclusive */
	__u16 port_hi;
	__u32 src[4];  /* network order; IPv4 uses src[0] */
};

struct aegis_list {
	__u32 offset;
	__u32 count;
};

struct aegis_v4_key {
	__u32 prefixlen;
	__u32 addr;
};

struct aegis_v6_key {
	__u32 prefixlen;
	__u32 addr[4];
};

#define AEGIS_TRIE(name, key_type, size)              \
	struct {                                      \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);  \
		__uint(map_flags, BPF_F_NO_PREALLOC); \
		__uint(max_entries, size);            \
		__type(key, key_type);                \
		__type(value, struct aegis_list);     \
	} name SEC(".maps")

AEGIS_TRIE(aegis_v4_dst, struct aegis_v4_key, AEGIS_V4_DST_ENTRIES);
AEGIS_TRIE(aegis_v4_src, struct aegis_v4_key, AEGIS_V4_SRC_ENTRIES);
AEGIS_TRIE(aegis_v6_dst, struct aegis_v6_key, AEGIS_V6_DST_ENTRIES);
AEGIS_TRIE(aegis_v6_src, struct aegis_v6_key, AEGIS_V6_SRC_ENTRIES);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AEGIS_MAX_CANDS);
	__type(key, __u32);
	__type(value, __u32);
} aegis_cands SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AEGIS_MAX_RULES);
	__type(key, __u32);
	__type(value, struct aegis_rule);
} aegis_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AEGIS_MAX_RULES);
	__type(key, __u32);
	__type(value, __u64);
} aegis_counters SEC(".maps");

/* What the rules look at, parsed once per packet. */
struct aegis_packet {
	__u32 src[4]; /* network order; IPv4 uses [0] */
	__u8 v6;
	__u8 proto;    /* an AEGIS_PROTO_* value */
	__u8 has_port; /* 0 for non-first fragments and truncated headers */
	__u16 dport;   /* host order */
};

/* State of one candidate-slice walk, shared with the bpf_loop callback. */
struct aegis_walk {
	const struct aegis_packet *pkt;
	__u32 offset;
	__u32 best;     /* lowest matching rule index so far */
	__u8 best_action;
};

/* Whether addr lies in the first `prefix` bits of net (both network order). */
static __always_inline int in_prefix(const __u32 *addr, const __u32 *net, __u32 prefix, int words)
{
	for (int i = 0; i < 4; i++) {
		if (i >= words || prefix <= (__u32)i * 32)
			break;
		__u32 bits = prefix - i * 32;
		__u32 mask = bits >= 32 ? 0xffffffffu : ~(0xffffffffu >> bits);
		if ((addr[i] ^ net[i]) & bpf_htonl(mask))
			return 0;
	}
	return 1;
}

static long walk_candidate(__u32 i, void *ctx)
{
	struct aegis_walk *walk = ctx;
	__u32 slot = walk->offset + i;
	__u32 *index = bpf_map_lookup_elem(&aegis_cands, &slot);
	if (!index || *index >= walk->best)
		return 1; /* slices are ascending: nothing later can win */
	struct aegis_rule *rule = bpf_map_lookup_elem(&aegis_rules, index);
	if (!rule)
		return 1;
	const struct aegis_packet *pkt = walk->pkt;
	if (rule->proto != AEGIS_PROTO_ANY && rule->proto != pkt->proto)
		return 0;
	if ((rule->flags & AEGIS_RULE_PORTS) &&
	    (!pkt->has_port || pkt->dport < rule->port_lo || pkt->dport > rule->port_hi))
		return 0;
	if ((rule->flags & AEGIS_RULE_SRC) && !in_prefix(pkt->src, rule->src, rule->src_prefix, pkt->v6 ? 4 : 1))
		return 0;
	walk->best = *index;
	walk->best_action = rule->action;
	return 1;
}

static __always_inline void walk_list(struct aegis_walk *walk, const struct aegis_list *list)
{
	if (!list)
		return;
	walk->offset = list->offset;
	bpf_loop(list->count, walk_candidate, walk, 0);
}

/*
 * len bytes of the packet at off: read in place when the skb's linear area
 * holds them (the usual case, and the cheapest), else copied into buf.
 */
static __always_inline void *header(struct __sk_buff *skb, __u32 off, void *buf, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + off + len <= end)
		return data + off;
	return bpf_skb_load_bytes(skb, off, buf, len) < 0 ? NULL : buf;
}

/* Reads the L4 destination port at off for TCP and UDP. */
static __always_inline void read_port(struct __sk_buff *skb, __u32 off, struct aegis_packet *pkt)
{
	__be16 buf[2];
	if (pkt->proto != AEGIS_PROTO_TCP && pkt->proto != AEGIS_PROTO_UDP)
		return;
	__be16 *ports = header(skb, off, buf, sizeof(buf));
	if (!ports)
		return;
	pkt->dport = bpf_ntohs(ports[1]);
	pkt->has_port = 1;
}

static __always_inline int classify(struct aegis_walk *walk, void *dst_trie, void *dst_key, void *src_trie,
				    void *src_key)
{
	walk_list(walk, bpf_map_lookup_elem(dst_trie, dst_key));
	walk_list(walk, bpf_map_lookup_elem(src_trie, src_key));
	if (walk->best == AEGIS_NO_RULE)
		return TC_ACT_UNSPEC;
	__u64 *count = bpf_map_lookup_elem(&aegis_counters, &walk->best);
	if (count)
		*count += 1; /* per-CPU slot: no atomics needed */
	return walk->best_action == AEGIS_ACTION_ALLOW ? TC_ACT_UNSPEC : TC_ACT_SHOT;
}

static __always_inline int classify_v4(struct __sk_buff *skb, struct aegis_packet *pkt, struct aegis_walk *walk)
{
	struct iphdr buf;
	struct iphdr *ip = header(skb, ETH_HLEN, &buf, sizeof(buf));
	if (!ip)
		return TC_ACT_UNSPEC;
	pkt->src[0] = ip->saddr;
	pkt->proto = ip->protocol;
	/* Only the first fragment carries the ports. */
	if (!(ip->frag_off & bpf_htons(0x1fff)))
		read_port(skb, ETH_HLEN + ip->ihl * 4, pkt);

	struct aegis_v4_key dst = { .prefixlen = 32, .addr = ip->daddr };
	struct aegis_v4_key src = { .prefixlen = 32, .addr = ip->saddr };
	return classify(walk, &aegis_v4_dst, &dst, &aegis_v4_src, &src);
}

/* The IPv6 extension headers the walk skips. */
static __always_inline int ext_header(__u8 next)
{
	return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS ||
	       next == IPPROTO_FRAGMENT || next == IPPROTO_AH;
}

static __always_inline int classify_v6(struct __sk_buff *skb, struct aegis_packet *pkt, struct aegis_walk *walk)
{
	struct ipv6hdr buf;
	struct ipv6hdr *ip = header(skb, ETH_HLEN, &buf, sizeof(buf));
	if (!ip)
		return TC_ACT_UNSPEC;
	__builtin_memcpy(pkt->src, &ip->saddr, 16);
	pkt->v6 = 1;

	struct aegis_v6_key dst = { .prefixlen = 128 };
	struct aegis_v6_key src = { .prefixlen = 128 };
	__builtin_memcpy(dst.addr, &ip->daddr, 16);
	__builtin_memcpy(src.addr, &ip->saddr, 16);

	__u8 next = ip->nexthdr;
	__u32 off = ETH_HLEN + sizeof(*ip);
	int ports_visible = 1;
	for (int i = 0; i < AEGIS_MAX_EXT_HEADERS; i++) {
		__u8 ext[4]; /* next header, length, and for a fragment header its offset */
		if (!ext_header(next))
			break;
		if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
			return TC_ACT_UNSPEC;
		if (next == IPPROTO_FRAGMENT) {
			ports_visible = !((ext[2] << 8 | ext[3]) & 0xfff8);
			off += 8;
		} else if (next == IPPROTO_AH) {
			off += (ext[1] + 2) * 4;
		} else {
			off += (ext[1] + 1) * 8;
		}
		next = ext[0];
	}
	if (ext_header(next))
		return TC_ACT_SHOT; /* longer than the walk: fail closed */
	pkt->proto = next == IPPROTO_ICMPV6 ? AEGIS_PROTO_ICMP
		     : next == IPPROTO_ICMP ? AEGIS_PROTO_OTHER
					    : next;
	if (ports_visible)
		read_port(skb, off, pkt);
	return classify(walk, &aegis_v6_dst, &dst, &aegis_v6_src, &src);
}

SEC("tc")
int aegis_net(struct __sk_buff *skb)
{
	struct aegis_packet pkt = {};
	struct aegis_walk walk = { .pkt = &pkt, .best = AEGIS_NO_RULE };
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return classify_v4(skb, &pkt, &walk);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return classify_v6(skb, &pkt, &walk);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
