//! The cluster's directory as etcd holds it: the key layout under the prefix (`/xvs/` by
//! default) and the JSON record at each key.
//!
//! ```text
//! PREFIX hosts/HOST              HostRecord      under HOST's lease
//! PREFIX networks/NET            NetworkRecord   no lease: lives until `network rm`
//! PREFIX vnis/VNI                the network's name (one VNI per network, cluster-wide)
//! PREFIX endpoints/NET/IP        EndpointRecord  under its host's lease; the key is the
//!                                                address, so two hosts cannot both hold it
//! ```
//!
//! Pure: no I/O; any thread.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::config::NetworkConf;
use crate::ipam::Subnet;

const HOSTS: &str = "hosts/";
const NETWORKS: &str = "networks/";
const VNIS: &str = "vnis/";
const ENDPOINTS: &str = "endpoints/";

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
        }
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

#[cfg(test)]
#[path = "../tests/cluster_records.rs"]
mod tests;
