//! clock: to be written.
