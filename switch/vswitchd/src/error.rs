//! The error a control request fails with. Its message is what `xvsctl` prints: the server
//! sends `to_string()` as the reply's `error`, so every text here is part of the interface.
//! Errors of lower modules (names, datapath, networks, flows) are wrapped whole, their texts
//! passed through unchanged; the variants of its own are the bridge and port checks and the
//! state file failing to save, worded by what was or was not changed.

use xvs_switch::datapath::DatapathError;

use crate::config::StoreError;
use crate::flow::FlowError;
use crate::network::{BRIDGE_PREFIX, NetworkError};
use crate::validate::NameError;

/// Why a request was refused, or failed part way (the message says which).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bridge or interface name its rule refuses.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The datapath refused: no such bridge or port, a port already attached, a backend that
    /// cannot open.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// A network request refused or failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// An uplink request refused or failed.
    #[error(transparent)]
    Uplink(#[from] crate::uplink::UplinkError),
    /// A service request refused.
    #[error(transparent)]
    Service(#[from] crate::service::ServiceFault),
    /// A service change that could not be saved, and was undone.
    #[error("service not changed: cannot save state: {0}")]
    ServiceNotSaved(#[source] StoreError),
    /// `network rm` of a network with services.
    #[error("network {network} has services: {}; service rm them first", .services.join(", "))]
    NetworkHasServices {
        /// The network.
        network: String,
        /// Its services.
        services: Vec<String>,
    },
    /// A change that needs the cluster, refused by it or without it.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// `cluster show` on a host that is not in a cluster.
    #[error(
        "this xvsd is not in a cluster (start it with --cluster etcd://HOST:PORT --host-id NAME)"
    )]
    NotClustered,
    /// A VTEP request refused.
    #[error(transparent)]
    Vtep(#[from] crate::vtep::VtepError),
    /// A VTEP change that could not be saved, and was undone.
    #[error("VTEP not changed: cannot save state: {0}")]
    VtepNotSaved(#[source] StoreError),
    /// `uplink set`/`del` that could not be saved, and was undone.
    #[error("uplink not changed: cannot save state: {0}")]
    UplinkNotSaved(#[source] StoreError),
    /// A `--publish` that cannot be parsed or allocated.
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    /// `--publish` on an `--internal` network.
    #[error("network {0} is --internal: its endpoints cannot publish ports")]
    PublishInternal(String),
    /// `conntrack/set-timeout` of an unknown state or value.
    #[error(transparent)]
    Timeout(xvs_nat::TimeoutError),
    /// A `trace` flow that cannot be parsed.
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// The state file could not be read at start.
    #[error(transparent)]
    Load(StoreError),
    /// `add-br` of a name in the networks' bridge namespace.
    #[error("bridge names starting with {BRIDGE_PREFIX:?} are reserved for networks: {0}")]
    ReservedBridgeName(String),
    /// `--ageing` outside 1..=1000000 seconds.
    #[error("ageing time {0}s is out of range (1-1000000)")]
    Ageing(u32),
    /// `--mac-capacity` outside 1..=2^24.
    #[error("MAC capacity {0} is out of range (1-16777216)")]
    MacCapacity(u32),
    /// `--port-mac-limit` outside 1..=2^24.
    #[error("per-port MAC limit {0} is out of range (1-16777216)")]
    PortMacLimit(u32),
    /// `--vlan` outside 1..=4094.
    #[error("VLAN {0} is out of range (1-4094)")]
    Vlan(u16),
    /// `--xdp-mode` given for a TAP port.
    #[error("--xdp-mode applies only to afxdp ports")]
    XdpModeOnTap,
    /// A bridge or port change that could not be saved, and was undone.
    #[error("change not applied: cannot save state: {0}")]
    NotSaved(#[source] StoreError),
    /// `del-br` done, but not saved: the bridge comes back after a restart.
    #[error("bridge {bridge} deleted, but the state file could not be saved: {source}")]
    BridgeDeletedNotSaved {
        /// The bridge.
        bridge: String,
        /// Why saving failed.
        source: StoreError,
    },
    /// `del-port` done, but not saved: the port comes back after a restart.
    #[error("port {port} deleted, but the state file could not be saved: {source}")]
    PortDeletedNotSaved {
        /// The port's interface.
        port: String,
        /// Why saving failed.
        source: StoreError,
    },
    /// `network create` that could not be saved, and was undone.
    #[error("network not created: cannot save state: {0}")]
    NetworkNotSaved(#[source] StoreError),
    /// `network rm` done, but not saved: the network comes back after a restart.
    #[error("network {network} removed, but the state file could not be saved: {source}")]
    NetworkRemovedNotSaved {
        /// The network.
        network: String,
        /// Why saving failed.
        source: StoreError,
    },
    /// `network connect` that could not be saved, and was undone.
    #[error("endpoint not connected: cannot save state: {0}")]
    EndpointNotSaved(#[source] StoreError),
    /// `network disconnect` done, but not saved.
    #[error("disconnected, but the state file could not be saved: {0}")]
    DisconnectedNotSaved(#[source] StoreError),
}

#[cfg(test)]
#[path = "tests/error.rs"]
mod tests;
