//! Networks the Docker way: create/ls/inspect/rm/connect/disconnect on top of bridges.
//!
//! A network is a bridge named `net.NAME` (its own L2 domain: no frame crosses between
//! networks), a gateway (xvsd's smoltcp host at the gateway address, attached through a pipe
//! port named `gw`), an IPAM pool and a table of DNS names. `connect` gives the sandbox its
//! interface, either a TAP with offloads made inside it (the default; the switch holds the
//! TAP's descriptor as the port) or a veth pair whose switch side becomes an AF_XDP port; every
//! step is undone if a later one fails, so a failed connect leaves nothing half-made.
//!
//! [`Networks`] owns what runs beside the datapath for networks (the gateways' thread and the
//! DNS name table); this module does each operation's work on the datapath, in sandboxes and
//! in the name table, and hands back what the control layer is to record. Recording it in the
//! state file, and undoing the work when that fails, is `control.rs`'s: nothing here knows
//! requests, replies or the store. Runs on control threads under the daemon's lock.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock, RwLock};

use xvs_ctl::protocol::{EndpointView, NetworkView};
use xvs_switch::chain::Chain;
use xvs_switch::classify::{ClassifyStage, Mac};
use xvs_switch::datapath::{Datapath, DatapathError};
use xvs_switch::gateway::GatewayHandle;
use xvs_switch::l2::L2Stage;
use xvs_switch::port::pipe::pipe;
use xvs_switch::port::tap::TapPort;
use xvs_switch::port::{PortSpec, PortType, XdpMode};
use xvs_switch::route::RouteStage;

use crate::config::{EndpointConf, EndpointPortType, NetworkConf, UnknownPortType};
use crate::dns::{NameTable, Resolver};
use crate::ipam::{self, IpamError, Pool, Subnet};
use crate::netns::{self, EndpointSpec, MAX_MTU, MIN_MTU, NetError, Sandbox};
use crate::validate::{self, NameError, Object};

/// The driver of networks local to the host.
pub const BRIDGE_DRIVER: &str = "bridge";
/// The driver of networks carried across hosts in VXLAN.
pub const OVERLAY_DRIVER: &str = "overlay";
/// The first VNI given out when `--vni` is not (Docker's overlay driver starts there too).
pub const FIRST_VNI: u32 = 4096;
/// What VXLAN's outer headers (IPv4, UDP, VXLAN, inner Ethernet) take from the uplink's MTU.
pub const OVERLAY_OVERHEAD: u32 = 50;

/// Prefix of the bridges that carry networks (`net.NAME`); no other bridge may use it.
pub const BRIDGE_PREFIX: &str = "net.";
/// Prefix of the switch-side interfaces xvsd creates for endpoints (orphans are found by it).
pub const HOST_IFNAME_PREFIX: &str = "xvs";
/// Prefix of the container side of a `host-veth` endpoint while it is in xvsd's namespace
/// (the same hash as its switch side follows it).
pub const PEER_IFNAME_PREFIX: &str = "xvc";
/// Name of a network's gateway port on its bridge.
pub const GATEWAY_PORT: &str = "gw";
/// The endpoint kind `network connect` makes without `--port-type`: a TAP with offloads. In the
/// side-by-side harness it carries bulk TCP about 8x faster than a veth on AF_XDP (GSO
/// super-frames cross the switch whole) at a lower ping RTT; a veth on AF_XDP forwards more
/// 64 B packets per second. Typical container traffic is TCP, so TAP it is.
pub const DEFAULT_PORT_TYPE: EndpointPortType = EndpointPortType::Tap;

