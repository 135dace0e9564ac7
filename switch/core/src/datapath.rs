//! The control thread's handle on the datapath: bridges, ports and the workers that run them.
//!
//! A plain bridge is placed on one worker (the least loaded when it is created) and all its
//! ports live there too, so forwarding inside it never leaves that worker's UMEM. A *spread*
//! bridge (a network's: [`Datapath::add_spread_bridge`]) runs a chain of its own on every
//! worker and its ports are spread over the workers: each port that any thread can write (a
//! TAP) goes to the worker polling the fewest ports, and every other worker gets a writer on
//! it, so a frame from any worker goes straight out; the others (AF_XDP, whose UMEM is its
//! worker's; the gateway's pipe) stay on the bridge's home worker, and frames for them from
//! elsewhere are handed over. Methods block briefly waiting for the worker's acknowledgement; call them
//! from a control thread (never from a worker). Not `Sync`: the caller serialises access.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded};

use crate::chain::Chain;
use crate::classify::{Mac, PortId};
use crate::clock::{Clock, MonotonicClock};
use crate::counters::{DropCounters, DropReason, PortCounterSnapshot, PortCounters};
use crate::fdb::FdbConfig;
use crate::l2::L2Stage;
use crate::port::{BackendInfo, BackendStats, PortError, PortIo, PortSpec, PortType};
use crate::stage::Stage;
use crate::worker::{self, BridgeId, Command, PoolConfig, TraceAction, TraceResult, WorkerHandle};

/// How long to wait for a worker to acknowledge a command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Datapath settings.
#[derive(Debug, Clone, Copy)]
pub struct DatapathConfig {
    /// Worker threads.
    pub workers: u32,
    /// Frames per worker pool.
    pub pool_frames: u32,
    /// Make pools AF_XDP UMEMs (needs privileges); false for unit tests and benches.
    pub umem: bool,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            workers: 1,
            pool_frames: 16384,
            umem: true,
        }
    }
}

/// Errors of datapath operations, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// No bridge by that name.
    #[error("no bridge named {0}")]
    NoSuchBridge(String),
    /// A bridge by that name exists.
    #[error("bridge {0} already exists")]
    BridgeExists(String),
    /// No such port on that bridge.
    #[error("bridge {bridge} has no port {port}")]
    NoSuchPort {
        /// Bridge.
        bridge: String,
        /// Port.
        port: String,
    },
    /// The interface is already a port.
    #[error("{port} is already a port of bridge {bridge}")]
    PortExists {
        /// Bridge it is on.
        bridge: String,
        /// Port.
        port: String,
    },
    /// Opening the backend failed.
    #[error(transparent)]
    Port(#[from] PortError),
    /// A worker did not answer.
    #[error("datapath worker {0} is not responding")]
    WorkerGone(u32),
    /// Invalid argument.
    #[error("{0}")]
    Invalid(String),
}

/// A port as the control thread knows it.
#[derive(Debug, Clone)]
pub struct PortStatus {
    /// Interface name.
    pub name: String,
    /// Datapath port id.
    pub id: PortId,
    /// The worker that polls it.
    pub worker: u32,
    /// Number on its bridge, from 1.
    pub ofport: u32,
    /// Access VLAN (0 = none).
    pub vlan: u16,
    /// Backend description.
    pub info: BackendInfo,
    /// Counters.
    pub counters: PortCounterSnapshot,
    /// Kernel-side counters.
    pub backend: BackendStats,
}

/// A bridge as the control thread knows it.
#[derive(Debug, Clone)]
pub struct BridgeStatus {
    /// Name.
    pub name: String,
    /// Worker running it (a spread bridge's home: every worker runs it).
    pub worker: u32,
    /// Its ports are spread over the workers, each running its chain.
    pub spread: bool,
    /// MAC table limits.
    pub config: FdbConfig,
    /// Learned MACs.
    pub macs: usize,
    /// Ports by ofport.
    pub ports: Vec<PortStatus>,
}

/// One MAC table row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbRow {
    /// Port name.
    pub port: String,
    /// Port number on the bridge.
    pub ofport: u32,
    /// VLAN.
    pub vlan: u16,
    /// MAC.
    pub mac: Mac,
    /// Seconds since seen.
    pub age_secs: u64,
}

