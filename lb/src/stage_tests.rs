//! The lb stage on literal frames (etherparse-built): ARP and ping of a VIP, DNAT and its
//! reverse with full and partial checksums, schedulers' spread, refusals with RSTs, the
//! session table's limits and timers on a virtual clock, backends removed and drained, dry
//! runs, removal of a service and adoption by a new stage.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::backend::BackendState;
use crate::rewrite::tests::{checksums_ok, make_partial};
use crate::service::{Service, ServiceSpec};
use crate::sessions::{CLOSING_TIMEOUT_MS, SessionState};
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, PacketBuilder,
    SlicedPacket, TransportSlice,
};
use xvs_stage::classify::{FlowKey, classify};
use xvs_stage::domain::Domain;
use xvs_stage::drop::DropCounters;
use xvs_stage::frame::FramePool;
use xvs_stage::trace::TraceLog;
use xvs_stage::wire::PortId;

const GW: Mac = Mac([2, 0x42, 10, 0, 0, 1]);
const VIP: [u8; 4] = [10, 0, 0, 100];
const CLIENT: [u8; 4] = [10, 0, 0, 5];
const CLIENT_MAC: Mac = Mac([2, 0, 0, 0, 0, 5]);
const CLIENT_PORT: PortId = 5;
const LOCAL_PORT: PortId = 1;

/// Backend `n` (0, 1, 2): 10.0.0.(2+n):8080 at 02:00:00:00:00:(2+n), on port 2+n.
fn backend_ip(n: u8) -> [u8; 4] {
    [10, 0, 0, 2 + n]
}
fn backend_mac(n: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, 2 + n])
}
fn backend_port(n: u8) -> PortId {
    PortId::from(2 + n)
}
fn backend_of(ip: [u8; 4]) -> u8 {
    ip[3] - 2
}

/// TCP flags of a test segment.
const SYN: u8 = tcp_flags::SYN;
const ACK: u8 = tcp_flags::ACK;
const FIN: u8 = tcp_flags::FIN;
const RST: u8 = tcp_flags::RST;

struct Seg {
    from: ([u8; 4], u16, Mac),
    to: ([u8; 4], u16, Mac),
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &'static [u8],
}

fn tcp(s: Seg) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(s.from.2.0, s.to.2.0)
        .ipv4(s.from.0, s.to.0, 64)
        .tcp(s.from.1, s.to.1, s.seq, 64000);
    if s.flags & SYN != 0 {
        b = b.syn();
    }
    if s.flags & FIN != 0 {
        b = b.fin();
    }
    if s.flags & RST != 0 {
        b = b.rst();
    }
    if s.flags & ACK != 0 {
        b = b.ack(s.ack);
    }
    let mut f = Vec::new();
    b.write(&mut f, s.payload).unwrap();
    f
}

/// A client's segment to VIP:80 from `sport`.
fn to_vip(sport: u16, flags: u8) -> Vec<u8> {
    tcp(Seg {
        from: (CLIENT, sport, CLIENT_MAC),
        to: (VIP, 80, GW),
        flags,
        seq: 1000,
        ack: 5000,
        payload: if flags & SYN != 0 { b"" } else { b"hello" },
    })
}

/// A frame's TCP flags and sequence number.
struct TcpOf {
    rst: bool,
    ack: bool,
    seq: u32,
}

fn tcp_of(f: &[u8]) -> TcpOf {
    let p = SlicedPacket::from_ethernet(f).unwrap();
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!("not TCP")
    };
    TcpOf {
        rst: t.rst(),
        ack: t.ack(),
        seq: t.sequence_number(),
    }
}

/// Backend `n`'s segment back to the client's `dport`.
fn from_backend(n: u8, dport: u16, flags: u8) -> Vec<u8> {
    tcp(Seg {
        from: (backend_ip(n), 8080, backend_mac(n)),
        to: (CLIENT, dport, CLIENT_MAC),
        flags,
        seq: 5000,
        ack: 1001,
        payload: b"",
    })
}

fn udp(sport: u16, zero_checksum: bool) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC.0, GW.0)
        .ipv4(CLIENT, VIP, 64)
        .udp(sport, 53)
        .write(&mut f, b"query")
        .unwrap();
    if zero_checksum {
        f[40..42].fill(0);
    }
    f
}

/// One frame after the stage: its bytes, verdict and key, and frames made.
struct Out {
    bytes: Vec<u8>,
    verdict: Verdict,
    key: FlowKey,
    made: u64,
    /// Frames the stage added to the batch: bytes and verdict.
    extra: Vec<(Vec<u8>, Verdict)>,
}

impl Out {
    fn ip(&self) -> ([u8; 4], [u8; 4]) {
        let f = &self.bytes;
        (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap())
    }
    fn ports(&self) -> (u16, u16) {
        let f = &self.bytes;
        (
            u16::from_be_bytes([f[34], f[35]]),
            u16::from_be_bytes([f[36], f[37]]),
        )
    }
    fn macs(&self) -> (Mac, Mac) {
        let f = &self.bytes;
        (
            Mac(f[0..6].try_into().unwrap()),
            Mac(f[6..12].try_into().unwrap()),
        )
    }
}

