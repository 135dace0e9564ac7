//! pipeline: to be written.