/// A traced frame's story.
#[derive(Debug, Clone)]
pub struct TraceReport {
    /// `(stage, decision)` in order.
    pub steps: Vec<(String, String)>,
    /// Final action, with port names.
    pub action: String,
}

struct PortRec {
    id: PortId,
    /// The worker that polls it.
    worker: usize,
    ofport: u32,
    vlan: u16,
    info: BackendInfo,
    counters: Arc<PortCounters>,
}

struct BridgeRec {
    id: BridgeId,
    /// The worker that polls its ports (and runs its chain, unless replicated).
    worker: usize,
    /// Every worker runs a chain of its own for it (the uplink: each worker's connections
    /// are tracked on that worker); its ports are polled by `worker` alone, unless spread.
    replicated: bool,
    /// Replicated, and its ports spread over the workers (a network's bridge).
    spread: bool,
    config: FdbConfig,
    ports: BTreeMap<String, PortRec>,
    next_ofport: u32,
}

/// The datapath: workers and what runs on them.
pub struct Datapath {
    workers: Vec<WorkerHandle>,
    clock: Arc<dyn Clock>,
    drops: Vec<Arc<DropCounters>>,
    bridges: BTreeMap<String, BridgeRec>,
    next_bridge: BridgeId,
    next_port: PortId,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("workers", &self.workers.len())
            .field("bridges", &self.bridges.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn wait<T>(rx: Receiver<T>, worker: u32) -> Result<T, DatapathError> {
    rx.recv_timeout(REPLY_TIMEOUT)
        .map_err(|_| DatapathError::WorkerGone(worker))
}

impl Datapath {
    /// Starts the workers.
    pub fn start(config: DatapathConfig) -> std::io::Result<Datapath> {
        Self::start_with_clock(config, Arc::new(MonotonicClock::default()))
    }

    /// Starts the workers with a given clock (tests use a virtual one).
    pub fn start_with_clock(
        config: DatapathConfig,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Datapath> {
        crate::engine::register_reasons();
        let n = config.workers.clamp(1, u32::from(u16::MAX));
        let mut workers = Vec::new();
        let mut drops = Vec::new();
        for (id, link) in (0..n).zip(worker::links(n as u16)?) {
            let d = Arc::new(DropCounters::default());
            workers.push(worker::spawn(
                id,
                PoolConfig {
                    frames: config.pool_frames,
                    umem: config.umem,
                },
                clock.clone(),
                d.clone(),
                link,
            )?);
            drops.push(d);
        }
        Ok(Datapath {
            clock,
            workers,
            drops,
            bridges: BTreeMap::new(),
            next_bridge: 1,
            next_port: 1,
        })
    }

    /// The workers' clock now, in ms (the time stages see).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Worker threads.
    pub fn worker_count(&self) -> u32 {
        self.workers.len() as u32
    }

    /// Why AF_XDP is unavailable, if it is.
    pub fn afxdp_unavailable(&self) -> Option<String> {
        self.workers.iter().find_map(|w| w.umem_error.clone())
    }

    /// Bridges homed and ports polled on each worker.
    fn load(&self) -> Vec<usize> {
        let mut load = vec![0usize; self.workers.len()];
        for b in self.bridges.values() {
            load[b.worker] += 1;
            for p in b.ports.values() {
                load[p.worker] += 1;
            }
        }
        load
    }

    fn least_loaded_worker(&self) -> usize {
        self.load()
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .map(|(i, _)| i)
            .unwrap_or(0)
    }

    fn bridge(&self, name: &str) -> Result<&BridgeRec, DatapathError> {
        self.bridges
            .get(name)
            .ok_or_else(|| DatapathError::NoSuchBridge(name.to_string()))
    }

    fn call<T>(
        &self,
        worker: usize,
        make: impl FnOnce(crossbeam_channel::Sender<T>) -> Command,
    ) -> Result<T, DatapathError> {
        let (tx, rx) = bounded(1);
        let w = &self.workers[worker];
        if !w.send(make(tx)) {
            return Err(DatapathError::WorkerGone(w.id));
        }
        wait(rx, w.id)
    }

    /// Creates a bridge (on the least loaded worker).
    pub fn add_bridge(&mut self, name: &str, config: FdbConfig) -> Result<(), DatapathError> {
        let worker = self.least_loaded_worker();
        self.add_bridge_on(name, config, worker)
    }

    /// Creates a bridge on the worker that polls `near`'s ports (the least loaded one if
    /// `near` does not exist): frames between the two then never cross workers.
    pub fn add_bridge_near(
        &mut self,
        name: &str,
        config: FdbConfig,
        near: &str,
    ) -> Result<(), DatapathError> {
        let worker = match self.bridges.get(near) {
            Some(b) => b.worker,
            None => self.least_loaded_worker(),
        };
        self.add_bridge_on(name, config, worker)
    }

    fn add_bridge_on(
        &mut self,
        name: &str,
        config: FdbConfig,
        worker: usize,
    ) -> Result<(), DatapathError> {
        if self.bridges.contains_key(name) {
            return Err(DatapathError::BridgeExists(name.to_string()));
        }
        let id = self.next_bridge;
        self.call(worker, |reply| Command::AddBridge {
            id,
            name: name.to_string(),
            config,
            reply,
        })?;
        self.next_bridge += 1;
        self.bridges.insert(
            name.to_string(),
            BridgeRec {
                id,
                worker,
                replicated: false,
                spread: false,
                config,
                ports: BTreeMap::new(),
                next_ofport: 1,
            },
        );
        Ok(())
    }

    /// Creates a bridge that every worker runs, each with its own chain (`chain(worker)`), its
    /// ports polled by one worker: the one running most of the bridges whose names start with
    /// `near` (the networks that will route through it), else the least loaded. Frames other
    /// workers send out of its ports are handed over. How every worker reaches the uplink with
    /// connection state of its own.
    pub fn add_replicated_bridge(
        &mut self,
        name: &str,
        config: FdbConfig,
        near: &str,
        chain: impl Fn(u16) -> Chain,
    ) -> Result<(), DatapathError> {
        if self.bridges.contains_key(name) {
            return Err(DatapathError::BridgeExists(name.to_string()));
        }
        let mut count = vec![0usize; self.workers.len()];
        for (n, b) in &self.bridges {
            if !near.is_empty() && n.starts_with(near) {
                count[b.worker] += 1;
            }
        }
        let worker = match count
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, usize::MAX - i))
        {
            Some((w, c)) if *c > 0 => w,
            _ => self.least_loaded_worker(),
        };
        let id = self.next_bridge;
        self.next_bridge += 1;
        let made = (0..self.workers.len()).try_for_each(|w| {
            self.call(w, |reply| Command::AddBridge {
                id,
                name: name.to_string(),
                config,
                reply,
            })?;
            let c = chain(w as u16);
            self.call(w, |reply| Command::SetChain {
                id,
                chain: c,
                reply,
            })
            .map(|_| ())
        });
        if let Err(e) = made {
            for w in 0..self.workers.len() {
                let _ = self.call(w, |reply| Command::DelBridge { id, reply });
            }
            return Err(e);
        }
        self.bridges.insert(
            name.to_string(),
            BridgeRec {
                id,
                worker,
                replicated: true,
                spread: false,
                config,
                ports: BTreeMap::new(),
                next_ofport: 1,
            },
        );
        Ok(())
    }

    /// Creates a bridge that every worker runs, each with its own chain (`chain(worker)`), and
    /// whose ports are spread over the workers (see the module's header): how one network's
    /// traffic uses every core. Its home worker (the least loaded) polls the ports no other
    /// thread can write: `near`'s worker when that bridge exists (the uplink, so that routed
    /// frames of those ports never cross workers), else the least loaded.
    pub fn add_spread_bridge(
        &mut self,
        name: &str,
        config: FdbConfig,
        near: &str,
        chain: impl Fn(u16) -> Chain,
    ) -> Result<(), DatapathError> {
        let home = match self.bridges.get(near) {
            Some(b) => b.worker,
            None => self.least_loaded_worker(),
        };
        self.add_replicated_bridge(name, config, "", chain)?;
        if let Some(b) = self.bridges.get_mut(name) {
            b.spread = true;
            b.worker = home;
        }
        Ok(())
    }

    /// The id of a bridge (what [`Verdict::Patch`](crate::stage::Verdict::Patch) names).
    pub fn bridge_id(&self, name: &str) -> Option<BridgeId> {
        self.bridges.get(name).map(|b| b.id)
    }

    /// The worker that polls a bridge's ports.
    pub fn bridge_worker(&self, name: &str) -> Option<u16> {
        self.bridges.get(name).map(|b| b.worker as u16)
    }

    /// Whether every worker runs `name` with its ports spread ([`Self::add_spread_bridge`]).
    pub fn is_spread(&self, name: &str) -> bool {
        self.bridges.get(name).is_some_and(|b| b.spread)
    }

    /// The worker that polls port `port` of `bridge`.
    pub fn port_worker(&self, bridge: &str, port: &str) -> Option<u16> {
        self.bridges
            .get(bridge)?
            .ports
            .get(port)
            .map(|p| p.worker as u16)
    }

    /// The id of a port of a bridge.
    pub fn port_id(&self, bridge: &str, port: &str) -> Option<PortId> {
        self.bridges.get(bridge)?.ports.get(port).map(|p| p.id)
    }

    /// The workers that run `b`'s chain.
    fn chain_workers(&self, b: &BridgeRec) -> std::ops::Range<usize> {
        if b.replicated {
            0..self.workers.len()
        } else {
            b.worker..b.worker + 1
        }
    }

    /// Tells the workers that do not poll a replicated bridge's port which one does (with a
    /// writer on it, for a spread bridge's port that has one), or that it is gone.
    fn announce_port(&self, b: &BridgeRec, id: PortId, present: bool) {
        if !b.replicated {
            return;
        }
        let Some(p) = b.ports.values().find(|p| p.id == id) else {
            return;
        };
        for w in 0..self.workers.len() {
            if w == p.worker {
                continue;
            }
            let port = if present {
                let writer = if b.spread {
                    self.call(p.worker, |reply| Command::RemoteWriter { id, reply })
                        .ok()
                        .flatten()
                } else {
                    None
                };
                Some(crate::engine::RemotePort {
                    bridge: b.id,
                    vlan: p.vlan,
                    worker: p.worker as u16,
                    member: b.spread,
                    writer,
                    counters: p.counters.clone(),
                })
            } else {
                None
            };
            let _ = self.call(w, |reply| Command::RemotePort { id, port, reply });
        }
    }

    /// The worker that is to poll a new port of `b`: for a spread bridge's port that other
    /// threads can write, the one polling the fewest ports that carry traffic of their own
    /// (internal ports, a gateway's, are not counted; ties go to the lowest worker);
    /// otherwise the bridge's.
    fn place_port(&self, b: &BridgeRec, shareable: bool) -> usize {
        if !(b.spread && shareable) {
            return b.worker;
        }
        let mut load = vec![0usize; self.workers.len()];
        for p in self.bridges.values().flat_map(|b| b.ports.values()) {
            if p.info.port_type != PortType::Internal {
                load[p.worker] += 1;
            }
        }
        load.iter()
            .enumerate()
            .min_by_key(|(i, l)| (**l, *i))
            .map(|(i, _)| i)
            .unwrap_or(b.worker)
    }

    /// Changes a bridge's MAC table limits.
    pub fn set_bridge(&mut self, name: &str, config: FdbConfig) -> Result<(), DatapathError> {
        self.with_stage_each::<L2Stage, _>(name, move |l2, _| l2.fdb_mut().set_config(config))?;
        if let Some(b) = self.bridges.get_mut(name) {
            b.config = config;
        }
        Ok(())
    }

    /// Sets whether a bridge's ports may talk to each other, and which port is the local
    /// stack's (always allowed).
    pub fn set_policy(
        &mut self,
        name: &str,
        icc: bool,
        local_port: Option<&str>,
    ) -> Result<(), DatapathError> {
        let b = self.bridge(name)?;
        let local = match local_port {
            Some(p) => Some(
                b.ports
                    .get(p)
                    .ok_or_else(|| DatapathError::NoSuchPort {
                        bridge: name.to_string(),
                        port: p.to_string(),
                    })?
                    .id,
            ),
            None => None,
        };
        let id = b.id;
        for w in self.chain_workers(b) {
            self.call(w, |reply| Command::SetPolicy {
                id,
                icc,
                local_port: local,
                reply,
            })?;
        }
        Ok(())
    }

    /// Removes a bridge and all its ports.
    pub fn del_bridge(&mut self, name: &str) -> Result<(), DatapathError> {
        let b = self.bridge(name)?;
        let id = b.id;
        for p in b.ports.values() {
            self.announce_port(b, p.id, false);
        }
        for w in self.chain_workers(b) {
            self.call(w, |reply| Command::DelBridge { id, reply })?;
        }
        self.bridges.remove(name);
        Ok(())
    }

    /// The bridge holding kernel interface `iface` as a port, if any. Ports without a kernel
    /// device (a network's gateway, in-memory ports) are named per bridge and not found here.
    pub fn bridge_of_port(&self, iface: &str) -> Option<&str> {
        self.bridges
            .iter()
            .find(|(_, b)| {
                b.ports.get(iface).is_some_and(|p| {
                    !matches!(p.info.port_type, PortType::Internal | PortType::Mem)
                })
            })
            .map(|(n, _)| n.as_str())
    }

    /// Checks that `name` is free on `bridge` and, for a kernel interface, on every bridge.
    fn check_new_port(
        &self,
        bridge: &str,
        name: &str,
        kernel_device: bool,
    ) -> Result<BridgeId, DatapathError> {
        let b = self.bridge(bridge)?;
        let taken = if b.ports.contains_key(name) {
            Some(bridge)
        } else if kernel_device {
            self.bridge_of_port(name)
        } else {
            None
        };
        if let Some(other) = taken {
            return Err(DatapathError::PortExists {
                bridge: other.to_string(),
                port: name.to_string(),
            });
        }
        Ok(b.id)
    }

    /// Records a port its worker has just attached (its `ofport` given here) on `bridge`
    /// under `iface`, and tells the other workers that run the bridge.
    fn attached(
        &mut self,
        bridge: &str,
        iface: &str,
        mut port: PortRec,
    ) -> Result<(), DatapathError> {
        self.next_port += 1;
        let id = port.id;
        if let Some(b) = self.bridges.get_mut(bridge) {
            port.ofport = b.next_ofport;
            b.next_ofport += 1;
            b.ports.insert(iface.to_string(), port);
        }
        self.announce_port(self.bridge(bridge)?, id, true);
        Ok(())
    }

    /// Opens `spec` and attaches it to `bridge` in access VLAN `vlan` (0 = untagged).
    pub fn add_port(
        &mut self,
        bridge: &str,
        spec: PortSpec,
        vlan: u16,
    ) -> Result<BackendInfo, DatapathError> {
        if vlan > 4094 {
            return Err(DatapathError::Invalid(format!(
                "VLAN {vlan} is out of range (1-4094)"
            )));
        }
        let bid = self.check_new_port(bridge, &spec.iface, true)?;
        let worker = self.place_port(self.bridge(bridge)?, spec.port_type == PortType::Tap);
        let id = self.next_port;
        let counters = Arc::new(PortCounters::default());
        let iface = spec.iface.clone();
        let c2 = counters.clone();
        let info = self.call(worker, |reply| Command::AddPort {
            id,
            bridge: bid,
            spec,
            vlan,
            counters: c2,
            reply,
        })??;
        self.attached(
            bridge,
            &iface,
            PortRec {
                id,
                worker,
                ofport: 0,
                vlan,
                info: info.clone(),
                counters,
            },
        )?;
        Ok(info)
    }

    /// Attaches a prebuilt backend (memory ports) under `name`.
    pub fn add_port_io(
        &mut self,
        bridge: &str,
        name: &str,
        io: Box<dyn PortIo>,
        vlan: u16,
    ) -> Result<BackendInfo, DatapathError> {
        let bid = self.check_new_port(bridge, name, false)?;
        let worker = self.place_port(self.bridge(bridge)?, io.remote_writer().is_some());
        let id = self.next_port;
        let counters = Arc::new(PortCounters::default());
        let c2 = counters.clone();
        let info = self.call(worker, |reply| Command::AddPortIo {
            id,
            bridge: bid,
            io,
            vlan,
            counters: c2,
            reply,
        })?;
        self.attached(
            bridge,
            name,
            PortRec {
                id,
                worker,
                ofport: 0,
                vlan,
                info: info.clone(),
                counters,
            },
        )?;
        Ok(info)
    }

    /// Detaches and closes a port.
    pub fn del_port(&mut self, bridge: &str, iface: &str) -> Result<(), DatapathError> {
        let b = self.bridge(bridge)?;
        let p = b
            .ports
            .get(iface)
            .ok_or_else(|| DatapathError::NoSuchPort {
                bridge: bridge.to_string(),
                port: iface.to_string(),
            })?;
        // The port stops on its worker first (nothing learns from it any more), then the
        // other workers forget it (and the MACs learned on it).
        let (id, worker) = (p.id, p.worker);
        self.call(worker, |reply| Command::DelPort { id, reply })?;
        self.announce_port(b, id, false);
        if let Some(b) = self.bridges.get_mut(bridge) {
            b.ports.remove(iface);
        }
        Ok(())
    }

    /// The MAC table of a bridge.
    pub fn fdb(&self, bridge: &str) -> Result<Vec<FdbRow>, DatapathError> {
        let b = self.bridge(bridge)?;
        let records = self
            .with_stage::<L2Stage, _>(bridge, |l2, now| l2.fdb().records(now))?
            .unwrap_or_default();
        let names: BTreeMap<PortId, (&str, u32)> = b
            .ports
            .iter()
            .map(|(n, p)| (p.id, (n.as_str(), p.ofport)))
            .collect();
        Ok(records
            .into_iter()
            .map(|r| {
                let (name, ofport) = names.get(&r.port).copied().unwrap_or(("?", 0));
                FdbRow {
                    port: name.to_string(),
                    ofport,
                    vlan: r.vlan,
                    mac: r.mac,
                    age_secs: r.age_secs,
                }
            })
            .collect())
    }

    /// Empties a bridge's MAC table.
    pub fn fdb_flush(&self, bridge: &str) -> Result<(), DatapathError> {
        self.with_stage_each::<L2Stage, _>(bridge, |l2, _| l2.fdb_mut().flush())?;
        Ok(())
    }

    /// Runs `f` on `bridge`'s first stage of type `T`, on the worker that runs it, between two
    /// passes, with the time now; `None` when the chain has no such stage. How the control
    /// plane reads and changes a stage's own state (MAC table, connections, services).
    pub fn with_stage<T: Stage, R: Send + 'static>(
        &self,
        bridge: &str,
        f: impl FnOnce(&mut T, u64) -> R + Send + 'static,
    ) -> Result<Option<R>, DatapathError> {
        let b = self.bridge(bridge)?;
        self.call(b.worker, |reply| Command::WithChain {
            bridge: b.id,
            f: Box::new(move |chain, now| {
                let r = chain.and_then(|c| c.stage_mut::<T>()).map(|s| f(s, now));
                let _ = reply.send(r);
            }),
        })
    }

