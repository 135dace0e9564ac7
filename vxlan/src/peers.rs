//! Head-end replication: each overlay network's remote VTEPs (`vtep peer add`), bounded and
//! kept in address order, and the choice for one inner frame between flooding (broadcast,
//! multicast, unknown unicast: a copy to every peer) and unicast to the one VTEP the
//! [`RemoteFdb`] knows its destination behind.
//!
//! Changed by the control plane; read by workers from a snapshot. Not `Sync` by itself.

use std::net::Ipv4Addr;

use hashbrown::HashMap;
use xvs_stage::wire::Mac;

use crate::drop::VxlanDrop;
use crate::header::Vni;
use crate::remote_fdb::RemoteFdb;

/// Peers one network may have unless configured (a copy of each flooded frame goes to each).
pub const DEFAULT_PEER_LIMIT: usize = 128;

/// Why a peer was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The network has its limit of peers.
    #[error("VNI {vni} already has {limit} peers")]
    Full {
        /// The network.
        vni: Vni,
        /// Its limit.
        limit: usize,
    },
    /// The address cannot be a remote VTEP.
    #[error("{0} is not a unicast address")]
    NotUnicast(Ipv4Addr),
}

/// Where an inner frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// To the one VTEP its destination MAC is behind.
    Unicast(Ipv4Addr),
    /// A copy to each of these (never empty).
    Flood(&'a [Ipv4Addr]),
}

/// Every overlay network's peers.
#[derive(Debug, Clone)]
pub struct Peers {
    by_vni: HashMap<Vni, Vec<Ipv4Addr>>,
    limit: usize,
}

impl Default for Peers {
    fn default() -> Self {
        Peers::new(DEFAULT_PEER_LIMIT)
    }
}

impl Peers {
    /// No peers; at most `limit` per network.
    pub fn new(limit: usize) -> Peers {
        Peers {
            by_vni: HashMap::new(),
            limit,
        }
    }

    /// Adds `remote` to `vni`'s peers; false if it was one already.
    pub fn add(&mut self, vni: Vni, remote: Ipv4Addr) -> Result<bool, PeerError> {
        let o = remote.octets();
        if matches!(o[0], 0 | 127 | 224..) {
            return Err(PeerError::NotUnicast(remote));
        }
        let list = self.list(vni);
        if list.binary_search(&remote).is_ok() {
            return Ok(false);
        }
        if list.len() >= self.limit {
            return Err(PeerError::Full {
                vni,
                limit: self.limit,
            });
        }
        let reserve = self.limit.min(DEFAULT_PEER_LIMIT);
        let list = self
            .by_vni
            .entry(vni)
            .or_insert_with(|| Vec::with_capacity(reserve));
        let at = list.binary_search(&remote).unwrap_or_else(|at| at);
        list.insert(at, remote);
        Ok(true)
    }

    fn drop_empty(&mut self, vni: Vni) {
        if self.by_vni.get(&vni).is_some_and(Vec::is_empty) {
            self.by_vni.remove(&vni);
        }
    }

    /// Removes `remote` from `vni`'s peers; false if it was not one.
    pub fn remove(&mut self, vni: Vni, remote: Ipv4Addr) -> bool {
        let Some(list) = self.by_vni.get_mut(&vni) else {
            return false;
        };
        let found = list
            .binary_search(&remote)
            .map(|at| list.remove(at))
            .is_ok();
        self.drop_empty(vni);
        found
    }

    /// Removes every peer of `vni` (its network is gone).
    pub fn remove_vni(&mut self, vni: Vni) {
        self.by_vni.remove(&vni);
    }

    /// `vni`'s peers, in address order.
    #[inline]
    pub fn list(&self, vni: Vni) -> &[Ipv4Addr] {
        self.by_vni.get(&vni).map_or(&[], Vec::as_slice)
    }

    /// Every network with peers and its peers, in VNI order (for `peer ls`).
    pub fn all(&self) -> Vec<(Vni, &[Ipv4Addr])> {
        let mut v: Vec<_> = self
            .by_vni
            .iter()
            .map(|(&vni, l)| (vni, l.as_slice()))
            .collect();
        v.sort_unstable_by_key(|&(vni, _)| vni);
        v
    }

