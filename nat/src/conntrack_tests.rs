//! Conntrack end to end on literal frames: masquerade, filtering, DNAT, hairpin, ICMP, limits,
//! timeouts on a virtual clock, dry runs, and table invariants under random traffic.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::published::DnatRule;
use crate::rewrite::tests::checksums_ok;
use crate::tcp::flags::{ACK, FIN, RST, SYN};
use etherparse::PacketBuilder;
use proptest::prelude::*;
use xvs_stage::checksum::complete_checksum;
use xvs_stage::classify::classify;

const OUT: [u8; 4] = [198, 18, 0, 1];
const A: [u8; 4] = [10, 0, 0, 2];
const B: [u8; 4] = [10, 0, 0, 3];
const WEB: [u8; 4] = [10, 1, 0, 5];
const R1: [u8; 4] = [203, 0, 113, 1];
const R2: [u8; 4] = [203, 0, 113, 2];
const IN1: Side = Side::Inside { zone: 1 };
const IN2: Side = Side::Inside { zone: 2 };

/// A small table masquerading as 198.18.0.1 with ports 20000-29999.
fn base() -> Config {
    Config {
        capacity: 1024,
        masquerade: Some(Ipv4Addr::from(OUT)),
        ports: PortRange::new(20000, 29999),
        ..Config::default()
    }
}

fn ct(cfg: Config) -> Conntrack {
    Conntrack::new(cfg)
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 100, 1000);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(1);
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    let mut f = Vec::new();
    b.write(&mut f, b"data").unwrap();
    f
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    crate::rewrite::tests::frame(ipproto::UDP, src, sport, dst, dport, b"datagram")
}

fn ping(src: [u8; 4], dst: [u8; 4], id: u16, reply: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
    let mut f = Vec::new();
    if reply {
        b.icmpv4_echo_reply(id, 1)
            .write(&mut f, b"12345678")
            .unwrap();
    } else {
        b.icmpv4_echo_request(id, 1)
            .write(&mut f, b"12345678")
            .unwrap();
    }
    f
}

/// Runs `f` through `c`, returning the decision and the frame as it leaves.
fn run(
    c: &mut Conntrack,
    mut f: Vec<u8>,
    side: Side,
    now: u64,
) -> (Result<Decision, NatDrop>, Vec<u8>) {
    let key = classify(&f, 1, 0).unwrap();
    let r = c
        .process(&mut f, &key, &Offload::NONE, side, now, false)
        .map(|o| match o {
            Outcome::Tracked(d) => d,
            Outcome::Untracked => panic!("untracked"),
        });
    if r.is_ok() {
        assert!(checksums_ok(&f), "checksums after translation: {f:02x?}");
    }
    (r, f)
}

fn ok(c: &mut Conntrack, f: Vec<u8>, side: Side, now: u64) -> (Decision, Vec<u8>) {
    let (r, f) = run(c, f, side, now);
    (r.unwrap_or_else(|e| panic!("{e}")), f)
}

fn src_of(f: &[u8]) -> ([u8; 4], u16) {
    (
        f[26..30].try_into().unwrap(),
        u16::from_be_bytes([f[34], f[35]]),
    )
}

fn dst_of(f: &[u8]) -> ([u8; 4], u16) {
    (
        f[30..34].try_into().unwrap(),
        u16::from_be_bytes([f[36], f[37]]),
    )
}