/// A network with service 10.0.0.100 tcp/80:8080 over `n` backends (rr unless changed).
struct Net {
    stage: LbStage,
    service: Service,
    pool: FramePool,
    domain: Domain,
    drops: DropCounters,
    now: u64,
}

fn stations() -> Arc<HashMap<Ipv4Addr, Mac>> {
    let mut m: HashMap<Ipv4Addr, Mac> = (0..3)
        .map(|n| (Ipv4Addr::from(backend_ip(n)), backend_mac(n)))
        .collect();
    m.insert(Ipv4Addr::from(CLIENT), CLIENT_MAC);
    Arc::new(m)
}

fn config(capacity: u32) -> LbConfig {
    LbConfig {
        gateway_mac: GW,
        stations: stations(),
        capacity,
        spread: None,
    }
}

impl Net {
    fn new(backends: u8) -> Net {
        Net::with(backends, |_| {})
    }

    fn with(backends: u8, tune: impl FnOnce(&mut ServiceSpec)) -> Net {
        let mut spec = ServiceSpec::new(IpAddr::V4(VIP.into()), "tcp/80:8080".parse().unwrap());
        tune(&mut spec);
        let mut service = Service::new(spec, 1).unwrap();
        for n in 0..backends {
            service
                .add_backend(
                    Ipv4Addr::from(backend_ip(n)).to_string().parse().unwrap(),
                    1,
                )
                .unwrap();
        }
        let mut stage = LbStage::new(0);
        stage.set_config(config(DEFAULT_CAPACITY));
        stage.install(service.snapshot());
        Net {
            stage,
            service,
            pool: FramePool::new_heap(64).unwrap(),
            domain: Domain::default(),
            drops: DropCounters::default(),
            now: 1_000,
        }
    }

    fn push(&mut self) {
        let t = self.service.snapshot();
        self.stage.install(t);
    }

    fn run_full(
        &mut self,
        bytes: &[u8],
        in_port: PortId,
        offload: Offload,
        patched: bool,
        trace: Option<&mut TraceLog>,
    ) -> Out {
        let mut b = Batch::default();
        let mut f = self.pool.alloc_copy(bytes).unwrap();
        f.set_offload(offload);
        b.frames.push(f);
        b.begin(7, in_port, 0);
        b.keys[0] = classify(bytes, in_port, 0).unwrap();
        if patched {
            b.meta[0].patched_from = Some(1);
        }
        let traced = trace.is_some();
        let mut ctx = StageContext::new(&mut self.pool, &self.domain, &self.drops, self.now);
        if let Some(log) = trace {
            ctx = ctx.traced(log);
        }
        self.stage.process(&mut ctx, &mut b);
        let made = ctx.generated;
        let out = Out {
            bytes: self.pool.data(&b.frames[0]).to_vec(),
            verdict: b.verdicts[0],
            key: b.keys[0],
            made,
            extra: (1..b.len())
                .map(|i| (self.pool.data(&b.frames[i]).to_vec(), b.verdicts[i]))
                .collect(),
        };
        b.free_all(&mut self.pool);
        // As the engine does: a verdict's drop is counted when the frame is let go.
        if let (Verdict::Drop(r), false) = (out.verdict, traced) {
            self.drops.add(r, 1);
        }
        out
    }

    fn run(&mut self, bytes: &[u8], in_port: PortId) -> Out {
        self.run_full(bytes, in_port, Offload::NONE, false, None)
    }

    fn count(&self, r: LbDrop) -> u64 {
        self.drops.get(r)
    }

    fn active(&self) -> Vec<u64> {
        self.service.backends().map(|b| b.active).collect()
    }
}

fn dropped(r: LbDrop) -> Verdict {
    Verdict::Drop(r.into())
}

fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    Ethernet2Header {
        source: CLIENT_MAC.0,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    }
    .write(&mut f)
    .unwrap();
    ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &CLIENT_MAC.0,
        &CLIENT,
        &[0; 6],
        &target,
    )
    .unwrap()
    .write(&mut f)
    .unwrap();
    f
}

#[test]
fn arp_for_a_vip_is_answered_with_the_gateway_mac() {
    let mut net = Net::new(1);
    let out = net.run(&arp_request(VIP), CLIENT_PORT);
    assert_eq!(out.verdict, Verdict::Output(CLIENT_PORT));
    assert_eq!(out.macs(), (CLIENT_MAC, GW));
    let arp = ArpPacket::from_slice(&out.bytes[14..]).unwrap();
    assert_eq!(arp.operation, ArpOperation::REPLY);
    assert_eq!(
        (arp.sender_hw_addr(), arp.sender_protocol_addr()),
        (&GW.0[..], &VIP[..])
    );
    assert_eq!(arp.target_protocol_addr(), &CLIENT);
    assert_eq!(out.key.dl_dst, CLIENT_MAC);

    let other = arp_request(backend_ip(0));
    let out = net.run(&other, CLIENT_PORT);
    assert_eq!(
        (out.verdict, &out.bytes),
        (Verdict::Next, &other),
        "not a VIP: untouched"
    );

    let mut unset = Net::new(1);
    unset.stage.set_config(LbConfig::default());
    let req = arp_request(VIP);
    assert_eq!(
        unset.run(&req, CLIENT_PORT).verdict,
        Verdict::Next,
        "no gateway MAC yet"
    );
}

