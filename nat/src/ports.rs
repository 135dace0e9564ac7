//! Masquerade port ranges: the outside ports are split into one contiguous range per worker,
//! so the uplink's receive side finds the worker that owns a reply from its destination port
//! alone ([`PortPartition::owner`], a division) and hands the frame over if it is not its own.
//!
//! Plain values: the control plane computes them; every worker may read them.

use std::ops::RangeInclusive;

use serde::Serialize;

/// One worker's outside ports (inclusive bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

impl PortRange {
    /// `first..=last` (empty if `last < first`).
    pub const fn new(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    /// Number of ports.
    #[inline]
    pub fn len(&self) -> u32 {
        (u32::from(self.last) + 1).saturating_sub(u32::from(self.first))
    }

    /// True when the range holds no port.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `port` is in the range.
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// The range as a `RangeInclusive`.
    pub fn as_range(&self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

/// Why a partition cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// No worker.
    #[error("a port partition needs at least one worker")]
    NoWorker,
    /// Fewer ports than workers.
    #[error("ports {first}-{last} cannot be split over {workers} workers")]
    TooFewPorts {
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
        /// Workers.
        workers: u16,
    },
}

/// The masquerade ports `first..=last` split evenly over `workers` (the last worker also
/// takes the remainder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortPartition {
    first: u16,
    last: u16,
    workers: u16,
    per_worker: u32,
}

impl PortPartition {
    /// Linux's choice for a source port it must change (`nf_nat_l4proto_unique_tuple`):
    /// 1024-65535.
    pub const DEFAULT_FIRST: u16 = 1024;
    /// Last port of the default range.
    pub const DEFAULT_LAST: u16 = 65535;

    /// Splits `first..=last` over `workers`.
    pub fn new(first: u16, last: u16, workers: u16) -> Result<PortPartition, PartitionError> {
        if workers == 0 {
            return Err(PartitionError::NoWorker);
        }
        let len = PortRange::new(first, last).len();
        if len < u32::from(workers) {
            return Err(PartitionError::TooFewPorts {
                first,
                last,
                workers,
            });
        }
        Ok(PortPartition {
            first,
            last,
            workers,
            per_worker: len / u32::from(workers),
        })
    }

    /// The default range over `workers` (at least one).
    pub fn default_for(workers: u16) -> PortPartition {
        let workers = workers.max(1);
        PortPartition {
            first: Self::DEFAULT_FIRST,
            last: Self::DEFAULT_LAST,
            workers,
            per_worker: PortRange::new(Self::DEFAULT_FIRST, Self::DEFAULT_LAST).len()
                / u32::from(workers),
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> u16 {
        self.workers
    }

    /// Worker `worker`'s range (the last worker's when `worker` is out of range).
    pub fn range(&self, worker: u16) -> PortRange {
        let w = u32::from(worker.min(self.workers - 1));
        let first = u32::from(self.first) + w * self.per_worker;
        let last = if w + 1 == u32::from(self.workers) {
            u32::from(self.last)
        } else {
            first + self.per_worker - 1
        };
        PortRange::new(first as u16, last as u16)
    }

    /// The worker whose range holds `port`, or `None` when it is no masquerade port (a
    /// published port, or a port below the range: the caller decides).
    #[inline]
    pub fn owner(&self, port: u16) -> Option<u16> {
        if !(self.first..=self.last).contains(&port) {
            return None;
        }
        let w = u32::from(port - self.first) / self.per_worker;
        Some(w.min(u32::from(self.workers) - 1) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_range_split_over_two_workers() {
        let p = PortPartition::default_for(2);
        assert_eq!(p.range(0), PortRange::new(1024, 33279));
        assert_eq!(p.range(1), PortRange::new(33280, 65535));
        assert_eq!(p.owner(1023), None);
        assert_eq!(p.owner(1024), Some(0));
        assert_eq!(p.owner(65535), Some(1));
        assert_eq!(
            PortPartition::new(1, 0, 1),
            Err(PartitionError::TooFewPorts {
                first: 1,
                last: 0,
                workers: 1
            })
        );
        assert_eq!(PortPartition::new(1, 9, 0), Err(PartitionError::NoWorker));
    }

    proptest! {
        #[test]
        fn every_port_is_owned_by_the_worker_whose_range_holds_it(
            first in 0u16..60000, span in 0u16..5000, workers in 1u16..17, port in any::<u16>(),
        ) {
            let last = first.saturating_add(span);
            prop_assume!(u32::from(span) + 1 >= u32::from(workers));
            let p = PortPartition::new(first, last, workers).unwrap_or_else(|_| PortPartition::default_for(1));
            let total: u32 = (0..workers).map(|w| p.range(w).len()).sum();
            prop_assert_eq!(total, PortRange::new(first, last).len(), "ranges cover the whole span");
            match p.owner(port) {
                Some(w) => prop_assert!(p.range(w).contains(port)),
                None => prop_assert!(!(first..=last).contains(&port)),
            }
        }
    }
}
