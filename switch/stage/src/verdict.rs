//! Verdicts: what a stage decided for one frame.
//!
//! Plain values, 8 bytes; a batch carries one per frame.

use crate::drop::DropReason;
use crate::wire::{BridgeId, PortId};

/// What happens to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Not decided yet: the next stage looks at it. A frame still `Next` after the last
    /// stage is a counted drop (`pipeline/no_verdict`).
    #[default]
    Next,
    /// Send out of one port.
    Output(PortId),
    /// Send out of every other port of the frame's VLAN on its bridge.
    Flood,
    /// Hand to the bridge's local stack (the gateway: ARP, ICMP, DNS), from any stage.
    Local,
    /// Hand to another worker (by number) over a bounded ring; the frame is copied into that
    /// worker's pool and runs its bridge's chain there. A full ring is a counted drop
    /// (`handoff/handoff_congested`).
    Handoff(u16),
    /// Continue on another bridge of the same worker, as through an OVS patch port: the frame
    /// runs that bridge's chain (entering on its local port) after this batch is sent. How a
    /// routed frame goes from a network to the uplink and back. At most
    /// [`MAX_PATCHES`](crate::batch::MAX_PATCHES) in a row (`pipeline/patch_loop` beyond).
    Patch(BridgeId),
    /// The stage kept the frame (its slot in the batch is a hole now): a frame waiting for a
    /// neighbour resolution. The stage gives it back later through [`Stage::release`], sent
    /// or as a counted drop.
    ///
    /// [`Stage::release`]: crate::stage::Stage::release
    Held,
    /// Drop, counted under the reason.
    Drop(DropReason),
}

impl Verdict {
    /// Whether the frame still waits for a decision.
    #[inline]
    pub fn is_next(self) -> bool {
        self == Verdict::Next
    }
}