#[test]
fn masquerade_a_tcp_connection_through_its_whole_life() {
    let mut c = ct(base());
    let (d, f) = ok(&mut c, tcp(A, 21000, R1, 80, SYN), IN1, 0);
    assert!(d.new && d.egress == Egress::Outside && d.state == ConnState::SynSent);
    assert_eq!(src_of(&f), (OUT, 21000), "inside port kept");
    let (d, f) = ok(
        &mut c,
        tcp(R1, 80, OUT, 21000, SYN | ACK),
        Side::Outside,
        10,
    );
    assert_eq!(
        (d.dir, d.state, d.egress),
        (Dir::Reply, ConnState::SynRecv, Egress::Inside(1))
    );
    assert_eq!(dst_of(&f), (A, 21000));
    let steps = [
        (A, IN1, ACK, ConnState::Established),
        (R1, Side::Outside, ACK, ConnState::Established),
        (A, IN1, FIN | ACK, ConnState::FinWait),
        (R1, Side::Outside, ACK, ConnState::CloseWait),
        (R1, Side::Outside, FIN | ACK, ConnState::LastAck),
        (A, IN1, ACK, ConnState::TimeWait),
    ];
    for (i, (who, side, flags, want)) in steps.into_iter().enumerate() {
        let f = if who == A {
            tcp(A, 21000, R1, 80, flags)
        } else {
            tcp(R1, 80, OUT, 21000, flags)
        };
        let (d, _) = ok(&mut c, f, side, 20 + i as u64);
        assert_eq!(d.state, want, "step {i}");
    }
    let e: Vec<_> = c.entries(100).collect();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].timeout_s, 120, "TIME_WAIT");
    assert_eq!(
        e[0].to_string(),
        "tcp,orig=(src=10.0.0.2,dst=203.0.113.1,sport=21000,dport=80),reply=(src=203.0.113.1,dst=198.18.0.1,sport=80,dport=21000),zone=1,age=0,timeout=120,nat=snat,protoinfo=(state=TIME_WAIT)"
    );
    // TIME_WAIT expires on the virtual clock; the mapping lingers after it.
    c.tick(25 + 120_000);
    assert!(c.is_empty());
    assert_eq!(c.mappings(25 + 120_000).count(), 1, "mapping lingers");
    c.tick(25 + 120_000 + 240_000);
    assert_eq!(c.mappings(25 + 360_000).count(), 0);
    assert_eq!(c.stats().created, 1);
}

#[test]
fn a_rst_closes_and_the_close_timeout_applies() {
    let mut c = ct(base());
    ok(&mut c, tcp(A, 21000, R1, 80, SYN), IN1, 0);
    let (d, _) = ok(&mut c, tcp(R1, 80, OUT, 21000, RST | ACK), Side::Outside, 1);
    assert_eq!(d.state, ConnState::Close);
    assert_eq!(c.entries(1).next().map(|e| e.timeout_s), Some(10));
    // Reopened by a new SYN from the originator while still listed.
    let (d, _) = ok(&mut c, tcp(A, 21000, R1, 80, SYN), IN1, 2);
    assert_eq!((d.state, d.new), (ConnState::SynSent, false));
}

#[test]
fn non_syn_openings_and_out_of_state_segments_are_invalid_and_not_tracked() {
    let mut c = ct(base());
    for flags in [ACK, FIN | ACK, SYN | ACK, RST, SYN | FIN] {
        assert_eq!(
            run(&mut c, tcp(A, 21000, R1, 80, flags), IN1, 0).0,
            Err(NatDrop::Invalid)
        );
    }
    assert!(c.is_empty());
    ok(&mut c, tcp(A, 21000, R1, 80, SYN), IN1, 0);
    let (r, _) = run(&mut c, tcp(R1, 80, OUT, 21000, ACK), Side::Outside, 1);
    assert_eq!(r, Err(NatDrop::Invalid), "ACK before SYN/ACK");
    assert_eq!(
        c.entries(1).next().map(|e| e.state),
        Some(ConnState::SynSent),
        "state unchanged"
    );
    // A simultaneous open: the remote's own SYN.
    let (d, _) = ok(&mut c, tcp(R1, 80, OUT, 21000, SYN), Side::Outside, 2);
    assert_eq!(d.state, ConnState::SynSent2);
}

