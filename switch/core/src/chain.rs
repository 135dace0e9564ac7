//! A bridge's chain of stages, as data: built from the bridge's configuration (today
//! classify → l2; decap, load balancing, conntrack/NAT, routing and encap as their issues add
//! them), run once per stage per batch, and swapped by the control plane between two passes
//! without stopping traffic (a new stage adopts what it keeps from the old one of its name).
//!
//! Owned by the worker that runs the bridge.

use crate::classify::{ClassifyStage, PortId};
use crate::counters::DropCounters;
use crate::drop::ReasonSet;
use crate::fdb::FdbConfig;
use crate::frame::FramePool;
use crate::l2::L2Stage;
use crate::route::{RouteConfig, RouteStage};
use crate::stage::{Batch, Stage, StageContext, Verdict};

xvs_stage::drop_reasons! {
    /// Drops of the chain itself, not of one of its stages.
    pub enum PipelineDrop in "pipeline" {
        NoVerdict => "no_verdict", "frame left the chain without any stage deciding";
        NoBridge => "no_bridge", "frame received on a port whose bridge is gone";
        PatchLoop => "patch_loop", "frame patched over between bridges more times than a route needs";
    }
}

/// The stages of one bridge, in order.
pub struct Chain {
    stages: Vec<Box<dyn Stage>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Chain {
    /// A chain of `stages`, in order.
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Chain {
        PipelineDrop::set().register();
        for s in &stages {
            if let Some(set) = s.reasons() {
                set.register();
            }
        }
        Chain { stages }
    }

    /// The chain of a plain bridge: classify, then L2 learning and forwarding.
    pub fn bridge(config: FdbConfig) -> Chain {
        Chain::new(vec![
            Box::new(ClassifyStage),
            Box::new(L2Stage::new(config)),
        ])
    }

    /// The chain of a network: classify, L2 (frames to the gateway's MAC marked routed), then
    /// the route stage (to the gateway's own stack, or a counted drop until routing out lands).
    pub fn network(config: FdbConfig, gateway_mac: crate::wire::Mac, route: RouteConfig) -> Chain {
        Chain::new(vec![
            Box::new(ClassifyStage),
            Box::new(L2Stage::new(config).with_router(gateway_mac)),
            Box::new(RouteStage::new(route)),
        ])
    }

    /// This chain with `stage` appended at its end.
    pub fn then(mut self, stage: Box<dyn Stage>) -> Chain {
        if let Some(set) = stage.reasons() {
            set.register();
        }
        self.stages.push(stage);
        self
    }

    /// The stages' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// The reason sets of the chain's stages (and the chain's own).
    pub fn reasons(&self) -> Vec<&'static ReasonSet> {
        let mut v: Vec<_> = self.stages.iter().filter_map(|s| s.reasons()).collect();
        v.push(PipelineDrop::set());
        v
    }

    /// Runs every stage over `batch`, each once for the whole batch, stopping early once every
    /// frame has a verdict. A frame still undecided at the end is a counted drop.
    #[inline]
    pub fn run(&mut self, ctx: &mut StageContext<'_>, batch: &mut Batch) {
        for stage in &mut self.stages {
            if !batch.any_next() && !stage.sees_decided() {
                continue;
            }
            stage.process(ctx, batch);
        }
        for v in &mut batch.verdicts[..batch.frames.len()] {
            if v.is_next() {
                *v = Verdict::Drop(PipelineDrop::NoVerdict.into());
                if let Some(t) = ctx.trace.as_deref_mut() {
                    t.record("pipeline", "drop: no stage decided");
                }
            }
        }
    }

    /// Housekeeping of every stage (ageing, timeouts).
    pub fn tick(&mut self, now_ms: u64) {
        for s in &mut self.stages {
            s.tick(now_ms);
        }
    }

    /// Whether a stage may have frames to let go ([`Stage::release`]).
    pub fn has_release(&self) -> bool {
        self.stages.iter().any(|s| s.has_release())
    }

    /// Collects into `out` the frames stages let go this pass, verdicts set.
    pub fn release(&mut self, ctx: &mut StageContext<'_>, out: &mut Batch) {
        for s in &mut self.stages {
            if s.has_release() && !out.frames.is_full() {
                s.release(ctx, out);
            }
        }
    }

    /// Tells every stage that `port` left the bridge.
    pub fn port_removed(&mut self, port: PortId) {
        for s in &mut self.stages {
            s.port_removed(port);
        }
    }

    /// Replaces the chain's stages with `next`'s; each new stage adopts what it keeps from the
    /// old stage of the same name. Frames an old stage still holds afterwards are given back
    /// (counted); returns how many.
    pub fn replace(&mut self, mut next: Chain, pool: &mut FramePool, drops: &DropCounters) -> u64 {
        for new in &mut next.stages {
            if let Some(old) = self.stages.iter_mut().find(|s| s.name() == new.name()) {
                new.adopt(old.as_mut());
            }
        }
        let old = std::mem::replace(&mut self.stages, next.stages);
        let mut n = 0;
        for mut s in old {
            n += s.discard(pool, drops);
        }
        n
    }

    /// Gives back every frame the stages hold (the bridge is going); returns how many.
    pub fn discard(&mut self, pool: &mut FramePool, drops: &DropCounters) -> u64 {
        self.stages.iter_mut().map(|s| s.discard(pool, drops)).sum()
    }

    /// Frames of the pool the stages hold between bursts.
    pub fn frames_held(&self) -> usize {
        self.stages.iter().map(|s| s.frames_held()).sum()
    }

    /// The first stage of type `T`.
    pub fn stage<T: Stage>(&self) -> Option<&T> {
        self.stages.iter().find_map(|s| {
            let s: &dyn std::any::Any = s.as_ref();
            s.downcast_ref::<T>()
        })
    }

    /// The first stage of type `T`, writable.
    pub fn stage_mut<T: Stage>(&mut self) -> Option<&mut T> {
        self.stages.iter_mut().find_map(|s| {
            let s: &mut dyn std::any::Any = s.as_mut();
            s.downcast_mut::<T>()
        })
    }
}
