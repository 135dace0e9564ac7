//! Counters: per-port traffic counters, and (re-exported from the stage contract) the
//! per-reason drop counters.
//!
//! Each counter has one writer (the worker that owns the port or pipeline), which adds once
//! per burst with relaxed atomics; the control thread reads them at any time. Every drop in
//! the datapath has a [`DropReason`] declared by the stage that owns it, and every reason is
//! shown by `xvsctl stats` under its stage.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

pub use crate::drop::{DropCounters, DropReason, ReasonSet};

/// Traffic counters of one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: AtomicU64,
    /// Bytes received.
    pub rx_bytes: AtomicU64,
    /// Frames received and then dropped by the pipeline.
    pub rx_drops: AtomicU64,
    /// Frames transmitted.
    pub tx_packets: AtomicU64,
    /// Bytes transmitted.
    pub tx_bytes: AtomicU64,
    /// Frames meant for this port that it could not take.
    pub tx_drops: AtomicU64,
}

/// A copy of [`PortCounters`] for display.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounterSnapshot {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames received and dropped.
    pub rx_drops: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames not transmitted.
    pub tx_drops: u64,
}

impl PortCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> PortCounterSnapshot {
        PortCounterSnapshot {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            rx_drops: self.rx_drops.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_drops: self.tx_drops.load(Relaxed),
        }
    }

    /// Adds a received burst.
    #[inline]
    pub fn add_rx(&self, packets: u64, bytes: u64) {
        self.rx_packets.fetch_add(packets, Relaxed);
        self.rx_bytes.fetch_add(bytes, Relaxed);
    }

    /// Adds a transmitted burst.
    #[inline]
    pub fn add_tx(&self, packets: u64, bytes: u64, drops: u64) {
        if packets > 0 {
            self.tx_packets.fetch_add(packets, Relaxed);
            self.tx_bytes.fetch_add(bytes, Relaxed);
        }
        if drops > 0 {
            self.tx_drops.fetch_add(drops, Relaxed);
        }
    }
}