/// Why a network operation was refused or failed; the message is what `xvsctl` prints.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The embedded DNS could not open its upstream socket or thread.
    #[error("cannot start the DNS resolver: {0}")]
    Resolver(#[source] io::Error),
    /// The gateways' thread could not start.
    #[error("cannot start the gateway thread: {0}")]
    GatewayThread(#[source] io::Error),
    /// The pipe between a network's bridge and its gateway could not be made.
    #[error("cannot create gateway port: {0}")]
    GatewayPort(#[source] io::Error),
    /// The datapath refused a network's bridge or ports.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// `network create` of a name in use.
    #[error("network {0} already exists")]
    Exists(String),
    /// A driver other than `bridge` and `overlay`.
    #[error("unknown driver {0:?} (bridge or overlay)")]
    Driver(String),
    /// `--vni` on a bridge network.
    #[error("--vni is for overlay networks only (--driver overlay)")]
    VniOnBridge,
    /// A VNI outside VXLAN's 24 bits, or 0.
    #[error("VNI {0} is out of range (1-16777215)")]
    Vni(u32),
    /// A VNI another overlay network has.
    #[error("VNI {vni} is already used by network {other}")]
    VniTaken {
        /// The VNI.
        vni: u32,
        /// The network that has it.
        other: String,
    },
    /// Every VNI from 4096 up is taken.
    #[error("no free VNI from {FIRST_VNI} up")]
    NoFreeVni,
    /// A subnet, gateway or address IPAM refuses.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// A subnet that shares addresses with another network's.
    #[error("subnet {subnet} overlaps network {other}'s subnet")]
    Overlap {
        /// The subnet asked for.
        subnet: Subnet,
        /// The network whose subnet it overlaps.
        other: String,
    },
    /// `--gateway` that is not an IPv4 address.
    #[error("invalid gateway {0:?}: not an IPv4 address")]
    BadGateway(String),
    /// `--ip` that is not an IPv4 address.
    #[error("invalid address {0:?}: not an IPv4 address")]
    BadAddress(String),
    /// A Docker network ID that is not 1-128 letters and digits.
    #[error("invalid Docker network ID {0:?}: must be 1-128 letters and digits")]
    BadDockerId(String),
    /// A Docker network ID another network already has.
    #[error("Docker network {id} is already network {other}")]
    DockerIdTaken {
        /// The ID.
        id: String,
        /// The network that has it.
        other: String,
    },
    /// A `host-veth` endpoint's label that cannot name it.
    #[error("invalid sandbox label {0:?} for a host-veth endpoint")]
    BadLabel(String),
    /// `--ifname` of a `host-veth` endpoint that xvsd's namespace already has.
    #[error("interface {0} already exists in xvsd's namespace")]
    HostIfnameTaken(String),
    /// An MTU the endpoints cannot have.
    #[error("MTU {0} is out of range ({MIN_MTU}-{MAX_MTU})")]
    Mtu(u32),
    /// A network that is not configured.
    #[error("no network named {0}")]
    NoSuchNetwork(String),
    /// `network rm` of a network that still has endpoints.
    #[error(
        "network {network} has active endpoints: {}; disconnect them first",
        endpoint_list(.endpoints)
    )]
    HasEndpoints {
        /// The network.
        network: String,
        /// Its endpoints: sandbox and address.
        endpoints: Vec<(String, Ipv4Addr)>,
    },
    /// `network connect` of a sandbox already on the network.
    #[error("{sandbox} is already connected to network {network}")]
    AlreadyConnected {
        /// The sandbox as given.
        sandbox: String,
        /// The network.
        network: String,
    },
    /// `network disconnect` of a sandbox not on the network.
    #[error("{sandbox} is not connected to network {network}")]
    NotConnected {
        /// The sandbox as given.
        sandbox: String,
        /// The network.
        network: String,
    },
    /// A `--port-type` that is neither veth nor tap.
    #[error(transparent)]
    PortType(#[from] UnknownPortType),
    /// A DNS name or interface name its rule refuses.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The sandbox, or making or removing the endpoint's interface in it, failed.
    #[error(transparent)]
    Netns(#[from] NetError),
    /// `--ifname` that the sandbox already has.
    #[error("{sandbox} already has an interface named {ifname}")]
    IfnameTaken {
        /// The sandbox as given.
        sandbox: String,
        /// The interface name asked for.
        ifname: String,
    },
    /// eth0 to eth63 are all taken in the sandbox.
    #[error("no free ethN interface name in the sandbox")]
    NoFreeIfname,
    /// The endpoint's interface was made but the switch could not attach its side (the
    /// interface is deleted again).
    #[error("cannot attach the endpoint to the switch: {0}")]
    Attach(#[source] DatapathError),
}

fn endpoint_list(endpoints: &[(String, Ipv4Addr)]) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .map(|(sandbox, ip)| format!("{sandbox} ({ip})"))
        .collect();
    list.join(", ")
}

/// The bridge carrying network `name`.
pub fn bridge_of(name: &str) -> String {
    format!("{BRIDGE_PREFIX}{name}")
}

/// Docker's MAC scheme: 02:42 followed by the IPv4 address.
pub(crate) fn mac_for(ip: Ipv4Addr) -> Mac {
    Mac::local_for_ipv4(0x42, ip)
}

/// The switch-side name of an endpoint: stable for (network, sandbox, ifname), ≤ 15 chars.
fn host_ifname(network: &str, sandbox: &str, ifname: &str) -> String {
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in network
        .bytes()
        .chain([0])
        .chain(sandbox.bytes())
        .chain([0])
        .chain(ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{HOST_IFNAME_PREFIX}{:010x}", h & 0xff_ffff_ffff)
}

/// Parses an address argument; `refused` names which one in the error.
fn parse_ip(s: &str, refused: fn(String) -> NetworkError) -> Result<Ipv4Addr, NetworkError> {
    s.parse().map_err(|_| refused(s.to_string()))
}

/// Arguments of `network create`.
#[derive(Debug, Clone, Default)]
pub struct CreateArgs {
    /// Driver.
    pub driver: Option<String>,
    /// Subnet.
    pub subnet: Option<String>,
    /// Gateway.
    pub gateway: Option<String>,
    /// Internal.
    pub internal: bool,
    /// icc.
    pub icc: Option<bool>,
    /// MTU.
    pub mtu: Option<u32>,
    /// VNI.
    pub vni: Option<u32>,
    /// The uplink's MTU, if there is one (an overlay's default MTU is 50 below it).
    pub uplink_mtu: Option<u16>,
    /// The Docker network ID, when Docker asks through the plugin.
    pub docker_id: Option<String>,
}

/// The VNI of a new overlay network: `asked` if free and in range, else the first free one
/// from [`FIRST_VNI`] up.
fn choose_vni(
    existing: &BTreeMap<String, NetworkConf>,
    asked: Option<u32>,
) -> Result<u32, NetworkError> {
    let owner = |v: u32| {
        existing
            .iter()
            .find(|(_, n)| n.is_overlay() && n.vni == Some(v))
            .map(|(name, _)| name.clone())
    };
    match asked {
        Some(v) => {
            if v == 0 || xvs_vxlan::Vni::new(v).is_none() {
                return Err(NetworkError::Vni(v));
            }
            match owner(v) {
                Some(other) => Err(NetworkError::VniTaken { vni: v, other }),
                None => Ok(v),
            }
        }
        None => (FIRST_VNI..=xvs_vxlan::Vni::MAX.get())
            .find(|&v| owner(v).is_none())
            .ok_or(NetworkError::NoFreeVni),
    }
}

/// Arguments of `network connect`.
#[derive(Debug, Clone, Default)]
pub struct ConnectArgs {
    /// Static address.
    pub ip: Option<String>,
    /// DNS name.
    pub name: Option<String>,
    /// DNS aliases.
    pub aliases: Vec<String>,
    /// Interface name in the sandbox.
    pub ifname: Option<String>,
    /// Published ports as given.
    pub publish: Vec<String>,
    /// The host ports allocated for them (by the caller, who sees every network).
    pub bindings: Vec<crate::publish::PortBinding>,
    /// Port type.
    pub port_type: Option<String>,
    /// The container runtime's ID of the container.
    pub container_id: Option<String>,
    /// Port security off for it.
    pub allow_spoofing: bool,
}

/// The networks' runtime beside the datapath: the gateways' thread (ARP, ICMP and DNS of
/// every network) and the DNS names of every network's endpoints.
pub struct Networks {
    gateway: GatewayHandle,
    names: Arc<RwLock<NameTable>>,
}

impl Networks {
    /// The gateways' thread (the uplink's host stack runs there too).
    pub fn gateway_mut(&mut self) -> &mut GatewayHandle {
        &mut self.gateway
    }

    /// The gateways' thread, to send it health checks.
    pub fn gateway(&self) -> &GatewayHandle {
        &self.gateway
    }

    /// Starts the gateways' thread with the embedded DNS, which forwards names no network
    /// knows to `dns_upstream`.
    pub fn start(dns_upstream: Option<SocketAddr>) -> Result<Networks, NetworkError> {
        let names = Arc::new(RwLock::new(NameTable::default()));
        let replier = Arc::new(OnceLock::new());
        let resolver = Resolver::new(names.clone(), dns_upstream, replier.clone())
            .map_err(NetworkError::Resolver)?;
        let gateway =
            GatewayHandle::spawn(Box::new(resolver)).map_err(NetworkError::GatewayThread)?;
        let _ = replier.set(gateway.replier());
        Ok(Networks { gateway, names })
    }

    /// Stops the gateways' thread.
    pub fn shutdown(&mut self) {
        self.gateway.stop();
    }

    /// Brings up the networks of a saved state after a restart and re-adopts their endpoints.
    /// Returns the networks as they now run (one that cannot start is left out, an endpoint
    /// whose sandbox is gone is dropped and its address released) and whether an endpoint was
    /// dropped. Switch-side interfaces no endpoint owns any more are removed.
    pub fn restore(
        &mut self,
        dp: &mut Datapath,
        port_errors: &mut HashMap<String, String>,
        saved: &BTreeMap<String, NetworkConf>,
    ) -> (BTreeMap<String, NetworkConf>, bool) {
        let mut restored = BTreeMap::new();
        let mut dropped = false;
        for (name, conf) in saved {
            if let Err(e) = self.start_network(dp, name, conf) {
                tracing::error!("cannot restore network {name}: {e}");
                continue;
            }
            let mut kept = conf.clone();
            kept.endpoints.clear();
            for ep in &conf.endpoints {
                if self.readopt_endpoint(dp, port_errors, name, conf, ep) {
                    kept.endpoints.push(ep.clone());
                } else {
                    kept.pool.release(ep.ip);
                    dropped = true;
                }
            }
            restored.insert(name.clone(), kept);
        }
        remove_orphans(&restored);
        (restored, dropped)
    }

    /// Brings up the bridge and gateway of a configured network.
    fn start_network(
        &mut self,
        dp: &mut Datapath,
        name: &str,
        conf: &NetworkConf,
    ) -> Result<(), NetworkError> {
        let bridge = bridge_of(name);
        let gw = conf.pool.gateway;
        // Every worker runs the network's chain and its TAP endpoints are spread over the
        // workers (a network's traffic on every core); the ports only one thread can drive
        // (veth endpoints on AF_XDP, the gateway's pipe) stay on the uplink's worker, so their
        // routed frames never cross workers (a hand-off costs 3-4x the throughput:
        // bench/harness/nat.sh --workers 1 vs 2 before this placement).
        let mesh = xvs_switch::fdb_sync::FdbMesh::new(dp.worker_count() as u16);
        let overlay = conf.is_overlay();
        let route = crate::routing::route_config(name, conf, &BTreeMap::new(), None);
        // classify → port security → lb (services' VIPs) → l2 → route (→ vxlan).
        let chain = move |worker: u16| {
            let chain = Chain::new(vec![
                Box::new(ClassifyStage),
                // Its guards arrive with the routing snapshot (routing::refresh).
                Box::new(xvs_switch::port_security::PortSecurityStage::new()),
                Box::new(xvs_lb::LbStage::new(worker)),
                Box::new(
                    L2Stage::new(Default::default())
                        .with_router(mac_for(gw))
                        .with_sync(mesh.clone(), worker),
                ),
                Box::new(RouteStage::new(route.clone())),
            ]);
            if overlay {
                // Its tunnel arrives with the routing snapshot (vtep::push).
                chain.then(Box::new(xvs_vxlan::OverlayStage::new()))
            } else {
                chain
            }
        };
        if overlay {
            // An overlay's stage learns which VTEP each remote MAC is behind from the frames
            // the uplink's worker decapsulates; until that table is shared between workers,
            // an overlay network stays on one worker (with all its ports).
            dp.add_bridge_near(&bridge, Default::default(), crate::uplink::UPLINK_BRIDGE)?;
            let home = dp.bridge_worker(&bridge).unwrap_or(0);
            if let Err(e) = dp.set_chain(&bridge, chain(home)) {
                let _ = dp.del_bridge(&bridge);
                return Err(e.into());
            }
        } else {
            dp.add_spread_bridge(
                &bridge,
                Default::default(),
                crate::uplink::UPLINK_BRIDGE,
                chain,
            )?;
        }
        let started = (|| {
            let (port, end) = pipe().map_err(NetworkError::GatewayPort)?;
            dp.add_port_io(&bridge, GATEWAY_PORT, Box::new(port), 0)?;
            dp.set_policy(&bridge, conf.icc, Some(GATEWAY_PORT))?;
            self.gateway
                .add(name, mac_for(gw), gw, conf.pool.subnet.prefix, end);
            Ok::<(), NetworkError>(())
        })();
        if started.is_err() {
            let _ = dp.del_bridge(&bridge);
        }
        started
    }

    /// Takes a network down: its gateway, its bridge (and every port on it) and its names.
    pub fn stop(&mut self, dp: &mut Datapath, name: &str) {
        self.gateway.remove(name);
        let _ = dp.del_bridge(&bridge_of(name));
        if let Ok(mut t) = self.names.write() {
            t.remove_network(name);
        }
    }

    /// The DNS name table of every network.
    pub fn names(&self) -> &Arc<RwLock<NameTable>> {
        &self.names
    }

    /// Makes the DNS names of `ep` resolve in `network`.
    pub fn register_names(&self, network: &str, ep: &EndpointConf) {
        if let Ok(mut t) = self.names.write() {
            for n in ep.name.iter().chain(ep.aliases.iter()) {
                t.add(network, n, ep.ip);
            }
            if let Some(n) = &ep.name {
                t.add_reverse(network, ep.ip, n);
            }
        }
    }

    /// Re-adopts a configured endpoint after a restart: attaches its existing veth, or
    /// recreates it if the sandbox is still there. Returns false if it is gone for good.
    fn readopt_endpoint(
        &self,
        dp: &mut Datapath,
        port_errors: &mut HashMap<String, String>,
        network: &str,
        conf: &NetworkConf,
        ep: &EndpointConf,
    ) -> bool {
        let bridge = bridge_of(network);
        if ep.port_type == EndpointPortType::Tap {
            let kept = readopt_tap_endpoint(dp, port_errors, network, conf, ep);
            if kept {
                self.register_names(network, ep);
            }
            return kept;
        }
        if ep.port_type == EndpointPortType::HostVeth && !netns::link_exists(&ep.host_ifname) {
            // The runtime's container (and the pair with it) is gone: nothing to recreate.
            tracing::warn!(
                "endpoint {} of {network} ({}): its veth is gone; removing it",
                ep.host_ifname,
                ep.sandbox
            );
            return false;
        }
        if !netns::link_exists(&ep.host_ifname) {
            let Ok(sandbox) = netns::resolve_sandbox(&ep.sandbox) else {
                tracing::warn!(
                    "endpoint {} of {network}: sandbox {} is gone; removing it",
                    ep.host_ifname,
                    ep.sandbox
                );
                return false;
            };
            if let Err(e) = netns::create_endpoint(&endpoint_spec(conf, ep, sandbox)) {
                tracing::warn!(
                    "endpoint {} of {network}: cannot recreate: {e}",
                    ep.host_ifname
                );
                return false;
            }
        }
        if let Err(e) = dp.add_port(&bridge, afxdp_spec(&ep.host_ifname), 0) {
            tracing::warn!(
                "endpoint {} of {network}: cannot attach: {e}",
                ep.host_ifname
            );
            port_errors.insert(ep.host_ifname.clone(), e.to_string());
        }
        self.register_names(network, ep);
        true
    }

    /// Validates a `network create` and brings the network up; returns its configuration,
    /// for the caller to record (or to [`stop`](Networks::stop) if it cannot). `existing` are
    /// the networks already configured.
    pub fn create(
        &mut self,
        dp: &mut Datapath,
        existing: &BTreeMap<String, NetworkConf>,
        name: &str,
        args: CreateArgs,
    ) -> Result<NetworkConf, NetworkError> {
        validate::name(Object::Network, name)?;
        if existing.contains_key(name) {
            return Err(NetworkError::Exists(name.to_string()));
        }
        if let Some(id) = &args.docker_id {
            if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(NetworkError::BadDockerId(id.clone()));
            }
            if let Some((other, _)) = existing
                .iter()
                .find(|(_, n)| n.docker_id.as_deref() == Some(id))
            {
                return Err(NetworkError::DockerIdTaken {
                    id: id.clone(),
                    other: other.clone(),
                });
            }
        }
        let driver = args.driver.unwrap_or_else(|| BRIDGE_DRIVER.into());
        let vni = match driver.as_str() {
            BRIDGE_DRIVER if args.vni.is_some() => return Err(NetworkError::VniOnBridge),
            BRIDGE_DRIVER => None,
            OVERLAY_DRIVER => Some(choose_vni(existing, args.vni)?),
            _ => return Err(NetworkError::Driver(driver)),
        };
        let subnet = match &args.subnet {
            Some(s) => {
                let s: Subnet = s.parse()?;
                if let Some((other, _)) = existing.iter().find(|(_, n)| n.pool.subnet.overlaps(s)) {
                    return Err(NetworkError::Overlap {
                        subnet: s,
                        other: other.clone(),
                    });
                }
                s
            }
            None => ipam::free_subnet(existing.values().map(|n| &n.pool.subnet))?,
        };
        let gateway = match &args.gateway {
            Some(g) => Some(parse_ip(g, NetworkError::BadGateway)?),
            None => None,
        };
        let mtu = args.mtu.unwrap_or(match vni {
            // Room for the outer headers on the uplink (IPv4 underlay).
            Some(_) => u32::from(args.uplink_mtu.unwrap_or(1500)).saturating_sub(OVERLAY_OVERHEAD),
            None => 1500,
        });
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(NetworkError::Mtu(mtu));
        }
        let conf = NetworkConf {
            driver,
            pool: Pool::new(subnet, gateway)?,
            internal: args.internal,
            icc: args.icc.unwrap_or(true),
            mtu,
            vni,
            endpoints: Vec::new(),
            peers: Vec::new(),
            remotes: Vec::new(),
            docker_id: args.docker_id,
            cluster_revision: None,
        };
        self.start_network(dp, name, &conf)?;
        Ok(conf)
    }

    /// Takes down network `name` (configured as `conf`) if it has no endpoints left.
    pub fn remove(
        &mut self,
        dp: &mut Datapath,
        name: &str,
        conf: &NetworkConf,
    ) -> Result<(), NetworkError> {
        if !conf.endpoints.is_empty() {
            return Err(NetworkError::HasEndpoints {
                network: name.to_string(),
                endpoints: conf
                    .endpoints
                    .iter()
                    .map(|e| (e.sandbox.clone(), e.ip))
                    .collect(),
            });
        }
        self.stop(dp, name);
        Ok(())
    }

    /// Detaches and deletes endpoint `ep` of `network` and forgets its names.
    pub fn disconnect(
        &mut self,
        dp: &mut Datapath,
        port_errors: &mut HashMap<String, String>,
        network: &str,
        ep: &EndpointConf,
    ) {
        remove_endpoint(dp, port_errors, network, ep);
        if let Ok(mut t) = self.names.write() {
            t.remove_addr(network, ep.ip);
        }
    }

    /// `network inspect`: the network `name` configured as `conf`, with its gateway's counters.
    pub fn view(&self, name: &str, conf: &NetworkConf) -> NetworkView {
        let mut counters = BTreeMap::new();
        if let Some(c) = self.gateway.counters(name) {
            use std::sync::atomic::Ordering::Relaxed;
            counters.insert("arp".to_string(), c.arp.load(Relaxed));
            counters.insert("icmp_echo".to_string(), c.icmp_echo.load(Relaxed));
            counters.insert("dns_requests".to_string(), c.requests.load(Relaxed));
            counters.insert("rx_frames".to_string(), c.rx_frames.load(Relaxed));
            counters.insert("tx_frames".to_string(), c.tx_frames.load(Relaxed));
            counters.insert("tx_drops".to_string(), c.tx_drops.load(Relaxed));
            counters.insert("rate_limited".to_string(), c.rate_limited.load(Relaxed));
        }
        NetworkView {
            name: name.to_string(),
            driver: conf.driver.clone(),
            subnet: conf.pool.subnet.to_string(),
            gateway: conf.pool.gateway.to_string(),
            internal: conf.internal,
            icc: conf.icc,
            mtu: conf.mtu,
            vni: conf.vni,
            docker_id: conf.docker_id.clone(),
            bridge: bridge_of(name),
            gateway_counters: counters,
            endpoints: conf
                .endpoints
                .iter()
                .map(|e| endpoint_view(name, conf, e))
                .collect(),
            remote_endpoints: Vec::new(),
        }
    }
}

/// The configuration of network `name`.
pub fn lookup<'a>(
    networks: &'a BTreeMap<String, NetworkConf>,
    name: &str,
) -> Result<&'a NetworkConf, NetworkError> {
    networks
        .get(name)
        .ok_or_else(|| NetworkError::NoSuchNetwork(name.to_string()))
}