#[test]
fn a_ping_of_a_vip_is_answered() {
    let mut net = Net::new(1);
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC.0, GW.0)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 2)
        .write(&mut f, b"ping")
        .unwrap();
    let out = net.run(&f, CLIENT_PORT);
    assert_eq!(out.verdict, Verdict::Output(CLIENT_PORT));
    assert_eq!(out.macs(), (CLIENT_MAC, GW));
    assert_eq!(out.ip(), (VIP, CLIENT));
    assert_eq!(out.bytes[34], 0, "echo reply");
    assert_eq!(
        xvs_stage::checksum::internet_checksum(&out.bytes[34..]),
        [0, 0]
    );
    assert_eq!(
        xvs_stage::checksum::internet_checksum(&out.bytes[14..34]),
        [0, 0]
    );
    assert_eq!(out.made, 0, "the request itself went back");
}

#[test]
fn a_connection_is_dnated_to_one_backend_and_its_replies_come_from_the_vip() {
    let mut net = Net::new(3);
    let out = net.run(&to_vip(40000, SYN), CLIENT_PORT);
    assert_eq!(out.verdict, Verdict::Next, "l2 switches it");
    let (src, dst) = out.ip();
    assert_eq!(src, CLIENT, "no SNAT: the backend sees the client");
    let n = backend_of(dst);
    assert_eq!(out.ports(), (40000, 8080));
    assert_eq!(
        out.macs(),
        (backend_mac(n), CLIENT_MAC),
        "source MAC left as it was"
    );
    assert!(checksums_ok(&out.bytes));
    assert_eq!(
        (out.key.dl_dst, v4(&out.key.nw_dst), out.key.tp_dst),
        (backend_mac(n), u32::from_be_bytes(dst), 8080),
        "the key follows the rewrite"
    );
    assert_eq!(net.active()[usize::from(n)], 1);

    let reply = net.run(&from_backend(n, 40000, SYN | ACK), backend_port(n));
    assert_eq!(reply.verdict, Verdict::Next);
    assert_eq!(reply.ip(), (VIP, CLIENT));
    assert_eq!(reply.ports(), (80, 40000));
    assert_eq!(reply.macs(), (CLIENT_MAC, backend_mac(n)));
    assert!(checksums_ok(&reply.bytes));
    assert_eq!(
        (v4(&reply.key.nw_src), reply.key.tp_src),
        (u32::from_be_bytes(VIP), 80)
    );

    for _ in 0..5 {
        let out = net.run(&to_vip(40000, ACK), CLIENT_PORT);
        assert_eq!(
            out.ip().1,
            backend_ip(n),
            "the connection stays on its backend"
        );
        assert!(checksums_ok(&out.bytes));
    }
    let v = net.stage.sessions(net.now + 2_500);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].state, SessionState::Established);
    assert_eq!(
        v[0].to_string(),
        format!(
            "tcp 10.0.0.5:40000 -> 10.0.0.100:80 -> 10.0.0.{}:8080 established age 2s idle 2s timeout 900s",
            2 + n
        )
    );
}

#[test]
fn partial_checksums_from_a_tap_stay_right_through_both_rewrites() {
    let mut net = Net::new(1);
    let mut syn = to_vip(40000, SYN);
    let off = make_partial(&mut syn);
    let mut out = net.run_full(&syn, CLIENT_PORT, off, false, None);
    assert_eq!(out.ip().1, backend_ip(0));
    complete_checksum(&mut out.bytes, &off).unwrap();
    assert!(checksums_ok(&out.bytes));

    let mut reply = from_backend(0, 40000, SYN | ACK);
    let off = make_partial(&mut reply);
    let mut out = net.run_full(&reply, backend_port(0), off, false, None);
    assert_eq!(out.ip().0, VIP);
    complete_checksum(&mut out.bytes, &off).unwrap();
    assert!(checksums_ok(&out.bytes));
}

#[test]
fn udp_is_balanced_and_a_zero_checksum_stays_zero() {
    let mut net = Net::with(2, |s| s.port = "udp/53".parse().unwrap());
    let out = net.run(&udp(5353, false), CLIENT_PORT);
    assert_eq!(out.ports(), (5353, 53));
    assert!(checksums_ok(&out.bytes));
    let out = net.run(&udp(5354, true), CLIENT_PORT);
    assert_eq!(&out.bytes[40..42], &[0, 0]);
    assert!(checksums_ok(&out.bytes));
    assert_eq!(net.stage.len(), 2);
    assert_eq!(
        net.stage.sessions(net.now)[0].state,
        SessionState::Unreplied
    );
}

