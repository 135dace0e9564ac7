//! The wire types of Docker's plugin protocol (libnetwork's remote network driver and remote
//! IPAM driver, as Docker Engine 20.10 sends them): one request body per call, field names
//! as Docker spells them. Docker sends `null` for many empty fields, so every collection
//! reads `null` as empty. Plain data, no I/O; any thread may use them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The media type of every plugin request and answer.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// Docker's option key holding `docker network create -o K=V` pairs.
pub const GENERIC: &str = "com.docker.network.generic";
/// Docker's option key of `--internal`.
pub const INTERNAL: &str = "com.docker.network.internal";
/// Docker's option key of `--ipv6`.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// Docker's option key of published ports (`docker run -p`).
pub const PORTMAP: &str = "com.docker.network.portmap";
/// The `-o` key of Docker's bridge driver for inter-container communication.
pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
/// The `-o` key of Docker's bridge driver for the MTU.
pub const DRIVER_MTU: &str = "com.docker.network.driver.mtu";
/// The option of an IPAM address request saying what the address is for.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
/// ... and the value saying it is the network's gateway.
pub const GATEWAY_ADDRESS: &str = "com.docker.network.gateway";

/// `null` as the type's default (Docker's Go encoder writes nil maps and slices so).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Options as Docker sends them: string keys, any JSON values.
pub type Options = BTreeMap<String, Value>;

/// One address pool of a network (`IPv4Data`/`IPv6Data` of `CreateNetwork`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    /// The IPAM driver's address space.
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    /// The subnet, `10.170.0.0/24`.
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    /// The gateway with the subnet's prefix, `10.170.0.1/24`.
    #[serde(deserialize_with = "nullable")]
    pub gateway: String,
    /// `--aux-address` names and addresses.
    #[serde(deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNetwork {
    /// Docker's network ID (64 hex digits); Docker never sends the network's name.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Docker's options: [`GENERIC`], [`INTERNAL`], [`ENABLE_IPV6`].
    #[serde(default, deserialize_with = "nullable")]
    pub options: Options,
    /// The IPv4 pools, from Docker's IPAM (or ours).
    #[serde(rename = "IPv4Data", default, deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    /// The IPv6 pools.
    #[serde(rename = "IPv6Data", default, deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

/// `NetworkDriver.DeleteNetwork`, `AllocateNetwork`, `FreeNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NetworkRef {
    /// Docker's network ID.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// The interface of `CreateEndpoint`, as Docker's IPAM filled it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    /// `10.170.0.2/24`, or empty if the driver is to choose.
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    /// The IPv6 address, or empty.
    #[serde(rename = "AddressIPv6", deserialize_with = "nullable")]
    pub address_ipv6: String,
    /// The MAC (`--mac-address`), or empty if the driver is to choose.
    #[serde(deserialize_with = "nullable")]
    pub mac_address: String,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpoint {
    /// Docker's network ID.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Docker's endpoint ID.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The addresses Docker's IPAM gave.
    #[serde(default, deserialize_with = "nullable")]
    pub interface: EndpointInterface,
    /// [`PORTMAP`], exposed ports, ...
    #[serde(default, deserialize_with = "nullable")]
    pub options: Options,
}

/// `DeleteEndpoint`, `EndpointOperInfo`, `Leave`, `RevokeExternalConnectivity`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EndpointRef {
    /// Docker's network ID.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Docker's endpoint ID.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// `NetworkDriver.Join`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Join {
    /// Docker's network ID.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Docker's endpoint ID.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The container's namespace file (Docker moves the interface there itself).
    #[serde(default, deserialize_with = "nullable")]
    pub sandbox_key: String,
    /// Options.
    #[serde(default, deserialize_with = "nullable")]
    pub options: Options,
}

/// One published port in [`PORTMAP`] (libnetwork's `types.PortBinding`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// IP protocol number: 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    /// The container's address (filled by Docker's bridge driver; empty here).
    #[serde(rename = "IP", deserialize_with = "nullable")]
    pub ip: String,
    /// The container port.
    pub port: u16,
    /// The host address, empty for every address.
    #[serde(rename = "HostIP", deserialize_with = "nullable")]
    pub host_ip: String,
    /// The host port, 0 for one chosen by the driver.
    pub host_port: u16,
    /// The last host port of a range (equal to `host_port`, or 0, for one port).
    pub host_port_end: u16,
}

/// `IpamDriver.RequestPool`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    /// The address space (one of ours from `GetDefaultAddressSpaces`).
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    /// `--subnet`, or empty for one chosen by the driver.
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    /// `--ip-range`, or empty.
    #[serde(deserialize_with = "nullable")]
    pub sub_pool: String,
    /// `--ipam-opt` pairs.
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    /// An IPv6 pool.
    #[serde(rename = "V6")]
    pub v6: bool,
}

/// `IpamDriver.ReleasePool`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PoolRef {
    /// The pool's ID as `RequestPool` answered it.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress` and `ReleaseAddress`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddress {
    /// The pool's ID.
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
    /// The address asked for (`--gateway`, `--ip`), or empty.
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    /// [`REQUEST_ADDRESS_TYPE`], ...
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}