/// The endpoint of `sandbox` on `network` (configured as `conf`).
pub fn endpoint_of(
    conf: &NetworkConf,
    network: &str,
    sandbox: &str,
) -> Result<EndpointConf, NetworkError> {
    conf.endpoints
        .iter()
        .find(|e| e.sandbox == sandbox)
        .cloned()
        .ok_or_else(|| NetworkError::NotConnected {
            sandbox: sandbox.to_string(),
            network: network.to_string(),
        })
}

/// Validates a `network connect` of `sandbox_arg` to `network` (configured as `conf`), makes
/// the endpoint's interface and attaches it. Returns the endpoint and the network's pool with
/// its address taken, for the caller to record (or to [`remove_endpoint`] if it cannot); its
/// names are registered once it is recorded.
pub fn connect(
    dp: &mut Datapath,
    network: &str,
    conf: &NetworkConf,
    sandbox_arg: &str,
    args: ConnectArgs,
) -> Result<(EndpointConf, Pool), NetworkError> {
    if conf.endpoints.iter().any(|e| e.sandbox == sandbox_arg) {
        return Err(NetworkError::AlreadyConnected {
            sandbox: sandbox_arg.to_string(),
            network: network.to_string(),
        });
    }
    let port_type = match args.port_type.as_deref() {
        None => DEFAULT_PORT_TYPE,
        Some(t) => t.parse()?,
    };
    for n in args.name.iter().chain(args.aliases.iter()) {
        validate::dns_name(n)?;
    }
    if let Some(id) = &args.container_id {
        validate::name(Object::ContainerId, id)?;
    }
    if port_type == EndpointPortType::HostVeth {
        return connect_host_veth(dp, network, conf, sandbox_arg, args);
    }
    let sandbox = netns::resolve_sandbox(sandbox_arg)?;
    let ifname = match args.ifname {
        Some(i) => {
            validate::ifname(&i)?;
            if netns::sandbox_has_link(&sandbox, &i)? {
                return Err(NetworkError::IfnameTaken {
                    sandbox: sandbox_arg.to_string(),
                    ifname: i,
                });
            }
            i
        }
        None => {
            let mut chosen = None;
            for n in 0..64 {
                let cand = format!("eth{n}");
                if !netns::sandbox_has_link(&sandbox, &cand)? {
                    chosen = Some(cand);
                    break;
                }
            }
            chosen.ok_or(NetworkError::NoFreeIfname)?
        }
    };
    let (ip, pool) = take_address(conf, args.ip.as_deref())?;
    let ep = EndpointConf {
        sandbox: sandbox_arg.to_string(),
        ifname: ifname.clone(),
        host_ifname: host_ifname(network, sandbox_arg, &ifname),
        mac: mac_for(ip).0,
        ip,
        name: args.name,
        aliases: args.aliases,
        port_type,
        publish: args.bindings,
        container_id: args.container_id,
        allow_spoofing: args.allow_spoofing,
    };
    attach_new_endpoint(dp, network, conf, &ep, sandbox)?;
    Ok((ep, pool))
}

