//! A bridge's forwarding domain: its member ports with their access VLANs, the icc rule and
//! the port of the local stack (the gateway). Stages read it through their context (the L2
//! stage for icc decisions); output reads it to flood and to find the local stack.
//!
//! Owned by the worker that runs the bridge; changed only by control commands between passes.

use crate::classify::FlowKey;
use crate::wire::PortId;

/// A port's membership in a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Datapath port id.
    pub port: PortId,
    /// Access VLAN (0 = untagged domain).
    pub vlan: u16,
}

/// A bridge's ports and policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Domain {
    members: Vec<Member>,
    /// Inter-container communication disabled (Docker's `icc=false`).
    icc_off: bool,
    /// The port of xvsd's own stack (the gateway), exempt from the icc rule.
    local_port: Option<PortId>,
}

impl Domain {
    /// Member ports.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The access VLAN of member `port`.
    pub fn vlan_of(&self, port: PortId) -> Option<u16> {
        self.members.iter().find(|m| m.port == port).map(|m| m.vlan)
    }

    /// Adds (or re-VLANs) a member port.
    pub fn add_member(&mut self, port: PortId, vlan: u16) {
        self.remove_member(port);
        self.members.push(Member { port, vlan });
    }

    /// Removes a member port.
    pub fn remove_member(&mut self, port: PortId) {
        self.members.retain(|m| m.port != port);
    }

    /// Sets inter-container communication and which port is the local stack's.
    pub fn set_policy(&mut self, icc: bool, local_port: Option<PortId>) {
        self.icc_off = !icc;
        self.local_port = local_port;
    }

    /// The local stack's port, if the bridge has one.
    #[inline]
    pub fn local_port(&self) -> Option<PortId> {
        self.local_port
    }

    /// Whether a frame from `in_port` may go to `out_port` under the icc rule.
    #[inline]
    pub fn icc_allows(&self, in_port: PortId, out_port: PortId) -> bool {
        !self.icc_off || self.local_port == Some(in_port) || self.local_port == Some(out_port)
    }

    /// The member ports a flood from `key` goes to: its VLAN, minus the ingress port, as the
    /// icc rule allows.
    #[inline]
    pub fn flood_targets<'a>(&'a self, key: &'a FlowKey) -> impl Iterator<Item = PortId> + 'a {
        self.members
            .iter()
            .filter(move |m| {
                m.vlan == key.vlan && m.port != key.in_port && self.icc_allows(key.in_port, m.port)
            })
            .map(|m| m.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> Domain {
        let mut d = Domain::default();
        for p in 1..=3 {
            d.add_member(p, 0);
        }
        d.add_member(4, 10);
        d
    }

    fn key(in_port: PortId, vlan: u16) -> FlowKey {
        FlowKey {
            in_port,
            vlan,
            ..FlowKey::default()
        }
    }

    #[test]
    fn flood_scope_is_the_vlan_minus_ingress() {
        let d = domain();
        assert_eq!(d.flood_targets(&key(1, 0)).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(d.flood_targets(&key(4, 10)).count(), 0);
        assert_eq!(d.vlan_of(4), Some(10));
    }

    #[test]
    fn icc_off_allows_only_the_local_port() {
        let mut d = domain();
        d.set_policy(false, Some(3));
        assert!(!d.icc_allows(1, 2));
        assert!(d.icc_allows(1, 3) && d.icc_allows(3, 1));
        assert_eq!(d.flood_targets(&key(1, 0)).collect::<Vec<_>>(), vec![3]);
        assert_eq!(d.flood_targets(&key(3, 0)).collect::<Vec<_>>(), vec![1, 2]);
    }
}
