//! xvs-switch: the datapath of xvs.
//!
//! The stage contract (frames, batches, verdicts, the `Stage` trait, drop reasons,
//! classification, checksums, offload headers) is the `xvs-stage` crate, re-exported here
//! under the same module names. This crate adds what runs it: the UMEM-backed frame pool
//! ([`umem`]), the port backends ([`port`]), the L2 stage ([`l2`], over the MAC table in
//! [`fdb`]), a bridge's chain of stages ([`chain`]), the per-worker [`engine`] that receives,
//! runs chains and sends ([`output`], with software offloads for ports that cannot take them),
//! hand-off rings between workers ([`handoff`]), the [`worker`] threads, the smoltcp
//! [`gateway`], and [`datapath`], the control thread's handle on all of it.

pub use xvs_stage::{
    batch, checksum, classify, coalesce, domain, drop, frame, offload, segment, stage, trace,
    verdict, wire,
};

pub mod chain;
pub mod clock;
pub mod counters;
pub mod datapath;
pub mod engine;
pub mod fdb;
pub mod fdb_sync;
pub mod gateway;
pub mod handoff;
pub mod l2;
pub mod neigh;
pub mod output;
pub mod port;
pub mod port_security;
pub mod route;
pub mod router;
pub mod umem;
pub mod worker;
