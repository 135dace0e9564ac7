//! A virtual service as the control plane keeps it ([`Service`]): its settings
//! ([`ServiceSpec`]), its backends with weights, states and health, and the verbs that change
//! them (`add-backend`, `rm-backend [--drain]`, `set-weight`, health results, the reaping of
//! backends whose connections are gone). [`Service::snapshot`] turns it into the immutable
//! [`ServiceTable`] the workers swap in.
//!
//! Owned by the control plane thread; workers never see a `Service`, only its snapshots (and,
//! through them, the connection counters it reads back for `service inspect`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendCounters, BackendRef, BackendState, Health};
use crate::hash::DEFAULT_SEED;
use crate::maglev::{self, DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE, MIN_TABLE_SIZE, MaglevBackend};
use crate::spec::{BackendAddr, Proto, SchedulerKind, ServicePort};
use crate::table::{ServiceKey, ServiceTable, TableBackend};

/// Largest weight a backend may have (weights start at 1; `--drain` is the way to weight 0).
pub const MAX_WEIGHT: u32 = 10_000;
/// Most backends a service holds (removed ones awaiting their resets included).
pub const MAX_BACKENDS: usize = 4096;
/// Longest idle timeout, in seconds (a week).
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Idle timeout of a TCP service unless set (IPVS's for established TCP).
pub const DEFAULT_TCP_TIMEOUT_SECS: u64 = 900;
/// Idle timeout of a UDP service unless set (IPVS's for UDP).
pub const DEFAULT_UDP_TIMEOUT_SECS: u64 = 300;

/// Why a change to a service is refused. Nothing is changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The backend is already in the service (and not being removed).
    #[error("backend {0} is already in the service")]
    DuplicateBackend(SocketAddr),
    /// No backend of the service has this address.
    #[error("no backend {0} in the service")]
    NoSuchBackend(SocketAddr),
    /// A weight outside 1 ..= MAX_WEIGHT.
    #[error(
        "weight {0} is out of range: use 1-{MAX_WEIGHT} (rm-backend --drain stops new connections to a backend)"
    )]
    WeightOutOfRange(u32),
    /// An idle timeout outside 1 ..= MAX_TIMEOUT_SECS.
    #[error("timeout {0} s is out of range: use 1-{MAX_TIMEOUT_SECS} seconds")]
    TimeoutOutOfRange(u64),
    /// A Maglev table size that is not a prime in range.
    #[error(
        "maglev table size {0} must be a prime between {MIN_TABLE_SIZE} and {MAX_TABLE_SIZE} (e.g. 65537)"
    )]
    BadTableSize(u32),
    /// The service holds as many backends as it can.
    #[error("the service already has {MAX_BACKENDS} backends, the most it can hold")]
    TooManyBackends,
    /// An IPv4 backend for an IPv6 virtual IP or the other way round.
    #[error("backend {backend} and the service's virtual IP {vip} are not of the same IP version")]
    FamilyMismatch {
        /// The backend.
        backend: SocketAddr,
        /// The service's virtual IP.
        vip: IpAddr,
    },
    /// The backend's address is the virtual IP itself.
    #[error("backend {0} is the service's own virtual IP")]
    BackendIsVip(SocketAddr),
}

/// A service's settings, as `service create` gives them and the state file keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// The virtual IP.
    pub vip: IpAddr,
    /// `PROTO/PORT[:TARGET]`.
    pub port: ServicePort,
    /// The scheduler (rr unless given).
    #[serde(default)]
    pub scheduler: SchedulerKind,
    /// Idle timeout in seconds (by protocol unless given: TCP 900, UDP 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Maglev table size, a prime (65537 unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_size: Option<u32>,
    /// Seed of the flow and backend hashes (the same on every host unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_seed: Option<u64>,
}

impl ServiceSpec {
    /// A service on `vip` and `port` with every other setting at its default.
    pub fn new(vip: IpAddr, port: ServicePort) -> ServiceSpec {
        ServiceSpec {
            vip,
            port,
            scheduler: SchedulerKind::default(),
            timeout_secs: None,
            maglev_size: None,
            hash_seed: None,
        }
    }

