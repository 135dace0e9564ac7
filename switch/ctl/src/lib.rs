//! The xvs control protocol (shared by `xvsd` and `xvsctl`) and the client side of it.
#![forbid(unsafe_code)]

pub mod client;
pub mod protocol;
