//! classify: to be written.
