//! The route stage of a network's chain: frames the L2 stage marked as routed (sent to the
//! gateway's MAC) are either for the gateway itself (handed to the local stack: ping, DNS) or
//! to be routed. Routing out of the network is not there yet (it needs the uplink's next hop
//! and NAT); until it is, every routed frame is a counted drop naming why: an `--internal`
//! network routes nowhere, another network's subnet is isolated (as Docker's bridges are from
//! each other), anything else has no route yet.
//!
//! Owned by the worker that runs the network's bridge; the control plane changes its
//! configuration with `Datapath::with_stage`.

use std::net::Ipv4Addr;

use crate::classify::ethertype;
use crate::drop::ReasonSet;
use crate::stage::{Batch, Stage, StageContext, Verdict};

xvs_stage::drop_reasons! {
    /// Why the route stage dropped a frame.
    pub enum RouteDrop in "route" {
        Internal => "internal_network", "routed frame from an --internal network (it routes nowhere)";
        OtherNetwork => "other_network", "routed frame for another network's subnet (networks are isolated)";
        NoRoute => "no_route", "routed frame for an address beyond the network (no route out yet)";
    }
}

/// An IPv4 subnet (the wire type).
pub use crate::wire::Ipv4Net as Subnet;

/// What a network's route stage knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The gateway's own address (frames for it go to the local stack).
    pub gateway: Ipv4Addr,
    /// The network's subnet.
    pub subnet: Subnet,
    /// `--internal`: nothing is routed out.
    pub internal: bool,
    /// The other networks' subnets (isolated from this one).
    pub others: Vec<Subnet>,
}

/// The route stage of one network.
#[derive(Debug)]
pub struct RouteStage {
    config: RouteConfig,
}

impl RouteStage {
    /// A route stage with `config`.
    pub fn new(config: RouteConfig) -> RouteStage {
        RouteDrop::set().register();
        RouteStage { config }
    }

    /// The configuration.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// Replaces the configuration (between two passes).
    pub fn set_config(&mut self, config: RouteConfig) {
        self.config = config;
    }

    /// The verdict for a routed IPv4 frame to `dst`.
    #[inline]
    fn decide(&self, dst: Ipv4Addr) -> Verdict {
        let c = &self.config;
        if dst == c.gateway || c.subnet.contains(dst) || dst.is_multicast() || dst.is_broadcast() {
            return Verdict::Local;
        }
        if c.internal {
            return Verdict::Drop(RouteDrop::Internal.into());
        }
        if c.others.iter().any(|s| s.contains(dst)) {
            return Verdict::Drop(RouteDrop::OtherNetwork.into());
        }
        Verdict::Drop(RouteDrop::NoRoute.into())
    }
}

impl Stage for RouteStage {
    fn name(&self) -> &'static str {
        "route"
    }

    fn reasons(&self) -> Option<&'static ReasonSet> {
        Some(RouteDrop::set())
    }

    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if !batch.verdicts[i].is_next() || !batch.meta[i].routed {
                continue;
            }
            let key = &batch.keys[i];
            let v = match (key.dl_type, key.ip_dst()) {
                (ethertype::IPV4, Some(std::net::IpAddr::V4(dst))) => self.decide(dst),
                // ARP or IPv6 to the gateway's MAC: the local stack's.
                _ => Verdict::Local,
            };
            ctx.record("route", || match v {
                Verdict::Local => "for the gateway: local stack".to_string(),
                Verdict::Drop(r) => format!("drop: {}", r.describe()),
                _ => String::new(),
            });
            batch.verdicts[i] = v;
        }
    }

    fn adopt(&mut self, _previous: &mut dyn Stage) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(internal: bool) -> RouteStage {
        RouteStage::new(RouteConfig {
            gateway: Ipv4Addr::new(10, 1, 0, 1),
            subnet: Subnet {
                addr: Ipv4Addr::new(10, 1, 0, 0),
                prefix: 24,
            },
            internal,
            others: vec![Subnet {
                addr: Ipv4Addr::new(10, 2, 0, 0),
                prefix: 24,
            }],
        })
    }

    #[test]
    fn routed_frames_go_to_the_gateway_or_are_dropped_with_a_reason() {
        let s = stage(false);
        assert_eq!(s.decide(Ipv4Addr::new(10, 1, 0, 1)), Verdict::Local);
        assert_eq!(s.decide(Ipv4Addr::new(10, 1, 0, 7)), Verdict::Local);
        assert_eq!(
            s.decide(Ipv4Addr::new(10, 2, 0, 3)),
            Verdict::Drop(RouteDrop::OtherNetwork.into())
        );
        assert_eq!(
            s.decide(Ipv4Addr::new(198, 18, 0, 1)),
            Verdict::Drop(RouteDrop::NoRoute.into())
        );
        assert_eq!(
            stage(true).decide(Ipv4Addr::new(198, 18, 0, 1)),
            Verdict::Drop(RouteDrop::Internal.into())
        );
        assert_eq!(
            stage(true).decide(Ipv4Addr::new(10, 1, 0, 1)),
            Verdict::Local
        );
    }
}
