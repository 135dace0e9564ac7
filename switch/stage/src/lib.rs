//! xvs-stage: the contract every stage of the xvs datapath plugs into, with no port backends
//! in its dependency tree (so `nat/`, `lb/` and `vxlan/` build and test without xsk-rs,
//! libxdp or TAP code).
//!
//! - [`wire`]: shared wire types (`Mac`, ethertypes, IP protocols, port and bridge ids);
//! - [`frame`]: move-only frames in a per-worker pool, in-place rewrite, header push/pull;
//! - [`classify`]: parse once into a [`classify::FlowKey`] with cached offsets;
//! - [`batch`], [`verdict`], [`stage`]: the burst, per-frame verdicts and metadata, the
//!   `Stage` trait and its context (time as an argument, trace as a dry run);
//! - [`domain`]: a bridge's member ports and policy, as stages and output see them;
//! - [`drop`]: drop reasons declared by the stage that owns them, and their counters;
//! - [`checksum`], [`offload`], [`segment`]: Internet checksums (full, RFC 1624 incremental,
//!   partial), the virtio-net header, software TCP segmentation; [`coalesce`]: its inverse,
//!   consecutive segments of a flow described as one super-frame for a TAP;
//! - [`hash`]: seeded hashing of flow words and a seeded generator;
//! - [`icmp_error`]: a frame turned in place into the ICMPv4 error a router sends its sender
//!   (time exceeded, fragmentation needed);
//! - [`respond`]: a request turned in place into its answer (ARP reply, ICMP echo reply, TCP
//!   reset) by a stage answering for an address (a load balancer's virtual IP);
//! - [`trace`]: what each stage decided for a traced frame.
#![deny(unsafe_code)]

#[cfg(feature = "alloc-count")]
pub mod alloc_count;
pub mod batch;
pub mod checksum;
pub mod classify;
pub mod coalesce;
pub mod domain;
pub mod drop;
pub mod frame;
pub mod hash;
pub mod icmp_error;
pub mod offload;
pub mod respond;
pub mod rewrite;
pub mod segment;
pub mod stage;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod trace;
pub mod verdict;
pub mod wire;
