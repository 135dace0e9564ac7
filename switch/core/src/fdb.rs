//! fdb: to be written.
