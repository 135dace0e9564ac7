//! bridge: to be written.
