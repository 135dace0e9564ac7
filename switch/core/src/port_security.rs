//! Port security (anti-spoofing) in a network's chain, right after classification: a frame
//! from an endpoint's port must carry that endpoint's own source MAC, an IPv4 frame its own
//! source address, and an ARP packet its own sender MAC and address. Anything else is a
//! counted drop (`spoofed_source`, `spoofed_arp`), so no container impersonates another or
//! poisons its neighbours' ARP caches. Docker's bridge has no such check; OpenStack's port
//! security and OVN's `port_security` do this.
//!
//! Ports without an entry (the gateway, an overlay's tunnel, an endpoint made with
//! `--allow-spoofing`) pass unchecked. An ARP probe (sender address 0.0.0.0, RFC 5227) passes
//! if its sender MAC is the endpoint's; IPv6 frames are checked for their MAC only.
//!
//! Owned by the worker that runs the network's bridge; the control plane replaces its table
//! with `Datapath::with_stage` after every change of endpoints.

use std::net::Ipv4Addr;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::classify::{FlowKey, ethertype};
use crate::drop::ReasonSet;
use crate::stage::{Batch, Stage, StageContext, Verdict};
use crate::wire::{Mac, PortId};

xvs_stage::drop_reasons! {
    /// Why the port security stage dropped a frame.
    pub enum PortSecurityDrop in "port_security" {
        SpoofedSource => "spoofed_source", "frame from an endpoint with a source MAC or IPv4 address that is not the endpoint's";
        SpoofedArp => "spoofed_arp", "ARP from an endpoint claiming a MAC or address that is not the endpoint's";
    }
}

/// What one endpoint's port may send as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// Its MAC.
    pub mac: Mac,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
}

/// The port security stage.
#[derive(Debug, Default)]
pub struct PortSecurityStage {
    guards: Arc<HashMap<PortId, Guard>>,
}

/// Where an Ethernet/IPv4 ARP packet keeps its sender MAC and address.
const ARP_SHA: std::ops::Range<usize> = 8..14;
const ARP_SPA: std::ops::Range<usize> = 14..18;

impl PortSecurityStage {
    /// A stage with no guarded port.
    pub fn new() -> PortSecurityStage {
        PortSecurityDrop::set().register();
        PortSecurityStage::default()
    }

    /// Replaces the guarded ports.
    pub fn set_guards(&mut self, guards: Arc<HashMap<PortId, Guard>>) {
        self.guards = guards;
    }

    /// The guarded ports.
    pub fn guards(&self) -> &HashMap<PortId, Guard> {
        &self.guards
    }
}

/// Why a frame classified as `k` (bytes `data`) from the port guarded by `g` may not pass,
/// if it may not.
#[inline]
pub fn check(k: &FlowKey, data: &[u8], g: Guard) -> Option<PortSecurityDrop> {
    if k.dl_src != g.mac {
        return Some(PortSecurityDrop::SpoofedSource);
    }
    match k.dl_type {
        ethertype::IPV4 => match k.ip_src() {
            Some(std::net::IpAddr::V4(src)) if src == g.ip => None,
            _ => Some(PortSecurityDrop::SpoofedSource),
        },
        ethertype::ARP => {
            let arp = data.get(usize::from(k.l3_offset)..).unwrap_or(&[]);
            // Ethernet (1) / IPv4 (0x0800) / 6 / 4: any other ARP is not one we let through.
            if arp.len() < ARP_SPA.end || arp[0..6] != [0, 1, 8, 0, 6, 4] {
                return Some(PortSecurityDrop::SpoofedArp);
            }
            let spa = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
            let ok = arp[ARP_SHA] == g.mac.0 && (spa == g.ip || spa.is_unspecified());
            (!ok).then_some(PortSecurityDrop::SpoofedArp)
        }
        _ => None,
    }
}

impl Stage for PortSecurityStage {
    fn name(&self) -> &'static str {
        "port_security"
    }

    fn reasons(&self) -> Option<&'static ReasonSet> {
        Some(PortSecurityDrop::set())
    }

    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        if self.guards.is_empty() {
            return;
        }
        for i in 0..batch.len() {
            if !batch.verdicts[i].is_next() {
                continue;
            }
            let Some(&g) = self.guards.get(&batch.keys[i].in_port) else {
                continue;
            };
            let why = check(&batch.keys[i], ctx.pool.data(&batch.frames[i]), g);
            if let Some(why) = why {
                ctx.record("port_security", || {
                    format!("{}: not {} / {}", why.reason().name(), g.mac, g.ip)
                });
                batch.verdicts[i] = Verdict::Drop(why.into());
            } else {
                ctx.record("port_security", || "own MAC and address".to_string());
            }
        }
    }

    fn adopt(&mut self, previous: &mut dyn Stage) {
        let previous: &mut dyn std::any::Any = previous;
        if let Some(p) = previous.downcast_mut::<PortSecurityStage>() {
            self.guards = p.guards.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    const MAC: Mac = Mac([2, 0x42, 10, 1, 0, 2]);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const GUARD: Guard = Guard { mac: MAC, ip: IP };

    fn ipv4(src_mac: Mac, src: Ipv4Addr) -> Vec<u8> {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2(src_mac.0, [2, 0x42, 10, 1, 0, 3])
            .ipv4(src.octets(), [10, 1, 0, 3], 64)
            .udp(1000, 2000)
            .write(&mut f, b"hello")
            .unwrap_or_default();
        f
    }

    fn arp(src_mac: Mac, sha: Mac, spa: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src_mac.0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        f.extend_from_slice(&sha.0);
        f.extend_from_slice(&spa.octets());
        f.extend_from_slice(&[2, 0x42, 10, 1, 0, 3, 10, 1, 0, 3]);
        f
    }

    fn verdict(f: &[u8]) -> Option<PortSecurityDrop> {
        let k = classify(f, 1, 0).expect("classifies");
        check(&k, f, GUARD)
    }

    #[test]
    fn own_mac_and_address_pass() {
        assert_eq!(verdict(&ipv4(MAC, IP)), None);
        assert_eq!(verdict(&arp(MAC, MAC, IP)), None);
        assert_eq!(
            verdict(&arp(MAC, MAC, Ipv4Addr::UNSPECIFIED)),
            None,
            "an ARP probe"
        );
    }

    #[test]
    fn another_mac_or_address_is_spoofing() {
        let other = Mac([2, 0x42, 10, 1, 0, 9]);
        assert_eq!(
            verdict(&ipv4(other, IP)),
            Some(PortSecurityDrop::SpoofedSource)
        );
        assert_eq!(
            verdict(&ipv4(MAC, Ipv4Addr::new(10, 1, 0, 9))),
            Some(PortSecurityDrop::SpoofedSource)
        );
        assert_eq!(
            verdict(&arp(MAC, MAC, Ipv4Addr::new(10, 1, 0, 3))),
            Some(PortSecurityDrop::SpoofedArp),
            "an ARP reply claiming a neighbour's address"
        );
        assert_eq!(
            verdict(&arp(MAC, other, IP)),
            Some(PortSecurityDrop::SpoofedArp)
        );
    }
}
