//! What a conntrack stage calls per frame: [`Conntrack::process`] finds the frame's
//! connection from either direction (or opens one: masquerade from inside, DNAT of a
//! published port from outside, hairpin when an inside host aims at the NAT's own address),
//! advances its state, and rewrites the frame in place. A dry run (`xvsctl trace`) decides,
//! rewrites the traced frame and describes, but creates and refreshes nothing.
//! [`Conntrack::tick`] does bounded expiry work; listing and flush serve `conntrack/show` and
//! `conntrack/flush`.
//!
//! One `Conntrack` per worker thread, owning its sessions, mappings and port range (so the
//! fast path takes no lock); the control plane builds it and moves it to the worker. Not
//! `Sync`.

use std::fmt;
use std::net::Ipv4Addr;

use hashbrown::HashMap;
use xvs_stage::classify::FlowKey;
use xvs_stage::offload::Offload;
use xvs_stage::wire::{ethertype, ipproto};

use crate::drop::NatDrop;
use crate::icmp::{self, icmp_type};
use crate::mapping::{MappingView, Mappings};
use crate::ports::{PortPartition, PortRange};
use crate::published::Published;
use crate::rewrite::translate;
use crate::show::ConnEntry;
use crate::state::ConnState;
use crate::table::{NO_MAPPING, NO_ZONE, Session, Table};
use crate::tcp::{self, TcpTrack};
use crate::timeout::{Timeout, TimeoutError, Timeouts};
use crate::tuple::{Dir, Tuple};
use xvs_stage::hash::SplitMix;

/// A table's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most connections the table holds (reserved when it is made).
    pub capacity: u32,
    /// Most connections one inside endpoint (zone, address) may hold (OVS zone limits).
    pub per_endpoint: u32,
    /// The address connections from inside leave with (masquerade); `None`: track only.
    pub masquerade: Option<Ipv4Addr>,
    /// This worker's outside ports ([`PortPartition::range`]).
    pub ports: PortRange,
    /// Random positions tried when the preferred port is taken (each with the
    /// [`PROBE_WINDOW`](crate::mapping::PROBE_WINDOW) ports after it), before a counted drop.
    pub probes: u32,
    /// Session and mapping slots examined per [`Conntrack::tick`].
    pub sweep_per_tick: u32,
    /// Seed of the index hash and of port probes.
    pub seed: u64,
    /// Timeouts per state.
    pub timeouts: Timeouts,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 1 << 20,
            per_endpoint: 1 << 17,
            masquerade: None,
            ports: PortPartition::default_for(1).range(0),
            probes: 32,
            sweep_per_tick: 1024,
            seed: 0x6e61_745f_7365_6564,
            timeouts: Timeouts::default(),
        }
    }
}

/// Where a frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// From an inside endpoint on network `zone` (routed toward the uplink, or hairpinned).
    Inside {
        /// The network (bridge) the frame was received on.
        zone: u16,
    },
    /// Received on the uplink.
    Outside,
}

/// Where a translated frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// To an inside endpoint on this zone (a reply, a published port, a hairpin).
    Inside(u16),
    /// Out of the uplink.
    Outside,
}

/// What conntrack decided for a tracked frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The connection's slot (for [`FrameMeta::flow`]); `None` for a new connection on a
    /// dry run.
    ///
    /// [`FrameMeta::flow`]: xvs_stage::batch::FrameMeta
    pub session: Option<u32>,
    /// The frame's direction on its connection.
    pub dir: Dir,
    /// The frame opened the connection.
    pub new: bool,
    /// An ICMP error belonging to the connection (state unchanged).
    pub related: bool,
    /// The connection's state after the frame.
    pub state: ConnState,
    /// The frame's tuple as it arrived (an ICMP error: the connection's tuple it travels on).
    pub before: Tuple,
    /// The frame's tuple as it leaves.
    pub after: Tuple,
    /// Where it goes.
    pub egress: Egress,
}