    /// The idle timeout in seconds, given or by protocol.
    pub fn timeout_secs(&self) -> u64 {
        self.timeout_secs.unwrap_or(match self.port.proto {
            Proto::Tcp => DEFAULT_TCP_TIMEOUT_SECS,
            Proto::Udp => DEFAULT_UDP_TIMEOUT_SECS,
        })
    }

    /// The Maglev table size, given or the default.
    pub fn maglev_size(&self) -> u32 {
        self.maglev_size.unwrap_or(DEFAULT_TABLE_SIZE)
    }

    fn validate(&self) -> Result<(), ServiceError> {
        let t = self.timeout_secs();
        if !(1..=MAX_TIMEOUT_SECS).contains(&t) {
            return Err(ServiceError::TimeoutOutOfRange(t));
        }
        let m = self.maglev_size();
        if !(MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&m) || !maglev::is_prime(m) {
            return Err(ServiceError::BadTableSize(m));
        }
        Ok(())
    }
}

/// What `rm-backend` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// `--drain`: the backend keeps its `active` connections and takes no new ones; it goes
    /// (at a [`Service::reap`]) when they have closed.
    Draining {
        /// The backend.
        backend: BackendRef,
        /// Its connections open now.
        active: u64,
    },
    /// The backend takes nothing more and its `active` connections are to be reset: it is on
    /// the snapshot's reset list until a [`Service::reap`] finds them gone (or older than the
    /// idle timeout).
    Reset {
        /// The backend.
        backend: BackendRef,
        /// Its connections open now.
        active: u64,
    },
    /// The backend had no connection: it is gone already.
    Purged {
        /// The backend.
        backend: BackendRef,
    },
}

/// A backend as `service inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendInfo {
    /// Its address and port.
    pub addr: SocketAddr,
    /// Its weight.
    pub weight: u32,
    /// Active, draining or removed (awaiting resets).
    pub state: BackendState,
    /// Up or down.
    pub health: Health,
    /// Connections open now.
    pub active: u64,
    /// Connections ever opened.
    pub total: u64,
}

#[derive(Debug, Clone)]
struct Record {
    serial: u32,
    addr: SocketAddr,
    weight: u32,
    state: BackendState,
    health: Health,
    removed_at_ms: u64,
    counters: BackendCounters,
}

/// A virtual service (see the module header).
#[derive(Debug, Clone)]
pub struct Service {
    spec: ServiceSpec,
    workers: u16,
    slots: Vec<Option<Record>>,
    next_serial: u32,
    generation: u64,
}

fn check_weight(w: u32) -> Result<u32, ServiceError> {
    if (1..=MAX_WEIGHT).contains(&w) {
        Ok(w)
    } else {
        Err(ServiceError::WeightOutOfRange(w))
    }
}

impl Service {
    /// A service with no backends, whose connections `workers` workers will count.
    pub fn new(spec: ServiceSpec, workers: u16) -> Result<Service, ServiceError> {
        spec.validate()?;
        Ok(Service {
            spec,
            workers: workers.max(1),
            slots: Vec::new(),
            next_serial: 1,
            generation: 1,
        })
    }