/// The address `ip` asks for, taken from `conf`'s pool (or the next free one); returns
/// the address and the pool with it taken.
fn take_address(conf: &NetworkConf, ip: Option<&str>) -> Result<(Ipv4Addr, Pool), NetworkError> {
    let want = match ip {
        Some(s) => Some(parse_ip(s, NetworkError::BadAddress)?),
        None => None,
    };
    let mut pool = conf.pool.clone();
    let ip = pool.allocate(want)?;
    Ok((ip, pool))
}

/// A `network connect --port-type host-veth`: the sandbox is a label (Docker's endpoint), not
/// a namespace; the veth pair is made whole in xvsd's namespace and its container side
/// (`--ifname`, else `xvc` and the switch side's hash) is left there for the runtime to move.
fn connect_host_veth(
    dp: &mut Datapath,
    network: &str,
    conf: &NetworkConf,
    label: &str,
    args: ConnectArgs,
) -> Result<(EndpointConf, Pool), NetworkError> {
    if validate::namespace_name(label).is_err() || label.len() > 128 {
        return Err(NetworkError::BadLabel(label.to_string()));
    }
    let host = host_ifname(network, label, "");
    let peer = match args.ifname.clone() {
        Some(i) => {
            validate::ifname(&i)?;
            if netns::link_exists(&i) {
                return Err(NetworkError::HostIfnameTaken(i));
            }
            i
        }
        None => format!("{PEER_IFNAME_PREFIX}{}", &host[HOST_IFNAME_PREFIX.len()..]),
    };
    let (ip, pool) = take_address(conf, args.ip.as_deref())?;
    let ep = EndpointConf {
        sandbox: label.to_string(),
        ifname: peer,
        host_ifname: host,
        mac: mac_for(ip).0,
        ip,
        name: args.name,
        aliases: args.aliases,
        port_type: EndpointPortType::HostVeth,
        publish: args.bindings,
        container_id: args.container_id,
        allow_spoofing: args.allow_spoofing,
    };
    attach_host_veth(dp, network, conf, &ep)?;
    Ok((ep, pool))
}

