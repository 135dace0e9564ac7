//! The configuration store: what xvsd must restore after a restart, kept in `state.json` in
//! the state dir and written atomically (write a temporary file, fsync, rename, fsync the dir).
//! The state it replaces is kept as `state.json.bak` (a hard link, so it costs no copy): if
//! `state.json` is ever found truncated or corrupt, xvsd refuses to start, names the file,
//! leaves it as it is, and says where the last good state is.
//!
//! Owned by the control thread (behind the daemon's lock); never touched by workers.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xvs_ctl::protocol::{PortTypeArg, XdpModeArg};
use xvs_switch::fdb::FdbConfig;

use crate::ipam::Pool;

/// Version of the state file's format.
pub const STATE_VERSION: u32 = 1;

/// A port as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConf {
    /// Interface name.
    pub iface: String,
    /// Backend.
    pub port_type: PortTypeArg,
    /// XDP mode asked for (none = native with fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<XdpModeArg>,
    /// Access VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// A bridge as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeConf {
    /// MAC table limits and ageing.
    pub fdb: FdbConfig,
    /// Ports in the order they were added (that order gives ofport numbers).
    pub ports: Vec<PortConf>,
}

/// An endpoint: a sandbox joined to a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointConf {
    /// Sandbox as given (namespace name or path).
    pub sandbox: String,
    /// Interface inside the sandbox.
    pub ifname: String,
    /// Switch-side interface (the port), created by xvsd.
    pub host_ifname: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// Address.
    pub ip: Ipv4Addr,
    /// DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// DNS aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// What the sandbox's interface is (state files from before TAP endpoints mean veth).
    #[serde(default)]
    pub port_type: EndpointPortType,
    /// Its published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::publish::PortBinding>,
    /// The container runtime's ID of the container (CNI_CONTAINERID), if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Port security off: it may send as other MACs and addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_spoofing: bool,
}

/// The kind of interface an endpoint gives its sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointPortType {
    /// A veth pair, the switch side attached through AF_XDP.
    #[default]
    Veth,
    /// A TAP with virtio-net headers and offloads as the sandbox's interface itself.
    Tap,
    /// A veth pair left whole in xvsd's namespace, the switch side attached through AF_XDP:
    /// a container runtime (Docker's remote driver model) moves the other end into the
    /// container itself and configures it there.
    HostVeth,
}

impl EndpointPortType {
    /// The name `--port-type` and `network inspect` use.
    pub fn name(self) -> &'static str {
        match self {
            EndpointPortType::Veth => "veth",
            EndpointPortType::Tap => "tap",
            EndpointPortType::HostVeth => "host-veth",
        }
    }
}

/// A `--port-type` that is neither `veth` nor `tap`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown port type {0:?} (veth, tap or host-veth)")]
pub struct UnknownPortType(pub String);

impl std::str::FromStr for EndpointPortType {
    type Err = UnknownPortType;
    fn from_str(s: &str) -> Result<Self, UnknownPortType> {
        match s {
            "veth" => Ok(EndpointPortType::Veth),
            "tap" => Ok(EndpointPortType::Tap),
            "host-veth" => Ok(EndpointPortType::HostVeth),
            other => Err(UnknownPortType(other.to_string())),
        }
    }
}

/// A network as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConf {
    /// `bridge`.
    pub driver: String,
    /// Addresses: subnet, gateway, addresses in use.
    pub pool: Pool,
    /// Reaches nothing outside (enforced once the uplink exists).
    pub internal: bool,
    /// Inter-container communication.
    pub icc: bool,
    /// Endpoint MTU.
    pub mtu: u32,
    /// VNI, for overlays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Endpoints in connection order.
    pub endpoints: Vec<EndpointConf>,
    /// An overlay's remote VTEPs (floods are copied to each), in the order added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Ipv4Addr>,
    /// An overlay's static remote stations (`vtep fdb add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<RemoteConf>,
    /// The Docker network ID, for a network Docker made through the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_id: Option<String>,
    /// An overlay shared through the cluster: the etcd revision at which this host last
    /// saw its definition (claimed it, or created it from the directory). A network with a
    /// revision that the directory no longer holds was removed by another host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_revision: Option<i64>,
}

impl NetworkConf {
    /// Whether it is an overlay network.
    pub fn is_overlay(&self) -> bool {
        self.driver == crate::network::OVERLAY_DRIVER
    }
}

#[cfg(test)]
impl NetworkConf {
    /// Unit tests' overlay: 10.9.0.0/24, VNI 4096, MTU 1450, no endpoints.
    #[allow(clippy::unwrap_used)]
    pub fn test_overlay() -> NetworkConf {
        NetworkConf {
            driver: crate::network::OVERLAY_DRIVER.into(),
            pool: Pool::new("10.9.0.0/24".parse().unwrap(), None).unwrap(),
            internal: false,
            icc: true,
            mtu: 1450,
            vni: Some(4096),
            endpoints: Vec::new(),
            peers: Vec::new(),
            remotes: Vec::new(),
            docker_id: None,
            cluster_revision: None,
        }
    }
}

/// A static remote station of an overlay: its MAC lives behind VTEP `remote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConf {
    /// The station's MAC.
    pub mac: [u8; 6],
    /// The VTEP it lives behind.
    pub remote: Ipv4Addr,
    /// Its address (ARP for it is answered locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}

/// The local VTEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtepConf {
    /// Its address: the uplink's.
    pub local: Ipv4Addr,
    /// The VTEPs' UDP port.
    pub port: u16,
}

/// Everything xvsd restores on start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Bridges by name.
    pub bridges: BTreeMap<String, BridgeConf>,
    /// Networks by name.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkConf>,
    /// xvs's own address on an interface shared with the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<crate::uplink::UplinkConf>,
    /// The local VTEP of overlay networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<VtepConf>,
    /// Services by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, crate::service::ServiceConf>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            bridges: BTreeMap::new(),
            networks: BTreeMap::new(),
            uplink: None,
            vtep: None,
            services: BTreeMap::new(),
        }
    }
}

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state dir or file could not be read or written.
    #[error("state file {path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state file is not valid.
    #[error("state file {path} is corrupt: {reason}{}", backup_hint(.path))]
    Corrupt {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where the last good state is, for a corrupt state file's message.
fn backup_hint(path: &Path) -> String {
    let bak = backup_of(path);
    if bak.exists() {
        format!(
            " (left as it is; the state before the last change is in {}: copy it over {} to start from it)",
            bak.display(),
            path.display()
        )
    } else {
        " (left as it is)".to_string()
    }
}

/// The backup beside state file `path`.
fn backup_of(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".bak");
    PathBuf::from(p)
}

/// Reads and writes [`State`] in a directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The saved state, or an empty one if there is none yet.
    pub fn load(&self) -> Result<State, StoreError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let state: State = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("unknown version {}", state.version),
            });
        }
        Ok(state)
    }

    /// Saves `state` atomically.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let path = self.path();
        let tmp = self.dir.join("state.json.tmp");
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        {
            let mut f = fs::File::create(&tmp).map_err(io)?;
            f.write_all(&text).map_err(io)?;
            f.write_all(b"\n").map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        // The state being replaced becomes the backup (a hard link: no copy, and state.json
        // itself is never missing).
        let bak = backup_of(&path);
        if path.exists() {
            let _ = fs::remove_file(&bak);
            fs::hard_link(&path, &bak).map_err(io)?;
        }
        fs::rename(&tmp, &path).map_err(io)?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests/config.rs"]
mod tests;