/// The result of [`Conntrack::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not IPv4 (IPv6, ARP): not tracked, not translated; the stage lets it go on.
    Untracked,
    /// Tracked, and translated when its connection is NATed.
    Tracked(Decision),
}

impl fmt::Display for Decision {
    /// One line for `xvsctl trace`: `new tcp SYN_SENT original 10.0.0.2:40000->1.1.1.1:80
    /// => 198.18.0.1:40000->1.1.1.1:80 (out)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (self.new, self.related) {
            (true, _) => "new",
            (_, true) => "related",
            _ => "established",
        };
        let dir = match self.dir {
            Dir::Original => "original",
            Dir::Reply => "reply",
        };
        let ep = |t: &Tuple| {
            (
                format!("{}:{}", t.src_ip(), t.sport),
                format!("{}:{}", t.dst_ip(), t.dport),
            )
        };
        let ((bs, bd), (as_, ad)) = (ep(&self.before), ep(&self.after));
        write!(
            f,
            "{what} {} {} {dir} {bs}->{bd}",
            self.before.proto_name(),
            self.state
        )?;
        if self.before != self.after {
            write!(f, " => {as_}->{ad}")?;
        }
        match self.egress {
            Egress::Inside(z) => write!(f, " (to zone {z})"),
            Egress::Outside => write!(f, " (out)"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Untracked => f.write_str("untracked"),
            Outcome::Tracked(d) => d.fmt(f),
        }
    }
}

/// Counters of events that are not drops (drops are the stage's verdicts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections made.
    pub created: u64,
    /// Connections expired (swept, or found expired by a lookup).
    pub expired: u64,
    /// Mappings reclaimed after their linger time.
    pub mappings_reclaimed: u64,
}

/// One worker's connection tracking and NAT.
#[derive(Debug)]
pub struct Conntrack {
    cfg: Config,
    table: Table,
    mappings: Mappings,
    published: Published,
    endpoints: HashMap<(u16, u32), u32>,
    rng: SplitMix,
    stats: Stats,
}

/// What a new connection will be, before it is committed.
struct Plan {
    reply: Tuple,
    orig_zone: u16,
    reply_zone: u16,
    mapping: Option<u16>,
}