    /// Where a frame of `vni` to `dst` goes: a group address floods, a unicast MAC the remote
    /// FDB knows goes to its VTEP, any other floods (unknown unicast). A flood with no peers
    /// is [`VxlanDrop::NoPeer`].
    #[inline]
    pub fn destination<'a>(
        &'a self,
        fdb: &RemoteFdb,
        vni: Vni,
        dst: Mac,
        now_ms: u64,
    ) -> Result<Destination<'a>, VxlanDrop> {
        if !dst.is_multicast()
            && let Some(ip) = fdb.lookup(vni, dst, now_ms)
        {
            return Ok(Destination::Unicast(ip));
        }
        match self.list(vni) {
            [] => Err(VxlanDrop::NoPeer),
            all => Ok(Destination::Flood(all)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_fdb::RemoteFdbConfig;

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap_or_default()
    }

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    const C: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    #[test]
    fn add_remove_list_in_order_and_bounded() {
        let mut p = Peers::new(2);
        assert_eq!(p.add(vni(1), B), Ok(true));
        assert_eq!(p.add(vni(1), A), Ok(true));
        assert_eq!(p.add(vni(1), A), Ok(false));
        assert_eq!(p.list(vni(1)), &[A, B]);
        assert_eq!(
            p.add(vni(1), C),
            Err(PeerError::Full {
                vni: vni(1),
                limit: 2
            })
        );
        assert_eq!(
            p.add(vni(2), Ipv4Addr::new(239, 1, 1, 1)),
            Err(PeerError::NotUnicast(Ipv4Addr::new(239, 1, 1, 1)))
        );
        assert_eq!(p.add(vni(2), C), Ok(true));
        assert_eq!(p.all(), vec![(vni(1), &[A, B][..]), (vni(2), &[C][..])]);
        assert!(p.remove(vni(1), A));
        assert!(!p.remove(vni(1), A));
        assert!(!p.remove(vni(9), A));
        assert_eq!(p.list(vni(1)), &[B]);
        p.remove_vni(vni(2));
        assert_eq!(p.list(vni(2)), &[] as &[Ipv4Addr]);
        assert!(p.remove(vni(1), B));
        assert!(p.all().is_empty(), "empty networks are not listed");
    }

    #[test]
    fn flood_or_unicast() {
        let mut p = Peers::default();
        let mut fdb = RemoteFdb::new(RemoteFdbConfig::default());
        let known = Mac([0x02, 0, 0, 0, 0, 0x10]);
        let unknown = Mac([0x02, 0, 0, 0, 0, 0x11]);
        assert_eq!(
            p.destination(&fdb, vni(5), Mac::BROADCAST, 0),
            Err(VxlanDrop::NoPeer)
        );
        assert!(fdb.learn(vni(5), known, C, 0).is_ok());
        assert_eq!(
            p.destination(&fdb, vni(5), known, 0),
            Ok(Destination::Unicast(C)),
            "known, even without peers"
        );
        assert_eq!(
            p.destination(&fdb, vni(5), unknown, 0),
            Err(VxlanDrop::NoPeer)
        );
        assert!(p.add(vni(5), A).is_ok() && p.add(vni(5), B).is_ok());
        assert_eq!(
            p.destination(&fdb, vni(5), unknown, 0),
            Ok(Destination::Flood(&[A, B]))
        );
        assert_eq!(
            p.destination(&fdb, vni(5), Mac::BROADCAST, 0),
            Ok(Destination::Flood(&[A, B]))
        );
        assert_eq!(
            p.destination(&fdb, vni(5), Mac([0x01, 0, 0x5e, 0, 0, 1]), 0),
            Ok(Destination::Flood(&[A, B]))
        );
        assert_eq!(
            p.destination(&fdb, vni(6), known, 0),
            Err(VxlanDrop::NoPeer),
            "other network"
        );
        assert_eq!(
            p.destination(&fdb, vni(5), known, 400_000),
            Ok(Destination::Flood(&[A, B])),
            "aged out"
        );
    }
}
