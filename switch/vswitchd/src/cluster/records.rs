//! The cluster's directory as etcd holds it: the key layout under the prefix (`/xvs/` by
//! default) and the JSON record at each key.
//!
//! ```text
//! PREFIX hosts/HOST              HostRecord      under HOST's lease
//! PREFIX networks/NET            NetworkRecord   no lease: lives until `network rm`
//! PREFIX vnis/VNI                the network's name (one VNI per network, cluster-wide)
//! PREFIX endpoints/NET/IP        EndpointRecord  under its host's lease; the key is the
//!                                                address, so two hosts cannot both hold it
//! PREFIX services/SVC            ServiceRecord   no lease: lives until `service rm`
//! PREFIX vips/NET/IP             the service holding the address (no endpoint may)
//! PREFIX backends/SVC/IP:PORT    BackendRecord   no lease; counted only while an endpoint
//!                                                (of any live host) holds IP
//! ```
//!
//! Pure: no I/O; any thread.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::config::NetworkConf;
use crate::ipam::Subnet;
use crate::service::ServiceConf;

const HOSTS: &str = "hosts/";
const NETWORKS: &str = "networks/";
const VNIS: &str = "vnis/";
const ENDPOINTS: &str = "endpoints/";
const SERVICES: &str = "services/";
const VIPS: &str = "vips/";
const BACKENDS: &str = "backends/";

/// A key of the directory, without its prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// A host's registration.
    Host(String),
    /// An overlay network's definition.
    Network(String),
    /// A VNI's owner.
    Vni(u32),
    /// An endpoint of an overlay network, by address.
    Endpoint {
        /// The network.
        network: String,
        /// The address it holds.
        ip: Ipv4Addr,
    },
    /// A service's definition.
    Service(String),
    /// A service's VIP on its network.
    Vip {
        /// The network.
        network: String,
        /// The VIP.
        ip: Ipv4Addr,
    },
    /// A backend of a service.
    Backend {
        /// The service.
        service: String,
        /// The backend's address and port.
        addr: SocketAddr,
    },
}

impl Key {
    /// The key `raw` names under `prefix`, if it is one of the layout's.
    pub fn parse(prefix: &str, raw: &[u8]) -> Option<Key> {
        let rest = std::str::from_utf8(raw).ok()?.strip_prefix(prefix)?;
        let plain = |s: &str| (!s.is_empty() && !s.contains('/')).then(|| s.to_string());
        if let Some(h) = rest.strip_prefix(HOSTS) {
            return plain(h).map(Key::Host);
        }
        if let Some(n) = rest.strip_prefix(NETWORKS) {
            return plain(n).map(Key::Network);
        }
        if let Some(v) = rest.strip_prefix(VNIS) {
            return v.parse().ok().map(Key::Vni);
        }
        if let Some(s) = rest.strip_prefix(SERVICES) {
            return plain(s).map(Key::Service);
        }
        if let Some(v) = rest.strip_prefix(VIPS) {
            let (network, ip) = v.split_once('/')?;
            return Some(Key::Vip {
                network: plain(network)?,
                ip: ip.parse().ok()?,
            });
        }
        if let Some(b) = rest.strip_prefix(BACKENDS) {
            let (service, addr) = b.split_once('/')?;
            return Some(Key::Backend {
                service: plain(service)?,
                addr: addr.parse().ok()?,
            });
        }
        let (network, ip) = rest.strip_prefix(ENDPOINTS)?.split_once('/')?;
        Some(Key::Endpoint {
            network: plain(network)?,
            ip: ip.parse().ok()?,
        })
    }

    /// The full key under `prefix`.
    pub fn render(&self, prefix: &str) -> String {
        match self {
            Key::Host(h) => format!("{prefix}{HOSTS}{h}"),
            Key::Network(n) => format!("{prefix}{NETWORKS}{n}"),
            Key::Vni(v) => format!("{prefix}{VNIS}{v}"),
            Key::Endpoint { network, ip } => format!("{prefix}{ENDPOINTS}{network}/{ip}"),
            Key::Service(n) => format!("{prefix}{SERVICES}{n}"),
            Key::Vip { network, ip } => format!("{prefix}{VIPS}{network}/{ip}"),
            Key::Backend { service, addr } => format!("{prefix}{BACKENDS}{service}/{addr}"),
        }
    }

    /// The prefix of every backend key of `service`.
    pub fn backends_of(prefix: &str, service: &str) -> String {
        format!("{prefix}{BACKENDS}{service}/")
    }

    /// The prefix of every endpoint key of `network`.
    pub fn endpoints_of(prefix: &str, network: &str) -> String {
        format!("{prefix}{ENDPOINTS}{network}/")
    }
}

/// A host's registration: who it is and where its tunnels end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// A random token kept in the host's state dir: a restarted xvsd knows its own
    /// registration by it, and a second host claiming the same id is refused.
    pub token: String,
    /// Its VTEP, once `vtep set` gave it one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<Ipv4Addr>,
    /// The VTEP's UDP port.
    pub vtep_port: u16,
    /// The xvsd version.
    pub version: String,
}

/// An overlay network's definition, the same on every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Its subnet.
    pub subnet: Subnet,
    /// Its gateway (answered on every host).
    pub gateway: Ipv4Addr,
    /// Its VNI.
    pub vni: u32,
    /// Its MTU.
    pub mtu: u32,
    /// `--internal`.
    pub internal: bool,
    /// Inter-container communication.
    pub icc: bool,
    /// The host that created it.
    pub created_by: String,
}

impl NetworkRecord {
    /// The record of overlay `conf`, created by `host`; none for a network that is not an
    /// overlay.
    pub fn of(conf: &NetworkConf, host: &str) -> Option<NetworkRecord> {
        Some(NetworkRecord {
            subnet: conf.pool.subnet,
            gateway: conf.pool.gateway,
            vni: conf.vni.filter(|_| conf.is_overlay())?,
            mtu: conf.mtu,
            internal: conf.internal,
            icc: conf.icc,
            created_by: host.to_string(),
        })
    }

    /// Whether two hosts' records define the same network (who created it aside).
    pub fn same_network(&self, other: &NetworkRecord) -> bool {
        NetworkRecord {
            created_by: String::new(),
            ..self.clone()
        } == NetworkRecord {
            created_by: String::new(),
            ..other.clone()
        }
    }
}

/// An endpoint of an overlay network, as the other hosts need it: where it lives and what
/// it answers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The host it lives on.
    pub host: String,
    /// Its MAC (`02:42:..`).
    pub mac: String,
    /// Its DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its DNS aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Its sandbox on that host (for people reading the directory).
    pub sandbox: String,
}

/// A service shared through the cluster: its definition as every host runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Network, VIP, port, scheduler, timeout, published port, health check (no backends:
    /// each is a key of its own).
    pub conf: ServiceConf,
    /// The host that created it.
    pub created_by: String,
}

impl ServiceRecord {
    /// The record of local service `conf`, created by `host`.
    pub fn of(conf: &ServiceConf, host: &str) -> ServiceRecord {
        ServiceRecord {
            conf: ServiceConf {
                backends: Vec::new(),
                vip_allocated: true,
                cluster_revision: None,
                ..conf.clone()
            },
            created_by: host.to_string(),
        }
    }
}

/// A backend of a shared service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRecord {
    /// Its weight.
    pub weight: u32,
    /// The host that added it.
    pub added_by: String,
}

#[cfg(test)]
#[path = "../tests/cluster_records.rs"]
mod tests;
