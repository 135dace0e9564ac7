//! The uplink: xvs's own MAC and IPv4 address on an interface the host keeps using. Its
//! datapath side is a bridge of its own ([`UPLINK_BRIDGE`]) holding the interface as a shared
//! AF_XDP port (only frames for xvs's MAC and ARP about its address are taken; the host keeps
//! the rest) and a host stack on a pipe port that answers ARP and ping for the address. Routing
//! and NAT through it come next.
//!
//! Used by the control thread only.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use xvs_ctl::protocol::UplinkView;
use xvs_switch::classify::Mac;
use xvs_switch::datapath::{Datapath, DatapathError};
use xvs_switch::gateway::GatewayHandle;
use xvs_switch::port::pipe::pipe;
use xvs_switch::port::{PortSpec, PortType, SharedWith, XdpMode};

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

/// Brings the uplink up: its bridge, the shared port, the host stack.
pub fn start(
    dp: &mut Datapath,
    gateway: &mut GatewayHandle,
    conf: &UplinkConf,
) -> Result<(), UplinkError> {
    dp.add_bridge(UPLINK_BRIDGE, Default::default())?;
    let started = (|| {
        let (port, end) = pipe().map_err(UplinkError::HostPort)?;
        dp.add_port_io(UPLINK_BRIDGE, HOST_PORT, Box::new(port), 0)?;
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
        gateway.add_host(HOST, conf.mac, conf.ip, conf.subnet.prefix, end);
        Ok::<(), UplinkError>(())
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
    }
}
