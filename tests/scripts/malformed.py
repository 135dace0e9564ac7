#!/usr/bin/python3
"""Sends a bounded burst of malformed Ethernet frames out of IFACE (run inside a namespace).

    malformed.py IFACE SRC_MAC DST_MAC COUNT

Each kind is sent COUNT times: runt, truncated IPv4 header, bad IHL, bad total length,
unknown ethertype, stacked VLAN tags, bad UDP length, one VLAN tag on an access port,
a multicast source MAC. Prints one line per kind.
"""
import sys

from scapy.all import IP, UDP, Dot1Q, Ether, Raw, conf, sendp

iface, src, dst, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
conf.verb = 0
eth = Ether(src=src, dst=dst)
good = bytes(eth / IP(src="10.235.0.1", dst="10.235.0.2") / UDP(sport=1, dport=2) / Raw(b"x" * 18))

def patched(offset, value):
    b = bytearray(good)
    b[offset:offset + len(value)] = value
    return bytes(b)

kinds = {
    "runt": good[:10],
    "truncated_header": good[:14 + 12],
    "bad_ipv4_header": patched(14, b"\x43"),          # IHL 3
    "bad_ip_length": patched(16, b"\xff\xff"),        # total length beyond the frame
    "unknown_ethertype": bytes(Ether(src=src, dst=dst, type=0x88b5) / Raw(b"\0" * 46)),
    "stacked_vlan": bytes(eth / Dot1Q(vlan=5) / Dot1Q(vlan=6) / IP() / UDP()),
    "bad_l4_length": patched(14 + 20 + 4, b"\xff\xff"),  # UDP length beyond the datagram
    "vlan_tagged_on_access_port": bytes(eth / Dot1Q(vlan=5) / IP() / UDP()),
    "multicast_source_mac": patched(6, b"\x01\x00\x5e\x00\x00\x01"),
}
for name, frame in kinds.items():
    sendp(Raw(frame), iface=iface, count=count)
    print(name, len(frame))
