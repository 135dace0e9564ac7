//! Shared helpers for xvs benches.
