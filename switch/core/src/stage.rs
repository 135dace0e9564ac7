//! The stage contract: a stage processes a whole [`Batch`] and gives each frame still marked
//! [`Verdict::Next`] a verdict. Dispatch is per batch, not per frame.
//!
//! A batch is owned by one worker thread for the duration of one pass.

use crate::classify::{FlowKey, PortId};
use crate::counters::DropReason;
use crate::frame::{Frame, FramePool};
use crate::port::{BURST, Burst};
use crate::trace::TraceLog;

/// What happens to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Not decided yet: the next stage looks at it.
    #[default]
    Next,
    /// Send out of one port.
    Output(PortId),
    /// Send out of every other port of the frame's VLAN on its bridge.
    Flood,
    /// Drop, counted under the reason.
    Drop(DropReason),
    /// Hand to the slow path (the control thread's local stack).
    Punt,
}

/// A burst of frames from one port with their keys and verdicts (index-aligned).
#[derive(Debug)]
pub struct Batch {
    /// The frames.
    pub frames: Burst,
    /// Classification of each frame (valid once classified).
    pub keys: [FlowKey; BURST],
    /// Each frame's verdict so far.
    pub verdicts: [Verdict; BURST],
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            frames: Burst::new(),
            keys: [FlowKey::default(); BURST],
            verdicts: [Verdict::Next; BURST],
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

    /// Resets verdicts for a new pass over `frames`.
    #[inline]
    pub fn reset_verdicts(&mut self) {
        self.verdicts[..self.frames.len()].fill(Verdict::Next);
    }

    /// Returns every frame to `pool`.
    pub fn free_all(&mut self, pool: &mut FramePool) {
        for f in self.frames.drain(..) {
            pool.free(f);
        }
    }

    /// Adds a frame with a fresh verdict; gives it back if the batch is full.
    pub fn push(&mut self, frame: Frame) -> Result<(), Frame> {
        let i = self.frames.len();
        self.frames.try_push(frame).map_err(|e| e.element())?;
        self.verdicts[i] = Verdict::Next;
        Ok(())
    }
}

/// What a stage may use besides the batch.
#[derive(Debug)]
pub struct StageContext<'a> {
    /// The worker's frame pool (read frame bytes; rewrite in place).
    pub pool: &'a FramePool,
    /// Now, in ms, read once per batch.
    pub now_ms: u64,
    /// Per-stage decisions are recorded here when tracing.
    pub trace: Option<&'a mut TraceLog>,
}

/// One step of the pipeline.
pub trait Stage {
    /// Name shown by `xvsctl trace` and in counters.
    fn name(&self) -> &'static str;

    /// Gives a verdict to every frame of `batch` whose verdict is [`Verdict::Next`].
    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch);
}
