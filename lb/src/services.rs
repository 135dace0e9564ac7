//! One worker's services ([`WorkerServices`]): its [`Balancer`] for each service, found by
//! the virtual IP, protocol and port a classified frame is addressed to.
//!
//! Owned by one worker. The control plane sends each worker the snapshots of new and changed
//! services and the keys of removed ones; the worker applies them between two batches
//! ([`WorkerServices::install`], [`WorkerServices::remove`]), which alone may allocate.

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;
use xvs_stage::classify::FlowKey;

use crate::balancer::Balancer;
use crate::table::{ServiceKey, ServiceTable};

/// One worker's services (see the module header).
#[derive(Debug)]
pub struct WorkerServices {
    worker: u16,
    services: HashMap<ServiceKey, Balancer>,
    /// How many services each virtual IP has.
    vips: HashMap<IpAddr, u32>,
    /// Every backend's address and port, in any service (rebuilt when services change).
    backends: hashbrown::HashSet<(IpAddr, u16)>,
}

impl WorkerServices {
    /// No services yet, for worker `worker`.
    pub fn new(worker: u16) -> WorkerServices {
        WorkerServices {
            worker,
            services: HashMap::new(),
            vips: HashMap::new(),
            backends: hashbrown::HashSet::new(),
        }
    }

    fn rebuild_backends(&mut self) {
        let backends = self
            .services
            .values()
            .flat_map(|b| b.table().backends())
            .map(|(_, tb)| (tb.addr.ip(), tb.addr.port()))
            .collect();
        self.backends = backends;
    }

    /// Whether `ip:port` is a backend of any service here (its frames may be replies).
    #[inline]
    pub fn is_backend(&self, ip: IpAddr, port: u16) -> bool {
        !self.backends.is_empty() && self.backends.contains(&(ip, port))
    }

    /// Installs a service's snapshot: a new service, or a new snapshot of one it has (the old
    /// snapshot is returned, for the caller to drop off the hot path).
    pub fn install(&mut self, table: Arc<ServiceTable>) -> Option<Arc<ServiceTable>> {
        let key = table.key();
        let old = match self.services.get_mut(&key) {
            Some(b) => Some(b.swap(table)),
            None => {
                self.services.insert(key, Balancer::new(table, self.worker));
                *self.vips.entry(key.vip).or_default() += 1;
                None
            }
        };
        self.rebuild_backends();
        old
    }

    /// Removes a service; its balancer is returned so conntrack can still settle its
    /// connections (they are reset: the service is gone).
    pub fn remove(&mut self, key: &ServiceKey) -> Option<Balancer> {
        let b = self.services.remove(key)?;
        if let Some(n) = self.vips.get_mut(&key.vip) {
            *n -= 1;
            if *n == 0 {
                self.vips.remove(&key.vip);
            }
        }
        self.rebuild_backends();
        Some(b)
    }

    /// The service a classified frame is addressed to, if any.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey) -> Option<&mut Balancer> {
        self.services.get_mut(&ServiceKey::of_flow(key)?)
    }

    /// The service with this key.
    pub fn get(&self, key: &ServiceKey) -> Option<&Balancer> {
        self.services.get(key)
    }

    /// The service with this key, to pick from or count on.
    pub fn get_mut(&mut self, key: &ServiceKey) -> Option<&mut Balancer> {
        self.services.get_mut(key)
    }

    /// Whether `ip` is the virtual IP of any service here (a frame to a VIP on a port no
    /// service has is [`LbDrop::NoService`](crate::drop::LbDrop)). One hash lookup.
    #[inline]
    pub fn is_vip(&self, ip: IpAddr) -> bool {
        self.vips.contains_key(&ip)
    }

    /// How many services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::hash::ip16;
    use crate::service::{Service, ServiceSpec};
    use xvs_stage::wire::{ethertype, ipproto};

    fn tcp_to(dst: &str, dport: u16) -> FlowKey {
        FlowKey {
            dl_type: ethertype::IPV4,
            nw_proto: ipproto::TCP,
            nw_src: ip16("10.0.0.9".parse().unwrap()),
            nw_dst: ip16(dst.parse().unwrap()),
            tp_src: 40_000,
            tp_dst: dport,
            ..FlowKey::default()
        }
    }

    #[test]
    fn a_frame_finds_its_service_and_a_new_snapshot_swaps_in() {
        let spec = ServiceSpec::new(
            "10.0.0.100".parse().unwrap(),
            "tcp/80:8080".parse().unwrap(),
        );
        let mut s = Service::new(spec, 1).unwrap();
        s.add_backend("10.0.0.2".parse().unwrap(), 1).unwrap();
        let mut w = WorkerServices::new(0);
        assert!(w.install(s.snapshot()).is_none());
        let key = tcp_to("10.0.0.100", 80);
        let b = w.lookup(&key).unwrap();
        let p = b.pick_flow(&key).unwrap();
        assert_eq!(p.addr, "10.0.0.2:8080".parse().unwrap());
        assert!(b.opened(p.backend));
        assert!(w.lookup(&tcp_to("10.0.0.100", 81)).is_none());
        assert!(w.lookup(&tcp_to("10.0.0.101", 80)).is_none());
        assert!(w.is_vip("10.0.0.100".parse().unwrap()));

        s.add_backend("10.0.0.3".parse().unwrap(), 1).unwrap();
        let old = w.install(s.snapshot()).unwrap();
        assert_eq!(old.live().len(), 1);
        assert_eq!(w.lookup(&key).unwrap().table().live().len(), 2);
        assert_eq!(
            s.backends().map(|i| i.active).sum::<u64>(),
            1,
            "counts carried over"
        );
        let mut other = *s.spec();
        other.port = "udp/53".parse().unwrap();
        w.install(Service::new(other, 1).unwrap().snapshot());
        assert!(w.remove(&s.key()).is_some());
        assert!(
            w.is_vip("10.0.0.100".parse().unwrap()),
            "its udp/53 service is still there"
        );
        assert!(w.remove(&Service::new(other, 1).unwrap().key()).is_some());
        assert!(w.is_empty() && !w.is_vip("10.0.0.100".parse().unwrap()));
    }
}