/// Makes a `host-veth` endpoint's pair and attaches its switch side; on failure nothing of
/// it is left.
fn attach_host_veth(
    dp: &mut Datapath,
    network: &str,
    conf: &NetworkConf,
    ep: &EndpointConf,
) -> Result<(), NetworkError> {
    if netns::link_exists(&ep.host_ifname) {
        // A leftover from an earlier failure or crash: it is ours, replace it.
        let _ = netns::delete_endpoint(&ep.host_ifname);
    }
    netns::create_host_veth(&netns::HostVethSpec {
        host_ifname: ep.host_ifname.clone(),
        peer_ifname: ep.ifname.clone(),
        mac: Mac(ep.mac),
        mtu: conf.mtu,
    })?;
    if let Err(e) = dp.add_port(&bridge_of(network), afxdp_spec(&ep.host_ifname), 0) {
        let _ = netns::delete_endpoint(&ep.host_ifname);
        return Err(NetworkError::Attach(e));
    }
    Ok(())
}

/// Re-adopts a TAP endpoint: opens its persistent TAP in the sandbox again, or makes it
/// anew if the sandbox lost it. False if the sandbox is gone.
fn readopt_tap_endpoint(
    dp: &mut Datapath,
    port_errors: &mut HashMap<String, String>,
    network: &str,
    conf: &NetworkConf,
    ep: &EndpointConf,
) -> bool {
    let Ok(sandbox) = netns::resolve_sandbox(&ep.sandbox) else {
        tracing::warn!(
            "TAP endpoint {} of {network}: sandbox {} is gone; removing it",
            ep.host_ifname,
            ep.sandbox
        );
        return false;
    };
    let opened = match netns::open_tap_endpoint(&sandbox, &ep.ifname) {
        Ok(Some(tap)) => Ok(tap),
        Ok(None) => netns::create_tap_endpoint(&endpoint_spec(conf, ep, sandbox)),
        Err(e) => Err(e),
    };
    let attached = opened.map_err(NetworkError::from).and_then(|(fd, index)| {
        let port = TapPort::from_fd(&ep.host_ifname, fd, index);
        dp.add_port_io(&bridge_of(network), &ep.host_ifname, Box::new(port), 0)
            .map_err(NetworkError::from)
    });
    if let Err(e) = attached {
        tracing::warn!(
            "TAP endpoint {} of {network}: cannot attach: {e}",
            ep.host_ifname
        );
        port_errors.insert(ep.host_ifname.clone(), e.to_string());
    }
    true
}

