//! The pipeline over one received burst: classify → L2 bridge, leaving a verdict per frame.
//!
//! Later issues add stages (VXLAN, LB, NAT) between these two; output is the worker's job.
//! Runs on the worker thread that owns the bridge.

use crate::bridge::Bridge;
use crate::classify::{PortId, classify};
use crate::counters::DropCounters;
use crate::frame::FramePool;
use crate::stage::{Batch, Stage, StageContext, Verdict};
use crate::trace::TraceLog;

/// Classifies every frame of `batch`, received on `in_port` with access VLAN `vlan`.
/// Frames that fail get `Verdict::Drop(reason)`.
#[inline]
pub fn classify_batch(
    pool: &FramePool,
    batch: &mut Batch,
    in_port: PortId,
    vlan: u16,
    mut trace: Option<&mut TraceLog>,
) {
    for i in 0..batch.len() {
        match classify(pool.data(&batch.frames[i]), in_port, vlan) {
            Ok(key) => {
                if let Some(t) = trace.as_deref_mut() {
                    t.record("classify", key.to_string());
                }
                batch.keys[i] = key;
                batch.verdicts[i] = Verdict::Next;
            }
            Err(reason) => {
                if let Some(t) = trace.as_deref_mut() {
                    t.record("classify", format!("drop: {}", reason.describe()));
                }
                batch.verdicts[i] = Verdict::Drop(reason);
            }
        }
    }
}

/// Runs the whole pipeline over a burst from `in_port`.
#[inline]
pub fn run(
    pool: &FramePool,
    bridge: &mut Bridge,
    batch: &mut Batch,
    in_port: PortId,
    vlan: u16,
    now_ms: u64,
    mut trace: Option<&mut TraceLog>,
) {
    classify_batch(pool, batch, in_port, vlan, trace.as_deref_mut());
    let mut ctx = StageContext {
        pool,
        now_ms,
        trace,
    };
    bridge.process(&mut ctx, batch);
}

/// Counts the drops a pass decided (frames are freed by the caller).
#[inline]
pub fn count_drops(batch: &Batch, drops: &DropCounters) -> u64 {
    let mut n = 0;
    for v in &batch.verdicts[..batch.len()] {
        if let Verdict::Drop(r) = v {
            drops.add(*r, 1);
            n += 1;
        }
    }
    n
}