impl Conntrack {
    /// A table as configured; its memory is reserved now.
    pub fn new(cfg: Config) -> Conntrack {
        NatDrop::set().register();
        Conntrack {
            table: Table::new(cfg.capacity, cfg.seed),
            mappings: Mappings::new(cfg.ports, cfg.seed ^ 0x6d61_7070),
            published: Published::new(),
            endpoints: HashMap::with_capacity(1024),
            rng: SplitMix::new(cfg.seed ^ 0x7072_6f62),
            stats: Stats::default(),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Connections in the table.
    pub fn len(&self) -> u32 {
        self.table.len()
    }

    /// True when no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Event counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The published ports.
    pub fn published(&self) -> &Published {
        &self.published
    }

    /// Replaces the published ports (a new snapshot from the control plane). Connections
    /// already made keep their translation.
    pub fn set_published(&mut self, published: Published) {
        self.published = published;
    }

    /// Sets a timeout by name (`tcp_established`, `udp_first`, ...); applies to each
    /// connection from its next packet on.
    pub fn set_timeout(&mut self, name: &str, secs: u32) -> Result<(), TimeoutError> {
        self.cfg.timeouts.set(name, secs)
    }

    /// The timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.cfg.timeouts
    }

    /// Sets the masquerade address (`None`: track without translating new connections).
    pub fn set_masquerade(&mut self, addr: Option<Ipv4Addr>) {
        self.cfg.masquerade = addr;
    }

    /// Sets the per-endpoint limit (connections already over it stay).
    pub fn set_per_endpoint_limit(&mut self, limit: u32) {
        self.cfg.per_endpoint = limit;
    }

    /// Connections an inside endpoint holds.
    pub fn endpoint_count(&self, zone: u16, addr: Ipv4Addr) -> u32 {
        self.endpoints
            .get(&(zone, addr.into()))
            .copied()
            .unwrap_or(0)
    }

    /// Brings into cache the connections of a burst's TCP and UDP frames (their index
    /// buckets first, then their sessions), so calling [`process`](Self::process) on each
    /// next finds them there: the burst's cache misses overlap instead of coming one after
    /// another. Reads only; what `process` decides is unchanged.
    pub fn warm(&self, keys: &[FlowKey]) {
        let mut found = [None; WARM_BURST];
        for chunk in keys.chunks(WARM_BURST) {
            let (tuples, n) = burst_tuples(chunk);
            self.table.lookup_burst(&tuples[..n], &mut found[..n]);
        }
    }

    /// [`process`](Self::process) for each frame of a burst, with the same `offload`,
    /// `side`, time and dry run, each result in `out` (as many as fit): the burst's lookups
    /// are made together first (as [`warm`](Self::warm) makes them), and a frame uses its
    /// lookup while no frame before it in the burst has added or removed a connection
    /// (else it looks up again), so each decides exactly as `process` would.
    #[allow(clippy::too_many_arguments)]
    pub fn process_burst<F: AsMut<[u8]>>(
        &mut self,
        frames: &mut [F],
        keys: &[FlowKey],
        offload: &Offload,
        side: Side,
        now_ms: u64,
        dry_run: bool,
        out: &mut [Result<Outcome, NatDrop>],
    ) {
        let mut found = [None; WARM_BURST];
        let n = frames.len().min(keys.len()).min(out.len());
        let (frames, keys, out) = (&mut frames[..n], &keys[..n], &mut out[..n]);
        for ((frames, keys), out) in frames
            .chunks_mut(WARM_BURST)
            .zip(keys.chunks(WARM_BURST))
            .zip(out.chunks_mut(WARM_BURST))
        {
            let (tuples, m) = burst_tuples(keys);
            self.table.lookup_burst(&tuples[..m], &mut found[..m]);
            let generation = self.table.generation();
            let mut j = 0;
            for ((frame, key), r) in frames.iter_mut().zip(keys).zip(out.iter_mut()) {
                let mut hint = None;
                if fast_tuple(key).is_some() {
                    if self.table.generation() == generation {
                        hint = Some(found[j]);
                    }
                    j += 1;
                }
                *r = self.process_with(frame.as_mut(), key, offload, side, now_ms, dry_run, hint);
            }
        }
    }

    /// Tracks and translates one frame. `key` is its classification (offsets into `frame`),
    /// `offload` its virtio-net state (a partial checksum is kept partial), `side` where it
    /// came from. With `dry_run` nothing is created, refreshed or counted.
    #[inline]
    pub fn process(
        &mut self,
        frame: &mut [u8],
        key: &FlowKey,
        offload: &Offload,
        side: Side,
        now_ms: u64,
        dry_run: bool,
    ) -> Result<Outcome, NatDrop> {
        self.process_with(frame, key, offload, side, now_ms, dry_run, None)
    }

    /// [`process`](Self::process), with the frame's lookup already made when `found` is
    /// `Some` (what `Table::lookup` answers for its tuple, at the table's generation now).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn process_with(
        &mut self,
        frame: &mut [u8],
        key: &FlowKey,
        offload: &Offload,
        side: Side,
        now_ms: u64,
        dry_run: bool,
        found: Option<Option<(u32, Dir)>>,
    ) -> Result<Outcome, NatDrop> {
        if key.dl_type != ethertype::IPV4 || key.l3_offset == 0 {
            return Ok(Outcome::Untracked);
        }
        let (l3, l4) = (usize::from(key.l3_offset), usize::from(key.l4_offset));
        let addr = |a: &[u8; 16]| u32::from_be_bytes([a[12], a[13], a[14], a[15]]);
        let mut t = Tuple {
            src: addr(&key.nw_src),
            dst: addr(&key.nw_dst),
            sport: key.tp_src,
            dport: key.tp_dst,
            proto: key.nw_proto,
        };
        let mut tcp_flags = 0;
        let mut icmp_ty = 0;
        match key.nw_proto {
            ipproto::TCP | ipproto::UDP if l4 == 0 => return Err(NatDrop::Fragment),
            ipproto::TCP => {
                tcp_flags = *frame.get(l4 + 13).ok_or(NatDrop::Malformed)?;
            }
            ipproto::UDP => {}
            ipproto::ICMP => {
                if l4 == 0 {
                    return Err(NatDrop::Fragment);
                }
                icmp_ty = key.tp_src as u8;
                match icmp_ty {
                    icmp_type::ECHO_REQUEST | icmp_type::ECHO_REPLY => {
                        let id = frame.get(l4 + 4..l4 + 6).ok_or(NatDrop::Malformed)?;
                        let id = u16::from_be_bytes([id[0], id[1]]);
                        (t.sport, t.dport) = (id, id);
                    }
                    ty if icmp::is_error(ty) => {
                        return self.related(frame, l3, l4, now_ms);
                    }
                    _ => return Err(NatDrop::UnsupportedIcmp),
                }
            }
            _ => return Err(NatDrop::UnsupportedProtocol),
        }
        let found = match found {
            Some(f) if matches!(t.proto, ipproto::TCP | ipproto::UDP) => f,
            _ => self.table.lookup(&t),
        };
        if let Some((id, dir)) = found {
            if self.table.get(id).expires_ms > now_ms {
                return self.established(
                    frame, l3, l4, offload, id, dir, t, tcp_flags, icmp_ty, now_ms, dry_run,
                );
            }
            if !dry_run {
                self.expire(id, now_ms);
            }
        }
        self.open(
            frame, l3, l4, offload, side, t, tcp_flags, icmp_ty, now_ms, dry_run,
        )
    }

