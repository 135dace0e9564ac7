//! A service's snapshot ([`ServiceTable`]): everything a worker needs to schedule a new
//! connection and to judge an established one: the backends by slot with their weights,
//! states, health and counters, the live ones in address order, the Maglev lookup table, the
//! reset list and the idle timeout.
//!
//! Built by the control plane ([`Service::snapshot`](crate::service::Service::snapshot)) and
//! never changed afterwards; shared by `Arc` with every worker, which swaps the new one in
//! between two batches. Only the counters inside it are written (each worker its own row).

use std::net::{IpAddr, SocketAddr};

use xvs_stage::classify::FlowKey;

use crate::backend::{BackendCounters, BackendRef, BackendState, Health};
use crate::hash::flow_key_hash;
use crate::spec::{Proto, SchedulerKind};

/// What identifies a service in the datapath: its virtual IP, protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The virtual IP.
    pub vip: IpAddr,
    /// TCP or UDP.
    pub proto: Proto,
    /// The port clients connect to.
    pub port: u16,
}

impl ServiceKey {
    /// The service a classified frame is addressed to (its destination address, protocol and
    /// port), if it is TCP or UDP over IP.
    #[inline]
    pub fn of_flow(key: &FlowKey) -> Option<ServiceKey> {
        Some(ServiceKey {
            vip: key.ip_dst()?,
            proto: Proto::from_number(key.nw_proto)?,
            port: key.tp_dst,
        })
    }
}

/// One backend in a snapshot.
#[derive(Debug, Clone)]
pub struct TableBackend {
    /// Its serial (see [`BackendRef`]).
    pub serial: u32,
    /// Where connections go: its address and port.
    pub addr: SocketAddr,
    /// Its configured weight (1 ..= [`MAX_WEIGHT`](crate::service::MAX_WEIGHT)).
    pub weight: u32,
    /// Active, draining or removed.
    pub state: BackendState,
    /// Up or down, as the control plane's health check last said.
    pub health: Health,
    /// Its connection counts, shared with every snapshot of the service.
    pub counters: BackendCounters,
}

impl TableBackend {
    /// True if the backend may take new connections: active and up.
    #[inline]
    pub fn is_live(&self) -> bool {
        self.state == BackendState::Active && self.health == Health::Up
    }
}

/// What conntrack should do with an established connection to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Keep forwarding it (active, draining or down backends keep their connections).
    Keep,
    /// Reset it: its backend was removed without `--drain`, or is gone altogether.
    Reset,
}

/// A service's immutable snapshot (see the module header).
#[derive(Debug)]
pub struct ServiceTable {
    pub(crate) key: ServiceKey,
    pub(crate) target_port: u16,
    pub(crate) scheduler: SchedulerKind,
    pub(crate) idle_timeout_ms: u64,
    pub(crate) hash_seed: u64,
    pub(crate) generation: u64,
    pub(crate) backends: Box<[Option<TableBackend>]>,
    pub(crate) live: Box<[u16]>,
    /// The live backends' weights and counters, by position in `live` (dense, for wrr and
    /// lc's scans).
    pub(crate) live_weights: Box<[u32]>,
    pub(crate) live_counters: Box<[BackendCounters]>,
    pub(crate) maglev: Box<[u16]>,
    pub(crate) reset: Box<[BackendRef]>,
}

impl ServiceTable {
    /// The service's virtual IP, protocol and port.
    #[inline]
    pub fn key(&self) -> ServiceKey {
        self.key
    }

    /// The port backends listen on unless they name their own.
    pub fn target_port(&self) -> u16 {
        self.target_port
    }

    /// The scheduler.
    #[inline]
    pub fn scheduler(&self) -> SchedulerKind {
        self.scheduler
    }

    /// How long conntrack keeps an idle connection of this service, in ms.
    #[inline]
    pub fn idle_timeout_ms(&self) -> u64 {
        self.idle_timeout_ms
    }

    /// The seed of the service's flow hash.
    #[inline]
    pub fn hash_seed(&self) -> u64 {
        self.hash_seed
    }

    /// The hash of a classified frame's 5-tuple under this service's seed (what Maglev picks
    /// by).
    #[inline]
    pub fn flow_hash(&self, key: &FlowKey) -> u64 {
        flow_key_hash(self.hash_seed, key)
    }

    /// Which configuration of the service this is (grows with every change).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The backend a handle names, if it is still the one in that slot.
    #[inline]
    pub fn backend(&self, r: BackendRef) -> Option<&TableBackend> {
        self.backends
            .get(usize::from(r.slot))?
            .as_ref()
            .filter(|b| b.serial == r.serial)
    }

    /// Every backend with its handle, in slot order.
    pub fn backends(&self) -> impl Iterator<Item = (BackendRef, &TableBackend)> {
        self.backends.iter().enumerate().filter_map(|(slot, b)| {
            let b = b.as_ref()?;
            Some((
                BackendRef {
                    slot: slot as u16,
                    serial: b.serial,
                },
                b,
            ))
        })
    }

    /// The slots of the backends that take new connections, in address order.
    #[inline]
    pub fn live(&self) -> &[u16] {
        &self.live
    }

    /// The Maglev lookup table (slots; empty unless the scheduler is Maglev and a backend is
    /// live).
    pub fn maglev(&self) -> &[u16] {
        &self.maglev
    }

    /// Backends removed without `--drain` whose connections conntrack is to reset (a sweep of
    /// its table when a snapshot brings a new entry here; [`ServiceTable::disposition`] says
    /// the same per packet).
    pub fn reset_list(&self) -> &[BackendRef] {
        &self.reset
    }

    /// What to do with an established connection to `r`: keep it, or reset it because its
    /// backend was removed (or is gone: its slot is empty or holds a newer backend).
    #[inline]
    pub fn disposition(&self, r: BackendRef) -> Disposition {
        match self.backend(r) {
            Some(b) if b.state != BackendState::Removed => Disposition::Keep,
            _ => Disposition::Reset,
        }
    }
}
