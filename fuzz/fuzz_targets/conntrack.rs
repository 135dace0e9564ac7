//! Connection tracking and NAT (xvs-nat `Conntrack`) under a fuzzer-chosen configuration and
//! sequence of packets: valid TCP, UDP and ICMP echo frames built by etherparse from
//! fuzzer-chosen fields, ICMP errors quoting frames that left earlier, arbitrary frames, dry
//! runs, ticks and flushes, on a virtual clock the fuzzer advances.
//!
//! Checked after every step: no panic; the table never holds more than its capacity, nor an
//! inside endpoint more than its limit; every translated frame has valid IPv4 and L4
//! checksums (for an arbitrary frame: when it had them) and still classifies; a frame left
//! untracked is unchanged; a dry run creates nothing; a twin table fed the same frames in
//! bursts (`process_burst`) decides and rewrites exactly as the table fed them one by one.
#![no_main]

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use arbitrary::{Arbitrary, Unstructured};
use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};
use libfuzzer_sys::fuzz_target;
use xvs_nat::{Config, Conntrack, DnatRule, NatDrop, Outcome, PortRange, Published, Side};
use xvs_stage::classify::{FlowKey, classify, ipproto};
use xvs_stage::offload::Offload;
use xvs_stage::testing::checksums_ok;

const OUT: [u8; 4] = [198, 18, 0, 1];
/// Inside endpoints: zone 1, except the last (zone 2).
const INSIDE: [[u8; 4]; 5] = [
    [10, 0, 0, 2],
    [10, 0, 0, 3],
    [10, 0, 0, 4],
    [10, 0, 0, 5],
    [10, 1, 0, 5],
];
const REMOTE: [[u8; 4]; 3] = [[203, 0, 113, 1], [203, 0, 113, 2], [8, 8, 8, 8]];
const PORTS: [u16; 10] = [53, 80, 8080, 5353, 20000, 20001, 20002, 20003, 40000, 40001];

#[derive(Debug, Arbitrary)]
struct Setup {
    capacity: u8,
    per_endpoint: u8,
    port_count: u8,
    probes: u8,
    sweep: u8,
    masquerade: bool,
    publish: bool,
    seed: u64,
}

#[derive(Debug, Arbitrary)]
enum SideSel {
    Zone1,
    Zone2,
    Outside,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Tcp {
        side: SideSel,
        src: u8,
        sport: u8,
        dst: u8,
        dport: u8,
        flags: u8,
    },
    Udp {
        side: SideSel,
        src: u8,
        sport: u8,
        dst: u8,
        dport: u8,
    },
    Ping {
        side: SideSel,
        src: u8,
        dst: u8,
        id: u16,
        reply: bool,
    },
    /// An ICMP error from a remote quoting one of the last frames translated.
    Unreachable {
        side: SideSel,
        which: u8,
        from: u8,
    },
    Raw {
        side: SideSel,
        bytes: Vec<u8>,
    },
    DryRun {
        side: SideSel,
        src: u8,
        sport: u8,
        dst: u8,
        dport: u8,
    },
    Advance(u32),
    Tick,
    Flush,
}

fn addr(i: u8) -> [u8; 4] {
    let all = INSIDE.len() + REMOTE.len() + 1;
    match usize::from(i) % all {
        n if n < INSIDE.len() => INSIDE[n],
        n if n < INSIDE.len() + REMOTE.len() => REMOTE[n - INSIDE.len()],
        _ => OUT,
    }
}

fn port(i: u8) -> u16 {
    PORTS
        .get(usize::from(i))
        .copied()
        .unwrap_or(1024 + u16::from(i))
}

