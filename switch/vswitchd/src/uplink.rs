//! The uplink: xvs's own MAC and IPv4 address on an interface the host keeps using. Its
//! datapath side is a bridge of its own ([`UPLINK_BRIDGE`]) holding the interface as a shared
//! AF_XDP port (only frames for xvs's MAC and ARP about its address are taken; the host keeps
//! the rest) and a host stack on a pipe port that answers ARP and ping for the address.
//!
//! The bridge is replicated: every worker runs its chain, classify → VXLAN decapsulation (to
//! the local VTEP: into its overlay network) → conntrack (its own table: masquerade, published
//! ports, hairpin) → router (next hop, neighbours) → l2 (the host stack's traffic), so a connection is tracked on the worker of its network; the interface
//! itself is polled by one worker, the others hand it their frames.
//!
//! Used by the control thread only.

use std::net::Ipv4Addr;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xvs_ctl::protocol::UplinkView;
use xvs_nat::{Conntrack, NatConfig, NatStage, PortPartition};
use xvs_switch::chain::Chain;
use xvs_switch::classify::{ClassifyStage, Mac, PortId};
use xvs_switch::datapath::{Datapath, DatapathError};
use xvs_switch::gateway::GatewayHandle;
use xvs_switch::l2::L2Stage;
use xvs_switch::neigh::Neighbours;
use xvs_switch::port::pipe::pipe;
use xvs_switch::port::{PortSpec, PortType, SharedWith, XdpMode};
use xvs_switch::router::{RouterConfig, RouterStage};
use xvs_vxlan::DecapStage;

use crate::ipam::{IpamError, Subnet};
use crate::netns;
use crate::validate::{self, NameError};

/// The uplink's bridge (outside the names users and networks can take).
pub const UPLINK_BRIDGE: &str = "xvs.uplink";
/// The host stack's name on the gateway thread (never a network's name: those cannot start
/// with `@`).
const HOST: &str = "@uplink";
/// The host stack's port on the uplink bridge.
const HOST_PORT: &str = "host";

/// The uplink as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkConf {
    /// The interface shared with the host.
    pub iface: String,
    /// xvs's address on it.
    pub ip: Ipv4Addr,
    /// Its subnet.
    pub subnet: Subnet,
    /// The next hop for everything beyond the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// xvs's MAC on it (made once, kept across restarts).
    pub mac: Mac,
}

/// Why an uplink request was refused.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The interface name breaks the kernel's rule.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No such interface in xvsd's namespace.
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    /// `--ip` is not a CIDR.
    #[error(transparent)]
    Cidr(#[from] IpamError),
    /// `--ip` names the subnet's network or broadcast address.
    #[error("{ip} is not a host address of {subnet}")]
    NotAHost {
        /// The address.
        ip: Ipv4Addr,
        /// Its subnet.
        subnet: Subnet,
    },
    /// `--gateway` is not an address.
    #[error("invalid gateway {0:?}: expected an IPv4 address")]
    GatewaySyntax(String),
    /// `--gateway` outside the uplink's subnet, or xvs's own address.
    #[error("gateway {gateway} is not another host of {subnet}")]
    GatewayOutside {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The uplink's subnet.
        subnet: Subnet,
    },
    /// An uplink exists.
    #[error("an uplink is already set on {0}: uplink del first")]
    Exists(String),
    /// None is set.
    #[error("no uplink is set")]
    NotSet,
    /// The datapath could not attach it.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The host stack's port could not be made.
    #[error("cannot make the uplink's host port: {0}")]
    HostPort(#[source] std::io::Error),
}

/// Checks `uplink set`'s arguments and makes the configuration (a new MAC).
pub fn configure(
    iface: &str,
    cidr: &str,
    gateway: Option<&str>,
) -> Result<UplinkConf, UplinkError> {
    validate::ifname(iface)?;
    if !netns::link_exists(iface) {
        return Err(UplinkError::NoSuchInterface(iface.to_string()));
    }
    let subnet: Subnet = cidr.parse()?;
    let ip: Ipv4Addr = cidr
        .split_once('/')
        .and_then(|(a, _)| a.parse().ok())
        .ok_or_else(|| IpamError::CidrSyntax(cidr.to_string()))?;
    if !subnet.is_host(ip) {
        return Err(UplinkError::NotAHost { ip, subnet });
    }
    let gateway = gateway
        .map(|g| {
            let gw: Ipv4Addr = g
                .parse()
                .map_err(|_| UplinkError::GatewaySyntax(g.to_string()))?;
            if !subnet.is_host(gw) || gw == ip {
                return Err(UplinkError::GatewayOutside {
                    gateway: gw,
                    subnet,
                });
            }
            Ok(gw)
        })
        .transpose()?;
    Ok(UplinkConf {
        iface: iface.to_string(),
        ip,
        subnet,
        gateway,
        mac: Mac::local_for_ipv4(UPLINK_MAC_TAG, ip),
    })
}

/// The tag of uplink MACs (`02:58:a.b.c.d`; gateways' are `02:42:...`).
const UPLINK_MAC_TAG: u8 = 0x58;

/// Connection tracking limits (daemon flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackLimits {
    /// Connections tracked at most, over all workers.
    pub max: u32,
    /// Connections one endpoint may hold at most (OVS zone limits).
    pub per_endpoint: u32,
}

impl Default for ConntrackLimits {
    fn default() -> Self {
        ConntrackLimits {
            max: 1 << 20,
            per_endpoint: 1 << 16,
        }
    }
}

