//! Counters: per-port traffic counters and per-reason drop counters.
//!
//! Each counter has one writer (the worker that owns the port or pipeline), which adds once
//! per burst with relaxed atomics; the control thread reads them at any time. Every drop in
//! the datapath has a [`DropReason`], and every reason is shown by `xvsctl stats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why the datapath dropped a frame (or, for `Learn*`, declined to learn from one).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// The counter's name, as `xvsctl stats` prints it.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// A sentence saying what happened.
            pub fn describe(self) -> &'static str {
                match self { $(DropReason::$variant => $doc,)* }
            }
        }
    };
}

drop_reasons! {
    Runt => "runt", "frame shorter than an Ethernet header";
    TruncatedHeader => "truncated_header", "a header runs past the end of the frame";
    BadIpv4Header => "bad_ipv4_header", "IPv4 header with a bad version or IHL";
    BadIpLength => "bad_ip_length", "IP total/payload length disagrees with the frame";
    BadL4Length => "bad_l4_length", "UDP/TCP length disagrees with the IP payload";
    UnknownEthertype => "unknown_ethertype", "ethertype the switch does not forward";
    StackedVlan => "stacked_vlan", "more than one VLAN tag (QinQ is not supported)";
    TaggedOnAccessPort => "vlan_tagged_on_access_port", "802.1Q-tagged frame received on an access port";
    MulticastSource => "multicast_source_mac", "source MAC is multicast or broadcast";
    DestOnIngressPort => "dst_on_ingress_port", "destination MAC was learned on the ingress port";
    NoFloodTarget => "flood_no_other_port", "flood with no other port in the VLAN";
    IccDisabled => "icc_disabled", "container-to-container traffic on a network with icc=false";
    Oversize => "oversize", "frame larger than the port can send";
    OffloadFailed => "offload_failed", "GSO super-frame or partial checksum that could not be finished in software (malformed offload request)";
    PoolExhausted => "pool_exhausted", "no free frame to copy into (flood)";
    TxRingFull => "tx_ring_full", "output port's transmit ring was full";
    PortGone => "port_gone", "output port no longer exists";
    LearnTableFull => "learn_table_full", "MAC not learned: bridge MAC table full (frame still forwarded)";
    LearnPortLimit => "learn_port_limit", "MAC not learned: port's learned-MAC limit reached (frame still forwarded)";
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// True for reasons that count a learning refused, not a frame dropped.
    pub fn is_learning_only(self) -> bool {
        matches!(
            self,
            DropReason::LearnTableFull | DropReason::LearnPortLimit
        )
    }
}

/// One counter per [`DropReason`].
#[derive(Debug)]
pub struct DropCounters {
    counts: [AtomicU64; DropReason::COUNT],
}

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl DropCounters {
    /// Adds `n` to `reason`'s counter.
    #[inline]
    pub fn add(&self, reason: DropReason, n: u64) {
        self.counts[reason as usize].fetch_add(n, Relaxed);
    }

    /// Current value of `reason`'s counter.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize].load(Relaxed)
    }

    /// `(name, count)` for every reason.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.get(*r)))
            .collect()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_unique() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn counters_add_up() {
        let c = DropCounters::default();
        c.add(DropReason::Runt, 2);
        c.add(DropReason::Runt, 3);
        assert_eq!(c.get(DropReason::Runt), 5);
        assert_eq!(c.get(DropReason::StackedVlan), 0);
    }
}