#[test]
fn rr_spreads_300_connections_over_3_backends_evenly() {
    let mut net = Net::new(3);
    let mut per = [0u32; 3];
    for p in 0..300 {
        let out = net.run(&to_vip(20000 + p, SYN), CLIENT_PORT);
        per[usize::from(backend_of(out.ip().1))] += 1;
    }
    assert_eq!(per, [100, 100, 100]);
    assert_eq!(net.active(), [100, 100, 100]);
}

#[test]
fn no_live_backend_answers_the_syn_with_a_rst() {
    let mut net = Net::new(0);
    let out = net.run(&to_vip(40000, SYN), CLIENT_PORT);
    assert_eq!(out.verdict, Verdict::Output(CLIENT_PORT));
    assert_eq!(
        (out.made, net.count(LbDrop::NoBackend)),
        (1, 1),
        "SYN dropped, RST made"
    );
    let p = SlicedPacket::from_ethernet(&out.bytes).unwrap();
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!()
    };
    assert!(t.rst() && t.ack() && !t.syn());
    assert_eq!((t.sequence_number(), t.acknowledgment_number()), (0, 1001));
    assert_eq!((t.source_port(), t.destination_port()), (80, 40000));
    assert_eq!(out.ip(), (VIP, CLIENT));
    assert_eq!(out.macs(), (CLIENT_MAC, GW));
    assert!(checksums_ok(&out.bytes));
    assert_eq!(net.stage.len(), 0);

    let mut u = Net::with(0, |s| s.port = "udp/53".parse().unwrap());
    assert_eq!(
        u.run(&udp(1, false), CLIENT_PORT).verdict,
        dropped(LbDrop::NoBackend)
    );
}

#[test]
fn an_outside_clients_rst_goes_back_the_way_it_came() {
    // DNATed to the VIP by the uplink's conntrack: it came over from the uplink, from and to
    // the gateway's MAC.
    let mut net = Net::new(0);
    let syn = tcp(Seg {
        from: ([203, 0, 113, 9], 50000, GW),
        to: (VIP, 80, GW),
        flags: SYN,
        seq: 7,
        ack: 0,
        payload: b"",
    });
    let out = net.run_full(&syn, LOCAL_PORT, Offload::NONE, true, None);
    assert_eq!(
        out.verdict,
        Verdict::Next,
        "routed back by l2 and the router"
    );
    assert_eq!(out.ip(), (VIP, [203, 0, 113, 9]));
    assert_eq!(out.key.dl_dst, GW);
}

#[test]
fn refusals_without_a_session_or_a_service() {
    let mut net = Net::new(1);
    // A segment of a connection the stage does not know is answered with a RST (the
    // client learns at once that it is gone); a RST of one is only dropped.
    for flags in [ACK, SYN | ACK] {
        let out = net.run(&to_vip(40000, flags), CLIENT_PORT);
        assert_eq!((out.verdict, out.made), (Verdict::Output(CLIENT_PORT), 1));
        assert_eq!(out.ip(), (VIP, CLIENT));
    }
    assert_eq!(
        net.run(&to_vip(40000, RST | ACK), CLIENT_PORT).verdict,
        dropped(LbDrop::NoSession)
    );
    assert_eq!(net.count(LbDrop::NoSession), 3);
    // Port 81: no service; TCP gets a RST, a RST nothing.
    let mut f = to_vip(40000, SYN);
    f[36..38].copy_from_slice(&81u16.to_be_bytes());
    let f = reparse_checksums(f);
    let out = net.run(&f, CLIENT_PORT);
    assert_eq!((out.verdict, out.made), (Verdict::Output(CLIENT_PORT), 1));
    assert_eq!(net.count(LbDrop::NoService), 1);
    let mut r = to_vip(40000, RST | ACK);
    r[36..38].copy_from_slice(&81u16.to_be_bytes());
    let r = reparse_checksums(r);
    assert_eq!(net.run(&r, CLIENT_PORT).verdict, dropped(LbDrop::NoService));
    // A backend's frames of no session, and other traffic, pass untouched.
    let stray = from_backend(0, 40000, ACK);
    let out = net.run(&stray, backend_port(0));
    assert_eq!((out.verdict, &out.bytes), (Verdict::Next, &stray));
}

/// Recomputes the checksums of a frame whose header was edited by hand.
fn reparse_checksums(f: Vec<u8>) -> Vec<u8> {
    let p = etherparse::PacketHeaders::from_ethernet_slice(&f).unwrap();
    let mut out = Vec::new();
    let Some(etherparse::NetHeaders::Ipv4(ip, _)) = p.net else {
        panic!()
    };
    let Some(etherparse::TransportHeader::Tcp(t)) = p.transport else {
        panic!()
    };
    let mut b = PacketBuilder::ethernet2(CLIENT_MAC.0, GW.0)
        .ipv4(ip.source, ip.destination, 64)
        .tcp(t.source_port, t.destination_port, t.sequence_number, 64000);
    if t.syn {
        b = b.syn();
    }
    if t.rst {
        b = b.rst();
    }
    if t.ack {
        b = b.ack(t.acknowledgment_number);
    }
    b.write(&mut out, p.payload.slice()).unwrap();
    out
}