/// The running uplink: what the control plane keeps of it.
#[derive(Debug, Clone)]
pub struct Uplink {
    /// Its neighbours (shared with every worker's router stage).
    pub neighbours: Arc<Neighbours>,
    /// Its bridge's id (what networks patch routed frames over to).
    pub bridge: u32,
    /// Its MTU.
    pub mtu: u16,
    /// xvs's MAC on it.
    pub mac: Mac,
    /// xvs's address on it.
    pub ip: Ipv4Addr,
    /// The interface's port on the uplink bridge.
    pub port: PortId,
}

/// The MTU of interface `iface` (1500 when it cannot be read).
fn mtu_of(iface: &str) -> u16 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500)
}

/// Worker `worker`'s chain of the uplink bridge.
fn chain(
    conf: &UplinkConf,
    port: PortId,
    worker: u16,
    workers: u16,
    limits: ConntrackLimits,
    neighbours: &Arc<Neighbours>,
) -> Chain {
    let partition = PortPartition::default_for(workers);
    let ct = Conntrack::new(xvs_nat::Config {
        capacity: (limits.max / u32::from(workers)).max(1024),
        per_endpoint: limits.per_endpoint,
        masquerade: Some(conf.ip),
        ports: partition.range(worker),
        seed: 0x6e61_745f_7365_6564 ^ (u64::from(worker) << 32) ^ std::process::id() as u64,
        ..xvs_nat::Config::default()
    });
    let nat = NatConfig {
        uplink_port: port,
        uplink_ip: conf.ip,
        partition,
        zone_workers: Arc::default(),
        endpoint_workers: Arc::default(),
    };
    let router = RouterConfig {
        uplink_port: port,
        mac: conf.mac,
        ip: conf.ip,
        subnet: conf.subnet.net(),
        gateway: conf.gateway,
        zones: Arc::default(),
    };
    Chain::new(vec![
        Box::new(ClassifyStage),
        Box::new(DecapStage::new()),
        Box::new(NatStage::new(ct, nat)),
        Box::new(RouterStage::new(router, neighbours.clone())),
        Box::new(L2Stage::new(Default::default())),
    ])
}

/// Brings the uplink up: its bridge on every worker, the shared port, the host stack.
pub fn start(
    dp: &mut Datapath,
    gateway: &mut GatewayHandle,
    conf: &UplinkConf,
    limits: ConntrackLimits,
) -> Result<Uplink, UplinkError> {
    // Its port on the worker running most networks: their routed frames stay on it.
    dp.add_replicated_bridge(
        UPLINK_BRIDGE,
        Default::default(),
        crate::network::BRIDGE_PREFIX,
        |_| Chain::bridge(Default::default()),
    )?;
    let started = (|| {
        let (port, end) = pipe().map_err(UplinkError::HostPort)?;
        dp.add_port_io(UPLINK_BRIDGE, HOST_PORT, Box::new(port), 0)?;
        dp.set_policy(UPLINK_BRIDGE, true, Some(HOST_PORT))?;
        let spec = PortSpec {
            iface: conf.iface.clone(),
            port_type: PortType::Afxdp,
            xdp_mode: XdpMode::Auto,
            shared: Some(SharedWith {
                mac: conf.mac,
                ip: conf.ip,
            }),
        };
        dp.add_port(UPLINK_BRIDGE, spec, 0)?;
        let port = dp.port_id(UPLINK_BRIDGE, &conf.iface).unwrap_or(0);
        let neighbours = Neighbours::new();
        let workers = dp.worker_count() as u16;
        dp.set_chain_each(UPLINK_BRIDGE, |w| {
            chain(conf, port, w, workers, limits, &neighbours)
        })?;
        gateway.add_host(HOST, conf.mac, conf.ip, conf.subnet.prefix, end);
        Ok::<Uplink, UplinkError>(Uplink {
            neighbours,
            bridge: dp.bridge_id(UPLINK_BRIDGE).unwrap_or(0),
            mtu: mtu_of(&conf.iface),
            mac: conf.mac,
            ip: conf.ip,
            port,
        })
    })();
    if started.is_err() {
        let _ = dp.del_bridge(UPLINK_BRIDGE);
    }
    started
}

/// Takes the uplink down; the interface is left as it was found (the steering program goes
/// with the port).
pub fn stop(dp: &mut Datapath, gateway: &mut GatewayHandle) {
    gateway.remove(HOST);
    let _ = dp.del_bridge(UPLINK_BRIDGE);
}

/// What `uplink show` prints.
pub fn view(dp: &Datapath, conf: &UplinkConf) -> UplinkView {
    let port = dp.status().ok().and_then(|bridges| {
        bridges
            .into_iter()
            .find(|b| b.name == UPLINK_BRIDGE)?
            .ports
            .into_iter()
            .find(|p| p.name == conf.iface)
    });
    UplinkView {
        iface: conf.iface.clone(),
        ip: format!("{}/{}", conf.ip, conf.subnet.prefix),
        gateway: conf.gateway.map(|g| g.to_string()),
        mac: conf.mac.to_string(),
        mode: port.as_ref().map(|p| p.info.mode.clone()),
        state: port
            .as_ref()
            .map_or_else(|| "down".to_string(), |p| p.info.state()),
        rx_packets: port.as_ref().map_or(0, |p| p.counters.rx_packets),
        tx_packets: port.as_ref().map_or(0, |p| p.counters.tx_packets),
        mtu: 0,
        published: Vec::new(),
        neighbours: Vec::new(),
        connections: 0,
    }
}
