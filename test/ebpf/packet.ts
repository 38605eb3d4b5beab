// Builds Ethernet frames for BPF_PROG_TEST_RUN. Checksums stay zero: the
// classifier never looks at them.
import { parseCidr } from "../../policy/index.js";

export interface PacketSpec {
  src: string;
  dst: string;
  /** icmp means ICMPv6 echo for IPv6; a number is a raw IP protocol with no payload. */
  protocol: "icmp" | "tcp" | "udp" | number;
  dport?: number;
  /** IPv6 extension headers to put before the L4 header. */
  extensions?: ("hopopts" | "dstopts")[];
  /** A non-first fragment (IPv4 offset, or an IPv6 fragment header). */
  laterFragment?: boolean;
}

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const NEXT_HEADER = { hopopts: 0, dstopts: 60, fragment: 44 } as const;

export function packet(spec: PacketSpec): Buffer {
  const src = parseCidr(spec.src).address;
  const dst = parseCidr(spec.dst).address;
  const v6 = src.length === 16;
  const proto = typeof spec.protocol === "number" ? spec.protocol : { icmp: v6 ? 58 : 1, tcp: 6, udp: 17 }[spec.protocol];
  const l4 = transport(spec, v6);
  return Buffer.concat([ethernet(v6 ? ETH_P_IPV6 : ETH_P_IP), v6 ? ipv6(spec, src, dst, proto, l4) : ipv4(spec, src, dst, proto, l4), l4]);
}

/** An Ethernet frame carrying a non-IP EtherType (ARP). */
export function arpFrame(): Buffer {
  return Buffer.concat([ethernet(0x0806), Buffer.alloc(28)]);
}

function ethernet(type: number): Buffer {
  const eth = Buffer.alloc(14);
  eth.set([0x02, 0, 0, 0, 0, 2], 0);
  eth.set([0x02, 0, 0, 0, 0, 1], 6);
  eth.writeUInt16BE(type, 12);
  return eth;
}

function ipv4(spec: PacketSpec, src: Uint8Array, dst: Uint8Array, proto: number, l4: Buffer): Buffer {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + l4.length, 2);
  if (spec.laterFragment) ip.writeUInt16BE(185, 6); // offset 185 * 8 bytes
  ip[8] = 64;
  ip[9] = proto;
  ip.set(src, 12);
  ip.set(dst, 16);
  return ip;
}

function ipv6(spec: PacketSpec, src: Uint8Array, dst: Uint8Array, proto: number, l4: Buffer): Buffer {
  const chain: number[] = [...(spec.extensions ?? []).map((e) => NEXT_HEADER[e]), ...(spec.laterFragment ? [NEXT_HEADER.fragment] : [])];
  const headers = chain.map((_, i) => {
    const ext = Buffer.alloc(8); // length 0 = 8 bytes, padding options are zeros
    ext[0] = chain[i + 1] ?? proto;
    if (chain[i] === NEXT_HEADER.fragment) ext.writeUInt16BE(185 << 3, 2);
    return ext;
  });
  const ip = Buffer.alloc(40);
  ip[0] = 0x60;
  ip.writeUInt16BE(headers.length * 8 + l4.length, 4);
  ip[6] = chain[0] ?? proto;
  ip[7] = 64;
  ip.set(src, 8);
  ip.set(dst, 24);
  return Buffer.concat([ip, ...headers]);
}

function transport(spec: PacketSpec, v6: boolean): Buffer {
  switch (spec.protocol) {
    case "icmp": {
      const icmp = Buffer.alloc(8);
      icmp[0] = v6 ? 128 : 8; // echo request
      return icmp;
    }
    case "tcp": {
      const tcp = Buffer.alloc(20);
      tcp.writeUInt16BE(40000, 0);
      tcp.writeUInt16BE(spec.dport ?? 80, 2);
      tcp[12] = 0x50;
      tcp[13] = 0x02; // SYN
      return tcp;
    }
    case "udp": {
      const udp = Buffer.alloc(12);
      udp.writeUInt16BE(40000, 0);
      udp.writeUInt16BE(spec.dport ?? 53, 2);
      udp.writeUInt16BE(udp.length, 4);
      return udp;
    }
    default:
      return Buffer.alloc(8);
  }
}
