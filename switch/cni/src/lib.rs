//! The rules of the xvs CNI plugin (src/main.rs is its I/O): the network configuration and
//! environment it reads (`conf`), the results it writes (`result`) and its errors (`error`).
//! A library so that the fuzz targets (fuzz/) reach the parsers the plugin runs on every
//! runtime's input.
#![forbid(unsafe_code)]

pub mod conf;
pub mod error;
pub mod result;
