//! TAP port backend (tun-tap). To be written.
