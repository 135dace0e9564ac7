//! xvs-lb: the load-balancing core of xvs, sans-IO (no sockets, no clocks: time is an
//! argument in ms; hashes are seeded and the same on every host). IPVS-style virtual services:
//! a virtual IP, protocol and port spread over backends by rr, smooth wrr, weighted lc or
//! Maglev, with per-connection affinity, DNAT of the client's packets to their backend (never
//! SNAT: backends see the client's address) and the replies' source back to the VIP.
//!
//! Control plane: [`Service`] (settings, backends, the verbs) makes immutable
//! [`ServiceTable`] snapshots. Worker: [`LbStage`], one per network, keeps the connections
//! (each one's [`BackendRef`]) and answers for the VIPs; its [`WorkerServices`] /
//! [`Balancer`] swap snapshots in between batches, pick a backend for a new connection, and
//! count it opened and closed.
//!
//! - [`spec`]: the CLI forms (`tcp/80:8080`, `IP[:PORT]`, scheduler names), parsed and printed;
//! - [`service`]: a service as the control plane keeps it, and its typed errors;
//! - [`table`]: the snapshot a worker reads;
//! - [`backend`]: backend handles, states, health and connection counters;
//! - [`balancer`]: one worker's scheduler for one service: rr, wrr, lc, Maglev lookups;
//! - [`services`]: one worker's services, found from a classified frame;
//! - [`maglev`]: the Maglev lookup table build;
//! - [`hash`]: stable flow and backend hashes;
//! - [`stage`]: the datapath stage: answers for the VIPs, DNATs connections to their backends
//!   and their replies back;
//! - [`sessions`]: the stage's connections (affinity, minimal TCP state, timers);
//! - `rewrite`: one endpoint of a packet rewritten with incremental checksums;
//! - [`drop`]: the `lb` stage's drop reasons.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod balancer;
pub mod drop;
pub mod hash;
pub mod maglev;
mod rewrite;
pub mod service;
pub mod services;
pub mod sessions;
pub mod spec;
pub mod stage;
pub mod table;

pub use backend::{BackendCounters, BackendRef, BackendState, Health};
pub use balancer::{Balancer, NoBackend, Pick, Why};
pub use drop::LbDrop;
pub use service::{BackendInfo, Removal, Service, ServiceError, ServiceSpec};
pub use services::WorkerServices;
pub use sessions::{SessionState, SessionView};
pub use spec::{BackendAddr, ParseError, Proto, SchedulerKind, ServicePort};
pub use stage::{LbConfig, LbStage, SpreadConfig};
pub use table::{Disposition, ServiceKey, ServiceTable, TableBackend};
