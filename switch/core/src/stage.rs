//! stage: to be written.
