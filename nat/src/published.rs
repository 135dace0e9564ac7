//! Published ports (DNAT rules): `(proto, optional host IP, host port) -> (inside IP, inside
//! port)` on a network (zone), as `docker run -p [HOSTIP:]HOSTPORT:PORT[/proto]` asks. The
//! client's address is kept (no SNAT of inbound connections). A rule without a host IP matches
//! any address an inbound packet was steered to, and, from inside (hairpin), the masquerade
//! address.
//!
//! Built by the control plane and moved to each worker's table (every worker holds the same
//! rules); read on the fast path only when a connection is new.

use std::fmt;
use std::net::Ipv4Addr;

use hashbrown::HashMap;
use serde::Serialize;
use xvs_stage::wire::ipproto;

use crate::tuple::proto_name;

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DnatRule {
    /// `ipproto::TCP` or `ipproto::UDP`.
    pub proto: u8,
    /// The host address it is published on (`None`: any).
    pub host_ip: Option<Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The inside endpoint's address.
    pub inside_ip: Ipv4Addr,
    /// The inside endpoint's port.
    pub inside_port: u16,
    /// The inside endpoint's zone (network).
    pub zone: u16,
}

impl fmt::Display for DnatRule {
    /// `0.0.0.0:8080->10.0.0.2:80/tcp`, as `docker port` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}:{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.inside_ip,
            self.inside_port,
            proto_name(self.proto)
        )
    }
}

/// Why a rule cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The host port is taken (same protocol, overlapping host address).
    #[error("host port {port}/{proto} is already published ({existing})", proto = proto_name(existing.proto))]
    AlreadyPublished {
        /// The port asked for.
        port: u16,
        /// The rule holding it.
        existing: DnatRule,
    },
    /// Only TCP and UDP ports can be published.
    #[error("only tcp and udp ports can be published (protocol {0})")]
    Protocol(u8),
    /// Port 0.
    #[error("port 0 cannot be published")]
    PortZero,
}

/// Every published port, by (protocol, host port).
#[derive(Debug, Clone, Default)]
pub struct Published {
    rules: HashMap<(u8, u16), Vec<DnatRule>>,
}

impl Published {
    /// No rule.
    pub fn new() -> Published {
        Published::default()
    }

    /// Adds `rule`; refuses a host port already published on an overlapping address.
    pub fn publish(&mut self, rule: DnatRule) -> Result<(), PublishError> {
        if !matches!(rule.proto, ipproto::TCP | ipproto::UDP) {
            return Err(PublishError::Protocol(rule.proto));
        }
        if rule.host_port == 0 || rule.inside_port == 0 {
            return Err(PublishError::PortZero);
        }
        let slot = self.rules.entry((rule.proto, rule.host_port)).or_default();
        if let Some(existing) = slot
            .iter()
            .find(|r| r.host_ip.is_none() || rule.host_ip.is_none() || r.host_ip == rule.host_ip)
        {
            return Err(PublishError::AlreadyPublished {
                port: rule.host_port,
                existing: *existing,
            });
        }
        slot.push(rule);
        Ok(())
    }

    /// Removes the rule for `(proto, host_ip, host_port)`; whether there was one.
    pub fn unpublish(&mut self, proto: u8, host_ip: Option<Ipv4Addr>, host_port: u16) -> bool {
        let Some(slot) = self.rules.get_mut(&(proto, host_port)) else {
            return false;
        };
        let before = slot.len();
        slot.retain(|r| r.host_ip != host_ip);
        let removed = slot.len() != before;
        if slot.is_empty() {
            self.rules.remove(&(proto, host_port));
        }
        removed
    }

    /// Whether any rule holds `(proto, port)` (such a port is never a masquerade port).
    #[inline]
    pub fn holds(&self, proto: u8, port: u16) -> bool {
        !self.rules.is_empty() && self.rules.contains_key(&(proto, port))
    }

    /// The rule a packet to `dst:dport` matches: a rule on `dst` itself first, then one on any
    /// address (`any_matches`: inbound packets, or `dst` is the masquerade address).
    #[inline]
    pub fn lookup(
        &self,
        proto: u8,
        dst: Ipv4Addr,
        dport: u16,
        any_matches: bool,
    ) -> Option<&DnatRule> {
        if self.rules.is_empty() {
            return None;
        }
        let slot = self.rules.get(&(proto, dport))?;
        slot.iter()
            .find(|r| r.host_ip == Some(dst))
            .or_else(|| slot.iter().find(|r| r.host_ip.is_none() && any_matches))
    }

    /// Every rule.
    pub fn iter(&self) -> impl Iterator<Item = &DnatRule> {
        self.rules.values().flatten()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.values().map(Vec::len).sum()
    }

    /// True when nothing is published.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host_ip: Option<[u8; 4]>, port: u16) -> DnatRule {
        DnatRule {
            proto: ipproto::TCP,
            host_ip: host_ip.map(Ipv4Addr::from),
            host_port: port,
            inside_ip: Ipv4Addr::new(10, 0, 0, 2),
            inside_port: 80,
            zone: 1,
        }
    }

    #[test]
    fn a_host_port_is_published_once_per_address() {
        let mut p = Published::new();
        p.publish(rule(Some([192, 0, 2, 1]), 8080))
            .unwrap_or_default();
        assert!(p.publish(rule(Some([192, 0, 2, 2]), 8080)).is_ok());
        let e = p.publish(rule(None, 8080)).unwrap_err();
        assert!(matches!(
            e,
            PublishError::AlreadyPublished { port: 8080, .. }
        ));
        assert!(
            e.to_string().contains("192.0.2.1:8080->10.0.0.2:80/tcp"),
            "{e}"
        );
        assert!(p.publish(rule(None, 8081)).is_ok());
        assert!(matches!(
            p.publish(rule(Some([192, 0, 2, 9]), 8081)),
            Err(PublishError::AlreadyPublished { .. })
        ));
        assert_eq!(
            p.publish(DnatRule {
                proto: 1,
                ..rule(None, 9)
            }),
            Err(PublishError::Protocol(1))
        );
        assert_eq!(p.publish(rule(None, 0)), Err(PublishError::PortZero));
        assert_eq!(p.len(), 3);
        assert!(p.holds(ipproto::TCP, 8080) && !p.holds(ipproto::UDP, 8080));
    }

    #[test]
    fn lookup_prefers_the_exact_address_and_wildcards_need_permission() {
        let mut p = Published::new();
        p.publish(rule(None, 8081)).unwrap_or_default();
        p.publish(rule(Some([192, 0, 2, 1]), 8080))
            .unwrap_or_default();
        let a = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(
            p.lookup(ipproto::TCP, a, 8080, false).map(|r| r.host_port),
            Some(8080)
        );
        assert!(
            p.lookup(ipproto::TCP, Ipv4Addr::new(192, 0, 2, 7), 8080, true)
                .is_none()
        );
        assert!(p.lookup(ipproto::TCP, a, 8081, true).is_some());
        assert!(p.lookup(ipproto::TCP, a, 8081, false).is_none());
        assert!(p.unpublish(ipproto::TCP, None, 8081));
        assert!(!p.unpublish(ipproto::TCP, None, 8081));
        assert!(!p.holds(ipproto::TCP, 8081));
    }
}
