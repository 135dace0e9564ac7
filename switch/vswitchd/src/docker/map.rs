//! Docker's plugin calls mapped onto xvs's control requests, and xvs's replies onto Docker's
//! answers: a pure function of the call's path and body and of a `control` callback that
//! answers [`Request`]s (the daemon's `Switch::handle`, or a fake in tests). Nothing here
//! keeps state of its own: a Docker network is the xvs network whose `docker_id` is its ID,
//! found by `network ls`; a Docker endpoint is that network's endpoint labelled
//! `docker:` + the endpoint ID's first 12 digits, made with `--port-type host-veth`.
//!
//! Runs on the blocking control thread that holds the daemon's lock, as any xvsctl request.

use std::net::Ipv4Addr;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use xvs_ctl::protocol::{EndpointView, NetworkView, Reply, Request};

use super::api::{self, CreateEndpoint, CreateNetwork, EndpointRef, Join, NetworkRef};
use crate::config::EndpointPortType;
use crate::ipam::Subnet;

/// How the sandbox of a Docker endpoint is labelled in xvs: `docker:` and the endpoint ID's
/// first 12 digits (as `docker network inspect` abbreviates IDs).
pub const LABEL_PREFIX: &str = "docker:";
/// The prefix Docker gives the interface it moves into the container (`eth0`, `eth1`, ...).
pub const DST_PREFIX: &str = "eth";
/// Our address space in the IPAM driver (one: xvs's networks are local).
pub const ADDRESS_SPACE: &str = "xvs";

/// A plugin call's answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// 200, or 400 for an unknown call or a body that is not the call's JSON.
    pub status: u16,
    /// The answer Docker reads; `{"Err": "..."}` on failure.
    pub body: Value,
}

/// Why a call was refused; the message is the `Err` Docker shows the user.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// A path this plugin does not serve.
    #[error("unknown plugin call {0:?}")]
    UnknownCall(String),
    /// A body that is not the call's JSON.
    #[error("malformed {call} request: {source}")]
    Malformed {
        /// The call.
        call: String,
        /// What the JSON parser found.
        source: serde_json::Error,
    },
    /// xvs refused the request (its own message).
    #[error("{0}")]
    Refused(String),
    /// A call about a network xvs does not have.
    #[error("no xvs network for Docker network {0}")]
    NoNetwork(String),
    /// A call about an endpoint xvs does not have.
    #[error("no xvs endpoint for Docker endpoint {0}")]
    NoEndpoint(String),
    /// IPv6 asked for.
    #[error("IPv6 is not supported by xvs yet ({0})")]
    Ipv6(&'static str),
    /// More than one IPv4 pool.
    #[error("xvs networks have one IPv4 subnet; Docker sent {0}")]
    SeveralPools(usize),
    /// An option value xvs cannot read.
    #[error("invalid option {key}={value:?}: {why}")]
    BadOption {
        /// The option.
        key: String,
        /// Its value.
        value: String,
        /// What it should be.
        why: &'static str,
    },
    /// An option xvs does not know.
    #[error(
        "unknown option {0:?} (xvs takes mtu, driver, vni, name, {ENABLE_ICC}, {DRIVER_MTU})",
        ENABLE_ICC = api::ENABLE_ICC,
        DRIVER_MTU = api::DRIVER_MTU
    )]
    UnknownOption(String),
    /// An address that is not `A.B.C.D[/N]`.
    #[error("invalid address {0:?}")]
    BadAddress(String),
    /// A MAC address of the user's own (`--mac-address`).
    #[error("--mac-address {0} is not supported: xvs gives an endpoint 02:42 and its address")]
    Mac(String),
    /// A published port of a protocol xvs does not publish.
    #[error("cannot publish IP protocol {0} (tcp and udp only)")]
    Proto(u8),
    /// `--ip-range` with xvs's IPAM driver.
    #[error(
        "--ip-range is not supported by the xvs IPAM driver (Docker's default IPAM driver \
         supports it with -d xvs)"
    )]
    SubPool,
    /// A pool ID that is not one of ours.
    #[error("unknown pool {0:?}")]
    BadPool(String),
    /// Every address of the pool's network is taken.
    #[error("no free address in {0}")]
    Exhausted(String),
    /// xvs's reply was not what the request gives.
    #[error("internal error: unexpected reply from xvs: {0}")]
    BadReply(String),
}