/// Makes the endpoint's interface in the sandbox and attaches its switch side; on failure
/// nothing of it is left.
fn attach_new_endpoint(
    dp: &mut Datapath,
    network: &str,
    conf: &NetworkConf,
    ep: &EndpointConf,
    sandbox: Sandbox,
) -> Result<(), NetworkError> {
    let bridge = bridge_of(network);
    let spec = endpoint_spec(conf, ep, sandbox);
    match ep.port_type {
        EndpointPortType::HostVeth => attach_host_veth(dp, network, conf, ep)?,
        EndpointPortType::Veth => {
            if netns::link_exists(&ep.host_ifname) {
                // A leftover from an earlier failure or crash: it is ours, replace it.
                let _ = netns::delete_endpoint(&ep.host_ifname);
            }
            netns::create_endpoint(&spec)?;
            if let Err(e) = dp.add_port(&bridge, afxdp_spec(&ep.host_ifname), 0) {
                let _ = netns::delete_endpoint(&ep.host_ifname);
                return Err(NetworkError::Attach(e));
            }
        }
        EndpointPortType::Tap => {
            let (fd, index) = netns::create_tap_endpoint(&spec)?;
            let port = TapPort::from_fd(&ep.host_ifname, fd, index);
            if let Err(e) = dp.add_port_io(&bridge, &ep.host_ifname, Box::new(port), 0) {
                let _ = netns::delete_tap_endpoint(&spec.sandbox, &ep.ifname);
                return Err(NetworkError::Attach(e));
            }
        }
    }
    Ok(())
}