#[test]
fn a_full_table_refuses_new_connections_and_counts_them() {
    let mut net = Net::new(2);
    net.stage.set_config(config(2));
    net.run(&to_vip(1, SYN), CLIENT_PORT);
    net.run(&to_vip(2, SYN), CLIENT_PORT);
    assert_eq!(
        net.run(&to_vip(3, SYN), CLIENT_PORT).verdict,
        dropped(LbDrop::SessionTableFull)
    );
    assert_eq!(net.count(LbDrop::SessionTableFull), 1);
    assert_eq!(net.stage.len(), 2);
    assert_eq!(
        net.active().iter().sum::<u64>(),
        2,
        "the refused one was never opened"
    );
    // Established ones still flow.
    assert_eq!(net.run(&to_vip(1, ACK), CLIENT_PORT).verdict, Verdict::Next);
}

#[test]
fn idle_connections_expire_on_the_virtual_clock_and_are_counted_closed() {
    let mut net = Net::new(2);
    net.service.set_timeout_secs(30).unwrap();
    net.push();
    for p in 0..10 {
        net.run(&to_vip(30000 + p, SYN), CLIENT_PORT);
        let n = p as u8 % 2;
        net.run(&from_backend(n, 30000 + p, SYN | ACK), backend_port(n));
    }
    assert_eq!(net.active(), [5, 5]);
    let start = net.now;
    net.stage.tick(start + 29_999);
    assert_eq!(net.stage.len(), 10, "not idle long enough");
    net.stage.tick(start + 30_000);
    assert_eq!(net.stage.len(), 0);
    assert_eq!(net.active(), [0, 0], "closed() for each");
    assert!(net.stage.sessions(start + 30_000).is_empty());
}

#[test]
fn an_expired_session_found_by_a_packet_is_ended_there() {
    let mut net = Net::new(1);
    net.service.set_timeout_secs(30).unwrap();
    net.push();
    net.run(&to_vip(40000, SYN), CLIENT_PORT);
    net.run(&from_backend(0, 40000, SYN | ACK), backend_port(0));
    net.now += 30_000;
    let out = net.run(&to_vip(40000, ACK), CLIENT_PORT);
    assert_eq!(
        out.verdict,
        Verdict::Output(CLIENT_PORT),
        "answered with a RST"
    );
    assert_eq!(net.count(LbDrop::NoSession), 1);
    assert_eq!((net.stage.len(), net.active()[0]), (0, 0));
}

#[test]
fn a_closed_connection_lingers_ten_seconds_and_its_port_may_be_reused() {
    let mut net = Net::new(2);
    net.run(&to_vip(40000, SYN), CLIENT_PORT);
    net.run(&from_backend(0, 40000, SYN | ACK), backend_port(0));
    net.run(&to_vip(40000, FIN | ACK), CLIENT_PORT);
    assert_eq!(net.stage.sessions(net.now)[0].state, SessionState::FinWait);
    net.run(&from_backend(0, 40000, FIN | ACK), backend_port(0));
    let v = net.stage.sessions(net.now);
    assert_eq!((v[0].state, v[0].timeout_s), (SessionState::Closing, 10));
    assert_eq!(
        net.active(),
        [0, 0],
        "a closed connection is active no more"
    );
    // A new SYN from the same port is a new connection (the next backend in turn).
    let out = net.run(&to_vip(40000, SYN), CLIENT_PORT);
    assert_eq!(out.ip().1, backend_ip(1));
    assert_eq!(net.active(), [0, 1]);
    net.run(&to_vip(40000, RST), CLIENT_PORT);
    net.stage.tick(net.now + CLOSING_TIMEOUT_MS);
    assert_eq!((net.stage.len(), net.active()), (0, vec![0, 0]));
}

