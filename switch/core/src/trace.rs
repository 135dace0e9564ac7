//! trace: to be written.