    /// A frame of a known connection.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn established(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        l4: usize,
        offload: &Offload,
        id: u32,
        dir: Dir,
        t: Tuple,
        tcp_flags: u8,
        icmp_ty: u8,
        now_ms: u64,
        dry_run: bool,
    ) -> Result<Outcome, NatDrop> {
        let s = *self.table.get(id);
        let (state, fin_by) = match t.proto {
            ipproto::TCP => {
                let n = TcpTrack {
                    state: s.state,
                    fin_by: s.fin_by,
                }
                .next(dir, tcp_flags)
                .ok_or(NatDrop::Invalid)?;
                (n.state, n.fin_by)
            }
            ipproto::ICMP => {
                let want = match dir {
                    Dir::Original => icmp_type::ECHO_REQUEST,
                    Dir::Reply => icmp_type::ECHO_REPLY,
                };
                if icmp_ty != want {
                    return Err(NatDrop::Invalid);
                }
                (s.state.datagram(dir), s.fin_by)
            }
            _ => (s.state.datagram(dir), s.fin_by),
        };
        if !dry_run {
            let timeout = self.cfg.timeouts.for_state(state, t.proto == ipproto::ICMP);
            let m = self.table.get_mut(id);
            m.state = state;
            m.fin_by = fin_by;
            m.expires_ms = now_ms + timeout;
        }
        let after = s.tuple(dir.flip()).inverse();
        translate(frame, l3, l4, offload, &t, &after)?;
        Ok(Outcome::Tracked(Decision {
            session: Some(id),
            dir,
            new: false,
            related: false,
            state,
            before: t,
            after,
            egress: egress(match dir {
                Dir::Original => s.reply_zone,
                Dir::Reply => s.orig_zone,
            }),
        }))
    }

    /// An ICMP error: translated as a packet of the connection it quotes.
    fn related(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        l4: usize,
        now_ms: u64,
    ) -> Result<Outcome, NatDrop> {
        let q = icmp::quoted(frame, l4)?;
        let key = q.tuple.inverse();
        let (id, dir) = self.table.lookup(&key).ok_or(NatDrop::UnrelatedIcmp)?;
        let s = *self.table.get(id);
        if s.expires_ms <= now_ms {
            return Err(NatDrop::UnrelatedIcmp);
        }
        let after = s.tuple(dir.flip()).inverse();
        icmp::translate_error(frame, l3, l4, &q, &after)?;
        Ok(Outcome::Tracked(Decision {
            session: Some(id),
            dir,
            new: false,
            related: true,
            state: s.state,
            before: key,
            after,
            egress: egress(match dir {
                Dir::Original => s.reply_zone,
                Dir::Reply => s.orig_zone,
            }),
        }))
    }

    /// A frame that may open a connection.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        frame: &mut [u8],
        l3: usize,
        l4: usize,
        offload: &Offload,
        side: Side,
        t: Tuple,
        tcp_flags: u8,
        icmp_ty: u8,
        now_ms: u64,
        dry_run: bool,
    ) -> Result<Outcome, NatDrop> {
        let opens = match t.proto {
            ipproto::TCP => tcp::opens(tcp_flags),
            ipproto::ICMP => icmp_ty == icmp_type::ECHO_REQUEST,
            _ => true,
        };
        if !opens {
            return Err(NatDrop::Invalid);
        }
        // Decide without taking anything (a cloned generator gives the same probes again).
        let mut rng = self.rng.clone();
        let plan = self.plan(side, &t, now_ms, &mut rng)?;
        let orig_zone = plan.orig_zone;
        let probe = Session {
            orig: t,
            reply: plan.reply,
            orig_zone,
            reply_zone: plan.reply_zone,
            ..Session::FREE
        };
        let endpoint = probe.endpoint();
        if let Some((other, _)) = self.table.lookup(&plan.reply) {
            if self.table.get(other).expires_ms > now_ms {
                return Err(NatDrop::Clash);
            }
            if !dry_run {
                self.expire(other, now_ms);
            }
        }
        if self.endpoints.get(&endpoint).copied().unwrap_or(0) >= self.cfg.per_endpoint {
            return Err(NatDrop::ZoneLimit);
        }
        if self.table.is_full() && !dry_run {
            // Expired sessions may still hold slots: bounded extra work before refusing.
            self.sweep_sessions(now_ms, 64);
        }
        if self.table.is_full() {
            return Err(NatDrop::TableFull);
        }
        let state = match t.proto {
            ipproto::TCP => ConnState::SynSent,
            _ => ConnState::Unreplied,
        };
        let after = plan.reply.inverse();
        let mut session = None;
        if !dry_run {
            let mut mapping = NO_MAPPING;
            if let Some(port) = plan.mapping {
                let published = &self.published;
                let a = self.mappings.allocate(
                    t.proto,
                    t.src,
                    t.sport,
                    orig_zone,
                    now_ms,
                    self.cfg.probes,
                    &mut self.rng,
                    |p| published.holds(t.proto, p),
                    true,
                )?;
                debug_assert_eq!(a.port, port, "the committed port is the planned one");
                mapping = a.id;
            }
            let timeout = self.cfg.timeouts.for_state(state, t.proto == ipproto::ICMP);
            let id = self
                .table
                .insert(Session {
                    created_ms: now_ms,
                    expires_ms: now_ms + timeout,
                    mapping,
                    state,
                    live: true,
                    ..probe
                })
                .ok_or(NatDrop::TableFull)?;
            *self.endpoints.entry(endpoint).or_insert(0) += 1;
            self.stats.created += 1;
            session = Some(id);
        }
        translate(frame, l3, l4, offload, &t, &after)?;
        Ok(Outcome::Tracked(Decision {
            session,
            dir: Dir::Original,
            new: true,
            related: false,
            state,
            before: t,
            after,
            egress: egress(plan.reply_zone),
        }))
    }

    /// How a new connection from `side` with tuple `t` would be translated.
    fn plan(
        &mut self,
        side: Side,
        t: &Tuple,
        now_ms: u64,
        rng: &mut SplitMix,
    ) -> Result<Plan, NatDrop> {
        let masq = self.cfg.masquerade.map(u32::from);
        let is_icmp = t.proto == ipproto::ICMP;
        match side {
            Side::Outside => {
                let rule = (!is_icmp)
                    .then(|| self.published.lookup(t.proto, t.dst_ip(), t.dport, true))
                    .flatten();
                if let Some(r) = rule {
                    return Ok(Plan {
                        reply: Tuple {
                            src: r.inside_ip.into(),
                            dst: t.src,
                            sport: r.inside_port,
                            dport: t.sport,
                            proto: t.proto,
                        },
                        orig_zone: NO_ZONE,
                        reply_zone: r.zone,
                        mapping: None,
                    });
                }
                if masq == Some(t.dst) && self.mappings.at_port(t.proto, t.dport, now_ms).is_some()
                {
                    // Address and port dependent filtering: the mapping's endpoint never sent
                    // to this remote (that would be a connection, found before we got here).
                    return Err(NatDrop::Filtered);
                }
                Err(NatDrop::NoMapping)
            }
            Side::Inside { zone } => {
                let (mut dst, mut dport, mut reply_zone) = (t.dst, t.dport, NO_ZONE);
                let to_self = masq == Some(t.dst);
                let rule = (!is_icmp)
                    .then(|| self.published.lookup(t.proto, t.dst_ip(), t.dport, to_self))
                    .flatten();
                if let Some(r) = rule {
                    // Hairpin to a published port.
                    (dst, dport, reply_zone) = (r.inside_ip.into(), r.inside_port, r.zone);
                } else if to_self {
                    // Hairpin to another inside endpoint's mapping.
                    let m = (!is_icmp)
                        .then(|| self.mappings.at_port(t.proto, t.dport, now_ms))
                        .flatten()
                        .ok_or(NatDrop::NoMapping)?;
                    (dst, dport, reply_zone) = (m.inside_addr, m.inside_port, m.zone);
                }
                let (mut src, mut sport, mut mapping) = (t.src, t.sport, None);
                if let Some(outside) = masq {
                    let published = &self.published;
                    let a = self.mappings.allocate(
                        t.proto,
                        t.src,
                        t.sport,
                        zone,
                        now_ms,
                        self.cfg.probes,
                        rng,
                        |p| published.holds(t.proto, p),
                        false,
                    )?;
                    (src, sport, mapping) = (outside, a.port, Some(a.port));
                }
                if is_icmp {
                    // Echo: both "ports" are the identifier.
                    dport = sport;
                }
                Ok(Plan {
                    reply: Tuple {
                        src: dst,
                        dst: src,
                        sport: dport,
                        dport: sport,
                        proto: t.proto,
                    },
                    orig_zone: zone,
                    reply_zone,
                    mapping,
                })
            }
        }
    }

    /// Removes session `id`: its mapping starts lingering, its endpoint's count drops.
    fn expire(&mut self, id: u32, now_ms: u64) {
        let s = self.table.remove(id);
        self.stats.expired += 1;
        forget(
            &mut self.mappings,
            &mut self.endpoints,
            &self.cfg.timeouts,
            &s,
            now_ms,
        );
    }

    fn sweep_sessions(&mut self, now_ms: u64, budget: u32) {
        let Conntrack {
            table,
            mappings,
            endpoints,
            cfg,
            stats,
            ..
        } = self;
        stats.expired += u64::from(table.sweep(now_ms, budget, |s| {
            forget(mappings, endpoints, &cfg.timeouts, &s, now_ms);
        }));
    }

    /// Housekeeping once per worker pass: expires up to `sweep_per_tick` session slots and as
    /// many mapping slots (bounded work whatever the table holds).
    pub fn tick(&mut self, now_ms: u64) {
        self.sweep_sessions(now_ms, self.cfg.sweep_per_tick);
        self.stats.mappings_reclaimed +=
            u64::from(self.mappings.sweep(now_ms, self.cfg.sweep_per_tick));
    }

    /// Every connection, for `conntrack/show` (control path: allocates).
    pub fn entries(&self, now_ms: u64) -> impl Iterator<Item = ConnEntry> + '_ {
        self.table
            .iter()
            .filter(move |(_, s)| s.expires_ms > now_ms)
            .map(move |(_, s)| ConnEntry::new(s, now_ms))
    }

    /// Every mapping in use (`uplink show`).
    pub fn mappings(&self, now_ms: u64) -> impl Iterator<Item = MappingView> + '_ {
        self.mappings.iter(now_ms)
    }

    /// Forgets every connection and mapping (`conntrack/flush`); published ports stay.
    pub fn flush(&mut self) {
        self.table.clear();
        self.mappings.flush();
        self.endpoints.clear();
    }

    /// Bytes reserved by the table and the mappings.
    pub fn memory_bytes(&self) -> usize {
        self.table.memory_bytes() + self.mappings.memory_bytes()
    }

    /// Bytes per connection at full capacity (the session table's share).
    pub fn bytes_per_session(&self) -> usize {
        self.table.bytes_per_session()
    }
}

