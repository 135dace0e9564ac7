//! Services the IPVS / swarm way: `service create/add-backend/rm-backend/set-weight/ls/
//! inspect/rm`. A service is a virtual IP and port on a network, balanced over backends that
//! are endpoints of that network; its VIP comes from the network's IPAM unless given, and is
//! answered (ARP, ping) by the network's lb stage with the gateway's MAC. `SVC` resolves to
//! the VIP and `tasks.SVC` to the live backends in the network's DNS; `--publish` makes a host
//! port on the uplink reach it (swarm's routing mesh, the client's address kept).
//!
//! The control plane keeps each service as an [`xvs_lb::Service`] (its backends' connection
//! counters are shared with the snapshots the datapath holds) and pushes a new snapshot to
//! its network's lb stage after every change. Configuration is validated here and recorded in
//! the state file by `control.rs`.
//!
//! Used by the control thread only.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use xvs_ctl::protocol::{BackendView, ServiceView};
use xvs_lb::{
    BackendAddr, Health, LbStage, ParseError, SchedulerKind, Service, ServiceError, ServicePort,
    ServiceSpec,
};
use xvs_switch::datapath::Datapath;

use crate::config::NetworkConf;
use crate::dns::NameTable;
use crate::ipam::{IpamError, Pool};
use crate::network::bridge_of;
use crate::publish::{PortBinding, Proto};
use crate::validate::{self, NameError, Object};

/// Seconds between two health checks of a backend unless `--interval` says otherwise.
pub const DEFAULT_HEALTH_INTERVAL_S: u32 = 5;

/// A service's health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConf {
    /// The TCP port connected to (the backend's own when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Seconds between two checks.
    pub interval_s: u32,
}

/// A backend as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendConf {
    /// Its address and port.
    pub addr: SocketAddr,
    /// Its weight.
    pub weight: u32,
}

/// A service as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConf {
    /// The network of its VIP and backends.
    pub network: String,
    /// VIP, port, scheduler, timeout.
    pub spec: ServiceSpec,
    /// The VIP was taken from the network's IPAM (and goes back to it with the service).
    #[serde(default)]
    pub vip_allocated: bool,
    /// The host port on the uplink that reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<u16>,
    /// Its health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConf>,
    /// Its backends (active ones: a draining backend is not kept across a restart, it has no
    /// connection left then).
    #[serde(default)]
    pub backends: Vec<BackendConf>,
    /// A service shared through the cluster: the etcd revision at which this host last saw
    /// its definition (as [`crate::config::NetworkConf::cluster_revision`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_revision: Option<i64>,
}