#[test]
fn a_backend_removed_without_drain_has_its_connections_reset() {
    let mut net = Net::new(2);
    net.run(&to_vip(40000, SYN), CLIENT_PORT);
    net.run(&from_backend(0, 40000, SYN | ACK), backend_port(0));
    net.service
        .remove_backend("10.0.0.2".parse().unwrap(), false, net.now)
        .unwrap();
    net.push();
    // The backend's next segment ends the connection at both ends: the backend gets a RST
    // from the client's address, the client a RST from the VIP in the backend's sequence.
    let out = net.run(&from_backend(0, 40000, ACK), backend_port(0));
    assert_eq!(
        (out.verdict, out.made),
        (Verdict::Output(backend_port(0)), 2)
    );
    let to_backend = tcp_of(&out.bytes);
    assert_eq!(out.ip(), (CLIENT, backend_ip(0)));
    assert!(to_backend.rst && !to_backend.ack && checksums_ok(&out.bytes));
    let [(to_client, v)] = &out.extra[..] else {
        panic!("one RST onward: {:?}", out.extra)
    };
    assert_eq!(*v, Verdict::Next, "switched on to the client");
    assert_eq!(&to_client[26..34], &[VIP, CLIENT].concat()[..]);
    let t = tcp_of(to_client);
    assert!(t.rst && !t.ack && checksums_ok(to_client));
    assert_eq!(t.seq, 5000, "SEQ = the backend's own");
    assert_eq!(net.stage.len(), 0, "the session ended");
    // The client's later segment finds no session: a RST from the VIP.
    let out = net.run(&to_vip(40000, ACK), CLIENT_PORT);
    assert_eq!((out.verdict, out.made), (Verdict::Output(CLIENT_PORT), 1));
    assert_eq!(net.count(LbDrop::BackendRemoved), 1);
    assert_eq!(net.count(LbDrop::NoSession), 1);
    // Removed while the client speaks first: the same, the other way round.
    let mut net = Net::new(2);
    net.run(&to_vip(40000, SYN), CLIENT_PORT);
    net.run(&from_backend(0, 40000, SYN | ACK), backend_port(0));
    net.service
        .remove_backend("10.0.0.2".parse().unwrap(), false, net.now)
        .unwrap();
    net.push();
    let out = net.run(&to_vip(40000, ACK), CLIENT_PORT);
    assert_eq!((out.verdict, out.made), (Verdict::Output(CLIENT_PORT), 2));
    let p = SlicedPacket::from_ethernet(&out.bytes).unwrap();
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!()
    };
    assert!(t.rst() && !t.ack());
    assert_eq!(t.sequence_number(), 5000, "SEQ = the segment's ACK");
    let [(to_backend, Verdict::Next)] = &out.extra[..] else {
        panic!("one RST onward: {:?}", out.extra)
    };
    assert_eq!(&to_backend[26..34], &[CLIENT, backend_ip(0)].concat()[..]);
    assert!(tcp_of(to_backend).rst);
    assert_eq!(net.count(LbDrop::BackendRemoved), 1);
    assert_eq!(net.stage.len(), 0, "the session ended");
    assert_eq!(
        net.service.reap(net.now),
        vec!["10.0.0.2:8080".parse::<SocketAddr>().unwrap()],
        "its connections are gone: the control plane lets the backend go"
    );
}

#[test]
fn a_draining_backend_keeps_its_connections_and_gets_no_new_ones() {
    let mut net = Net::new(2);
    net.run(&to_vip(40000, SYN), CLIENT_PORT);
    net.service
        .remove_backend("10.0.0.2".parse().unwrap(), true, net.now)
        .unwrap();
    net.push();
    assert_eq!(
        net.service.backends().next().unwrap().state,
        BackendState::Draining
    );
    for _ in 0..3 {
        let out = net.run(&to_vip(40000, ACK), CLIENT_PORT);
        assert_eq!(out.ip().1, backend_ip(0), "the old connection stays");
    }
    for p in 0..10 {
        let out = net.run(&to_vip(41000 + p, SYN), CLIENT_PORT);
        assert_eq!(
            out.ip().1,
            backend_ip(1),
            "new ones avoid the draining backend"
        );
    }
}

#[test]
fn a_dry_run_decides_and_records_but_makes_nothing() {
    let mut net = Net::new(3);
    let mut log = TraceLog::default();
    let out = net.run_full(
        &to_vip(40000, SYN),
        CLIENT_PORT,
        Offload::NONE,
        false,
        Some(&mut log),
    );
    assert_eq!(out.ip().1, backend_ip(0));
    assert_eq!(
        log.steps[0].decision,
        "tcp 10.0.0.5:40000 -> 10.0.0.100:80: new, backend 10.0.0.2:8080 (rr: turn 1 of 3 live backends)"
    );
    assert_eq!((net.stage.len(), net.active()), (0, vec![0, 0, 0]));
    // Nothing moved on: the real connection gets the backend the trace showed.
    assert_eq!(
        net.run(&to_vip(40000, SYN), CLIENT_PORT).ip().1,
        backend_ip(0)
    );

    let mut none = Net::new(0);
    let mut log = TraceLog::default();
    none.run_full(
        &to_vip(1, SYN),
        CLIENT_PORT,
        Offload::NONE,
        false,
        Some(&mut log),
    );
    assert_eq!(none.count(LbDrop::NoBackend), 0, "nothing counted");
    assert!(
        log.steps
            .iter()
            .any(|s| s.decision.contains("answered with a RST"))
    );
}

#[test]
fn removing_a_service_ends_its_connections() {
    let mut net = Net::new(1);
    net.run(&to_vip(40000, SYN), CLIENT_PORT);
    assert_eq!(net.active(), [1]);
    net.stage.remove(&net.service.key());
    assert_eq!((net.stage.len(), net.active()), (0, vec![0]));
    let out = net.run(&to_vip(40000, ACK), CLIENT_PORT);
    assert_eq!(
        out.verdict,
        Verdict::Next,
        "no VIP left: not the lb's frame"
    );
}

#[test]
fn a_new_stage_adopts_the_sessions_services_and_configuration() {
    let mut net = Net::new(3);
    let first = net.run(&to_vip(40000, SYN), CLIENT_PORT).ip().1;
    let mut fresh: Box<dyn Stage> = Box::new(LbStage::new(0));
    fresh.adopt(&mut net.stage);
    let any: Box<dyn std::any::Any> = fresh;
    net.stage = *any.downcast::<LbStage>().unwrap();
    assert_eq!(net.stage.len(), 1);
    assert_eq!(net.run(&to_vip(40000, ACK), CLIENT_PORT).ip().1, first);
    assert_eq!(
        net.run(&arp_request(VIP), CLIENT_PORT).verdict,
        Verdict::Output(CLIENT_PORT)
    );
}

