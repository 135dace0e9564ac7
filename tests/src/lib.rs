//! Test harness for xvs end-to-end tests.
