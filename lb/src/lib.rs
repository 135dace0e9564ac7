//! xvs-lb: the load-balancing core of xvs, sans-IO (no sockets, no clocks: time is an
//! argument in ms; hashes are seeded and the same on every host). IPVS-style virtual services:
//! a virtual IP, protocol and port spread over backends by rr, smooth wrr, weighted lc or
//! Maglev. Connection affinity is conntrack's (the NAT crate keeps each connection's
//! [`BackendRef`]); this crate counts connections per backend and says which to reset.
//!
//! Control plane: [`Service`] (settings, backends, the verbs) makes immutable
//! [`ServiceTable`] snapshots. Worker: [`WorkerServices`] / [`Balancer`] swap snapshots in
//! between batches, pick a backend for a new connection, and count it opened and closed.
//!
//! - [`spec`]: the CLI forms (`tcp/80:8080`, `IP[:PORT]`, scheduler names), parsed and printed;
//! - [`maglev`]: the Maglev lookup table build;
//! - [`hash`]: stable flow and backend hashes;
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod hash;
pub mod maglev;
pub mod spec;

pub use spec::{BackendAddr, ParseError, Proto, SchedulerKind, ServicePort};
