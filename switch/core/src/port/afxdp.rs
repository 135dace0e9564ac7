//! AF_XDP port backend (xsk-rs). To be written.