#[test]
fn a_backend_that_is_no_station_is_refused() {
    let mut net = Net::new(1);
    net.stage.set_config(LbConfig {
        stations: Arc::default(),
        ..config(DEFAULT_CAPACITY)
    });
    assert_eq!(
        net.run(&to_vip(1, SYN), CLIENT_PORT).verdict,
        dropped(LbDrop::NoStation)
    );
    assert_eq!(net.stage.len(), 0);
}

#[test]
fn a_reply_that_would_clash_is_refused() {
    // Two services on the same backend: the same client port to both would make replies
    // that cannot be told apart.
    let mut net = Net::new(1);
    let mut other = ServiceSpec::new(
        IpAddr::V4([10, 0, 0, 101].into()),
        "tcp/80:8080".parse().unwrap(),
    );
    other.scheduler = crate::spec::SchedulerKind::Rr;
    let mut s2 = Service::new(other, 1).unwrap();
    s2.add_backend("10.0.0.2".parse().unwrap(), 1).unwrap();
    net.stage.install(s2.snapshot());
    net.run(&to_vip(40000, SYN), CLIENT_PORT);
    let f = tcp(Seg {
        from: (CLIENT, 40000, CLIENT_MAC),
        to: ([10, 0, 0, 101], 80, GW),
        flags: SYN,
        seq: 1,
        ack: 0,
        payload: b"",
    });
    assert_eq!(
        net.run(&f, CLIENT_PORT).verdict,
        dropped(LbDrop::ReplyClash)
    );
    // Once the first is closed (lingering for its last segments), the second may have its
    // tuple: the client reused its port toward the other VIP.
    net.run(&from_backend(0, 40000, SYN | ACK), backend_port(0));
    net.run(&to_vip(40000, RST | ACK), CLIENT_PORT);
    let out = net.run(&f, CLIENT_PORT);
    assert_eq!((out.verdict, out.ip().1), (Verdict::Next, backend_ip(0)));
    assert_eq!(net.stage.len(), 1, "the closed one gave way");
    assert_eq!(net.count(LbDrop::ReplyClash), 1);
}

#[test]
fn a_batch_keeps_the_frame_accounting() {
    // received + made = sent + dropped, with every kind of decision in one batch.
    let mut net = Net::new(1);
    let closed = ServiceSpec::new(IpAddr::V4(VIP.into()), "tcp/81".parse().unwrap());
    net.stage
        .install(Service::new(closed, 1).unwrap().snapshot());
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC.0, GW.0)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 2)
        .write(&mut ping, b"")
        .unwrap();
    let to_81 = tcp(Seg {
        from: (CLIENT, 40001, CLIENT_MAC),
        to: (VIP, 81, GW),
        flags: SYN,
        seq: 1,
        ack: 0,
        payload: b"",
    });
    let frames = [
        to_vip(40000, SYN),
        to_81,
        to_vip(40002, ACK),
        arp_request(VIP),
        ping,
        from_backend(0, 1, ACK),
    ];
    let mut b = Batch::default();
    for f in &frames {
        b.frames.push(net.pool.alloc_copy(f).unwrap());
    }
    b.begin(7, CLIENT_PORT, 0);
    for (i, f) in frames.iter().enumerate() {
        b.keys[i] = classify(f, CLIENT_PORT, 0).unwrap();
    }
    let mut ctx = StageContext::new(&mut net.pool, &net.domain, &net.drops, net.now);
    net.stage.process(&mut ctx, &mut b);
    let made = ctx.generated;
    let verdicts = &b.verdicts[..frames.len()];
    for v in verdicts {
        if let Verdict::Drop(r) = v {
            net.drops.add(*r, 1);
        }
    }
    let sent = verdicts
        .iter()
        .filter(|v| !matches!(v, Verdict::Drop(_)))
        .count() as u64;
    assert_eq!(
        verdicts,
        [
            Verdict::Next,
            Verdict::Output(CLIENT_PORT),
            Verdict::Output(CLIENT_PORT),
            Verdict::Output(CLIENT_PORT),
            Verdict::Output(CLIENT_PORT),
            Verdict::Next,
        ]
    );
    assert_eq!(
        frames.len() as u64 + made,
        sent + net.drops.frames_dropped()
    );
    b.free_all(&mut net.pool);
}

#[test]
fn a_udp_flow_of_a_removed_backend_moves_to_another() {
    let mut net = Net::with(2, |s| s.port = "udp/53".parse().unwrap());
    assert_eq!(
        net.run(&udp(5353, false), CLIENT_PORT).ip().1,
        backend_ip(0)
    );
    net.service
        .remove_backend("10.0.0.2".parse().unwrap(), false, net.now)
        .unwrap();
    net.push();
    let out = net.run(&udp(5353, false), CLIENT_PORT);
    assert_eq!((out.verdict, out.ip().1), (Verdict::Next, backend_ip(1)));
    assert!(checksums_ok(&out.bytes));
    assert_eq!(net.active(), [0, 1]);
}