/// Detaches endpoint `ep` of `network` from the switch and deletes its interface.
pub fn remove_endpoint(
    dp: &mut Datapath,
    port_errors: &mut HashMap<String, String>,
    network: &str,
    ep: &EndpointConf,
) {
    if port_errors.remove(&ep.host_ifname).is_none() {
        let _ = dp.del_port(&bridge_of(network), &ep.host_ifname);
    }
    let removed = match ep.port_type {
        // The container side goes with it, wherever the runtime has put it.
        EndpointPortType::Veth | EndpointPortType::HostVeth => {
            netns::delete_endpoint(&ep.host_ifname)
        }
        EndpointPortType::Tap => match netns::resolve_sandbox(&ep.sandbox) {
            Ok(sandbox) => netns::delete_tap_endpoint(&sandbox, &ep.ifname),
            // The sandbox is gone, and its TAP with it.
            Err(_) => Ok(()),
        },
    };
    if let Err(e) = removed {
        tracing::warn!("cannot delete endpoint {}: {e}", ep.host_ifname);
    }
}

/// Removes switch-side veths xvsd made that no endpoint of `networks` owns.
fn remove_orphans(networks: &BTreeMap<String, NetworkConf>) {
    let owned: Vec<&str> = networks
        .values()
        .flat_map(|n| n.endpoints.iter().map(|e| e.host_ifname.as_str()))
        .collect();
    let Ok(links) = netns::links_with_prefix(HOST_IFNAME_PREFIX) else {
        return;
    };
    for l in links {
        let ours = l.len() == HOST_IFNAME_PREFIX.len() + 10
            && l[HOST_IFNAME_PREFIX.len()..]
                .chars()
                .all(|c| c.is_ascii_hexdigit());
        if ours && !owned.contains(&l.as_str()) {
            tracing::info!("removing orphaned endpoint interface {l}");
            let _ = netns::delete_endpoint(&l);
        }
    }
}

