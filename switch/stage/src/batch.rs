//! Batches: a burst of up to [`BURST`] frames with, index-aligned, each frame's key, verdict
//! and metadata. A batch is owned by one worker thread for the duration of one pass.

use arrayvec::ArrayVec;

use crate::classify::FlowKey;
use crate::frame::{Frame, FramePool};
use crate::verdict::Verdict;
use crate::wire::{BridgeId, PortId};

/// Frames per burst, as OVS's `NETDEV_MAX_BURST` and VPP's vectors.
pub const BURST: usize = 32;

/// Bridges a frame may cross in a row through [`Verdict::Patch`] (network → uplink → network
/// is a hairpin's two).
pub const MAX_PATCHES: u8 = 3;

/// Where a routed frame leaves, once connection tracking decided it (read by the router
/// stage that rewrites its MACs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Egress {
    /// Not decided (not routed, or not tracked).
    #[default]
    Undecided,
    /// Out of the uplink, to its next hop.
    Uplink,
    /// Into a network (a reply, a published port, a hairpin), by its zone (bridge id).
    Zone(u16),
}

/// A burst of frames.
pub type Burst = ArrayVec<Frame, BURST>;

/// What the pipeline knows about a frame besides its bytes and key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// The bridge (network) the frame is being switched on.
    pub bridge: BridgeId,
    /// Being routed: it was sent to the gateway's MAC for an address beyond the subnet.
    pub routed: bool,
    /// Already handed over from another worker (a stage must not hand it on again).
    pub handed_off: bool,
    /// A stage's flow-state slot for the frame (an index into that stage's own table).
    pub flow: Option<u32>,
    /// The bridge it was patched over from ([`Verdict::Patch`]); `None` when it was received
    /// on a port of this bridge.
    pub patched_from: Option<BridgeId>,
    /// Patches crossed so far.
    pub patches: u8,
    /// Where connection tracking sends it.
    pub egress: Egress,
    /// The port a patched frame enters its bridge on; `None`: the bridge's local port. An
    /// overlay's decapsulated frame enters its network on the network's tunnel port.
    pub enter_port: Option<PortId>,
    /// The remote VTEP a decapsulated frame came from (learnt with its inner source MAC).
    pub tunnel_peer: Option<std::net::Ipv4Addr>,
    /// An overlay's encapsulated frame on its way out: xvs's own VTEP traffic, which
    /// connection tracking leaves alone.
    pub tunnel: bool,
}

/// A burst of frames from one port with their keys, verdicts and metadata (index-aligned).
#[derive(Debug)]
pub struct Batch {
    /// The frames.
    pub frames: Burst,
    /// Classification of each frame (valid once classified).
    pub keys: [FlowKey; BURST],
    /// Each frame's verdict so far.
    pub verdicts: [Verdict; BURST],
    /// Each frame's metadata.
    pub meta: [FrameMeta; BURST],
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            frames: Burst::new(),
            keys: [FlowKey::default(); BURST],
            verdicts: [Verdict::Next; BURST],
            meta: [FrameMeta::default(); BURST],
        }
    }
}

impl Batch {
    /// Frames in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Starts a pass over the frames received into `frames` from `in_port` (access VLAN
    /// `vlan`) on `bridge`: every verdict `Next`, every key seeded with the ingress port and
    /// VLAN for classification, every frame's metadata naming the bridge.
    #[inline]
    pub fn begin(&mut self, bridge: BridgeId, in_port: PortId, vlan: u16) {
        let n = self.frames.len();
        self.verdicts[..n].fill(Verdict::Next);
        for k in &mut self.keys[..n] {
            k.in_port = in_port;
            k.vlan = vlan;
        }
        self.meta[..n].fill(FrameMeta {
            bridge,
            ..FrameMeta::default()
        });
    }

    /// Every verdict back to `Next` (keys and metadata as they are), for another pass.
    #[inline]
    pub fn reset_verdicts(&mut self) {
        self.verdicts[..self.frames.len()].fill(Verdict::Next);
    }

    /// Whether any frame still waits for a decision.
    #[inline]
    pub fn any_next(&self) -> bool {
        self.verdicts[..self.len()].iter().any(|v| v.is_next())
    }

    /// Returns every frame to `pool`.
    pub fn free_all(&mut self, pool: &mut FramePool) {
        for f in self.frames.drain(..) {
            pool.free(f);
        }
    }

    /// Takes frame `i` out of the batch for a stage to keep: its slot becomes a hole with the
    /// verdict [`Verdict::Held`] (output passes over it).
    #[inline]
    pub fn hold(&mut self, i: usize) -> Frame {
        self.verdicts[i] = Verdict::Held;
        std::mem::replace(&mut self.frames[i], Frame::hole())
    }

    /// Adds a frame with a fresh verdict and metadata; gives it back if the batch is full.
    pub fn push(&mut self, frame: Frame, meta: FrameMeta) -> Result<(), Frame> {
        let i = self.frames.len();
        self.frames.try_push(frame).map_err(|e| e.element())?;
        self.verdicts[i] = Verdict::Next;
        self.meta[i] = meta;
        Ok(())
    }
}