#[test]
fn an_idle_timeout_resets_both_ends_in_their_own_sequence() {
    let mut net = Net::new(1);
    net.service.set_timeout_secs(30).unwrap();
    net.push();
    net.run(&to_vip(40000, SYN), CLIENT_PORT);
    net.run(&from_backend(0, 40000, SYN | ACK), backend_port(0));
    net.run(&to_vip(40000, ACK), CLIENT_PORT); // seq 1000 + "hello"
    assert!(!net.stage.has_release());
    net.stage.tick(net.now + 30_000);
    assert_eq!(net.stage.len(), 0, "expired");
    assert_eq!(net.active(), [0]);
    assert!(net.stage.has_release());
    let mut out = Batch::default();
    let mut ctx = StageContext::new(&mut net.pool, &net.domain, &net.drops, net.now + 30_000);
    net.stage.release(&mut ctx, &mut out);
    assert_eq!((out.len(), ctx.generated), (2, 2));
    assert!(!net.stage.has_release());
    let frames: Vec<Vec<u8>> = (0..2)
        .map(|i| net.pool.data(&out.frames[i]).to_vec())
        .collect();
    // To the backend, from the client, in the client's sequence.
    assert_eq!(out.verdicts[0], Verdict::Output(backend_port(0)));
    let f = &frames[0];
    assert_eq!(
        &f[..12],
        &[&backend_mac(0).0[..], &CLIENT_MAC.0[..]].concat()[..]
    );
    assert_eq!(&f[26..34], &[CLIENT, backend_ip(0)].concat()[..]);
    let t = tcp_of(f);
    assert!(t.rst && !t.ack && checksums_ok(f));
    assert_eq!(t.seq, 1005);
    // To the client, from the VIP, in the backend's (its SYN counted one).
    assert_eq!(out.verdicts[1], Verdict::Output(CLIENT_PORT));
    let f = &frames[1];
    assert_eq!(&f[..12], &[&CLIENT_MAC.0[..], &GW.0[..]].concat()[..]);
    assert_eq!(&f[26..34], &[VIP, CLIENT].concat()[..]);
    assert_eq!(u16::from_be_bytes([f[34], f[35]]), 80);
    let t = tcp_of(f);
    assert!(t.rst && checksums_ok(f));
    assert_eq!(t.seq, 5001);
    out.free_all(&mut net.pool);
    // A connection that never got an answer, or is already closed, is not reset.
    net.run(&to_vip(40001, SYN), CLIENT_PORT);
    net.stage.tick(net.now + 120_000);
    assert!(!net.stage.has_release());
}

#[test]
fn a_backend_given_its_own_connection_gets_it_from_the_vip() {
    let mut net = Net::new(1);
    let me = (backend_ip(0), backend_mac(0));
    let syn = tcp(Seg {
        from: (me.0, 40000, me.1),
        to: (VIP, 80, GW),
        flags: SYN,
        seq: 1,
        ack: 0,
        payload: b"",
    });
    let out = net.run(&syn, backend_port(0));
    assert_eq!(
        out.verdict,
        Verdict::Output(backend_port(0)),
        "back where it came from"
    );
    assert_eq!(out.ip(), (VIP, me.0), "from the VIP, to itself");
    assert_eq!(out.ports(), (40000, 8080));
    assert_eq!(out.macs(), (me.1, GW));
    assert!(checksums_ok(&out.bytes));
    let reply = tcp(Seg {
        from: (me.0, 8080, me.1),
        to: (VIP, 40000, GW),
        flags: SYN | ACK,
        seq: 9,
        ack: 2,
        payload: b"",
    });
    let out = net.run(&reply, backend_port(0));
    assert_eq!(out.verdict, Verdict::Output(backend_port(0)));
    assert_eq!(out.ip(), (VIP, me.0));
    assert_eq!(out.ports(), (80, 40000), "from VIP:80 to the client's port");
    assert_eq!(out.macs(), (me.1, GW));
    assert!(checksums_ok(&out.bytes));
    assert_eq!(
        net.stage.sessions(net.now)[0].state,
        SessionState::Established
    );
    // Later segments both ways keep their MACs (the client's is not taken from a rewrite).
    for _ in 0..2 {
        let ack = tcp(Seg {
            from: (me.0, 40000, me.1),
            to: (VIP, 80, GW),
            flags: ACK,
            seq: 2,
            ack: 10,
            payload: b"GET",
        });
        assert_eq!(net.run(&ack, backend_port(0)).macs(), (me.1, GW));
        let data = tcp(Seg {
            from: (me.0, 8080, me.1),
            to: (VIP, 40000, GW),
            flags: ACK,
            seq: 10,
            ack: 5,
            payload: b"200",
        });
        let out = net.run(&data, backend_port(0));
        assert_eq!((out.macs(), out.ports()), ((me.1, GW), (80, 40000)));
    }
}
