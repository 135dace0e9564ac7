//! IP address management for networks: subnets, gateways and endpoint addresses.
//!
//! A network's subnet is given or taken as a free /24 from 10.200.0.0/16; overlapping
//! subnets are refused. Inside a subnet the gateway takes its address (default: the first
//! host) and endpoints get the lowest free host address or a requested static one; released
//! addresses are not handed out again until every other free address has been used, so a
//! stale peer's cache never points at a new container. Pure data, persisted by the store.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use xvs_switch::wire::Ipv4Net;

/// A subnet, gateway or address the pool refuses; the message names the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Text that is not `A.B.C.D/N`.
    #[error("invalid CIDR {0:?}: expected A.B.C.D/N")]
    CidrSyntax(String),
    /// A CIDR whose address part is not an IPv4 address.
    #[error("invalid CIDR {cidr:?}: {addr:?} is not an IPv4 address")]
    CidrAddress {
        /// The CIDR given.
        cidr: String,
        /// Its address part.
        addr: String,
    },
    /// A CIDR whose prefix is not a number up to 32.
    #[error("invalid CIDR {0:?}: prefix must be 0-32")]
    CidrPrefix(String),
    /// A valid CIDR too wide or too narrow for a network.
    #[error("subnet {0} is unusable: the prefix must be between /8 and /30")]
    UnusablePrefix(String),
    /// Every /24 of [`DEFAULT_POOL`] overlaps a network.
    #[error("no free /24 left in {DEFAULT_POOL}")]
    NoFreeSubnet,
    /// A gateway that is the network or broadcast address, or outside the subnet.
    #[error("gateway {gateway} is not a host address of subnet {subnet}")]
    GatewayNotHost {
        /// The gateway asked for.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: Subnet,
    },
    /// A static address outside the subnet.
    #[error("address {ip} is outside subnet {subnet}")]
    OutsideSubnet {
        /// The address asked for.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Subnet,
    },
    /// A static address that is the gateway's.
    #[error("address {0} is the network's gateway")]
    Gateway(Ipv4Addr),
    /// A static address that is the network or broadcast address.
    #[error("address {ip} is the network or broadcast address of {subnet}")]
    NotHost {
        /// The address asked for.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Subnet,
    },
    /// A static address an endpoint holds.
    #[error("address {0} is already in use")]
    InUse(Ipv4Addr),
    /// Every host address is taken.
    #[error("subnet {0} has no free addresses")]
    Exhausted(Subnet),
}

/// An IPv4 subnet, `A.B.C.D/N`, stored normalised (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// The same network as the datapath's type (the one mask and membership test).
    pub fn net(self) -> Ipv4Net {
        Ipv4Net {
            addr: self.addr,
            prefix: self.prefix,
        }
    }

    /// The netmask as a u32.
    pub fn mask(self) -> u32 {
        self.net().mask()
    }

    /// Whether `ip` is inside.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        self.net().contains(ip)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(self, other: Subnet) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// First usable host address.
    pub fn first_host(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + u32::from(self.prefix < 31))
    }

    /// Broadcast address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` may be given to a host (not the network or broadcast address).
    pub fn is_host(self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (self.prefix >= 31 || (ip != self.addr && ip != self.broadcast()))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.net().fmt(f)
    }
}

impl FromStr for Subnet {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Subnet, IpamError> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| IpamError::CidrSyntax(s.to_string()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| IpamError::CidrAddress {
            cidr: s.to_string(),
            addr: a.to_string(),
        })?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| IpamError::CidrPrefix(s.to_string()))?;
        if !(8..=30).contains(&prefix) {
            return Err(IpamError::UnusablePrefix(s.to_string()));
        }
        let sub = Subnet { addr, prefix };
        Ok(Subnet {
            addr: Ipv4Addr::from(u32::from(addr) & sub.mask()),
            prefix,
        })
    }
}

impl TryFrom<String> for Subnet {
    type Error = IpamError;
    fn try_from(s: String) -> Result<Subnet, IpamError> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// The pool the default subnets come from.
pub const DEFAULT_POOL: Subnet = Subnet {
    addr: Ipv4Addr::new(10, 200, 0, 0),
    prefix: 16,
};

/// Picks a free /24 from [`DEFAULT_POOL`] that overlaps none of `taken`.
pub fn free_subnet<'a>(
    taken: impl Iterator<Item = &'a Subnet> + Clone,
) -> Result<Subnet, IpamError> {
    let count = 1u32 << (24 - DEFAULT_POOL.prefix);
    (0..count)
        .map(|i| Subnet {
            addr: Ipv4Addr::from(u32::from(DEFAULT_POOL.addr) + (i << 8)),
            prefix: 24,
        })
        .find(|s| !taken.clone().any(|t| t.overlaps(*s)))
        .ok_or(IpamError::NoFreeSubnet)
}

/// Addresses in use in one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// The subnet.
    pub subnet: Subnet,
    /// The gateway's address.
    pub gateway: Ipv4Addr,
    /// Addresses held by endpoints.
    pub used: BTreeSet<Ipv4Addr>,
    /// The last address handed out dynamically; the next search starts after it.
    #[serde(default)]
    pub cursor: Option<Ipv4Addr>,
}

impl Pool {
    /// A pool for `subnet` with the gateway at `gateway` (default: the first host).
    pub fn new(subnet: Subnet, gateway: Option<Ipv4Addr>) -> Result<Pool, IpamError> {
        let gateway = gateway.unwrap_or_else(|| subnet.first_host());
        if !subnet.is_host(gateway) {
            return Err(IpamError::GatewayNotHost { gateway, subnet });
        }
        Ok(Pool {
            subnet,
            gateway,
            used: BTreeSet::new(),
            cursor: None,
        })
    }

    fn free(&self, ip: Ipv4Addr) -> bool {
        self.subnet.is_host(ip) && ip != self.gateway && !self.used.contains(&ip)
    }

    /// Reserves `ip` (static) or the next free address.
    pub fn allocate(&mut self, ip: Option<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        let subnet = self.subnet;
        if let Some(ip) = ip {
            if !subnet.contains(ip) {
                return Err(IpamError::OutsideSubnet { ip, subnet });
            }
            if ip == self.gateway {
                return Err(IpamError::Gateway(ip));
            }
            if !subnet.is_host(ip) {
                return Err(IpamError::NotHost { ip, subnet });
            }
            if self.used.contains(&ip) {
                return Err(IpamError::InUse(ip));
            }
            self.used.insert(ip);
            return Ok(ip);
        }
        let first = u32::from(self.subnet.first_host());
        let last = u32::from(self.subnet.broadcast()) - 1;
        let span = last - first + 1;
        let start = self
            .cursor
            .map(|c| u32::from(c).saturating_sub(first) + 1)
            .unwrap_or(0);
        for i in 0..span {
            let ip = Ipv4Addr::from(first + (start + i) % span);
            if self.free(ip) {
                self.used.insert(ip);
                self.cursor = Some(ip);
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted(subnet))
    }

    /// Gives an address back.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

#[cfg(test)]
#[path = "tests/ipam.rs"]
mod tests;