    /// The service's settings.
    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    /// Its virtual IP, protocol and port.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            vip: self.spec.vip,
            proto: self.spec.port.proto,
            port: self.spec.port.port,
        }
    }

    /// Idle timeout of its connections, in ms (for conntrack).
    pub fn idle_timeout_ms(&self) -> u64 {
        self.spec.timeout_secs() * 1000
    }

    /// Changes the scheduler (new connections only; established ones stay where they are).
    pub fn set_scheduler(&mut self, scheduler: SchedulerKind) {
        self.spec.scheduler = scheduler;
        self.generation += 1;
    }

    /// Changes the idle timeout, in seconds.
    pub fn set_timeout_secs(&mut self, secs: u64) -> Result<(), ServiceError> {
        if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
            return Err(ServiceError::TimeoutOutOfRange(secs));
        }
        self.spec.timeout_secs = Some(secs);
        self.generation += 1;
        Ok(())
    }

    /// Changes the Maglev table size (a prime).
    pub fn set_maglev_size(&mut self, size: u32) -> Result<(), ServiceError> {
        let spec = ServiceSpec {
            maglev_size: Some(size),
            ..self.spec
        };
        spec.validate()?;
        self.spec = spec;
        self.generation += 1;
        Ok(())
    }

    fn find(&self, addr: BackendAddr) -> Result<(usize, SocketAddr), ServiceError> {
        let addr = addr.resolve(self.spec.port.target);
        self.slots
            .iter()
            .position(|r| {
                r.as_ref()
                    .is_some_and(|r| r.addr == addr && r.state != BackendState::Removed)
            })
            .map(|i| (i, addr))
            .ok_or(ServiceError::NoSuchBackend(addr))
    }

    fn record(&mut self, slot: usize) -> &mut Record {
        match self.slots.get_mut(slot).and_then(Option::as_mut) {
            Some(r) => r,
            None => unreachable!("find returned an empty slot"),
        }
    }

    fn handle(&self, slot: usize) -> BackendRef {
        BackendRef {
            slot: slot as u16,
            serial: self.slots[slot].as_ref().map_or(0, |r| r.serial),
        }
    }

    /// `add-backend`: adds a backend with `weight`, or takes a draining one back with that
    /// weight.
    pub fn add_backend(
        &mut self,
        addr: BackendAddr,
        weight: u32,
    ) -> Result<BackendRef, ServiceError> {
        let weight = check_weight(weight)?;
        let sock = addr.resolve(self.spec.port.target);
        if sock.ip() == self.spec.vip {
            return Err(ServiceError::BackendIsVip(sock));
        }
        if sock.is_ipv4() != self.spec.vip.is_ipv4() {
            return Err(ServiceError::FamilyMismatch {
                backend: sock,
                vip: self.spec.vip,
            });
        }
        if let Ok((slot, _)) = self.find(addr) {
            let r = self.record(slot);
            if r.state != BackendState::Draining {
                return Err(ServiceError::DuplicateBackend(sock));
            }
            r.state = BackendState::Active;
            r.weight = weight;
            self.generation += 1;
            return Ok(self.handle(slot));
        }
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(s) => s,
            None if self.slots.len() < MAX_BACKENDS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(ServiceError::TooManyBackends),
        };
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1).max(1);
        self.slots[slot] = Some(Record {
            serial,
            addr: sock,
            weight,
            state: BackendState::Active,
            health: Health::Up,
            removed_at_ms: 0,
            counters: BackendCounters::new(self.workers),
        });
        self.generation += 1;
        Ok(self.handle(slot))
    }

    /// `rm-backend [--drain]` at `now_ms`. With `drain` the backend keeps its connections and
    /// takes no new ones; without, its connections are to be reset. Either way a backend with
    /// no connection goes at once. A stale handle a worker still holds then reads as gone
    /// ([`Disposition::Reset`](crate::table::Disposition)), never as another backend.
    pub fn remove_backend(
        &mut self,
        addr: BackendAddr,
        drain: bool,
        now_ms: u64,
    ) -> Result<Removal, ServiceError> {
        let (slot, _) = self.find(addr)?;
        let backend = self.handle(slot);
        let r = self.record(slot);
        let active = r.counters.active();
        let removal = if active == 0 {
            self.slots[slot] = None;
            Removal::Purged { backend }
        } else if drain {
            r.state = BackendState::Draining;
            Removal::Draining { backend, active }
        } else {
            r.state = BackendState::Removed;
            r.removed_at_ms = now_ms;
            Removal::Reset { backend, active }
        };
        self.generation += 1;
        Ok(removal)
    }

    /// `set-weight`.
    pub fn set_weight(&mut self, addr: BackendAddr, weight: u32) -> Result<(), ServiceError> {
        let weight = check_weight(weight)?;
        let (slot, _) = self.find(addr)?;
        self.record(slot).weight = weight;
        self.generation += 1;
        Ok(())
    }

    /// A health check's result; true if it changed the backend's health (a new snapshot is
    /// due).
    pub fn set_health(&mut self, addr: BackendAddr, health: Health) -> Result<bool, ServiceError> {
        let (slot, _) = self.find(addr)?;
        let r = self.record(slot);
        if r.health == health {
            return Ok(false);
        }
        r.health = health;
        self.generation += 1;
        Ok(true)
    }

    /// Lets go of backends that are done at `now_ms`: draining ones with no connection left,
    /// removed ones whose connections are reset (or older than the idle timeout, by when
    /// conntrack has expired them anyway). Returns their addresses (a new snapshot is due
    /// when any).
    pub fn reap(&mut self, now_ms: u64) -> Vec<SocketAddr> {
        let timeout = self.idle_timeout_ms();
        let mut gone = Vec::new();
        for s in &mut self.slots {
            let done = s.as_ref().is_some_and(|r| match r.state {
                BackendState::Active => false,
                BackendState::Draining => r.counters.active() == 0,
                BackendState::Removed => {
                    r.counters.active() == 0 || now_ms.saturating_sub(r.removed_at_ms) >= timeout
                }
            });
            if done && let Some(r) = s.take() {
                gone.push(r.addr);
            }
        }
        if !gone.is_empty() {
            self.generation += 1;
        }
        gone
    }

    /// Every backend, in slot order, with its counts (for `service inspect`).
    pub fn backends(&self) -> impl Iterator<Item = BackendInfo> + '_ {
        self.slots.iter().flatten().map(|r| BackendInfo {
            addr: r.addr,
            weight: r.weight,
            state: r.state,
            health: r.health,
            active: r.counters.active(),
            total: r.counters.total(),
        })
    }

    /// The backends that take new connections (active and up): what `tasks.SVC` answers.
    pub fn live_backends(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.slots
            .iter()
            .flatten()
            .filter(|r| r.state == BackendState::Active && r.health == Health::Up)
            .map(|r| r.addr)
    }

    /// Which configuration this is (grows with every change).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The snapshot of the service as it is now, for the workers (builds the Maglev table:
    /// milliseconds for a thousand backends, so once per change, on the control plane).
    pub fn snapshot(&self) -> Arc<ServiceTable> {
        let backends: Box<[Option<TableBackend>]> = self
            .slots
            .iter()
            .map(|s| {
                s.as_ref().map(|r| TableBackend {
                    serial: r.serial,
                    addr: r.addr,
                    weight: r.weight,
                    state: r.state,
                    health: r.health,
                    counters: r.counters.clone(),
                })
            })
            .collect();
        let mut live: Vec<u16> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.as_ref().is_some_and(TableBackend::is_live))
            .map(|(i, _)| i as u16)
            .collect();
        let addr_of = |s: &u16| backends[usize::from(*s)].as_ref().map(|b| b.addr);
        live.sort_by_key(addr_of);
        let seed = self.spec.hash_seed.unwrap_or(DEFAULT_SEED);
        let maglev = if self.spec.scheduler == SchedulerKind::Maglev {
            let input: Vec<MaglevBackend> = live
                .iter()
                .filter_map(|&slot| {
                    let b = backends[usize::from(slot)].as_ref()?;
                    Some(MaglevBackend {
                        slot,
                        addr: b.addr,
                        weight: b.weight,
                    })
                })
                .collect();
            maglev::build(&input, self.spec.maglev_size(), seed)
        } else {
            Box::new([])
        };
        let live_weights = live
            .iter()
            .map(|&s| backends[usize::from(s)].as_ref().map_or(0, |b| b.weight))
            .collect();
        let live_counters = live
            .iter()
            .filter_map(|&s| {
                backends[usize::from(s)]
                    .as_ref()
                    .map(|b| b.counters.clone())
            })
            .collect();
        let reset = backends
            .iter()
            .enumerate()
            .filter_map(|(slot, b)| {
                let b = b.as_ref().filter(|b| b.state == BackendState::Removed)?;
                Some(BackendRef {
                    slot: slot as u16,
                    serial: b.serial,
                })
            })
            .collect();
        Arc::new(ServiceTable {
            key: self.key(),
            target_port: self.spec.port.target,
            scheduler: self.spec.scheduler,
            idle_timeout_ms: self.idle_timeout_ms(),
            hash_seed: seed,
            generation: self.generation,
            backends,
            live: live.into_boxed_slice(),
            live_weights,
            live_counters,
            maglev,
            reset,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::table::Disposition;
    use proptest::prelude::*;

    fn b(s: &str) -> BackendAddr {
        s.parse().unwrap()
    }

    fn web() -> Service {
        let spec = ServiceSpec::new(
            "10.0.0.100".parse().unwrap(),
            "tcp/80:8080".parse().unwrap(),
        );
        Service::new(spec, 2).unwrap()
    }

    #[test]
    fn refusals_say_why_and_change_nothing() {
        let mut s = web();
        s.add_backend(b("10.0.0.2"), 1).unwrap();
        let g = s.generation();
        let err = |r: Result<BackendRef, ServiceError>| r.unwrap_err().to_string();
        let mut s2 = s.clone();
        assert_eq!(
            err(s2.add_backend(b("10.0.0.2:8080"), 1)),
            "backend 10.0.0.2:8080 is already in the service",
            "no port means the target port"
        );
        assert_eq!(
            err(s2.add_backend(b("10.0.0.3"), 0)),
            "weight 0 is out of range: use 1-10000 (rm-backend --drain stops new connections to a backend)"
        );
        assert_eq!(
            err(s2.add_backend(b("fd00::3"), 1)),
            "backend [fd00::3]:8080 and the service's virtual IP 10.0.0.100 are not of the same IP version"
        );
        assert_eq!(
            err(s2.add_backend(b("10.0.0.100"), 1)),
            "backend 10.0.0.100:8080 is the service's own virtual IP"
        );
        assert_eq!(
            s2.remove_backend(b("10.0.0.9"), false, 0)
                .unwrap_err()
                .to_string(),
            "no backend 10.0.0.9:8080 in the service"
        );
        assert_eq!(
            s2.set_weight(b("10.0.0.2"), 10_001).unwrap_err(),
            ServiceError::WeightOutOfRange(10_001)
        );
        assert_eq!(
            s2.set_timeout_secs(0).unwrap_err().to_string(),
            "timeout 0 s is out of range: use 1-604800 seconds"
        );
        assert_eq!(
            s2.set_maglev_size(65536).unwrap_err().to_string(),
            "maglev table size 65536 must be a prime between 7 and 4194301 (e.g. 65537)"
        );
        assert_eq!(s2.generation(), g, "nothing changed");
        assert_eq!(s2.backends().count(), 1);
        let mut spec = *s.spec();
        spec.maglev_size = Some(5);
        assert_eq!(
            Service::new(spec, 1).unwrap_err(),
            ServiceError::BadTableSize(5)
        );
    }

    #[test]
    fn a_service_holds_at_most_max_backends() {
        let mut s = web();
        for i in 0..MAX_BACKENDS as u32 {
            let ip = std::net::Ipv4Addr::from(0x0a01_0000 + i);
            s.add_backend(
                BackendAddr {
                    ip: ip.into(),
                    port: None,
                },
                1,
            )
            .unwrap();
        }
        assert_eq!(
            s.add_backend(b("10.2.0.1"), 1).unwrap_err().to_string(),
            "the service already has 4096 backends, the most it can hold"
        );
    }

    #[test]
    fn drain_keeps_connections_until_they_close() {
        let mut s = web();
        let r = s.add_backend(b("10.0.0.2"), 1).unwrap();
        s.add_backend(b("10.0.0.3"), 1).unwrap();
        let t = s.snapshot();
        let counters = &t.backend(r).unwrap().counters;
        counters.opened(0);
        counters.opened(1);
        assert_eq!(
            s.remove_backend(b("10.0.0.2"), true, 1000).unwrap(),
            Removal::Draining {
                backend: r,
                active: 2
            }
        );
        let t2 = s.snapshot();
        assert_eq!(t2.disposition(r), Disposition::Keep);
        assert!(t2.reset_list().is_empty());
        assert_eq!(t2.live().len(), 1);
        let info = s.backends().next().unwrap();
        assert_eq!(
            (info.state, info.active, info.total),
            (BackendState::Draining, 2, 2)
        );
        assert!(
            s.reap(10_000_000).is_empty(),
            "draining waits for its connections, however long"
        );
        counters.closed(0);
        counters.closed(1);
        assert_eq!(s.reap(10_000_001), vec!["10.0.0.2:8080".parse().unwrap()]);
        assert_eq!(s.snapshot().disposition(r), Disposition::Reset, "gone");
    }

    #[test]
    fn removal_resets_and_is_reaped_when_reset_or_timed_out() {
        let mut s = web();
        s.set_timeout_secs(60).unwrap();
        let r = s.add_backend(b("10.0.0.2"), 1).unwrap();
        s.snapshot().backend(r).unwrap().counters.opened(0);
        assert_eq!(
            s.remove_backend(b("10.0.0.2"), false, 5_000).unwrap(),
            Removal::Reset {
                backend: r,
                active: 1
            }
        );
        let t = s.snapshot();
        assert_eq!(t.reset_list(), &[r]);
        assert_eq!(t.disposition(r), Disposition::Reset);
        assert!(t.live().is_empty());
        // The same address may come back at once, as a new backend.
        let again = s.add_backend(b("10.0.0.2"), 1).unwrap();
        assert_ne!(again, r);
        assert!(s.reap(64_999).is_empty());
        assert_eq!(
            s.reap(65_000).len(),
            1,
            "idle timeout after removal: conntrack expired them"
        );
        assert_eq!(s.backends().count(), 1);
    }

    #[test]
    fn adding_a_draining_backend_takes_it_back() {
        let mut s = web();
        let r = s.add_backend(b("10.0.0.2"), 1).unwrap();
        s.snapshot().backend(r).unwrap().counters.opened(0);
        s.remove_backend(b("10.0.0.2"), true, 0).unwrap();
        assert_eq!(s.add_backend(b("10.0.0.2"), 3).unwrap(), r);
        let info = s.backends().next().unwrap();
        assert_eq!((info.state, info.weight), (BackendState::Active, 3));
    }

    #[test]
    fn timeouts_default_by_protocol_and_are_settable() {
        let mut s = web();
        assert_eq!(s.idle_timeout_ms(), 900_000);
        s.set_timeout_secs(3600).unwrap();
        assert_eq!(s.snapshot().idle_timeout_ms(), 3_600_000);
        let udp = ServiceSpec::new("10.0.0.100".parse().unwrap(), "udp/53".parse().unwrap());
        assert_eq!(Service::new(udp, 1).unwrap().idle_timeout_ms(), 300_000);
    }

    #[test]
    fn health_down_takes_a_backend_out_of_dns_and_scheduling() {
        let mut s = web();
        s.add_backend(b("10.0.0.2"), 1).unwrap();
        s.add_backend(b("10.0.0.3"), 1).unwrap();
        assert!(s.set_health(b("10.0.0.3"), Health::Down).unwrap());
        assert!(
            !s.set_health(b("10.0.0.3"), Health::Down).unwrap(),
            "no change"
        );
        let live: Vec<SocketAddr> = s.live_backends().collect();
        assert_eq!(live, ["10.0.0.2:8080".parse().unwrap()]);
        assert_eq!(s.snapshot().live().len(), 1);
    }

    #[test]
    fn spec_round_trips_through_the_state_file() {
        let mut spec = ServiceSpec::new(
            "10.0.0.100".parse().unwrap(),
            "tcp/80:8080".parse().unwrap(),
        );
        spec.scheduler = SchedulerKind::Maglev;
        spec.timeout_secs = Some(3600);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            json,
            r#"{"vip":"10.0.0.100","port":"tcp/80:8080","scheduler":"maglev","timeout_secs":3600}"#
        );
        assert_eq!(serde_json::from_str::<ServiceSpec>(&json).unwrap(), spec);
        let info = BackendInfo {
            addr: "10.0.0.2:8080".parse().unwrap(),
            weight: 1,
            state: BackendState::Draining,
            health: Health::Up,
            active: 3,
            total: 9,
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"addr":"10.0.0.2:8080","weight":1,"state":"draining","health":"up","active":3,"total":9}"#
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, u32),
        Remove(u8, bool),
        Weight(u8, u32),
        Health(u8, bool),
        Open(u8),
        Close(u8),
        Reap(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 0u32..6).prop_map(|(i, w)| Op::Add(i, w)),
            (0u8..12, any::<bool>()).prop_map(|(i, d)| Op::Remove(i, d)),
            (0u8..12, 0u32..6).prop_map(|(i, w)| Op::Weight(i, w)),
            (0u8..12, any::<bool>()).prop_map(|(i, u)| Op::Health(i, u)),
            (0u8..12).prop_map(Op::Open),
            (0u8..12).prop_map(Op::Close),
            (0u64..2_000_000).prop_map(Op::Reap),
        ]
    }

    fn addr(i: u8) -> BackendAddr {
        format!("10.0.0.{}", i + 2).parse().unwrap()
    }

    proptest! {
        /// After any sequence of verbs: the live list is exactly the active and healthy
        /// backends, no two non-removed backends share an address, every Maglev entry points at
        /// a live backend, the reset list is exactly the removed ones, and a refused verb
        /// changed nothing.
        #[test]
        fn snapshot_invariants(ops in proptest::collection::vec(op(), 1..60), maglev in any::<bool>()) {
            let mut s = web();
            if maglev {
                s.set_scheduler(SchedulerKind::Maglev);
                s.set_maglev_size(1021).unwrap();
            }
            let mut now = 0;
            for op in ops {
                let before = s.generation();
                let refused = match op {
                    Op::Add(i, w) => s.add_backend(addr(i), w).is_err(),
                    Op::Remove(i, d) => s.remove_backend(addr(i), d, now).is_err(),
                    Op::Weight(i, w) => s.set_weight(addr(i), w).is_err(),
                    Op::Health(i, up) => s.set_health(addr(i), if up { Health::Up } else { Health::Down }).is_err(),
                    Op::Open(i) | Op::Close(i) => {
                        let t = s.snapshot();
                        let target = addr(i).resolve(8080);
                        if let Some((_, b)) = t.backends().find(|(_, b)| b.addr == target && b.state != BackendState::Removed) {
                            if matches!(op, Op::Open(_)) { b.counters.opened(0) } else { b.counters.closed(0) }
                        }
                        false
                    }
                    Op::Reap(dt) => { now += dt; s.reap(now); false }
                };
                if refused {
                    prop_assert_eq!(s.generation(), before);
                }
                let t = s.snapshot();
                let mut live: Vec<u16> = t.backends().filter(|(_, b)| b.is_live()).map(|(r, _)| r.slot).collect();
                let mut got = t.live().to_vec();
                live.sort();
                got.sort();
                prop_assert_eq!(live, got);
                let mut addrs: Vec<SocketAddr> = t.backends().filter(|(_, b)| b.state != BackendState::Removed).map(|(_, b)| b.addr).collect();
                let n = addrs.len();
                addrs.sort();
                addrs.dedup();
                prop_assert_eq!(addrs.len(), n);
                prop_assert!(t.maglev().iter().all(|&slot| t.live().contains(&slot)));
                prop_assert_eq!(t.maglev().is_empty(), !maglev || t.live().is_empty());
                let removed: Vec<BackendRef> = t.backends().filter(|(_, b)| b.state == BackendState::Removed).map(|(r, _)| r).collect();
                prop_assert_eq!(t.reset_list(), &removed[..]);
            }
        }
    }
}