/// Points a named sandbox's resolv.conf at the gateway of the first of `networks` it is on,
/// or removes it when it is on none.
pub fn update_resolv_conf(networks: &BTreeMap<String, NetworkConf>, sandbox: &str) {
    if sandbox.contains('/') {
        return;
    }
    let gw = networks
        .values()
        .find(|n| n.endpoints.iter().any(|e| e.sandbox == sandbox))
        .map(|n| n.pool.gateway);
    let r = match gw {
        Some(g) => netns::write_resolv_conf(sandbox, g),
        None => netns::remove_resolv_conf(sandbox),
    };
    if let Err(e) = r {
        tracing::warn!("resolv.conf for {sandbox}: {e}");
    }
}

fn endpoint_spec(conf: &NetworkConf, ep: &EndpointConf, sandbox: Sandbox) -> EndpointSpec {
    EndpointSpec {
        host_ifname: ep.host_ifname.clone(),
        sandbox,
        ifname: ep.ifname.clone(),
        mac: Mac(ep.mac),
        addr: ep.ip,
        prefix: conf.pool.subnet.prefix,
        gateway: Some(conf.pool.gateway),
        mtu: conf.mtu,
    }
}

fn afxdp_spec(iface: &str) -> PortSpec {
    PortSpec {
        iface: iface.to_string(),
        port_type: PortType::Afxdp,
        xdp_mode: XdpMode::Auto,
        shared: None,
    }
}

/// An endpoint as `network inspect` and `network connect` show it.
pub fn endpoint_view(network: &str, conf: &NetworkConf, ep: &EndpointConf) -> EndpointView {
    EndpointView {
        network: network.to_string(),
        sandbox: ep.sandbox.clone(),
        ifname: ep.ifname.clone(),
        port: ep.host_ifname.clone(),
        mac: Mac(ep.mac).to_string(),
        address: format!("{}/{}", ep.ip, conf.pool.subnet.prefix),
        gateway: conf.pool.gateway.to_string(),
        name: ep.name.clone(),
        aliases: ep.aliases.clone(),
        port_type: ep.port_type.name().into(),
        publish: ep.publish.iter().map(ToString::to_string).collect(),
        container_id: ep.container_id.clone(),
        allow_spoofing: ep.allow_spoofing,
    }
}

#[cfg(test)]
#[path = "tests/network.rs"]
mod tests;