impl DockerError {
    fn status(&self) -> u16 {
        match self {
            DockerError::UnknownCall(_) | DockerError::Malformed { .. } => 400,
            _ => 200,
        }
    }
}

/// The control callback: answers one xvs request.
pub type Control<'a> = dyn FnMut(Request) -> Reply + 'a;

/// How long an address handed out by `IpamDriver.RequestAddress` is held for the endpoint
/// Docker is about to create with it (then the endpoint holds it).
const LEASE_MS: u64 = 30_000;
/// Most addresses held at once (older ones are let go first).
const MAX_LEASES: usize = 4096;

/// Addresses xvs's IPAM driver handed out whose endpoints do not exist yet: two containers
/// started at once (`docker compose up`) ask before either endpoint is made, and must not be
/// given the same address. In memory only, and short-lived (the endpoint, once made, is what
/// holds its address in xvs's state).
#[derive(Debug, Default)]
pub struct Leases {
    given: std::collections::HashMap<(String, Ipv4Addr), u64>,
}

impl Leases {
    fn held(&self, pool: &str, ip: Ipv4Addr, now_ms: u64) -> bool {
        self.given
            .get(&(pool.to_string(), ip))
            .is_some_and(|&t| now_ms < t + LEASE_MS)
    }

    fn give(&mut self, pool: &str, ip: Ipv4Addr, now_ms: u64) {
        self.given.retain(|_, t| now_ms < *t + LEASE_MS);
        if self.given.len() >= MAX_LEASES
            && let Some(oldest) = self
                .given
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
        {
            self.given.remove(&oldest);
        }
        self.given.insert((pool.to_string(), ip), now_ms);
    }

    fn release(&mut self, pool: &str, ip: Ipv4Addr) {
        self.given.remove(&(pool.to_string(), ip));
    }
}

/// Answers plugin call `path` with JSON `body` at `now_ms` (a monotonic clock), asking
/// `control` for whatever it needs; `leases` are the IPAM driver's addresses in flight.
pub fn dispatch(
    path: &str,
    body: &[u8],
    leases: &mut Leases,
    now_ms: u64,
    control: &mut Control<'_>,
) -> Answer {
    match call(path, body, leases, now_ms, control) {
        Ok(body) => Answer { status: 200, body },
        Err(e) => Answer {
            status: e.status(),
            body: json!({ "Err": e.to_string() }),
        },
    }
}

fn parse<T: DeserializeOwned>(call: &str, body: &[u8]) -> Result<T, DockerError> {
    // Docker sends an empty body to calls that take nothing.
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|source| DockerError::Malformed {
        call: call.to_string(),
        source,
    })
}

