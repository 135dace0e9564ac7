//! MAC learning shared by the workers of a spread bridge (one network's ports on several
//! workers, [`Datapath::add_spread_bridge`](crate::datapath::Datapath::add_spread_bridge)).
//!
//! Each worker keeps a replica of the bridge's [`Fdb`](crate::fdb::Fdb) in its own L2 stage
//! and looks up only its replica: the per-frame path takes no lock and touches no shared
//! cache line. What a worker learns (a new station, a move, and a refresh once a second per
//! station) it publishes as an [`FdbEvent`] into every other worker's inbox, a bounded
//! lock-free ring ([`crossbeam_queue::ArrayQueue`]); each worker applies its inbox at the start
//! of its next batch and on every tick. A full inbox loses the update, counted
//! (`l2.fdb_sync_lost`): the receiving replica then floods to that station until the next
//! update, it never sends to a wrong port for long (the newest sighting wins,
//! [`Fdb::learn_remote`](crate::fdb::Fdb::learn_remote)). Ageing stays per replica, kept alive
//! by the refreshes.
//!
//! VPP shares one bihash that workers read and a main thread writes from learn events, OVS a
//! table under a read-write lock taken per packet; replicas with rings keep the lookup exactly
//! today's (the L2 bench at 1K and 64K MACs is the single-table one) and cost a ring push per
//! learning event, not per frame.
//!
//! The mesh is shared (`Arc`) by the L2 stages of one bridge, one per worker; each pushes to
//! the others' inboxes and pops only its own.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::classify::{Mac, PortId};

/// Updates one worker's inbox holds (per spread bridge).
pub const INBOX_CAPACITY: usize = 4096;

/// Milliseconds between two refreshes of one station published to the other workers.
pub const REFRESH_MS: u64 = 1000;

/// A station a worker saw: `mac` in `vlan` behind `port`, at `seen_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEvent {
    /// VLAN.
    pub vlan: u16,
    /// MAC.
    pub mac: Mac,
    /// Port it was seen on.
    pub port: PortId,
    /// When.
    pub seen_ms: u64,
}

/// The inboxes of one spread bridge's workers.
#[derive(Debug)]
pub struct FdbMesh {
    inboxes: Vec<ArrayQueue<FdbEvent>>,
}

impl FdbMesh {
    /// A mesh for `workers` workers.
    pub fn new(workers: u16) -> Arc<FdbMesh> {
        Arc::new(FdbMesh {
            inboxes: (0..workers.max(1))
                .map(|_| ArrayQueue::new(INBOX_CAPACITY))
                .collect(),
        })
    }

    /// Workers in the mesh.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }
}

/// One worker's end of a mesh.
#[derive(Debug, Clone)]
pub struct FdbSync {
    mesh: Arc<FdbMesh>,
    me: usize,
}

impl FdbSync {
    /// Worker `me`'s end of `mesh`.
    pub fn new(mesh: Arc<FdbMesh>, me: u16) -> FdbSync {
        FdbSync {
            mesh,
            me: usize::from(me),
        }
    }

    /// Publishes `ev` to every other worker; returns how many inboxes were full (lost).
    #[inline]
    pub fn publish(&self, ev: FdbEvent) -> u64 {
        let mut lost = 0;
        for (w, q) in self.mesh.inboxes.iter().enumerate() {
            if w != self.me && q.push(ev).is_err() {
                lost += 1;
            }
        }
        lost
    }

    /// The next update other workers published for this one.
    #[inline]
    pub fn next(&self) -> Option<FdbEvent> {
        self.mesh.inboxes.get(self.me)?.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u8) -> FdbEvent {
        FdbEvent {
            vlan: 0,
            mac: Mac([2, 0, 0, 0, 0, n]),
            port: u32::from(n),
            seen_ms: u64::from(n),
        }
    }

    #[test]
    fn events_reach_every_other_worker_once() {
        let mesh = FdbMesh::new(3);
        let ends: Vec<FdbSync> = (0..3).map(|w| FdbSync::new(mesh.clone(), w)).collect();
        assert_eq!(ends[1].publish(ev(7)), 0);
        assert_eq!(ends[1].next(), None, "not to itself");
        assert_eq!(ends[0].next(), Some(ev(7)));
        assert_eq!(ends[2].next(), Some(ev(7)));
        assert_eq!(ends[0].next(), None);
    }

    #[test]
    fn a_full_inbox_loses_updates_counted_and_bounded() {
        let mesh = FdbMesh::new(2);
        let (a, b) = (FdbSync::new(mesh.clone(), 0), FdbSync::new(mesh, 1));
        let mut lost = 0;
        for i in 0..(INBOX_CAPACITY + 10) {
            lost += a.publish(ev((i % 250) as u8));
        }
        assert_eq!(lost, 10);
        let mut n = 0;
        while b.next().is_some() {
            n += 1;
        }
        assert_eq!(n, INBOX_CAPACITY);
    }
}
