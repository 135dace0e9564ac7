//! The route stage of a network's chain: frames the L2 stage marked as routed (sent to the
//! gateway's MAC) are either for the gateway itself (handed to the local stack: ARP, ping,
//! DNS) or routed. A routed frame leaves through the uplink: its TTL is decremented (an ICMP
//! time-exceeded answers one that ran out), a DF frame larger than the uplink's MTU is answered
//! with ICMP fragmentation-needed, and the frame is patched over to the uplink's bridge, whose
//! chain tracks and translates it and addresses it to the next hop. What is not routed is a
//! counted drop naming why: an `--internal` network routes nowhere, another network's subnet
//! is isolated (as Docker's bridges are from each other), and without an uplink there is no
//! route out.
//!
//! Owned by the worker that runs the network's bridge; the control plane changes its
//! configuration with `Datapath::with_stage`.

use std::net::Ipv4Addr;

use crate::classify::ethertype;
use crate::drop::ReasonSet;
use crate::stage::{Batch, Stage, StageContext, Verdict};
use crate::wire::{BridgeId, Mac};
use xvs_stage::icmp_error::{IcmpError, answer_in_place};

xvs_stage::drop_reasons! {
    /// Why the route stage dropped a frame.
    pub enum RouteDrop in "route" {
        Internal => "internal_network", "routed frame from an --internal network (it routes nowhere)";
        OtherNetwork => "other_network", "routed frame for another network's subnet (networks are isolated)";
        NoRoute => "no_route", "routed frame for an address beyond the network, and no uplink is set";
        TtlExceeded => "ttl_exceeded", "routed frame whose TTL ran out (answered with ICMP time exceeded unless rate-limited)";
        FragNeeded => "frag_needed", "routed frame with DF set larger than the uplink's MTU (answered with ICMP fragmentation needed unless rate-limited)";
        Malformed => "malformed", "routed IPv4 frame too short for its header";
    }
}

/// An IPv4 subnet (the wire type).
pub use crate::wire::Ipv4Net as Subnet;

/// Where routed frames leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkRoute {
    /// The uplink's bridge (frames are patched over to it).
    pub bridge: BridgeId,
    /// Its MTU (IP bytes).
    pub mtu: u16,
}

/// What a network's route stage knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The gateway's own address (frames for it go to the local stack; ICMP errors come
    /// from it).
    pub gateway: Ipv4Addr,
    /// The gateway's MAC (ICMP errors come from it).
    pub gateway_mac: Mac,
    /// The network's subnet.
    pub subnet: Subnet,
    /// `--internal`: nothing is routed out.
    pub internal: bool,
    /// The other networks' subnets (isolated from this one).
    pub others: Vec<Subnet>,
    /// The way out, when an uplink is set.
    pub uplink: Option<UplinkRoute>,
}

/// ICMP errors one route stage sends per second at most (steady rate), as a router limits
/// them (RFC 1812 4.3.2.8).
pub const ICMP_ERRORS_PER_SEC: u64 = 100;
/// Errors it may send in a burst.
const ICMP_BURST: u64 = 50;

/// The route stage of one network.
#[derive(Debug)]
pub struct RouteStage {
    config: RouteConfig,
    /// Token bucket of ICMP errors: tokens, and when they were last added.
    tokens: u64,
    refilled_ms: u64,
    ip_id: u16,
}

/// What [`RouteStage::decide`] found for a routed IPv4 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// A verdict, nothing to change.
    Verdict(Verdict),
    /// Out of the uplink: TTL to decrement, patched over.
    Out(UplinkRoute),
    /// Answer with an ICMP error, the frame counted under the reason.
    Answer(IcmpError, RouteDrop),
}