fn call(
    path: &str,
    body: &[u8],
    leases: &mut Leases,
    now_ms: u64,
    control: &mut Control<'_>,
) -> Result<Value, DockerError> {
    let name = path.trim_start_matches('/');
    // Calls that take nothing still get a body that must be JSON.
    let empty = |body: &[u8]| parse::<Value>(name, body).map(|_| ());
    match name {
        "Plugin.Activate" => {
            empty(body)?;
            Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] }))
        }
        "NetworkDriver.GetCapabilities" => {
            empty(body)?;
            Ok(json!({ "Scope": "local", "ConnectivityScope": "local" }))
        }
        "NetworkDriver.CreateNetwork" => create_network(parse(name, body)?, control),
        "NetworkDriver.DeleteNetwork" => delete_network(parse(name, body)?, control),
        "NetworkDriver.AllocateNetwork" | "NetworkDriver.FreeNetwork" => {
            // Swarm managers only; a local-scope driver has nothing to allocate.
            parse::<NetworkRef>(name, body)?;
            Ok(json!({}))
        }
        "NetworkDriver.CreateEndpoint" => create_endpoint(parse(name, body)?, control),
        "NetworkDriver.DeleteEndpoint" => delete_endpoint(parse(name, body)?, control),
        "NetworkDriver.EndpointOperInfo" => endpoint_info(parse(name, body)?, control),
        "NetworkDriver.Join" => join(parse(name, body)?, control),
        "NetworkDriver.Leave"
        | "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity" => {
            // Leave: Docker moves the interface back itself. Published ports were set up
            // with the endpoint (they arrive in CreateEndpoint too) and go with it.
            parse::<EndpointRef>(name, body)?;
            Ok(json!({}))
        }
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => {
            empty(body)?;
            Ok(json!({}))
        }
        "IpamDriver.GetCapabilities" => {
            empty(body)?;
            Ok(json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }))
        }
        "IpamDriver.GetDefaultAddressSpaces" => {
            empty(body)?;
            Ok(json!({
                "LocalDefaultAddressSpace": ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE,
            }))
        }
        "IpamDriver.RequestPool" => request_pool(parse(name, body)?, control),
        "IpamDriver.ReleasePool" => {
            parse::<api::PoolRef>(name, body)?;
            Ok(json!({}))
        }
        "IpamDriver.RequestAddress" => request_address(parse(name, body)?, leases, now_ms, control),
        "IpamDriver.ReleaseAddress" => {
            // The address is released with its endpoint (or never taken: the gateway); one
            // handed out for an endpoint never made is let go here.
            let r = parse::<api::RequestAddress>(name, body)?;
            if let Ok(ip) = address_part(&r.address) {
                leases.release(&r.pool_id, ip);
            }
            Ok(json!({}))
        }
        _ => Err(DockerError::UnknownCall(path.to_string())),
    }
}

/// Sends `req`; its result, or xvs's refusal.
fn ask(control: &mut Control<'_>, req: Request) -> Result<Option<Value>, DockerError> {
    let reply = control(req);
    if reply.ok {
        Ok(reply.result)
    } else {
        Err(DockerError::Refused(
            reply.error.unwrap_or_else(|| "refused".into()),
        ))
    }
}

fn decode<T: DeserializeOwned>(v: Option<Value>) -> Result<T, DockerError> {
    let v = v.unwrap_or(Value::Null);
    serde_json::from_value(v.clone()).map_err(|_| DockerError::BadReply(v.to_string()))
}

fn networks(control: &mut Control<'_>) -> Result<Vec<NetworkView>, DockerError> {
    decode(ask(control, Request::NetworkLs)?)
}

/// The xvs network of Docker network `id`, if there is one.
fn network_of(control: &mut Control<'_>, id: &str) -> Result<Option<NetworkView>, DockerError> {
    Ok(networks(control)?
        .into_iter()
        .find(|n| n.docker_id.as_deref() == Some(id)))
}

fn require_network(control: &mut Control<'_>, id: &str) -> Result<NetworkView, DockerError> {
    network_of(control, id)?.ok_or_else(|| DockerError::NoNetwork(id.to_string()))
}

/// The xvs label of Docker endpoint `id`.
pub fn label_of(endpoint_id: &str) -> String {
    format!(
        "{LABEL_PREFIX}{}",
        endpoint_id.get(..12).unwrap_or(endpoint_id)
    )
}

fn endpoint_in<'a>(net: &'a NetworkView, endpoint_id: &str) -> Option<&'a EndpointView> {
    let label = label_of(endpoint_id);
    net.endpoints.iter().find(|e| e.sandbox == label)
}

/// `A.B.C.D` or `A.B.C.D/N`: the address.
fn address_part(s: &str) -> Result<Ipv4Addr, DockerError> {
    s.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| DockerError::BadAddress(s.to_string()))
}