    /// [`with_stage`](Self::with_stage) on every worker that runs `bridge`'s chain (all of
    /// them for a replicated bridge), in worker order; workers whose chain has no such stage
    /// are left out.
    pub fn with_stage_each<T: Stage, R: Send + 'static>(
        &self,
        bridge: &str,
        f: impl Fn(&mut T, u64) -> R + Send + Clone + 'static,
    ) -> Result<Vec<R>, DatapathError> {
        let b = self.bridge(bridge)?;
        let mut out = Vec::new();
        for w in self.chain_workers(b) {
            let f = f.clone();
            let r: Option<R> = self.call(w, |reply| Command::WithChain {
                bridge: b.id,
                f: Box::new(move |chain, now| {
                    let r = chain.and_then(|c| c.stage_mut::<T>()).map(|s| f(s, now));
                    let _ = reply.send(r);
                }),
            })?;
            out.extend(r);
        }
        Ok(out)
    }

    /// Swaps a replicated bridge's chain on every worker (`chain(worker)`).
    pub fn set_chain_each(
        &mut self,
        bridge: &str,
        chain: impl Fn(u16) -> Chain,
    ) -> Result<(), DatapathError> {
        let b = self.bridge(bridge)?;
        let id = b.id;
        for w in self.chain_workers(b) {
            let c = chain(w as u16);
            self.call(w, |reply| Command::SetChain {
                id,
                chain: c,
                reply,
            })?;
        }
        Ok(())
    }

    /// Runs `frame` through `bridge` as if received on `in_port`, without side effects.
    pub fn trace(
        &self,
        bridge: &str,
        in_port: &str,
        frame: Vec<u8>,
    ) -> Result<TraceReport, DatapathError> {
        let b = self.bridge(bridge)?;
        let p = b
            .ports
            .get(in_port)
            .ok_or_else(|| DatapathError::NoSuchPort {
                bridge: bridge.to_string(),
                port: in_port.to_string(),
            })?;
        // On the worker that polls the ingress port: its chain is the one the frame would run.
        let result: TraceResult = self.call(p.worker, |reply| Command::Trace {
            bridge: b.id,
            in_port: p.id,
            frame,
            reply,
        })?;
        // A routed frame may leave by another bridge's port (patched over to the uplink).
        let name_of = |id: PortId| {
            self.bridges
                .values()
                .flat_map(|b| b.ports.iter())
                .find(|(_, p)| p.id == id)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("port{id}"))
        };
        let action = match &result.action {
            TraceAction::Output(p) => format!("output:{}", name_of(*p)),
            TraceAction::Flood(ps) => format!(
                "flood:{}",
                ps.iter().map(|p| name_of(*p)).collect::<Vec<_>>().join(",")
            ),
            TraceAction::Local(p) => format!("local:{}", name_of(*p)),
            TraceAction::Handoff(w) => format!("handoff:worker{w}"),
            TraceAction::Held => "held:waiting for a neighbour".to_string(),
            TraceAction::Drop(r) => format!("drop:{}", r.name()),
        };
        Ok(TraceReport {
            steps: result
                .log
                .steps
                .into_iter()
                .map(|s| (s.stage.to_string(), s.decision))
                .collect(),
            action,
        })
    }

    /// Where each worker's time went since it started.
    pub fn worker_perf(&self) -> Vec<crate::worker::WorkerPerfSnapshot> {
        self.workers.iter().map(|w| w.perf.snapshot()).collect()
    }

    /// Each worker's frame pool, accounted (between its bursts).
    pub fn pools(&self) -> Result<Vec<crate::engine::PoolStatus>, DatapathError> {
        (0..self.workers.len())
            .map(|w| self.call(w, |reply| Command::PoolStatus { reply }))
            .collect()
    }

    /// Every bridge with its ports, counters and backend state.
    pub fn status(&self) -> Result<Vec<BridgeStatus>, DatapathError> {
        let mut backend: Vec<BTreeMap<PortId, (BackendInfo, BackendStats)>> = Vec::new();
        for w in 0..self.workers.len() {
            let v = self.call(w, |reply| Command::PortStats { reply })?;
            backend.push(v.into_iter().map(|(id, i, s)| (id, (i, s))).collect());
        }
        let mut out = Vec::new();
        for (name, b) in &self.bridges {
            let macs = self
                .with_stage::<L2Stage, _>(name, |l2, _| l2.fdb().len())?
                .unwrap_or(0);
            let mut ports: Vec<PortStatus> = b
                .ports
                .iter()
                .map(|(pname, p)| {
                    let (info, stats) = backend[p.worker]
                        .get(&p.id)
                        .cloned()
                        .unwrap_or((p.info.clone(), BackendStats::default()));
                    PortStatus {
                        name: pname.clone(),
                        id: p.id,
                        worker: p.worker as u32,
                        ofport: p.ofport,
                        vlan: p.vlan,
                        info,
                        counters: p.counters.snapshot(),
                        backend: stats,
                    }
                })
                .collect();
            ports.sort_by_key(|p| p.ofport);
            out.push(BridgeStatus {
                name: name.clone(),
                worker: b.worker as u32,
                spread: b.spread,
                config: b.config,
                macs,
                ports,
            });
        }
        Ok(out)
    }

    /// Drop counters summed over workers, every registered reason, stage by stage.
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        crate::drop::ReasonSet::registered()
            .flat_map(crate::drop::ReasonSet::all)
            .map(|r| (r, self.drops.iter().map(|d| d.get(r)).sum()))
            .collect()
    }

    /// Swaps `bridge`'s chain of stages for `chain` without stopping its traffic (the new
    /// stages adopt what the old ones of the same name kept).
    pub fn set_chain(&mut self, bridge: &str, chain: Chain) -> Result<(), DatapathError> {
        let b = self.bridge(bridge)?;
        let (worker, id) = (b.worker, b.id);
        if self.call(worker, |reply| Command::SetChain { id, chain, reply })? {
            Ok(())
        } else {
            Err(DatapathError::NoSuchBridge(bridge.to_string()))
        }
    }

    /// Stops every worker (ports are closed).
    pub fn shutdown(&mut self) {
        for w in &mut self.workers {
            w.stop();
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::mem::MemPort;

    fn frame(src: u8, dst: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, src, 0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[
            2, 0, 0, 0, 0, src, 10, 0, 0, src, 0, 0, 0, 0, 0, 0, 10, 0, 0, 9,
        ]);
        f
    }

    fn wait_for(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..500 {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    #[test]
    fn workers_forward_between_memory_ports() {
        let mut dp = Datapath::start(DatapathConfig {
            workers: 2,
            pool_frames: 256,
            umem: false,
        })
        .unwrap();
        dp.add_bridge("br0", FdbConfig::default()).unwrap();
        let mut handles = Vec::new();
        for name in ["a", "b", "c"] {
            let (port, h) = MemPort::new();
            dp.add_port_io("br0", name, Box::new(port), 0).unwrap();
            handles.push(h);
        }
        // broadcast from a floods to b and c
        handles[0].inject(&frame(1, [0xff; 6]));
        let mut got_b = Vec::new();
        let mut got_c = Vec::new();
        assert!(wait_for(|| {
            got_b.extend(handles[1].take_tx());
            got_c.extend(handles[2].take_tx());
            got_b.len() == 1 && got_c.len() == 1
        }));
        // b answers a: unicast to a only
        handles[1].inject(&frame(2, [2, 0, 0, 0, 0, 1]));
        assert!(wait_for(|| handles[0].take_tx().len() == 1));
        assert!(handles[2].take_tx().is_empty());
        let fdb = dp.fdb("br0").unwrap();
        assert_eq!(fdb.len(), 2);
        assert_eq!((fdb[0].port.as_str(), fdb[0].ofport), ("a", 1));
        // malformed frame counted
        handles[0].inject(&[1, 2, 3]);
        assert!(wait_for(|| dp.drops().iter().any(|(r, n)| *r
            == crate::classify::ClassifyDrop::Runt.reason()
            && *n == 1)));
        let st = dp.status().unwrap();
        assert_eq!(st[0].ports.len(), 3);
        assert_eq!(st[0].ports[0].counters.rx_packets, 2);
        assert_eq!(st[0].ports[0].counters.rx_drops, 1);
        // trace: a to b is learned unicast
        let t = dp.trace("br0", "a", frame(1, [2, 0, 0, 0, 0, 2])).unwrap();
        assert_eq!(t.action, "output:b");
        assert_eq!(t.steps.len(), 2);
        // errors
        assert!(matches!(
            dp.add_port_io("br0", "a", Box::new(MemPort::sink()), 0),
            Err(DatapathError::PortExists { .. })
        ));
        assert!(matches!(
            dp.add_bridge("br0", FdbConfig::default()),
            Err(DatapathError::BridgeExists(_))
        ));
        dp.del_port("br0", "b").unwrap();
        assert!(dp.del_port("br0", "b").is_err());
        dp.del_bridge("br0").unwrap();
        assert!(dp.fdb("br0").is_err());
    }

    #[test]
    fn a_chain_swapped_under_traffic_keeps_forwarding_and_its_macs() {
        let mut dp = Datapath::start(DatapathConfig {
            workers: 1,
            pool_frames: 512,
            umem: false,
        })
        .unwrap();
        dp.add_bridge("br0", FdbConfig::default()).unwrap();
        let mut h = Vec::new();
        for name in ["a", "b", "c"] {
            let (port, handle) = MemPort::new();
            dp.add_port_io("br0", name, Box::new(port), 0).unwrap();
            h.push(handle);
        }
        // a and b learned; then a steady stream a -> b while the chain is swapped 50 times.
        h[0].inject(&frame(1, [0xff; 6]));
        h[1].inject(&frame(2, [0xff; 6]));
        assert!(wait_for(|| dp.fdb("br0").unwrap().len() == 2));
        for hh in &h {
            hh.take_tx();
        }
        let sender = h[0].clone();
        let stream = std::thread::spawn(move || {
            for _ in 0..2000 {
                sender.inject(&frame(1, [2, 0, 0, 0, 0, 2]));
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        for _ in 0..50 {
            dp.set_chain("br0", Chain::bridge(FdbConfig::default()))
                .unwrap();
        }
        stream.join().unwrap();
        let mut got = 0;
        assert!(wait_for(|| {
            got += h[1].take_tx().len();
            got == 2000
        }));
        assert!(
            h[2].take_tx().is_empty(),
            "no flood: the new chains kept the MACs"
        );
        assert_eq!(dp.fdb("br0").unwrap().len(), 2);
        assert!(
            dp.set_chain("nope", Chain::bridge(FdbConfig::default()))
                .is_err()
        );
    }
}
