#!/usr/bin/python3
"""Sends a bounded burst of malformed VXLAN packets out of IFACE (run inside a namespace on
the underlay) at a VTEP: xvs's uplink MAC and address.

    vxlan_malformed.py IFACE SRC_MAC DST_MAC SRC_IP DST_IP VNI COUNT

Each kind is sent COUNT times; prints one line per kind (its name and frame length). The
inner frame is an ICMP echo between two addresses of the overlay, so a packet that were
wrongly accepted would be a plausible frame.

  bad_flags     VXLAN flags without the I bit
  unknown_vni   a VNI no network on the VTEP has (VNI + 1)
  truncated     a VXLAN header followed by 6 bytes (less than an Ethernet header)
  bad_checksum  the outer IPv4 header checksum does not verify
  wrong_port    UDP to port 4790 instead of 4789
  fragment      the outer IPv4 header's MF bit set
  unknown_peer  a well-formed packet from SRC_IP's .250, no peer of the network
"""
import struct
import sys

from scapy.all import ICMP, IP, UDP, Ether, Raw, conf, sendp

iface, src_mac, dst_mac, src_ip, dst_ip = sys.argv[1:6]
vni, count = int(sys.argv[6]), int(sys.argv[7])
conf.verb = 0

inner = bytes(
    Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:bb")
    / IP(src="10.200.0.250", dst="10.200.0.251")
    / ICMP()
    / Raw(b"x" * 16)
)


def vxlan_header(flags, vni):
    return struct.pack("!B3xI", flags, vni << 8)


def packet(vx_flags=0x08, vni=vni, payload=inner, dport=4789, src=src_ip, **ip):
    return bytes(
        Ether(src=src_mac, dst=dst_mac)
        / IP(src=src, dst=dst_ip, **ip)
        / UDP(sport=40000, dport=dport)
        / Raw(vxlan_header(vx_flags, vni) + payload)
    )


kinds = {
    "bad_flags": packet(vx_flags=0x00),
    "unknown_vni": packet(vni=vni + 1),
    "truncated": packet(payload=inner[:6]),
    "bad_checksum": packet(chksum=0x1234),
    "wrong_port": packet(dport=4790),
    "fragment": packet(flags="MF"),
    "unknown_peer": packet(src=src_ip.rsplit(".", 1)[0] + ".250"),
}
for name, frame in kinds.items():
    sendp(Raw(frame), iface=iface, count=count)
    print(name, len(frame))