/// An option's value as text (Docker sends `-o` values as strings, its own flags as bools).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn flag(key: &str, v: &Value) -> Result<bool, DockerError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        other => Err(DockerError::BadOption {
            key: key.to_string(),
            value: text(other),
            why: "true or false",
        }),
    }
}

fn number(key: &str, v: &Value) -> Result<u32, DockerError> {
    text(v).parse().map_err(|_| DockerError::BadOption {
        key: key.to_string(),
        value: text(v),
        why: "a number",
    })
}

/// The xvs request of a Docker `CreateNetwork`.
pub fn network_create_request(c: &CreateNetwork) -> Result<Request, DockerError> {
    if c.options
        .get(api::ENABLE_IPV6)
        .is_some_and(|v| flag(api::ENABLE_IPV6, v).unwrap_or(true))
    {
        return Err(DockerError::Ipv6("--ipv6"));
    }
    if !c.ipv6_data.is_empty() {
        return Err(DockerError::Ipv6("an IPv6 subnet"));
    }
    if c.ipv4_data.len() > 1 {
        return Err(DockerError::SeveralPools(c.ipv4_data.len()));
    }
    let internal = match c.options.get(api::INTERNAL) {
        Some(v) => flag(api::INTERNAL, v)?,
        None => false,
    };
    let (mut name, mut driver, mut icc, mut mtu, mut vni) = (None, None, None, None, None);
    let generic = match c.options.get(api::GENERIC) {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) | None => Default::default(),
        Some(other) => {
            return Err(DockerError::BadOption {
                key: api::GENERIC.into(),
                value: text(other),
                why: "an object of options",
            });
        }
    };
    for (key, v) in &generic {
        match key.as_str() {
            "name" => name = Some(text(v)),
            "driver" => driver = Some(text(v)),
            "mtu" | api::DRIVER_MTU => mtu = Some(number(key, v)?),
            "vni" => vni = Some(number(key, v)?),
            api::ENABLE_ICC => icc = Some(flag(key, v)?),
            // Docker's bridge driver's other knobs mean nothing to xvs; say so in the log
            // rather than refuse a command line written for the bridge driver.
            k if k.starts_with("com.docker.network.") => {
                tracing::info!("docker: option {k} ignored by xvs");
            }
            _ => return Err(DockerError::UnknownOption(key.clone())),
        }
    }
    let (subnet, gateway) = match c.ipv4_data.first() {
        Some(d) => (
            Some(d.pool.clone()).filter(|p| !p.is_empty()),
            match d.gateway.as_str() {
                "" => None,
                g => Some(address_part(g)?.to_string()),
            },
        ),
        None => (None, None),
    };
    let id = &c.network_id;
    Ok(Request::NetworkCreate {
        network: name.unwrap_or_else(|| id.get(..12).unwrap_or(id).to_string()),
        driver,
        subnet,
        gateway,
        internal,
        icc,
        mtu,
        vni,
        docker_id: Some(id.clone()),
    })
}

fn create_network(c: CreateNetwork, control: &mut Control<'_>) -> Result<Value, DockerError> {
    let req = network_create_request(&c)?;
    ask(control, req)?;
    Ok(json!({}))
}

fn delete_network(d: NetworkRef, control: &mut Control<'_>) -> Result<Value, DockerError> {
    // Gone already (xvs's state was reset): what Docker wants is done.
    let Some(net) = network_of(control, &d.network_id)? else {
        tracing::info!("docker: DeleteNetwork of unknown network {}", d.network_id);
        return Ok(json!({}));
    };
    ask(control, Request::NetworkRm { network: net.name })?;
    Ok(json!({}))
}

