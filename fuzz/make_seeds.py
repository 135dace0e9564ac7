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


def dns_query(ident, name, qtype, flags=0x0100):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\0"
    return struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


# Byte 0: bit 0 the network (front, back), bit 1 UDP or TCP; then the DNS message.
dns = {
    "a_web": b"\0" + dns_query(1, "web", 1),
    "a_tasks": b"\0" + dns_query(2, "tasks.api", 1),
    "a_fqdn_tcp": b"\x02" + dns_query(3, "db.front", 1),
    "any_back": b"\x01" + dns_query(4, "db", 255),
    "ptr": b"\0" + dns_query(5, "2.0.0.10.in-addr.arpa", 12),
    "unknown": b"\0" + dns_query(6, "example.com", 1),
    "aaaa": b"\0" + dns_query(7, "web", 28),
    "notify": b"\0" + dns_query(8, "web", 1, flags=0x2000),
}

NET_ID = "c72dd177b60fe4c188d08d075c1331c299d73b38795d0272a0ccdd684be354c6"
EP_ID = "1c4cc20f7c5d1f76aa1ce3f176b2dd39d77a5353f3c039f65f41b14e8de26a0c"
# Byte 0: the call (its index in the target's CALLS), byte 1: how xvs answers; then the body
# as Docker 20.10 sent it.
docker = {
    "activate": bytes([0, 0]),
    "create_network": bytes([2, 0]) + json.dumps({"NetworkID": NET_ID, "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {"com.docker.network.bridge.enable_icc": "false", "xvs.internal": "true"}}, "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": "10.170.0.1/24", "Pool": "10.170.0.0/24"}], "IPv6Data": []}).encode(),
    "create_endpoint": bytes([6, 2]) + json.dumps({"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {"Address": "10.170.0.2/24", "AddressIPv6": "", "MacAddress": ""}, "Options": {"com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}], "com.docker.network.portmap": [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]}}).encode(),
    "join": bytes([9, 0]) + json.dumps({"NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": "/var/run/docker/netns/4c5009913dec", "Options": {}}).encode(),
    "oper_info": bytes([8, 0]) + json.dumps({"NetworkID": NET_ID, "EndpointID": EP_ID}).encode(),
    "delete_endpoint": bytes([7, 1]) + json.dumps({"NetworkID": NET_ID, "EndpointID": EP_ID}).encode(),
    "request_pool": bytes([17, 3]) + json.dumps({"AddressSpace": "xvs", "Pool": "10.170.0.0/24", "SubPool": "", "Options": {}, "V6": False}).encode(),
    "request_address": bytes([19, 0]) + json.dumps({"PoolID": "xvs/10.170.0.0/24", "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}).encode(),
    "release_address": bytes([20, 0]) + json.dumps({"PoolID": "xvs/10.170.0.0/24", "Address": "10.170.0.5"}).encode(),
}

# NUL-separated: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, stdin.
def cni(cmd, conf, args=""):
    return b"\0".join([cmd.encode(), b"c0ffee", b"/var/run/netns/pod1", b"eth0", args.encode(), json.dumps(conf).encode()])


cni_seeds = {
    "add": cni("ADD", {"cniVersion": "1.1.0", "name": "pods", "type": "xvs", "network": "pods"}, "K8S_POD_NAME=web-0;IgnoreUnknown=1"),
    "add_publish": cni("ADD", {"cniVersion": "1.0.0", "name": "pods", "type": "xvs", "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}, "allowSpoofing": True, "portType": "tap"}),
    "add_ipam": cni("ADD", {"cniVersion": "0.4.0", "name": "pods", "type": "xvs", "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}}),
    "check_old": cni("CHECK", {"cniVersion": "0.3.1", "name": "pods", "type": "xvs"}),
    "version": b"VERSION\0\0\0\0\0" + json.dumps({"cniVersion": "1.1.0"}).encode(),
    "gc": cni("GC", {"cniVersion": "1.1.0", "name": "pods", "type": "xvs", "cni.dev/valid-attachments": [{"containerID": "c0ffee", "ifname": "eth0"}]}),
}

# Lines of watch events: P<key> <value>, D<key>.
host = {"vtep": "198.18.56.1", "vtep_port": 4789, "token": "t", "version": "0.1.0"}
net = {"subnet": "10.9.0.0/24", "gateway": "10.9.0.1", "vni": 4096, "mtu": 1450, "internal": False, "icc": True, "created_by": "b"}
ep = {"host": "b", "mac": "02:00:0a:09:00:02", "name": "web", "aliases": ["www"], "sandbox": "/run/netns/x"}
cluster = {
    "directory": "\n".join([
        "Phosts/b " + json.dumps(host),
        "Phosts/a " + json.dumps(dict(host, vtep="198.18.56.2")),
        "Pnetworks/ov " + json.dumps(net),
        "Pvnis/4096 \"ov\"",
        "Pendpoints/ov/10.9.0.2 " + json.dumps(ep),
        "Pendpoints/ov/10.9.0.3 " + json.dumps(dict(ep, host="a", mac="02:00:0a:09:00:03")),
        "Pvips/ov/10.9.0.100 \"web\"",
        "Pbackends/web/10.9.0.2:80 {\"weight\": 1, \"added_by\": \"b\"}",
        "Dhosts/b",
        "Dendpoints/ov/10.9.0.3",
    ]).encode(),
    "bad": b"Phosts/ {}\nPvnis/x 1\nPendpoints/ov/300.1.1.1 {}\n/elsewhere/key\nPnetworks/a/b {}\n",
}

seeds = {
    "classify": {k: b"\0" + v for k, v in frames.items()},
    "segment": {"super_frame": b"\0" + vnet + super_frame, "built": b"\x01" + bytes(range(64))},
    "vxlan_decap": {"vxlan": b"\0" + vxlan, "round_trip": b"\x01" + bytes(range(1, 33)) + arp},
    "conntrack": {"ops": bytes(range(256)), "ops2": bytes(reversed(range(256)))},
    "lb": {"ops": bytes(range(256)), "ops2": bytes(i * 37 & 0xFF for i in range(512))},
    "pipeline": {"ops": bytes(range(256)), "ops2": bytes(i * 13 & 0xFF for i in range(512))},
    "control_request": {k: json.dumps(v).encode() for k, v in requests.items()},
    "dns": dns,
    "docker_plugin": docker,
    "cni_conf": cni_seeds,
    "cluster_records": cluster,
}
for target, files in seeds.items():
    os.makedirs(f"corpus/{target}", exist_ok=True)
    for name, data in files.items():
        with open(f"corpus/{target}/seed-{name}", "wb") as f:
            f.write(data)