/// A removed session's bookkeeping: its mapping lingers, its endpoint holds one fewer.
fn forget(
    mappings: &mut Mappings,
    endpoints: &mut HashMap<(u16, u32), u32>,
    timeouts: &Timeouts,
    s: &Session,
    now_ms: u64,
) {
    if s.mapping != NO_MAPPING {
        let linger = timeouts.ms(match s.orig.proto {
            ipproto::TCP => Timeout::MappingTcp,
            ipproto::UDP => Timeout::MappingUdp,
            _ => Timeout::MappingIcmp,
        });
        mappings.detach(s.mapping, now_ms, linger);
    }
    let ep = s.endpoint();
    if let Some(c) = endpoints.get_mut(&ep) {
        *c -= 1;
        if *c == 0 {
            endpoints.remove(&ep);
        }
    }
}

/// Frames [`Conntrack::warm`] handles at a time.
const WARM_BURST: usize = 32;

/// The tuples of `keys`' TCP and UDP frames ([`fast_tuple`]), in order, and how many.
#[inline]
fn burst_tuples(keys: &[FlowKey]) -> ([Tuple; WARM_BURST], usize) {
    let mut tuples = [Tuple::default(); WARM_BURST];
    let mut n = 0;
    for t in keys.iter().take(WARM_BURST).filter_map(fast_tuple) {
        tuples[n] = t;
        n += 1;
    }
    (tuples, n)
}

/// The tuple of a TCP or UDP frame that is not a fragment, from its key alone (what
/// [`Conntrack::process`] looks up for it).
#[inline]
fn fast_tuple(key: &FlowKey) -> Option<Tuple> {
    let addr = |a: &[u8; 16]| u32::from_be_bytes([a[12], a[13], a[14], a[15]]);
    (key.dl_type == ethertype::IPV4
        && key.l3_offset != 0
        && key.l4_offset != 0
        && matches!(key.nw_proto, ipproto::TCP | ipproto::UDP))
    .then(|| Tuple {
        src: addr(&key.nw_src),
        dst: addr(&key.nw_dst),
        sport: key.tp_src,
        dport: key.tp_dst,
        proto: key.nw_proto,
    })
}

#[inline]
fn egress(zone: u16) -> Egress {
    if zone == NO_ZONE {
        Egress::Outside
    } else {
        Egress::Inside(zone)
    }
}

#[cfg(test)]
#[path = "conntrack_tests.rs"]
mod tests;
