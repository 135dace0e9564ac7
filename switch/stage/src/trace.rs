//! Trace records: what each stage decided for a traced frame, for `xvsctl trace`.
//!
//! Only built on the trace path (the control plane asks a worker to run one synthetic frame
//! through its pipeline without side effects); the forwarding path passes `None`.

/// One stage's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    /// Stage name.
    pub stage: &'static str,
    /// What it decided, and why.
    pub decision: String,
}

/// The decisions for one frame, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceLog {
    /// Steps so far.
    pub steps: Vec<TraceStep>,
}

impl TraceLog {
    /// Records a step.
    pub fn record(&mut self, stage: &'static str, decision: impl Into<String>) {
        self.steps.push(TraceStep {
            stage,
            decision: decision.into(),
        });
    }
}
