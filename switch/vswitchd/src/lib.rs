//! The xvs daemon's library: everything `xvsd` (src/main.rs) is made of, so that the fuzz
//! targets (fuzz/) and benches can reach the parsers and request handlers (the DNS server,
//! the Docker plugin's calls, the cluster's records) that the daemon serves.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod control;
pub mod dns;
pub mod docker;
pub mod error;
pub mod flow;
pub mod health;
pub mod ipam;
pub mod netns;
pub mod network;
pub mod publish;
pub mod routing;
pub mod server;
pub mod service;
pub mod uplink;
pub mod validate;
pub mod vtep;