#[test]
fn endpoint_independent_mapping_and_port_dependent_filtering() {
    let mut c = ct(base());
    let (_, f) = ok(&mut c, udp(A, 21000, R1, 53), IN1, 0);
    let (_, g) = ok(&mut c, udp(A, 21000, R2, 123), IN1, 0);
    assert_eq!(src_of(&f), (OUT, 21000));
    assert_eq!(
        src_of(&g),
        (OUT, 21000),
        "one inside endpoint, one outside port"
    );
    let (_, h) = ok(&mut c, udp(B, 21000, R1, 53), IN1, 0);
    let (_, hport) = src_of(&h);
    assert_ne!(hport, 21000, "port taken: another one from the range");
    assert!((20000..=29999).contains(&hport));
    let (_, i) = ok(&mut c, udp(B, 80, R1, 53), IN1, 0);
    assert!(
        (20000..=29999).contains(&src_of(&i).1),
        "ports outside the range are not kept"
    );
    // Replies from where A sent come back; another remote, or another port of R1, is filtered.
    let (d, f) = ok(&mut c, udp(R2, 123, OUT, 21000), Side::Outside, 5);
    assert_eq!((dst_of(&f), d.state), ((A, 21000), ConnState::Replied));
    assert_eq!(
        run(&mut c, udp(R2, 999, OUT, 21000), Side::Outside, 5).0,
        Err(NatDrop::Filtered)
    );
    assert_eq!(
        run(&mut c, udp([8, 8, 8, 8], 53, OUT, 21000), Side::Outside, 5).0,
        Err(NatDrop::Filtered)
    );
    assert_eq!(
        run(&mut c, udp(R1, 53, OUT, 29999), Side::Outside, 5).0,
        Err(NatDrop::NoMapping)
    );
    assert_eq!(
        run(&mut c, tcp(R1, 53, OUT, 21000, SYN), Side::Outside, 5).0,
        Err(NatDrop::NoMapping),
        "TCP has its own ports"
    );
}

#[test]
fn udp_timeouts_on_a_virtual_clock_and_mappings_outlive_them() {
    let mut c = ct(base());
    c.set_timeout("udp_first", 5).unwrap();
    assert!(c.set_timeout("udp_bogus", 5).is_err());
    ok(&mut c, udp(A, 21000, R1, 53), IN1, 0);
    ok(&mut c, udp(R1, 53, OUT, 21000), Side::Outside, 4_999);
    // Replied: udp_multiple (120 s) from the last packet.
    ok(&mut c, udp(R1, 53, OUT, 21000), Side::Outside, 120_000);
    assert_eq!(
        run(&mut c, udp(R1, 53, OUT, 21000), Side::Outside, 240_000).0,
        Err(NatDrop::Filtered),
        "expired on lookup"
    );
    assert!(c.is_empty(), "expired lazily by the lookup");
    // The mapping outlives the connection by 120 s (RFC 4787): A keeps its port.
    let (_, f) = ok(&mut c, udp(A, 21000, R2, 53), IN1, 300_000);
    assert_eq!(src_of(&f).1, 21000);
    // An unreplied connection expires after udp_first.
    assert_eq!(c.entries(304_999).count(), 1);
    assert_eq!(c.entries(305_000).count(), 0);
}

#[test]
fn capacity_and_per_endpoint_limits_drop_only_the_new_connection() {
    let mut c = ct(Config {
        per_endpoint: 3,
        ..base()
    });
    let mut c2 = ct(Config {
        capacity: 4,
        ..base()
    });
    for p in 0..3 {
        ok(&mut c, udp(A, 21000 + p, R1, 53), IN1, 0);
    }
    assert_eq!(
        run(&mut c, udp(A, 21010, R1, 53), IN1, 0).0,
        Err(NatDrop::ZoneLimit)
    );
    assert_eq!(c.endpoint_count(1, A.into()), 3);
    ok(&mut c, udp(B, 21010, R1, 53), IN1, 0);
    ok(&mut c, udp(R1, 53, OUT, 21000), Side::Outside, 1);
    // Capacity.
    for p in 0..4 {
        ok(&mut c2, udp(A, 21000 + p, R1, 53), IN1, 0);
    }
    assert_eq!(
        run(&mut c2, udp(B, 21000, R1, 53), IN1, 0).0,
        Err(NatDrop::TableFull)
    );
    ok(&mut c2, udp(A, 21000, R1, 53), IN1, 1);
    // Expired sessions give their slots back to new connections.
    ok(&mut c2, udp(B, 21000, R1, 53), IN1, 31_000);
}

