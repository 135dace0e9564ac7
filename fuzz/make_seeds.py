#!/usr/bin/env python3
"""Writes the checked-in seed corpus (corpus/TARGET/seed-*): real frames (ARP, IPv4 TCP and
UDP, ICMP echo, IPv6 UDP, VXLAN, a TCP super-frame with its virtio-net header) and control
requests, in the input format of each target. Run from fuzz/: ./make_seeds.py"""
import json
import os
import struct


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return struct.pack("!H", ~s & 0xFFFF)


A, B = bytes([2, 0, 0, 0, 0, 1]), bytes([2, 0, 0, 0, 0, 2])
IP_A, IP_B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def eth(dst, src, ty, payload):
    return dst + src + struct.pack("!H", ty) + payload


def ipv4(src, dst, proto, payload, ident=0):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0, src, dst)
    return h[:10] + csum(h) + h[12:] + payload


def l4_sum(src, dst, proto, seg):
    return csum(src + dst + struct.pack("!BBH", 0, proto, len(seg)) + seg)


def udp(src, dst, sport, dport, data):
    u = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    return u[:6] + l4_sum(src, dst, 17, u) + u[8:]


def tcp(src, dst, sport, dport, seq, flags, data):
    t = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + data
    return t[:16] + l4_sum(src, dst, 6, t) + t[18:]


def icmp_echo(ident, seq, data):
    m = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    return m[:2] + csum(m) + m[4:]


arp = eth(b"\xff" * 6, A, 0x0806, bytes([0, 1, 8, 0, 6, 4, 0, 1]) + A + IP_A + b"\0" * 6 + IP_B)
udp4 = eth(B, A, 0x0800, ipv4(IP_A, IP_B, 17, udp(IP_A, IP_B, 40000, 53, b"\x12\x34\x01\x00\x00\x01" + b"\0" * 6)))
syn = eth(B, A, 0x0800, ipv4(IP_A, IP_B, 6, tcp(IP_A, IP_B, 40000, 80, 1, 0x02, b"")))
ping = eth(B, A, 0x0800, ipv4(IP_A, IP_B, 1, icmp_echo(7, 1, b"12345678")))
S6, D6 = bytes([0xFD] + [0] * 14 + [1]), bytes([0xFD] + [0] * 14 + [2])
u6 = struct.pack("!HHHH", 5353, 5353, 12, 0) + b"abcd"
u6 = u6[:6] + csum(S6 + D6 + struct.pack("!IxxxB", len(u6), 17) + u6) + u6[8:]
udp6 = eth(B, A, 0x86DD, struct.pack("!IHBB", 6 << 28, len(u6), 17, 64) + S6 + D6 + u6)
VTEP1, VTEP2 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
vx = struct.pack("!BxxxI", 0x08, 4096 << 8) + arp
vxlan = eth(B, A, 0x0800, ipv4(VTEP1, VTEP2, 17, struct.pack("!HHHH", 49152, 4789, 8 + len(vx), 0) + vx))
payload = bytes(i * 7 & 0xFF for i in range(4000))
super_frame = eth(B, A, 0x0800, ipv4(IP_A, IP_B, 6, tcp(IP_A, IP_B, 40000, 5201, 1, 0x18, payload)))
vnet = struct.pack("<BBHHHH", 1, 1, 54, 1448, 34, 16)

frames = {"arp": arp, "udp4": udp4, "tcp_syn": syn, "icmp_echo": ping, "udp6": udp6, "vxlan": vxlan}
requests = {
    "add_br": {"cmd": "add-br", "bridge": "br0", "ageing_secs": 300},
    "add_port": {"cmd": "add-port", "bridge": "br0", "iface": "veth0", "vlan": 10},
    "show": {"cmd": "show"},
    "trace": {"cmd": "trace", "bridge": "br0", "flow": "in_port=1,dl_src=02:00:00:00:00:01"},
}

seeds = {
    "classify": {k: b"\0" + v for k, v in frames.items()},
    "segment": {"super_frame": b"\0" + vnet + super_frame, "built": b"\x01" + bytes(range(64))},
    "vxlan_decap": {"vxlan": b"\0" + vxlan, "round_trip": b"\x01" + bytes(range(1, 33)) + arp},
    "conntrack": {"ops": bytes(range(256)), "ops2": bytes(reversed(range(256)))},
    "lb": {"ops": bytes(range(256)), "ops2": bytes(i * 37 & 0xFF for i in range(512))},
    "pipeline": {"ops": bytes(range(256)), "ops2": bytes(i * 13 & 0xFF for i in range(512))},
    "control_request": {k: json.dumps(v).encode() for k, v in requests.items()},
}
for target, files in seeds.items():
    os.makedirs(f"corpus/{target}", exist_ok=True)
    for name, data in files.items():
        with open(f"corpus/{target}/seed-{name}", "wb") as f:
            f.write(data)