fn side(s: &SideSel) -> Side {
    match s {
        SideSel::Zone1 => Side::Inside { zone: 1 },
        SideSel::Zone2 => Side::Inside { zone: 2 },
        SideSel::Outside => Side::Outside,
    }
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 4096);
    if flags & 0x02 != 0 {
        b = b.syn();
    }
    if flags & 0x10 != 0 {
        b = b.ack(1);
    }
    if flags & 0x01 != 0 {
        b = b.fin();
    }
    if flags & 0x04 != 0 {
        b = b.rst();
    }
    let mut f = Vec::new();
    b.write(&mut f, b"data").expect("valid frame");
    f
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut f, b"datagram")
        .expect("valid frame");
    f
}

fn ping(src: [u8; 4], dst: [u8; 4], id: u16, reply: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, 1)
    } else {
        b.icmpv4_echo_request(id, 1)
    };
    let mut f = Vec::new();
    b.write(&mut f, b"12345678").expect("valid frame");
    f
}

fn unreachable_quoting(from: [u8; 4], to: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
        .ipv4(from, to, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut f, quoted.get(14..).unwrap_or_default())
        .expect("valid frame");
    f
}

/// A frame `Run::ct` has processed, waiting for `Run::twin` to process its burst.
struct Pending {
    before: Vec<u8>,
    key: FlowKey,
    result: Result<Outcome, NatDrop>,
    after: Vec<u8>,
}

struct Run {
    ct: Conntrack,
    /// The same table fed the same frames a burst at a time (`process_burst`): it must decide
    /// exactly as `ct` does frame by frame.
    twin: Conntrack,
    pending: Vec<Pending>,
    pending_side: Side,
    now: u64,
    /// The last frames translated, as they left (what an ICMP error quotes).
    sent: VecDeque<Vec<u8>>,
}

impl Run {
    /// Tracks `frame`; `valid` says its checksums were right before.
    fn packet(&mut self, mut frame: Vec<u8>, side: Side, valid: bool, dry_run: bool) {
        let Ok(key) = classify(&frame, 1, 0) else {
            return;
        };
        if dry_run || side != self.pending_side || self.pending.len() == 40 {
            self.flush_burst();
            self.pending_side = side;
        }
        let before = frame.clone();
        let len = self.ct.len();
        let r = self
            .ct
            .process(&mut frame, &key, &Offload::NONE, side, self.now, dry_run);
        if !dry_run {
            self.pending.push(Pending {
                before: before.clone(),
                key,
                result: r,
                after: frame.clone(),
            });
        }
        match r {
            Ok(Outcome::Tracked(d)) => {
                let _ = d.to_string();
                if valid {
                    assert!(
                        checksums_ok(&frame),
                        "checksums after {d}: {before:02x?} -> {frame:02x?}"
                    );
                }
                assert!(
                    classify(&frame, 1, 0).is_ok(),
                    "translated frame classifies"
                );
                if !dry_run {
                    if self.sent.len() == 4 {
                        self.sent.pop_front();
                    }
                    self.sent.push_back(frame);
                }
            }
            Ok(Outcome::Untracked) => assert_eq!(frame, before, "untracked frame unchanged"),
            Err(_) => {}
        }
        if dry_run {
            assert_eq!(self.ct.len(), len, "a dry run creates nothing");
        }
    }