/// xvs's `--publish` specs of Docker's port map.
pub fn publish_specs(options: &api::Options) -> Result<Vec<String>, DockerError> {
    let Some(v) = options.get(api::PORTMAP) else {
        return Ok(Vec::new());
    };
    let bindings: Vec<api::PortBinding> = match v {
        Value::Null => Vec::new(),
        v => serde_json::from_value(v.clone()).map_err(|_| DockerError::BadOption {
            key: api::PORTMAP.into(),
            value: v.to_string(),
            why: "a list of port bindings",
        })?,
    };
    let mut specs = Vec::new();
    for b in bindings {
        let proto = match b.proto {
            6 => "tcp",
            17 => "udp",
            p => return Err(DockerError::Proto(p)),
        };
        let host_ip = match b.host_ip.as_str() {
            "" | "0.0.0.0" => String::new(),
            ip => match ip.parse::<Ipv4Addr>() {
                Ok(a) => format!("{a}:"),
                // The IPv6 twin Docker adds for `-p`: the IPv4 binding covers it.
                Err(_) if ip.contains(':') => continue,
                Err(_) => return Err(DockerError::BadAddress(ip.to_string())),
            },
        };
        let host = match (b.host_port, b.host_port_end) {
            (0, _) => String::new(),
            (h, e) if e > h => format!("{h}-{e}:"),
            (h, _) => format!("{h}:"),
        };
        let spec = format!("{host_ip}{host}{}/{proto}", b.port);
        if !specs.contains(&spec) {
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// The xvs request of a Docker `CreateEndpoint` on xvs network `network`.
pub fn network_connect_request(c: &CreateEndpoint, network: &str) -> Result<Request, DockerError> {
    if !c.interface.address_ipv6.is_empty() {
        return Err(DockerError::Ipv6("an IPv6 address"));
    }
    let ip = match c.interface.address.as_str() {
        "" => None,
        a => Some(address_part(a)?),
    };
    if !c.interface.mac_address.is_empty() {
        let ours = ip.map(|ip| crate::network::mac_for(ip).to_string());
        if ours.as_deref() != Some(c.interface.mac_address.to_ascii_lowercase().as_str()) {
            return Err(DockerError::Mac(c.interface.mac_address.clone()));
        }
    }
    Ok(Request::NetworkConnect {
        network: network.to_string(),
        sandbox: label_of(&c.endpoint_id),
        ip: ip.map(|a| a.to_string()),
        name: None,
        aliases: Vec::new(),
        ifname: None,
        publish: publish_specs(&c.options)?,
        port_type: Some(EndpointPortType::HostVeth.name().to_string()),
        container_id: None,
        allow_spoofing: false,
    })
}

fn create_endpoint(c: CreateEndpoint, control: &mut Control<'_>) -> Result<Value, DockerError> {
    let net = require_network(control, &c.network_id)?;
    let req = network_connect_request(&c, &net.name)?;
    let ep: EndpointView = decode(ask(control, req)?)?;
    // Only what Docker left to the driver: echoing its own choices back is refused.
    let mut iface = serde_json::Map::new();
    if c.interface.address.is_empty() {
        iface.insert("Address".into(), json!(ep.address));
    }
    if c.interface.mac_address.is_empty() {
        iface.insert("MacAddress".into(), json!(ep.mac));
    }
    Ok(json!({ "Interface": iface }))
}

fn delete_endpoint(d: EndpointRef, control: &mut Control<'_>) -> Result<Value, DockerError> {
    let found = network_of(control, &d.network_id)?
        .and_then(|n| endpoint_in(&n, &d.endpoint_id).map(|e| (n.name.clone(), e.sandbox.clone())));
    let Some((network, sandbox)) = found else {
        tracing::info!(
            "docker: DeleteEndpoint of unknown endpoint {}",
            d.endpoint_id
        );
        return Ok(json!({}));
    };
    ask(control, Request::NetworkDisconnect { network, sandbox })?;
    Ok(json!({}))
}

fn find_endpoint(
    control: &mut Control<'_>,
    network_id: &str,
    endpoint_id: &str,
) -> Result<(NetworkView, EndpointView), DockerError> {
    let net = require_network(control, network_id)?;
    let ep = endpoint_in(&net, endpoint_id)
        .cloned()
        .ok_or_else(|| DockerError::NoEndpoint(endpoint_id.to_string()))?;
    Ok((net, ep))
}

fn endpoint_info(d: EndpointRef, control: &mut Control<'_>) -> Result<Value, DockerError> {
    let (net, ep) = find_endpoint(control, &d.network_id, &d.endpoint_id)?;
    Ok(json!({ "Value": {
        "xvs.network": net.name,
        "xvs.port": ep.port,
        "xvs.port_type": ep.port_type,
        "xvs.published": ep.publish,
    }}))
}

fn join(j: Join, control: &mut Control<'_>) -> Result<Value, DockerError> {
    let (net, ep) = find_endpoint(control, &j.network_id, &j.endpoint_id)?;
    tracing::debug!("docker: {} joins {}", ep.sandbox, j.sandbox_key);
    Ok(json!({
        "InterfaceName": { "SrcName": ep.ifname, "DstPrefix": DST_PREFIX },
        "Gateway": net.gateway,
        "StaticRoutes": [],
        "DisableGatewayService": false,
    }))
}

fn subnet_of(s: &str) -> Result<Subnet, DockerError> {
    s.parse().map_err(|_| DockerError::BadPool(s.to_string()))
}

fn request_pool(r: api::RequestPool, control: &mut Control<'_>) -> Result<Value, DockerError> {
    if r.v6 {
        return Err(DockerError::Ipv6("an IPv6 pool"));
    }
    if !r.sub_pool.is_empty() {
        return Err(DockerError::SubPool);
    }
    let pool = if r.pool.is_empty() {
        let taken = networks(control)?
            .iter()
            .map(|n| subnet_of(&n.subnet))
            .collect::<Result<Vec<_>, _>>()?;
        crate::ipam::free_subnet(taken.iter()).map_err(|e| DockerError::Refused(e.to_string()))?
    } else {
        subnet_of(&r.pool)?
    };
    // The pool is its subnet: nothing to remember between calls.
    Ok(json!({ "PoolID": pool.to_string(), "Pool": pool.to_string(), "Data": {} }))
}

fn request_address(
    r: api::RequestAddress,
    leases: &mut Leases,
    now_ms: u64,
    control: &mut Control<'_>,
) -> Result<Value, DockerError> {
    let subnet = subnet_of(&r.pool_id)?;
    let with_prefix =
        |ip: Ipv4Addr| json!({ "Address": format!("{ip}/{}", subnet.prefix), "Data": {} });
    let gateway =
        r.options.get(api::REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(api::GATEWAY_ADDRESS);
    if !r.address.is_empty() {
        let ip = address_part(&r.address)?;
        if !subnet.is_host(ip) {
            return Err(DockerError::BadAddress(r.address));
        }
        return Ok(with_prefix(ip));
    }
    if gateway {
        return Ok(with_prefix(subnet.first_host()));
    }
    // An endpoint's: the network's next free address (taken when the endpoint is made).
    let net = networks(control)?
        .into_iter()
        .find(|n| n.subnet == subnet.to_string())
        .ok_or_else(|| DockerError::BadPool(r.pool_id.clone()))?;
    let used: Vec<Ipv4Addr> = net
        .endpoints
        .iter()
        .filter_map(|e| address_part(&e.address).ok())
        .chain(address_part(&net.gateway).ok())
        .collect();
    let first = u32::from(subnet.first_host());
    let last = u32::from(subnet.broadcast());
    let ip = (first..last)
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip) && !leases.held(&r.pool_id, *ip, now_ms))
        .ok_or(DockerError::Exhausted(net.subnet))?;
    leases.give(&r.pool_id, ip, now_ms);
    Ok(with_prefix(ip))
}

#[cfg(test)]
#[path = "../tests/docker_map.rs"]
mod tests;
