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
    /// The netmask as a u32.
    pub fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether `ip` is inside.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
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
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Subnet, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR {s:?}: expected A.B.C.D/N"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("invalid CIDR {s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("invalid CIDR {s:?}: prefix must be 0-32"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "subnet {s} is unusable: the prefix must be between /8 and /30"
            ));
        }
        let sub = Subnet { addr, prefix };
        Ok(Subnet {
            addr: Ipv4Addr::from(u32::from(addr) & sub.mask()),
            prefix,
        })
    }
}

impl TryFrom<String> for Subnet {
    type Error = String;
    fn try_from(s: String) -> Result<Subnet, String> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// The pool the default subnets come from.
pub const DEFAULT_POOL: &str = "10.200.0.0/16";

/// Picks a free /24 from [`DEFAULT_POOL`] that overlaps none of `taken`.
pub fn free_subnet<'a>(taken: impl Iterator<Item = &'a Subnet> + Clone) -> Option<Subnet> {
    let pool: Subnet = DEFAULT_POOL.parse().ok()?;
    (0..256u32)
        .map(|i| Subnet {
            addr: Ipv4Addr::from(u32::from(pool.addr) + (i << 8)),
            prefix: 24,
        })
        .find(|s| !taken.clone().any(|t| t.overlaps(*s)))
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
    pub fn new(subnet: Subnet, gateway: Option<Ipv4Addr>) -> Result<Pool, String> {
        let gateway = gateway.unwrap_or_else(|| subnet.first_host());
        if !subnet.is_host(gateway) {
            return Err(format!(
                "gateway {gateway} is not a host address of subnet {subnet}"
            ));
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
    pub fn allocate(&mut self, ip: Option<Ipv4Addr>) -> Result<Ipv4Addr, String> {
        if let Some(ip) = ip {
            if !self.subnet.contains(ip) {
                return Err(format!("address {ip} is outside subnet {}", self.subnet));
            }
            if ip == self.gateway {
                return Err(format!("address {ip} is the network's gateway"));
            }
            if !self.subnet.is_host(ip) {
                return Err(format!(
                    "address {ip} is the network or broadcast address of {}",
                    self.subnet
                ));
            }
            if self.used.contains(&ip) {
                return Err(format!("address {ip} is already in use"));
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
        Err(format!("subnet {} has no free addresses", self.subnet))
    }

    /// Gives an address back.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

#[cfg(test)]
#[path = "tests/ipam.rs"]
mod tests;