    /// Runs the pending frames through the twin as one burst and compares.
    fn flush_burst(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut frames: Vec<Vec<u8>> = self.pending.iter().map(|p| p.before.clone()).collect();
        let keys: Vec<FlowKey> = self.pending.iter().map(|p| p.key).collect();
        let mut out = vec![Ok(Outcome::Untracked); frames.len()];
        self.twin.process_burst(
            &mut frames,
            &keys,
            &Offload::NONE,
            self.pending_side,
            self.now,
            false,
            &mut out,
        );
        for (i, p) in self.pending.drain(..).enumerate() {
            assert_eq!(
                out[i], p.result,
                "burst frame {i} decided as frame by frame"
            );
            assert_eq!(
                frames[i], p.after,
                "burst frame {i} rewritten as frame by frame"
            );
        }
        assert_eq!(self.twin.len(), self.ct.len());
    }
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let s = Setup::arbitrary(u)?;
    let capacity = u32::from(s.capacity % 64) + 1;
    let per_endpoint = u32::from(s.per_endpoint % 16) + 1;
    let cfg = Config {
        capacity,
        per_endpoint,
        masquerade: s.masquerade.then(|| Ipv4Addr::from(OUT)),
        ports: PortRange::new(20000, 20000 + u16::from(s.port_count % 16)),
        probes: u32::from(s.probes % 8) + 1,
        sweep_per_tick: u32::from(s.sweep % 64) + 1,
        seed: s.seed,
        ..Config::default()
    };
    let mut ct = Conntrack::new(cfg.clone());
    let mut twin = Conntrack::new(cfg);
    if s.publish {
        let mut p = Published::new();
        for (proto, host_port, inside, inside_port, zone) in [
            (ipproto::TCP, 8080, INSIDE[4], 80, 2),
            (ipproto::UDP, 5353, INSIDE[0], 53, 1),
        ] {
            p.publish(DnatRule {
                proto,
                host_ip: None,
                host_port,
                inside_ip: inside.into(),
                inside_port,
                zone,
            })
            .expect("distinct published ports");
        }
        ct.set_published(p.clone());
        twin.set_published(p);
    }
    let mut r = Run {
        ct,
        twin,
        pending: Vec::new(),
        pending_side: Side::Outside,
        now: 0,
        sent: VecDeque::new(),
    };
    let mut steps = 0;
    while !u.is_empty() && steps < 256 {
        steps += 1;
        match Op::arbitrary(u)? {
            Op::Tcp {
                side: sd,
                src,
                sport,
                dst,
                dport,
                flags,
            } => {
                let f = tcp(addr(src), port(sport), addr(dst), port(dport), flags);
                r.packet(f, side(&sd), true, false);
            }
            Op::Udp {
                side: sd,
                src,
                sport,
                dst,
                dport,
            } => {
                let f = udp(addr(src), port(sport), addr(dst), port(dport));
                r.packet(f, side(&sd), true, false);
            }
            Op::Ping {
                side: sd,
                src,
                dst,
                id,
                reply,
            } => {
                let f = ping(addr(src), addr(dst), id % 8, reply);
                r.packet(f, side(&sd), true, false);
            }
            Op::Unreachable {
                side: sd,
                which,
                from,
            } => {
                if r.sent.is_empty() {
                    continue;
                }
                let q = r.sent[usize::from(which) % r.sent.len()].clone();
                // Sent back to the quoted packet's source.
                let to: [u8; 4] = q[26..30].try_into().unwrap_or(OUT);
                let f = unreachable_quoting(addr(from), to, &q);
                r.packet(f, side(&sd), true, false);
            }
            Op::Raw { side: sd, bytes } => {
                let valid = checksums_ok(&bytes);
                r.packet(bytes, side(&sd), valid, false);
            }
            Op::DryRun {
                side: sd,
                src,
                sport,
                dst,
                dport,
            } => {
                let f = udp(addr(src), port(sport), addr(dst), port(dport));
                r.packet(f, side(&sd), true, true);
            }
            Op::Advance(ms) => {
                r.flush_burst();
                r.now += u64::from(ms);
            }
            Op::Tick => {
                r.flush_burst();
                r.ct.tick(r.now);
                r.twin.tick(r.now);
            }
            Op::Flush => {
                r.flush_burst();
                r.ct.flush();
                r.twin.flush();
            }
        }
        assert!(
            r.ct.len() <= capacity,
            "{} connections > capacity {capacity}",
            r.ct.len()
        );
        assert!(r.ct.entries(r.now).count() as u32 <= capacity);
        for zone in [1, 2] {
            for a in INSIDE.iter().chain(&REMOTE).chain([&OUT]) {
                let n = r.ct.endpoint_count(zone, Ipv4Addr::from(*a));
                assert!(
                    n <= per_endpoint,
                    "endpoint {a:?} in zone {zone} holds {n} > {per_endpoint}"
                );
            }
        }
    }
    r.flush_burst();
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
