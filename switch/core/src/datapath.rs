//! datapath: to be written.
