//! xvs-nat: connection tracking, SNAT/masquerade and DNAT (published ports) for the xvs
//! datapath, sans-IO: no syscalls, no clocks (time is an argument, in ms), no global state
//! (randomness is seeded). One [`Conntrack`] per worker thread owns its sessions, mappings
//! and port range; nothing here is `Sync` on the fast path.
//!
//! - [`tuple`](mod@tuple): 5-tuples and directions; [`state`], [`tcp`]: connection states and TCP's
//!   transitions; [`timeout`]: per-state timeouts, settable by name;
//! - [`ports`]: per-worker masquerade port ranges (a reply's owner from its port alone);
//! - [`mapping`]: endpoint-independent mappings and bounded port probing;
//! - [`published`]: DNAT rules for published ports;
//! - [`rewrite`], [`icmp`]: in-place header rewrites with incremental checksums, and ICMP
//!   errors translated with the packet they quote;
//! - `table`: the session table (both directions indexed, bounded expiry);
//! - [`conntrack`]: what a stage calls per frame; [`show`]: listings for `conntrack/show`;
//! - [`drop`](mod@drop): the `conntrack` stage's drop reasons.
#![forbid(unsafe_code)]

pub mod conntrack;
pub mod drop;
pub mod icmp;
pub mod mapping;
pub mod ports;
pub mod published;
pub mod rewrite;
pub mod show;
pub mod stage;
pub mod state;
pub(crate) mod table;
pub mod tcp;
pub mod timeout;
pub mod tuple;

pub use conntrack::{Config, Conntrack, Decision, Egress, Outcome, Side, Stats};
pub use drop::NatDrop;
pub use ports::{PortPartition, PortRange};
pub use published::{DnatRule, PublishError, Published};
pub use show::ConnEntry;
pub use stage::{NatConfig, NatStage};
pub use state::ConnState;
pub use timeout::{Timeout, TimeoutError, Timeouts};
pub use tuple::{Dir, Tuple};
