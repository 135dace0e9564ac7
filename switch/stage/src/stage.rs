//! The stage contract: a stage processes a whole [`Batch`] and gives each frame still marked
//! [`Verdict::Next`] a verdict. Dispatch is per batch, not per frame.
//!
//! A stage lives on the worker thread that runs its bridge's chain; the control plane builds
//! it and hands it over (so it is `Send`), never touching it afterwards.

use std::any::Any;

pub use crate::batch::{BURST, Batch, Burst, Egress, FrameMeta};
use crate::domain::Domain;
use crate::drop::{DropCounters, DropReason, ReasonSet};
use crate::frame::FramePool;
use crate::trace::TraceLog;
pub use crate::verdict::Verdict;
use crate::wire::PortId;

/// What a stage may use besides the batch.
#[derive(Debug)]
pub struct StageContext<'a> {
    /// The worker's frame pool (read frame bytes; rewrite them in place; push and pull headers
    /// with the frame's own handle; allocate a frame a stage sends of its own, as an ARP
    /// request).
    pub pool: &'a mut FramePool,
    /// Now, in ms, read once per pass. Stages take time from here only.
    pub now_ms: u64,
    /// Set when tracing: a dry run. Each stage records its decision here and must create no
    /// state (no learned MAC, no session).
    pub trace: Option<&'a mut TraceLog>,
    /// The bridge the batch is switched on: member ports, VLANs, icc, the local stack's port.
    pub domain: &'a Domain,
    /// Counters for events a stage notes without a verdict (a MAC not learned, ...).
    pub counters: &'a DropCounters,
    /// This worker's number, and how many workers there are (for [`Verdict::Handoff`]).
    ///
    /// [`Verdict::Handoff`]: crate::verdict::Verdict::Handoff
    pub worker: u16,
    /// Number of workers.
    pub workers: u16,
    /// Frames the stages made of their own during this pass (an ICMP error, an ARP request),
    /// for the engine's accounting: every frame is received, made, sent or dropped.
    pub generated: u64,
}

impl<'a> StageContext<'a> {
    /// A context at `now_ms` over `pool`, for a batch on a bridge with `domain`, counting
    /// events into `counters`: not tracing, worker 0 of 1.
    pub fn new(
        pool: &'a mut FramePool,
        domain: &'a Domain,
        counters: &'a DropCounters,
        now_ms: u64,
    ) -> StageContext<'a> {
        StageContext {
            pool,
            now_ms,
            trace: None,
            domain,
            counters,
            worker: 0,
            workers: 1,
            generated: 0,
        }
    }

    /// The same context as a dry run recording into `log`.
    pub fn traced(self, log: &'a mut TraceLog) -> StageContext<'a> {
        StageContext {
            trace: Some(log),
            ..self
        }
    }

    /// The same context on worker `worker` of `workers`.
    pub fn on_worker(self, worker: u16, workers: u16) -> StageContext<'a> {
        StageContext {
            worker,
            workers,
            ..self
        }
    }

    /// True on a trace's dry run: decide, record, change nothing.
    #[inline]
    pub fn dry_run(&self) -> bool {
        self.trace.is_some()
    }

    /// Records `stage`'s decision when tracing (the text is only built then).
    #[inline]
    pub fn record(&mut self, stage: &'static str, decision: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.record(stage, decision());
        }
    }

    /// Notes that a stage made a frame of its own (not on a dry run).
    #[inline]
    pub fn made_frame(&mut self) {
        if !self.dry_run() {
            self.generated += 1;
        }
    }

    /// Counts `n` events of `reason` (not a verdict: the frame goes on).
    #[inline]
    pub fn count(&self, reason: impl Into<DropReason>, n: u64) {
        if n > 0 && !self.dry_run() {
            self.counters.add(reason, n);
        }
    }
}

/// One step of a bridge's chain.
pub trait Stage: Any + Send {
    /// Name shown by `xvsctl trace` and under which its reasons are counted.
    fn name(&self) -> &'static str;

    /// The drop reasons the stage declares (shown by `xvsctl stats` under its name).
    fn reasons(&self) -> Option<&'static ReasonSet> {
        None
    }

    /// Gives a verdict to every frame of `batch` whose verdict is [`Verdict::Next`]
    /// (others it leaves alone).
    ///
    /// [`Verdict::Next`]: crate::verdict::Verdict::Next
    fn process(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch);

    /// Housekeeping once per worker pass, off the per-frame path (ageing, timeouts): time as
    /// an argument. Default: nothing.
    /// Whether the stage also runs over frames earlier stages already decided (an overlay's
    /// encap turns `Output(tunnel)` and floods into VXLAN); such a stage runs even when no
    /// frame is left undecided.
    fn sees_decided(&self) -> bool {
        false
    }

    fn tick(&mut self, _now_ms: u64) {}

    /// A member port of the bridge went away: forget what was learned about it. Default:
    /// nothing.
    fn port_removed(&mut self, _port: PortId) {}

    /// Once per worker pass: frames the stage kept ([`Verdict::Held`]) or makes of its own
    /// that are ready to go, pushed into the empty `out` with their verdicts set (they are
    /// sent as they are, not run through the chain). Default: nothing.
    ///
    /// [`Verdict::Held`]: crate::verdict::Verdict::Held
    fn release(&mut self, _ctx: &mut StageContext<'_>, _out: &mut Batch) {}

    /// Whether [`release`](Stage::release) may have something (checked once per pass).
    fn has_release(&self) -> bool {
        false
    }

    /// The stage is going away (its bridge removed, or replaced by a stage that did not adopt
    /// everything): give back every frame it still holds, counting each under a reason in
    /// `drops`. Returns how many. Default: nothing held.
    fn discard(&mut self, _pool: &mut FramePool, _drops: &DropCounters) -> u64 {
        0
    }

    /// Frames of the worker's pool the stage holds between bursts (waiting for a neighbour,
    /// copies not yet sent), for the pool's accounting in `xvsctl stats`. Default: none.
    fn frames_held(&self) -> usize {
        0
    }

    /// When the control plane swaps a bridge's chain, a new stage takes what it keeps from the
    /// old stage of the same name (the L2 stage keeps its learned MACs). Default: nothing.
    fn adopt(&mut self, _previous: &mut dyn Stage) {}
}
