//! xvs-switch: the datapath of xvs.
//!
//! Frames live in a per-worker [`frame::FramePool`] (the AF_XDP UMEM when ports are AF_XDP);
//! ports deliver bursts of up to 32 frames; each frame is classified once ([`classify`]);
//! stages ([`stage`]) give every frame a verdict; the L2 [`bridge`] learns and forwards;
//! [`worker`] threads drive ports and pipelines; [`datapath`] is the control thread's handle.

pub mod bridge;
pub mod classify;
pub mod clock;
pub mod counters;
pub mod datapath;
pub mod fdb;
pub mod frame;
pub mod gateway;
pub mod offload;
pub mod pipeline;
pub mod port;
pub mod stage;
pub mod trace;
pub mod worker;
