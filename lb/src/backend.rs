//! A backend as the datapath sees it: its handle inside a service ([`BackendRef`]), its state
//! and health, and its connection counters ([`BackendCounters`]).
//!
//! The counters have one row per worker: the worker that owns a connection writes its own row
//! (relaxed atomics, a single writer per row, no read-modify-write), the control plane reads
//! the sums for `service inspect` and lc reads them to pick. A [`BackendCounters`] is a shared
//! handle (one `Arc` allocation holding every row) that every snapshot of the service carries,
//! so counts survive a snapshot swap.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// A backend's handle, what conntrack keeps for a connection's life: its slot in the service
/// and the serial of the backend that held the slot when the connection was scheduled. A slot
/// is reused by later backends; the serial tells them apart, so a stale handle never touches a
/// newer backend's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendRef {
    /// Index into the service's backend slots.
    pub slot: u16,
    /// The backend's serial, unique within its service.
    pub serial: u32,
}

/// Where a backend is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new connections (when healthy).
    #[default]
    Active,
    /// `rm-backend --drain`: weight 0, keeps its connections, takes no new ones; goes when its
    /// last connection closes.
    Draining,
    /// `rm-backend`: takes nothing; its connections are to be reset (the service's reset list)
    /// and it goes when they are gone.
    Removed,
}

impl BackendState {
    /// `active`, `draining` or `removed`.
    pub fn name(self) -> &'static str {
        match self {
            BackendState::Active => "active",
            BackendState::Draining => "draining",
            BackendState::Removed => "removed",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the health check (run by the control plane) last said of a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Answering (or not checked).
    #[default]
    Up,
    /// Failed its check: takes no new connections; keeps those it has.
    Down,
}

impl Health {
    /// `up` or `down`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One worker's counts, on a cache line of its own (no false sharing between workers).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Row {
    active: AtomicU64,
    total: AtomicU64,
}

/// A backend's connection counts: active (open now) and total (ever opened), one row per
/// worker. Cloning shares the counts.
#[derive(Debug, Clone)]
pub struct BackendCounters {
    rows: Arc<[Row]>,
}

impl BackendCounters {
    /// Counters for `workers` workers (at least one row).
    pub fn new(workers: u16) -> BackendCounters {
        BackendCounters {
            rows: (0..workers.max(1)).map(|_| Row::default()).collect(),
        }
    }

    fn row(&self, worker: u16) -> &Row {
        // A worker number past the rows is a wiring bug; count it somewhere rather than panic.
        let i = usize::from(worker);
        debug_assert!(i < self.rows.len(), "worker {worker} has no counter row");
        &self.rows[i.min(self.rows.len() - 1)]
    }

    /// A connection opened on `worker` (only that worker calls this for its row).
    #[inline]
    pub fn opened(&self, worker: u16) {
        let r = self.row(worker);
        r.active.store(r.active.load(Relaxed) + 1, Relaxed);
        r.total.store(r.total.load(Relaxed) + 1, Relaxed);
    }

    /// A connection of `worker`'s closed (never below zero).
    #[inline]
    pub fn closed(&self, worker: u16) {
        let r = self.row(worker);
        r.active
            .store(r.active.load(Relaxed).saturating_sub(1), Relaxed);
    }

    /// Connections open now, over every worker.
    #[inline]
    pub fn active(&self) -> u64 {
        self.rows.iter().map(|r| r.active.load(Relaxed)).sum()
    }

    /// Connections ever opened, over every worker.
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|r| r.total.load(Relaxed)).sum()
    }

    /// Connections open now on one worker.
    pub fn active_on(&self, worker: u16) -> u64 {
        self.row(worker).active.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_over_workers_and_never_go_negative() {
        let c = BackendCounters::new(2);
        c.opened(0);
        c.opened(0);
        c.opened(1);
        c.closed(0);
        c.closed(1);
        c.closed(1);
        assert_eq!((c.active(), c.total()), (1, 3));
        assert_eq!((c.active_on(0), c.active_on(1)), (1, 0));
    }

    #[test]
    fn names_are_the_cli_words() {
        assert_eq!(BackendState::Draining.to_string(), "draining");
        assert_eq!(Health::Down.to_string(), "down");
        assert_eq!(std::mem::size_of::<BackendRef>(), 8);
    }
}