#[test]
fn a_crowded_port_range_is_a_counted_drop_after_bounded_probes() {
    let mut c = ct(Config {
        ports: PortRange::new(20000, 20007),
        probes: 8,
        ..base()
    });
    let mut exhausted = 0;
    for h in 0..32u8 {
        match run(&mut c, udp([10, 0, 1, h], 40000, R1, 53), IN1, 0).0 {
            Ok(_) => {}
            Err(NatDrop::PortsExhausted) => exhausted += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(c.mappings(0).count(), 8, "every port given out");
    assert_eq!(exhausted, 24);
}

/// Publishes TCP host port 8080 to WEB:80 (zone 2).
fn publish_web(c: &mut Conntrack) {
    let mut p = Published::new();
    p.publish(DnatRule {
        proto: ipproto::TCP,
        host_ip: None,
        host_port: 8080,
        inside_ip: WEB.into(),
        inside_port: 80,
        zone: 2,
    })
    .unwrap();
    c.set_published(p);
}

#[test]
fn published_ports_keep_the_client_address_and_replies_leave_from_the_host_port() {
    let mut c = ct(base());
    publish_web(&mut c);
    let (d, f) = ok(&mut c, tcp(R1, 5555, OUT, 8080, SYN), Side::Outside, 0);
    assert_eq!(
        (src_of(&f), dst_of(&f)),
        ((R1, 5555), (WEB, 80)),
        "client address preserved"
    );
    assert_eq!(d.egress, Egress::Inside(2));
    let (d, f) = ok(&mut c, tcp(WEB, 80, R1, 5555, SYN | ACK), IN2, 1);
    assert_eq!(
        (src_of(&f), d.egress, d.state),
        ((OUT, 8080), Egress::Outside, ConnState::SynRecv)
    );
    assert_eq!(
        c.endpoint_count(2, WEB.into()),
        1,
        "counted against the inside endpoint"
    );
    let e = c.entries(1).next().unwrap();
    assert_eq!((e.nat, e.zone), (crate::show::NatKind::Dnat, Some(2)));
}

#[test]
fn hairpin_to_a_published_port_and_to_another_endpoints_mapping() {
    let mut c = ct(base());
    publish_web(&mut c);
    let (d, f) = ok(&mut c, tcp(A, 21000, OUT, 8080, SYN), IN1, 0);
    assert_eq!(
        (src_of(&f), dst_of(&f), d.egress),
        ((OUT, 21000), (WEB, 80), Egress::Inside(2))
    );
    let (d, f) = ok(&mut c, tcp(WEB, 80, OUT, 21000, SYN | ACK), IN2, 1);
    assert_eq!(
        (src_of(&f), dst_of(&f), d.egress),
        ((OUT, 8080), (A, 21000), Egress::Inside(1))
    );
    // B's UDP mapping, reached by A through the outside address.
    let (_, f) = ok(&mut c, udp(B, 22000, R1, 3478), IN1, 2);
    assert_eq!(src_of(&f), (OUT, 22000));
    let (d, f) = ok(&mut c, udp(A, 21001, OUT, 22000), IN1, 3);
    assert_eq!(
        (src_of(&f), dst_of(&f), d.egress),
        ((OUT, 21001), (B, 22000), Egress::Inside(1))
    );
    let (_, f) = ok(&mut c, udp(B, 22000, OUT, 21001), IN1, 4);
    assert_eq!((src_of(&f), dst_of(&f)), ((OUT, 22000), (A, 21001)));
    assert_eq!(
        run(&mut c, udp(A, 21002, OUT, 23456), IN1, 5).0,
        Err(NatDrop::NoMapping)
    );
    assert_eq!(
        c.entries(5)
            .filter(|e| e.nat == crate::show::NatKind::Both)
            .count(),
        2
    );
}

#[test]
fn icmp_echo_ids_are_mapped_like_ports() {
    let mut c = ct(base());
    let (d, f) = ok(&mut c, ping(A, R1, 21007, false), IN1, 0);
    assert_eq!(
        (&f[26..30], u16::from_be_bytes([f[38], f[39]])),
        (&OUT[..], 21007)
    );
    assert_eq!(d.state, ConnState::Unreplied);
    let (_, g) = ok(&mut c, ping(B, R1, 21007, false), IN1, 0);
    let bid = u16::from_be_bytes([g[38], g[39]]);
    assert_ne!(bid, 21007);
    let (d, f) = ok(&mut c, ping(R1, OUT, bid, true), Side::Outside, 1);
    assert_eq!(
        (&f[30..34], u16::from_be_bytes([f[38], f[39]]), d.state),
        (&B[..], 21007, ConnState::Replied)
    );
    assert_eq!(
        run(&mut c, ping(R1, OUT, bid, false), Side::Outside, 1).0,
        Err(NatDrop::Invalid),
        "a request from the reply side"
    );
    assert_eq!(
        run(&mut c, ping(R1, OUT, 29000, true), Side::Outside, 1).0,
        Err(NatDrop::Invalid),
        "a stray reply"
    );
    assert_eq!(
        run(&mut c, ping(A, R1, 1, true), IN1, 1).0,
        Err(NatDrop::Invalid),
        "a reply cannot open"
    );
    assert_eq!(c.entries(1).next().map(|e| e.timeout_s), Some(30));
}

/// An ICMP destination unreachable from `from` to `to` quoting the IPv4 packet of `inner`.
fn unreachable(from: [u8; 4], to: [u8; 4], inner: &[u8]) -> Vec<u8> {
    use etherparse::{Icmpv4Type, icmpv4::DestUnreachableHeader};
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
        .ipv4(from, to, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut f, &inner[14..])
        .unwrap();
    f
}

#[test]
fn icmp_errors_follow_the_connection_they_quote() {
    let mut c = ct(base());
    let (_, out) = ok(&mut c, udp(A, 21000, R1, 53), IN1, 0);
    // A router on the way says fragmentation needed, quoting the masqueraded packet.
    let (d, f) = ok(
        &mut c,
        unreachable([192, 0, 2, 254], OUT, &out),
        Side::Outside,
        1,
    );
    assert!(d.related && d.egress == Egress::Inside(1));
    assert_eq!((&f[26..30], &f[30..34]), (&[192, 0, 2, 254][..], &A[..]));
    assert_eq!(
        &f[42 + 12..42 + 16],
        &A,
        "quoted source is the inside host again"
    );
    assert_eq!(u16::from_be_bytes([f[62], f[63]]), 21000);
    assert_eq!(
        c.entries(1).next().map(|e| e.state),
        Some(ConnState::Unreplied),
        "an error changes no state"
    );
    // An error quoting nothing we know.
    let stray = udp(OUT, 29999, R2, 53);
    assert_eq!(
        run(&mut c, unreachable(R2, OUT, &stray), Side::Outside, 1).0,
        Err(NatDrop::UnrelatedIcmp)
    );
    // From inside: a published UDP port's endpoint refuses the client: its address is hidden.
    let mut p = Published::new();
    p.publish(DnatRule {
        proto: ipproto::UDP,
        host_ip: None,
        host_port: 5353,
        inside_ip: WEB.into(),
        inside_port: 53,
        zone: 2,
    })
    .unwrap();
    c.set_published(p);
    let (_, inbound) = ok(&mut c, udp(R2, 7777, OUT, 5353), Side::Outside, 2);
    let (d, f) = ok(&mut c, unreachable(WEB, R2, &inbound), IN2, 3);
    assert_eq!(
        (&f[26..30], &f[30..34], d.egress),
        (&OUT[..], &R2[..], Egress::Outside)
    );
    assert_eq!(
        &f[42 + 16..42 + 20],
        &OUT,
        "quoted destination is the host port again"
    );
    assert_eq!(u16::from_be_bytes([f[64], f[65]]), 5353);
}

#[test]
fn dry_runs_describe_and_rewrite_but_create_and_refresh_nothing() {
    let mut c = ct(base());
    let mut f = tcp(A, 21000, R1, 80, SYN);
    let key = classify(&f, 1, 0).unwrap();
    let o = c
        .process(&mut f, &key, &Offload::NONE, IN1, 0, true)
        .unwrap();
    let Outcome::Tracked(d) = o else { panic!() };
    assert!(d.new && d.session.is_none());
    assert_eq!(src_of(&f), (OUT, 21000));
    assert!(c.is_empty() && c.mappings(0).count() == 0 && c.stats().created == 0);
    assert_eq!(
        o.to_string(),
        "new tcp SYN_SENT original 10.0.0.2:21000->203.0.113.1:80 => 198.18.0.1:21000->203.0.113.1:80 (out)"
    );
    ok(&mut c, tcp(A, 21000, R1, 80, SYN), IN1, 0);
    let mut g = tcp(R1, 80, OUT, 21000, SYN | ACK);
    let key = classify(&g, 1, 0).unwrap();
    let o = c
        .process(&mut g, &key, &Offload::NONE, Side::Outside, 5000, true)
        .unwrap();
    assert!(matches!(
        o,
        Outcome::Tracked(Decision {
            state: ConnState::SynRecv,
            ..
        })
    ));
    let e = c.entries(5000).next().unwrap();
    assert_eq!(
        (e.state, e.timeout_s),
        (ConnState::SynSent, 115),
        "not advanced, not refreshed"
    );
}

#[test]
fn super_frames_with_partial_checksums_are_translated_whole() {
    let mut c = ct(base());
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(A, R1, 64)
        .tcp(21000, 80, 1, 1000)
        .syn()
        .write(&mut f, &[7u8; 3000])
        .unwrap();
    // The TAP's form: the TCP field holds the pseudo-header sum.
    let l4_len = (f.len() - 34) as u16;
    let mut ph = f[26..34].to_vec();
    ph.extend_from_slice(&[0, 6]);
    ph.extend_from_slice(&l4_len.to_be_bytes());
    let sum = !u16::from_be_bytes(xvs_stage::checksum::internet_checksum(&ph));
    f[50..52].copy_from_slice(&sum.to_be_bytes());
    let off = Offload::tcpv4_gso(1448);
    let key = classify(&f, 1, 0).unwrap();
    c.process(&mut f, &key, &off, IN1, 0, false).unwrap();
    assert_eq!(src_of(&f), (OUT, 21000));
    complete_checksum(&mut f, &off).unwrap();
    assert!(checksums_ok(&f));
}

#[test]
fn untracked_fragments_and_unsupported_protocols() {
    let mut c = ct(base());
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6([1; 16], [2; 16], 64)
        .udp(1, 2)
        .write(&mut v6, b"x")
        .unwrap();
    let key = classify(&v6, 1, 0).unwrap();
    assert_eq!(
        c.process(&mut v6, &key, &Offload::NONE, IN1, 0, false),
        Ok(Outcome::Untracked)
    );
    let mut frag = udp(A, 21000, R1, 53);
    frag[20] = 0x20; // more fragments
    let key = classify(&frag, 1, 0).unwrap();
    assert_eq!(
        c.process(&mut frag, &key, &Offload::NONE, IN1, 0, false),
        Err(NatDrop::Fragment)
    );
    let mut gre = udp(A, 21000, R1, 53);
    gre[23] = 47;
    let key = classify(&gre, 1, 0).unwrap();
    assert_eq!(
        c.process(&mut gre, &key, &Offload::NONE, IN1, 0, false),
        Err(NatDrop::UnsupportedProtocol)
    );
}

#[test]
fn flush_forgets_connections_and_mappings_but_not_published_ports() {
    let mut c = ct(base());
    publish_web(&mut c);
    ok(&mut c, udp(A, 21000, R1, 53), IN1, 0);
    ok(&mut c, tcp(R1, 1, OUT, 8080, SYN), Side::Outside, 0);
    assert_eq!(c.len(), 2);
    c.flush();
    assert!(c.is_empty() && c.mappings(0).count() == 0);
    assert_eq!(c.endpoint_count(1, A.into()), 0);
    assert_eq!(c.published().len(), 1);
    ok(&mut c, tcp(R1, 1, OUT, 8080, SYN), Side::Outside, 0);
}

#[test]
fn memory_per_session_is_reported() {
    let c = Conntrack::new(Config {
        capacity: 1 << 16,
        ..base()
    });
    let per = c.bytes_per_session();
    println!("conntrack: {per} bytes per session reserved at capacity (table: slab + index)");
    assert!((64..=256).contains(&per), "{per}");
}

proptest! {
    /// Random UDP traffic from a few inside endpoints to a few remotes, replies, and time
    /// passing: counts add up, limits hold, every connection is found from both directions,
    /// and one inside endpoint has one outside port.
    #[test]
    fn table_invariants_hold_under_random_traffic(
        ops in proptest::collection::vec((0u8..4, 0u8..6, 0u8..3, 0u16..4, 0u64..40_000), 1..150),
    ) {
        let mut c = ct(Config { capacity: 24, per_endpoint: 6, ports: PortRange::new(20000, 20015), probes: 4, ..base() });
        let mut now = 0;
        for (kind, host, remote, port, dt) in ops {
            now += dt;
            let inside = [10, 0, 0, 10 + host];
            let rem = [203, 0, 113, 1 + remote];
            let sport = 20000 + port;
            match kind {
                0 | 1 => { let _ = run(&mut c, udp(inside, sport, rem, 53), IN1, now); }
                2 => { let _ = run(&mut c, udp(rem, 53, OUT, sport), Side::Outside, now); }
                _ => c.tick(now),
            }
            let entries: Vec<ConnEntry> = c.entries(now).collect();
            prop_assert!(c.len() <= 24);
            let counted: u32 = (0..6).map(|h| c.endpoint_count(1, Ipv4Addr::new(10, 0, 0, 10 + h))).sum();
            prop_assert_eq!(counted, c.len(), "endpoint counts add up to the table");
            for h in 0..6 {
                prop_assert!(c.endpoint_count(1, Ipv4Addr::new(10, 0, 0, 10 + h)) <= 6);
            }
            for e in &entries {
                let orig = Tuple::new(ipproto::UDP, e.orig.src, e.orig.sport, e.orig.dst, e.orig.dport);
                let reply = Tuple::new(ipproto::UDP, e.reply.src, e.reply.sport, e.reply.dst, e.reply.dport);
                let (a, da) = c.table.lookup(&orig).unwrap();
                let (b, db) = c.table.lookup(&reply).unwrap();
                prop_assert_eq!((a, da, db), (b, Dir::Original, Dir::Reply));
                for f in &entries {
                    if (f.orig.src, f.orig.sport) == (e.orig.src, e.orig.sport) {
                        prop_assert_eq!(f.reply.dport, e.reply.dport, "endpoint-independent mapping");
                    }
                }
            }
        }
    }
}

#[test]
fn a_warmed_burst_decides_as_frame_by_frame() {
    // A burst whose frames depend on each other: a connection opened, then its reply and
    // more of it, a TCP handshake, a ping, an unsolicited reply.
    let frames = vec![
        udp(A, 40000, R1, 53),
        udp(A, 40000, R1, 53),
        udp(B, 40001, R2, 53),
        tcp(A, 41000, R1, 80, SYN),
        ping(A, R1, 7, false),
        udp(R1, 53, OUT, 40000),
        tcp(A, 41000, R1, 80, ACK),
        udp(R2, 99, OUT, 12345),
        udp(A, 40000, R1, 53),
    ];
    let keys: Vec<_> = frames.iter().map(|f| classify(f, 1, 0).unwrap()).collect();
    let (mut one, mut burst) = (ct(base()), ct(base()));
    let mut by_one = frames.clone();
    let want: Vec<_> = by_one
        .iter_mut()
        .zip(&keys)
        .map(|(f, k)| one.process(f, k, &Offload::NONE, IN1, 5, false))
        .collect();
    let mut by_burst = frames.clone();
    let mut got = vec![Ok(Outcome::Untracked); frames.len()];
    burst.process_burst(
        &mut by_burst,
        &keys,
        &Offload::NONE,
        IN1,
        5,
        false,
        &mut got,
    );
    assert_eq!(got, want);
    assert_eq!(by_burst, by_one);
    assert_eq!(burst.len(), one.len());
    assert!(want.iter().filter(|r| r.is_ok()).count() >= 6);
}
