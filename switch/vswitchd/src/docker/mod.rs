//! Docker's remote network driver and remote IPAM driver, served by xvsd with
//! `--docker-plugin`: `api` holds the wire types, `map` turns each call into xvsctl requests
//! on the daemon's `Switch` (no state of its own), `serve` is the HTTP socket dockerd calls.

pub mod api;
pub mod map;
pub mod serve;