impl ServiceConf {
    /// The VIP as IPv4 (services are IPv4 today).
    pub fn vip(&self) -> Ipv4Addr {
        match self.spec.vip {
            IpAddr::V4(v) => v,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// The published host port as a port binding (for the uplink's DNAT and host-port checks).
    pub fn binding(&self) -> Option<PortBinding> {
        self.publish.map(|host_port| PortBinding {
            proto: match self.spec.port.proto {
                xvs_lb::Proto::Tcp => Proto::Tcp,
                xvs_lb::Proto::Udp => Proto::Udp,
            },
            host_ip: None,
            host_port,
            container_port: self.spec.port.port,
        })
    }
}

/// Why a service request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceFault {
    /// A name its rule refuses.
    #[error(transparent)]
    Name(#[from] NameError),
    /// `service create` of a name in use.
    #[error("service {0} already exists")]
    Exists(String),
    /// A service that is not configured.
    #[error("no service named {0}")]
    NoSuchService(String),
    /// A port, backend or scheduler that does not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// `--vip` that is not an IPv4 address.
    #[error("invalid --vip {0:?}: not an IPv4 address")]
    BadVip(String),
    /// The VIP cannot be had from the network's IPAM (outside the subnet, taken, none left).
    #[error("VIP: {0}")]
    Vip(#[from] IpamError),
    /// Another service listens on the same VIP, protocol and port.
    #[error("service {other} already listens on {vip} {port}")]
    SameKey {
        /// The other service.
        other: String,
        /// The VIP.
        vip: Ipv4Addr,
        /// `PROTO/PORT`.
        port: String,
    },
    /// What the load balancer refuses (weights, timeouts, duplicate backends, ...).
    #[error(transparent)]
    Lb(#[from] ServiceError),
    /// A backend that is not an endpoint of the service's network.
    #[error("backend {ip} is not an endpoint of network {network}")]
    NotOnNetwork {
        /// The backend's address.
        ip: IpAddr,
        /// The network.
        network: String,
    },
    /// `--publish` of a host port something else has.
    #[error("host port {port} is already published by {owner}")]
    PublishTaken {
        /// The port.
        port: u16,
        /// What has it.
        owner: String,
    },
    /// `--publish 0`.
    #[error("invalid --publish 0: a host port is 1-65535")]
    BadPublish,
    /// `--publish` on an internal network.
    #[error("network {0} is --internal: its services cannot be published")]
    PublishInternal(String),
    /// A `--health` that is not `tcp[:PORT]`.
    #[error("invalid --health {0:?}: expected tcp or tcp:PORT")]
    BadHealth(String),
    /// `--interval` out of range.
    #[error("invalid --interval {0}: use 1-3600 seconds")]
    BadInterval(u32),
    /// `--interval` without `--health`.
    #[error("--interval needs --health")]
    IntervalWithoutHealth,
}

/// Arguments of `service create`.
#[derive(Debug, Clone, Default)]
pub struct CreateArgs {
    /// The network.
    pub network: String,
    /// `--vip`.
    pub vip: Option<String>,
    /// `--port`.
    pub port: String,
    /// `--scheduler`.
    pub scheduler: Option<String>,
    /// `--timeout`.
    pub timeout: Option<u64>,
    /// `--publish`.
    pub publish: Option<u16>,
    /// `--health`.
    pub health: Option<String>,
    /// `--interval`.
    pub interval: Option<u32>,
}

fn parse_health(
    h: Option<&str>,
    interval: Option<u32>,
) -> Result<Option<HealthConf>, ServiceFault> {
    let Some(h) = h else {
        return match interval {
            Some(_) => Err(ServiceFault::IntervalWithoutHealth),
            None => Ok(None),
        };
    };
    let port = match h.split_once(':') {
        None if h.eq_ignore_ascii_case("tcp") => None,
        Some((p, port)) if p.eq_ignore_ascii_case("tcp") => Some(
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ServiceFault::BadHealth(h.to_string()))?,
        ),
        _ => return Err(ServiceFault::BadHealth(h.to_string())),
    };
    let interval_s = interval.unwrap_or(DEFAULT_HEALTH_INTERVAL_S);
    if !(1..=3600).contains(&interval_s) {
        return Err(ServiceFault::BadInterval(interval_s));
    }
    Ok(Some(HealthConf { port, interval_s }))
}

/// The services' runtime: each configured service as the load balancer keeps it.
#[derive(Debug, Default)]
pub struct Services {
    running: BTreeMap<String, Service>,
    workers: u16,
}

impl Services {
    /// No services yet, counting connections over `workers` workers.
    pub fn new(workers: u16) -> Services {
        Services {
            running: BTreeMap::new(),
            workers,
        }
    }

    /// Brings up saved services (one that cannot be made is left out, and logged).
    pub fn restore(
        &mut self,
        saved: &BTreeMap<String, ServiceConf>,
        networks: &BTreeMap<String, NetworkConf>,
    ) -> BTreeMap<String, ServiceConf> {
        let mut kept = BTreeMap::new();
        for (name, conf) in saved {
            if !networks.contains_key(&conf.network) {
                tracing::warn!("service {name}: network {} is gone", conf.network);
                continue;
            }
            match self.build(conf) {
                Ok(s) => {
                    self.running.insert(name.clone(), s);
                    kept.insert(name.clone(), conf.clone());
                }
                Err(e) => tracing::error!("cannot restore service {name}: {e}"),
            }
        }
        kept
    }

    /// The load balancer's service for `conf`, with its backends.
    fn build(&self, conf: &ServiceConf) -> Result<Service, ServiceFault> {
        let mut s = Service::new(conf.spec, self.workers)?;
        for b in &conf.backends {
            s.add_backend(BackendAddr::from(b.addr), b.weight)?;
        }
        Ok(s)
    }

    /// Validates `service create` and makes the service (not yet pushed): its configuration
    /// and the network's pool with the VIP taken, for the caller to record.
    pub fn create(
        &mut self,
        existing: &BTreeMap<String, ServiceConf>,
        networks: &BTreeMap<String, NetworkConf>,
        in_use: &[(PortBinding, String)],
        name: &str,
        args: CreateArgs,
    ) -> Result<(ServiceConf, Pool), crate::error::Error> {
        validate::name(Object::Service, name)?;
        validate::dns_name(name)?;
        if existing.contains_key(name) {
            return Err(ServiceFault::Exists(name.to_string()).into());
        }
        let net = crate::network::lookup(networks, &args.network)?;
        let port: ServicePort = args.port.parse().map_err(ServiceFault::Parse)?;
        let scheduler: SchedulerKind = match &args.scheduler {
            Some(s) => s.parse().map_err(ServiceFault::Parse)?,
            None => SchedulerKind::default(),
        };
        let want = match &args.vip {
            Some(v) => Some(
                v.parse::<Ipv4Addr>()
                    .map_err(|_| ServiceFault::BadVip(v.clone()))?,
            ),
            None => None,
        };
        if let Some(p) = args.publish {
            if p == 0 {
                return Err(ServiceFault::BadPublish.into());
            }
            if net.internal {
                return Err(ServiceFault::PublishInternal(args.network.clone()).into());
            }
        }
        let health = parse_health(args.health.as_deref(), args.interval)?;
        let mut pool = net.pool.clone();
        let vip = pool.allocate(want).map_err(ServiceFault::Vip)?;
        let mut spec = ServiceSpec::new(IpAddr::V4(vip), port);
        spec.scheduler = scheduler;
        spec.timeout_secs = args.timeout;
        let conf = ServiceConf {
            network: args.network.clone(),
            spec,
            vip_allocated: want.is_none(),
            publish: args.publish,
            health,
            backends: Vec::new(),
            cluster_revision: None,
        };
        if let Some((other, _)) = existing.iter().find(|(_, c)| {
            c.vip() == vip && c.spec.port.proto == port.proto && c.spec.port.port == port.port
        }) {
            return Err(ServiceFault::SameKey {
                other: other.clone(),
                vip,
                port: format!("{}/{}", port.proto, port.port),
            }
            .into());
        }
        if let Some(b) = conf.binding()
            && let Some((_, owner)) = in_use.iter().find(|(u, _)| u.clashes_with(&b))
        {
            return Err(ServiceFault::PublishTaken {
                port: b.host_port,
                owner: owner.clone(),
            }
            .into());
        }
        let service = self.build(&conf)?;
        self.running.insert(name.to_string(), service);
        Ok((conf, pool))
    }

    /// Makes service `name` again from `conf` (a change that could not be saved is undone;
    /// its connection counts start over).
    pub fn rebuild(&mut self, name: &str, conf: &ServiceConf) {
        match self.build(conf) {
            Ok(s) => {
                self.running.insert(name.to_string(), s);
            }
            Err(e) => tracing::error!("cannot rebuild service {name}: {e}"),
        }
    }

    /// Forgets service `name` (its connections are reset by the stage).
    pub fn remove(&mut self, name: &str) {
        self.running.remove(name);
    }

    fn service(&mut self, name: &str) -> Result<&mut Service, ServiceFault> {
        self.running
            .get_mut(name)
            .ok_or_else(|| ServiceFault::NoSuchService(name.to_string()))
    }

    /// `add-backend`: the service's new configuration. The backend must be an endpoint of
    /// the network (or an overlay's static station with an address).
    pub fn add_backend(
        &mut self,
        name: &str,
        conf: &ServiceConf,
        network: &NetworkConf,
        backend: &str,
        weight: Option<u32>,
    ) -> Result<ServiceConf, ServiceFault> {
        let addr: BackendAddr = backend.parse()?;
        let on_network = match addr.ip {
            IpAddr::V4(ip) => {
                network.endpoints.iter().any(|e| e.ip == ip)
                    || network.remotes.iter().any(|r| r.ip == Some(ip))
            }
            IpAddr::V6(_) => false,
        };
        if !on_network {
            return Err(ServiceFault::NotOnNetwork {
                ip: addr.ip,
                network: conf.network.clone(),
            });
        }
        let weight = weight.unwrap_or(1);
        self.service(name)?.add_backend(addr, weight)?;
        let sock = addr.resolve(conf.spec.port.target);
        let mut next = conf.clone();
        match next.backends.iter_mut().find(|b| b.addr == sock) {
            Some(b) => b.weight = weight,
            None => next.backends.push(BackendConf { addr: sock, weight }),
        }
        Ok(next)
    }

    /// `rm-backend [--drain]`: the service's new configuration.
    pub fn remove_backend(
        &mut self,
        name: &str,
        conf: &ServiceConf,
        backend: &str,
        drain: bool,
        now_ms: u64,
    ) -> Result<ServiceConf, ServiceFault> {
        let addr: BackendAddr = backend.parse()?;
        self.service(name)?.remove_backend(addr, drain, now_ms)?;
        let sock = addr.resolve(conf.spec.port.target);
        let mut next = conf.clone();
        next.backends.retain(|b| b.addr != sock);
        Ok(next)
    }

    /// `set-weight`: the service's new configuration.
    pub fn set_weight(
        &mut self,
        name: &str,
        conf: &ServiceConf,
        backend: &str,
        weight: u32,
    ) -> Result<ServiceConf, ServiceFault> {
        let addr: BackendAddr = backend.parse()?;
        self.service(name)?.set_weight(addr, weight)?;
        let sock = addr.resolve(conf.spec.port.target);
        let mut next = conf.clone();
        if let Some(b) = next.backends.iter_mut().find(|b| b.addr == sock) {
            b.weight = weight;
        }
        Ok(next)
    }

    /// A health check's verdict on a backend of service `name`; true if it changed.
    pub fn set_health(&mut self, name: &str, addr: SocketAddr, health: Health) -> bool {
        self.running
            .get_mut(name)
            .and_then(|s| s.set_health(BackendAddr::from(addr), health).ok())
            .unwrap_or(false)
    }

    /// Lets go of drained and reset backends whose connections are gone; true if any went
    /// (their snapshots are then pushed again).
    pub fn reap(&mut self, now_ms: u64) -> Vec<String> {
        self.running
            .iter_mut()
            .filter_map(|(n, s)| (!s.reap(now_ms).is_empty()).then(|| n.clone()))
            .collect()
    }

    /// Pushes service `name`'s snapshot to its network's lb stage, and its names to the DNS.
    pub fn push(&self, dp: &Datapath, names: &mut NameTable, name: &str, conf: &ServiceConf) {
        let Some(s) = self.running.get(name) else {
            return;
        };
        let table = s.snapshot();
        if let Err(e) = dp.with_stage_each::<LbStage, _>(&bridge_of(&conf.network), move |l, _| {
            l.install(table.clone())
        }) {
            tracing::warn!("cannot update service {name} in the datapath: {e}");
        }
        let vip = conf.vip();
        names.set(&conf.network, name, &[vip]);
        names.add_reverse(&conf.network, vip, name);
        let tasks: Vec<Ipv4Addr> = s
            .live_backends()
            .filter_map(|a| match a.ip() {
                IpAddr::V4(v) => Some(v),
                IpAddr::V6(_) => None,
            })
            .collect();
        names.set(&conf.network, &format!("tasks.{name}"), &tasks);
    }

    /// Takes service `name` out of the datapath and the DNS.
    pub fn unpush(dp: &Datapath, names: &mut NameTable, name: &str, conf: &ServiceConf) {
        let key = xvs_lb::ServiceKey {
            vip: conf.spec.vip,
            proto: conf.spec.port.proto,
            port: conf.spec.port.port,
        };
        let _ =
            dp.with_stage_each::<LbStage, _>(&bridge_of(&conf.network), move |l, _| l.remove(&key));
        names.remove_name(&conf.network, name);
        names.remove_name(&conf.network, &format!("tasks.{name}"));
    }

    /// `service inspect`.
    pub fn view(&self, name: &str, conf: &ServiceConf) -> ServiceView {
        let backends = self
            .running
            .get(name)
            .map(|s| {
                s.backends()
                    .map(|b| BackendView {
                        addr: b.addr.to_string(),
                        weight: b.weight,
                        state: b.state.name().to_string(),
                        health: b.health.name().to_string(),
                        active: b.active,
                        total: b.total,
                    })
                    .collect()
            })
            .unwrap_or_default();
        ServiceView {
            name: name.to_string(),
            network: conf.network.clone(),
            vip: conf.vip().to_string(),
            port: conf.spec.port.to_string(),
            scheduler: conf.spec.scheduler.name().to_string(),
            timeout_s: conf.spec.timeout_secs(),
            publish: conf.publish,
            health: conf.health.map(|h| match h.port {
                Some(p) => format!("tcp:{p} every {}s", h.interval_s),
                None => format!("tcp every {}s", h.interval_s),
            }),
            backends,
        }
    }
}