impl RouteStage {
    /// A route stage with `config`.
    pub fn new(config: RouteConfig) -> RouteStage {
        RouteDrop::set().register();
        RouteStage {
            config,
            tokens: ICMP_BURST,
            refilled_ms: 0,
            ip_id: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// Replaces the configuration (between two passes).
    pub fn set_config(&mut self, config: RouteConfig) {
        self.config = config;
    }

    /// The route for a routed IPv4 frame to `dst` with `ttl`, `len` IP bytes (`gso`: a
    /// super-frame, cut to the MTU later) and DF `df`.
    #[inline]
    fn decide(&self, dst: Ipv4Addr, ttl: u8, len: usize, df: bool, gso: bool) -> Route {
        let c = &self.config;
        if dst == c.gateway || c.subnet.contains(dst) || dst.is_multicast() || dst.is_broadcast() {
            return Route::Verdict(Verdict::Local);
        }
        if c.internal {
            return Route::Verdict(Verdict::Drop(RouteDrop::Internal.into()));
        }
        if c.others.iter().any(|s| s.contains(dst)) {
            return Route::Verdict(Verdict::Drop(RouteDrop::OtherNetwork.into()));
        }
        let Some(up) = c.uplink else {
            return Route::Verdict(Verdict::Drop(RouteDrop::NoRoute.into()));
        };
        if ttl <= 1 {
            return Route::Answer(IcmpError::TimeExceeded, RouteDrop::TtlExceeded);
        }
        if df && !gso && len > usize::from(up.mtu) {
            return Route::Answer(
                IcmpError::FragmentationNeeded { mtu: up.mtu },
                RouteDrop::FragNeeded,
            );
        }
        Route::Out(up)
    }

    /// Takes a token for an ICMP error at `now_ms`; false when the rate is spent.
    fn icmp_token(&mut self, now_ms: u64) -> bool {
        let add = now_ms.saturating_sub(self.refilled_ms) * ICMP_ERRORS_PER_SEC / 1000;
        if add > 0 {
            self.tokens = (self.tokens + add).min(ICMP_BURST);
            self.refilled_ms = now_ms;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Routes frame `i`, a routed IPv4 frame.
    fn route_ipv4(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch, i: usize) -> Verdict {
        let key = batch.keys[i];
        let l3 = usize::from(key.l3_offset);
        let gso = batch.frames[i].offload().is_gso();
        let data = ctx.pool.data(&batch.frames[i]);
        let Some(h) = data.get(l3..l3 + 20) else {
            return Verdict::Drop(RouteDrop::Malformed.into());
        };
        let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let df = h[6] & 0x40 != 0;
        match self.decide(dst, h[8], len, df, gso) {
            Route::Verdict(v) => {
                ctx.record("route", || match v {
                    Verdict::Local => "for the gateway: local stack".to_string(),
                    Verdict::Drop(r) => format!("drop: {}", r.describe()),
                    _ => String::new(),
                });
                v
            }
            Route::Out(up) => {
                let data = ctx.pool.data_mut(&mut batch.frames[i]);
                if !crate::checksum::decrement_ttl(data, l3) {
                    return Verdict::Drop(RouteDrop::Malformed.into());
                }
                ctx.record("route", || {
                    format!(
                        "{dst} is beyond the network: TTL decremented, to the uplink (bridge {})",
                        up.bridge
                    )
                });
                Verdict::Patch(up.bridge)
            }
            Route::Answer(kind, reason) => {
                ctx.record("route", || {
                    format!("drop: {}; answered with ICMP", reason.reason().describe())
                });
                if ctx.dry_run() || !self.icmp_token(ctx.now_ms) {
                    return Verdict::Drop(reason.into());
                }
                self.ip_id = self.ip_id.wrapping_add(1);
                let (mac, ip) = (self.config.gateway_mac, self.config.gateway);
                match answer_in_place(
                    ctx.pool,
                    &mut batch.frames[i],
                    &key,
                    kind,
                    mac,
                    ip,
                    self.ip_id,
                ) {
                    Ok(_) => {
                        // The frame is dropped; the answer is a frame of the stage's own.
                        ctx.count(reason, 1);
                        ctx.made_frame();
                        Verdict::Output(key.in_port)
                    }
                    Err(_) => Verdict::Drop(reason.into()),
                }
            }
        }
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
            let v = if batch.keys[i].dl_type == ethertype::IPV4 {
                self.route_ipv4(ctx, batch, i)
            } else {
                // ARP or IPv6 to the gateway's MAC: the local stack's.
                ctx.record("route", || "not IPv4: local stack".to_string());
                Verdict::Local
            };
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
            gateway_mac: Mac([2, 0x42, 10, 1, 0, 1]),
            uplink: None,
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

    fn d(s: &RouteStage, dst: [u8; 4]) -> Route {
        s.decide(Ipv4Addr::from(dst), 64, 100, true, false)
    }

    #[test]
    fn routed_frames_go_to_the_gateway_out_or_are_dropped_with_a_reason() {
        let mut s = stage(false);
        let local = Route::Verdict(Verdict::Local);
        assert_eq!(d(&s, [10, 1, 0, 1]), local);
        assert_eq!(d(&s, [10, 1, 0, 7]), local);
        assert_eq!(
            d(&s, [10, 2, 0, 3]),
            Route::Verdict(Verdict::Drop(RouteDrop::OtherNetwork.into()))
        );
        assert_eq!(
            d(&s, [198, 18, 0, 1]),
            Route::Verdict(Verdict::Drop(RouteDrop::NoRoute.into()))
        );
        assert_eq!(
            d(&stage(true), [198, 18, 0, 1]),
            Route::Verdict(Verdict::Drop(RouteDrop::Internal.into()))
        );
        assert_eq!(d(&stage(true), [10, 1, 0, 1]), local);
        let up = UplinkRoute {
            bridge: 9,
            mtu: 1500,
        };
        s.config.uplink = Some(up);
        assert_eq!(d(&s, [198, 18, 0, 1]), Route::Out(up));
        let far = Ipv4Addr::new(198, 18, 0, 1);
        assert_eq!(
            s.decide(far, 1, 100, false, false),
            Route::Answer(IcmpError::TimeExceeded, RouteDrop::TtlExceeded)
        );
        assert_eq!(
            s.decide(far, 64, 1501, true, false),
            Route::Answer(
                IcmpError::FragmentationNeeded { mtu: 1500 },
                RouteDrop::FragNeeded
            )
        );
        assert_eq!(
            s.decide(far, 64, 1501, false, false),
            Route::Out(up),
            "no DF: fragmented later"
        );
        assert_eq!(
            s.decide(far, 64, 9000, true, true),
            Route::Out(up),
            "a super-frame is cut later"
        );
    }

    #[test]
    fn icmp_errors_are_rate_limited() {
        let mut s = stage(false);
        let sent = (0..200).filter(|_| s.icmp_token(1000)).count();
        assert_eq!(sent as u64, ICMP_BURST);
        assert!(!s.icmp_token(1005));
        assert!(s.icmp_token(1010), "one more every 10 ms");
    }
}
